from .sparx import SparXMamba
from .sparx_swin import SparXSwin

__all__ = ['SparXMamba', 'SparXSwin']
