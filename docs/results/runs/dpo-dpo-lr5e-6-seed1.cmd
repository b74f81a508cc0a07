dpo_trainer --method dpo --lr 5e-6 --seed 1
