reward_trainer --loss aplot --label-noise 0.4 --seed 1
