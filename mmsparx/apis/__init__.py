"""What the tools call: a model built from a config, a runner that trains
and tests with mmsparx's loading rules."""
from mmsparx.apis.model import load_model
from mmsparx.apis.runner import build_runner, prepare_device, refusals_exit

__all__ = ['build_runner', 'load_model', 'prepare_device', 'refusals_exit']
