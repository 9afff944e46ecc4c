"""Runner hooks, registered in mmengine's root HOOKS (every toolbox finds
them): random states in checkpoints, kill-safe checkpoint writes that keep
the last verified one, a stop with the iteration named on a non-finite
input, loss or weight, a resume with the config's optimizer settings,
per-part gradient, update and output statistics; and the epoch loop that
resumes mid-epoch (root LOOPS)."""
from .finite import FiniteCheckHook
from .optim_from_config import OptimFromConfigHook
from .resumable_loop import ResumableEpochBasedTrainLoop
from .rng_state import RandomStateHook
from .safe_checkpoint import SafeCheckpointHook
from .train_stats import TrainStatsHook

__all__ = ['FiniteCheckHook', 'OptimFromConfigHook', 'RandomStateHook',
           'ResumableEpochBasedTrainLoop', 'SafeCheckpointHook',
           'TrainStatsHook']
