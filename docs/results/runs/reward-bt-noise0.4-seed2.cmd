reward_trainer --loss bt --label-noise 0.4 --seed 2
