"""The papers' layers: SS2D, DMCA, the SparX block, SpaRTAN's SMixer and
wave CMixer, SparseSwin's SparTa block, and the bricks they share (one file
a job: activations, norms, 1x1 and depthwise convolutions, conv-norm-act,
residual bricks, FFN). RT-DETR's parts (need mmcv) are imported only by
the modules that build them: ``csp_rep_layer`` and ``transformer/``."""
from mmsparx.models.layers.activations import build_activation
from mmsparx.models.layers.bricks import DropPath, LayerScale
from mmsparx.models.layers.conv_norm import ConvNormAct
from mmsparx.models.layers.depthwise import DepthwiseConv
from mmsparx.models.layers.dmca import DMCA
from mmsparx.models.layers.ffn import ConvFFN
from mmsparx.models.layers.norms import GroupNorm, LayerNorm2d
from mmsparx.models.layers.pointwise import PointwiseConv
from mmsparx.models.layers.sparta import (SparseTokenConverter,
                                          SparTaAttention, SparTaBlock,
                                          SparTaLayer, TokenToSpace)
from mmsparx.models.layers.sparx_block import SparXBlock
from mmsparx.models.layers.spartan import (SMixer, SpaRTANBlock,
                                           SqueezeExcite, WaveCMixer)
from mmsparx.models.layers.ss2d import SS2D

__all__ = ['SS2D', 'DMCA', 'SparXBlock', 'ConvFFN', 'DropPath', 'GroupNorm',
           'LayerNorm2d', 'LayerScale', 'SMixer', 'WaveCMixer',
           'SpaRTANBlock', 'SqueezeExcite', 'SparseTokenConverter',
           'SparTaAttention', 'SparTaLayer', 'SparTaBlock', 'TokenToSpace',
           'ConvNormAct', 'DepthwiseConv', 'PointwiseConv',
           'build_activation']
