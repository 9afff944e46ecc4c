"""Key converters from the authors' published checkpoints to mmsparx."""
from mmsparx.converters.sparseswin import (convert_sparseswin,
                                           to_official_layout)
from mmsparx.converters.rtdetr import convert_rtdetr, is_rtdetr_layout
from mmsparx.converters.spartan import convert_spartan, is_spartan_layout
from mmsparx.converters.sparx_mamba import (convert_sparx_mamba,
                                            is_official_layout)

__all__ = ['convert_sparx_mamba', 'is_official_layout', 'convert_spartan',
           'is_spartan_layout', 'convert_sparseswin', 'to_official_layout',
           'convert_rtdetr', 'is_rtdetr_layout']
