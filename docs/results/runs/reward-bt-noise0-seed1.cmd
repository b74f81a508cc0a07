reward_trainer --loss bt --label-noise 0 --seed 1
