from .sparx import SparXMamba

__all__ = ['SparXMamba']
