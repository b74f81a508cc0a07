dpo_trainer --method simpo --seed 1
