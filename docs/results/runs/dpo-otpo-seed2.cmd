dpo_trainer --method otpo --seed 2
