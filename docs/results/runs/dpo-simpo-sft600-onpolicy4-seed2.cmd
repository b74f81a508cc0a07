dpo_trainer --method simpo --sft-steps 600 --pairs-from-policy 4 --seed 2
