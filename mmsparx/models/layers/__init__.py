"""The papers' layers: SS2D, DMCA, the SparX block, SpaRTAN's SMixer and
wave CMixer, SparseSwin's SparTa block, and shared bricks."""
from mmsparx.models.layers.common import ConvFFN, DropPath, GroupNorm, LayerNorm2d, LayerScale
from mmsparx.models.layers.conv_norm import ConvNormAct
from mmsparx.models.layers.dmca import DMCA
from mmsparx.models.layers.sparta import (SparseTokenConverter, SparTaAttention, SparTaBlock,
                     SparTaLayer, TokenToSpace)
from mmsparx.models.layers.sparx_block import SparXBlock
from mmsparx.models.layers.spartan import (ConvBNAct, SMixer, SpaRTANBlock, SqueezeExcite,
                      WaveCMixer)
from mmsparx.models.layers.ss2d import SS2D

__all__ = ['SS2D', 'DMCA', 'SparXBlock', 'ConvFFN', 'DropPath', 'GroupNorm',
           'LayerNorm2d', 'LayerScale', 'SMixer', 'WaveCMixer',
           'SpaRTANBlock', 'ConvBNAct', 'SqueezeExcite', 'SparseTokenConverter', 'SparTaAttention',
           'SparTaLayer', 'SparTaBlock', 'TokenToSpace', 'ConvNormAct']
