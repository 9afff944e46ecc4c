"""Training curves drawn from a run's scalars (matplotlib, imported when
drawn)."""
from mmsparx.visualization.curves import draw_curves, read_curves, scalars_file

__all__ = ['draw_curves', 'read_curves', 'scalars_file']
