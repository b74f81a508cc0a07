reward_trainer --loss aplot --label-noise 0.2 --seed 3
