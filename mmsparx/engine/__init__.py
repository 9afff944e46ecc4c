"""What the runner uses beyond the model: hooks, loops, optimizer
wrappers. Importing it registers them into mmengine's root registries."""
from mmsparx.engine.hooks import (FiniteCheckHook, OptimFromConfigHook,
                                  PreemptionHook, RandomStateHook,
                                  SafeCheckpointHook, TrainStatsHook)
from mmsparx.engine.runner import ResumableEpochBasedTrainLoop

__all__ = ['FiniteCheckHook', 'OptimFromConfigHook', 'PreemptionHook',
           'RandomStateHook',
           'ResumableEpochBasedTrainLoop', 'SafeCheckpointHook',
           'TrainStatsHook']
