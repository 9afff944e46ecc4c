"""What the tools call: a model built from a config and its weights
loaded whole, a runner that trains and tests with mmsparx's loading
rules, one image through a model (and drawn), and the toolboxes'
Inferencers for mmsparx configs."""
from mmsparx.apis.inference import (InferenceError, Predictor,
                                    load_predictor, predict, task_of)
from mmsparx.apis.inferencers import toolbox_inferencer
from mmsparx.apis.model import (build_model, load_checkpoint, load_model,
                                model_config)
from mmsparx.apis.pictures import describe, draw_prediction
from mmsparx.apis.runner import build_runner, prepare_device, refusals_exit

__all__ = ['InferenceError', 'Predictor', 'build_model', 'build_runner',
           'describe', 'draw_prediction', 'load_checkpoint', 'load_model',
           'load_predictor', 'model_config', 'predict', 'prepare_device',
           'refusals_exit', 'task_of', 'toolbox_inferencer']
