dpo_trainer --method dpo --rpo-alpha 0 --seed 1
