dpo_trainer --method dpo --lr 5e-6 --beta 0.5 --seed 1
