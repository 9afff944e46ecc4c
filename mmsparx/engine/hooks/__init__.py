"""Runner hooks, registered in mmengine's root HOOKS (every toolbox finds
them): random states in checkpoints, kill-safe checkpoint writes that keep
the last verified one, a stop with the iteration named on a non-finite
input, loss or weight, a checkpoint and a clean exit on preemption (SIGTERM,
SIGUSR1), a resume with the config's optimizer settings and
per-part gradient, update and output statistics."""
from mmsparx.engine.hooks.finite import FiniteCheckHook
from mmsparx.engine.hooks.optim_from_config import OptimFromConfigHook
from mmsparx.engine.hooks.preemption import PreemptionHook
from mmsparx.engine.hooks.rng_state import RandomStateHook
from mmsparx.engine.hooks.safe_checkpoint import SafeCheckpointHook
from mmsparx.engine.hooks.train_stats import TrainStatsHook

__all__ = ['FiniteCheckHook', 'OptimFromConfigHook', 'PreemptionHook',
           'RandomStateHook', 'SafeCheckpointHook', 'TrainStatsHook']
