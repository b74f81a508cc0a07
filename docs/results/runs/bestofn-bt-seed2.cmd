reward_trainer --loss bt --best-of-n 8 --policy runs/results/dpo-dpo-sft600-seed2/model --seed 2
