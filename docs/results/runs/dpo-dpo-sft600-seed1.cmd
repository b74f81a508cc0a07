dpo_trainer --method dpo --sft-steps 600 --seed 1
