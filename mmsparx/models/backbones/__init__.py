from mmsparx.models.backbones.presnet import PResNet
from mmsparx.models.backbones.sparseswin import SparseSwin, SparseSwinDense
from mmsparx.models.backbones.sparx import SparXMamba
from mmsparx.models.backbones.sparx_swin import SparXSwin
from mmsparx.models.backbones.spartan import SpaRTAN

__all__ = ['SparXMamba', 'SparXSwin', 'SpaRTAN', 'SparseSwin',
           'SparseSwinDense', 'PResNet']
