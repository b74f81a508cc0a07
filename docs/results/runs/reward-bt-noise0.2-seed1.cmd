reward_trainer --loss bt --label-noise 0.2 --seed 1
