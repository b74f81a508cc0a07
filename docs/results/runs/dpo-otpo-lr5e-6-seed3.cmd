dpo_trainer --method otpo --lr 5e-6 --seed 3
