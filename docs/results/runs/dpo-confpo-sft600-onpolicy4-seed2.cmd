dpo_trainer --method confpo --sft-steps 600 --pairs-from-policy 4 --seed 2
