from .sparseswin import SparseSwin, SparseSwinDense
from .sparx import SparXMamba
from .sparx_swin import SparXSwin

__all__ = ['SparXMamba', 'SparXSwin']
__all__ += ['SparseSwin', 'SparseSwinDense']
