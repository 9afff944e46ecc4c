from .presnet import PResNet
from .sparseswin import SparseSwin, SparseSwinDense
from .sparx import SparXMamba
from .sparx_swin import SparXSwin
from .spartan import SpaRTAN

__all__ = ['SparXMamba', 'SparXSwin', 'SpaRTAN', 'SparseSwin',
           'SparseSwinDense', 'PResNet']
