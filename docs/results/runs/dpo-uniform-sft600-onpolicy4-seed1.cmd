dpo_trainer --method uniform --sft-steps 600 --pairs-from-policy 4 --seed 1
