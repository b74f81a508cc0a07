dpo_trainer --method otpo --sft-steps 600 --pairs-from-policy 4 --seed 3
