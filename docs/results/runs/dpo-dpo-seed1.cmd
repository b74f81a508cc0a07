dpo_trainer --method dpo --seed 1
