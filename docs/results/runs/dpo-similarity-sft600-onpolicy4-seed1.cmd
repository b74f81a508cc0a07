dpo_trainer --method similarity --sft-steps 600 --pairs-from-policy 4 --seed 1
