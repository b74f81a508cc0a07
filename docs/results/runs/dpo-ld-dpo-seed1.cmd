dpo_trainer --method ld-dpo --seed 1
