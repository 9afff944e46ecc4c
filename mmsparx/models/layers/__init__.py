"""The papers' layers: SS2D, DMCA, the SparX block, SpaRTAN's SMixer and
wave CMixer, SparseSwin's SparTa block, and shared bricks."""
from .common import ConvFFN, DropPath, GroupNorm, LayerNorm2d, LayerScale
from .conv_norm import ConvNormAct
from .dmca import DMCA
from .sparta import (SparseTokenConverter, SparTaAttention, SparTaBlock,
                     SparTaLayer, TokenToSpace)
from .sparx_block import SparXBlock
from .spartan import (ConvBNAct, SMixer, SpaRTANBlock, SqueezeExcite,
                      WaveCMixer)
from .ss2d import SS2D

__all__ = ['SS2D', 'DMCA', 'SparXBlock', 'ConvFFN', 'DropPath', 'GroupNorm',
           'LayerNorm2d', 'LayerScale', 'SMixer', 'WaveCMixer',
           'SpaRTANBlock', 'ConvBNAct', 'SqueezeExcite', 'SparseTokenConverter', 'SparTaAttention',
           'SparTaLayer', 'SparTaBlock', 'TokenToSpace', 'ConvNormAct']
