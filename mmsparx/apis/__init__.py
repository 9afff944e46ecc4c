"""What the tools call: a model built from a config and its weights
loaded whole, a runner that trains and tests with mmsparx's loading
rules."""
from mmsparx.apis.model import load_checkpoint, load_model
from mmsparx.apis.runner import build_runner, prepare_device, refusals_exit

__all__ = ['build_runner', 'load_checkpoint', 'load_model', 'prepare_device',
           'refusals_exit']
