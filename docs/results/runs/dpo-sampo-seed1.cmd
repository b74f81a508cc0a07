dpo_trainer --method sampo --seed 1
