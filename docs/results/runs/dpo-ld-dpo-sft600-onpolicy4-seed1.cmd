dpo_trainer --method ld-dpo --sft-steps 600 --pairs-from-policy 4 --seed 1
