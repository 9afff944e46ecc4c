"""Runner hooks, registered in mmengine's root HOOKS (every toolbox finds
them): random states in checkpoints, kill-safe checkpoint writes, a stop
with the iteration named on a non-finite input or loss."""
from .finite import FiniteCheckHook
from .rng_state import RandomStateHook
from .safe_checkpoint import SafeCheckpointHook

__all__ = ['FiniteCheckHook', 'RandomStateHook', 'SafeCheckpointHook']
