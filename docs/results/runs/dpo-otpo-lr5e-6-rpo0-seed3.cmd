dpo_trainer --method otpo --lr 5e-6 --rpo-alpha 0 --seed 3
