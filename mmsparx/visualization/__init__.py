"""Pictures: training curves drawn from a run's scalars (matplotlib,
imported when drawn) and a model's predictions drawn on its image
(OpenCV)."""
from mmsparx.visualization.curves import draw_curves, read_curves, scalars_file
from mmsparx.visualization.predictions import (draw_classification,
                                               draw_detections,
                                               draw_segmentation)

__all__ = ['draw_classification', 'draw_curves', 'draw_detections',
           'draw_segmentation', 'read_curves', 'scalars_file']
