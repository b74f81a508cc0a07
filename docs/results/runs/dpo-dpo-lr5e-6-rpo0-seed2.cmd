dpo_trainer --method dpo --lr 5e-6 --rpo-alpha 0 --seed 2
