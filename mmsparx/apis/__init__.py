"""What the tools call: a model built from a config and its weights
loaded whole, a runner that trains and tests with mmsparx's loading
rules."""
from mmsparx.apis.model import (build_model, load_checkpoint, load_model,
                                model_config)
from mmsparx.apis.runner import build_runner, prepare_device, refusals_exit

__all__ = ['build_model', 'build_runner', 'load_checkpoint', 'load_model',
           'model_config', 'prepare_device', 'refusals_exit']
