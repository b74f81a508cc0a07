dpo_trainer --method dpo --seed 3
