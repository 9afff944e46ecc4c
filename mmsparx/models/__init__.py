"""mmsparx models. They depend on torch and mmengine only, so they import
on a machine that carries neither mmcv's compiled ops nor any toolbox."""
from .backbones import SpaRTAN, SparXMamba, SparXSwin

# Every class listed here is registered into each installed toolbox.
MODEL_CLASSES: list = [SparXMamba, SparXSwin, SpaRTAN]
