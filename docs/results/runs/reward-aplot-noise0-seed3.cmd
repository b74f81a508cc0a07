reward_trainer --loss aplot --label-noise 0 --seed 3
