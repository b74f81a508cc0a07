dpo_trainer --method sampo --sft-steps 600 --pairs-from-policy 4 --seed 1
