"""Training loops (mmengine's root LOOPS): the epoch loop that resumes
mid-epoch."""
from mmsparx.engine.runner.resumable_loop import ResumableEpochBasedTrainLoop

__all__ = ['ResumableEpochBasedTrainLoop']
