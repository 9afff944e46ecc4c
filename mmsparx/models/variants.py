"""Named ImageNet classifiers (1000-class heads) for tables and benchmarks:
mmsparx's variants and the mmpretrain baselines they are compared with."""
from __future__ import annotations

from typing import Dict, Optional

from torch import nn

# name -> (backbone cfg, head in_channels, paper params, paper FLOPs @224)
VARIANTS: Dict[str, dict] = {
    'sparx-mamba-t': dict(
        backbone=dict(type='SparXMamba', arch='tiny', out_indices=(3, ),
                      out_norm='gn', drop_path_rate=0.2),
        in_channels=512, paper_params=27.1e6, paper_flops=5.25e9),
    'sparx-mamba-s': dict(
        backbone=dict(type='SparXMamba', arch='small', out_indices=(3, ),
                      out_norm='gn', drop_path_rate=0.3),
        in_channels=544, paper_params=47e6, paper_flops=9.26e9),
    'sparx-mamba-b': dict(
        backbone=dict(type='SparXMamba', arch='base', out_indices=(3, ),
                      out_norm='gn', drop_path_rate=0.5),
        in_channels=636, paper_params=84e6, paper_flops=15.90e9),
    'sparx-swin-t': dict(
        backbone=dict(type='SparXSwin', arch='tiny', out_indices=(3, ),
                      out_norm='gn', drop_path_rate=0.2),
        in_channels=576, paper_params=26e6, paper_flops=4.7e9),
    'sparx-swin-b': dict(
        backbone=dict(type='SparXSwin', arch='base', out_indices=(3, ),
                      out_norm='gn', drop_path_rate=0.5),
        in_channels=616, paper_params=88e6, paper_flops=16.2e9),
    # The authors' public setting with 100 classes (ImageNet-100); the
    # backbone averages its normalised tokens itself, so no neck. The paper's
    # 17.58 M is not this model (README); it gives no FLOPs.
    'sparseswin': dict(
        backbone=dict(type='SparseSwin', arch='tiny', drop_path_rate=0.2),
        in_channels=512, neck=None, num_classes=100, paper_params=17.58e6,
        paper_flops=None),
    # SpaRTAN: the authors' classifier has no final norm (out_norm=None).
    # paper_flops_at: the paper's figures at other input sizes.
    'spartan-xt': dict(
        backbone=dict(type='SpaRTAN', arch='xt', out_indices=(3, ),
                      out_norm=None, drop_path_rate=0.1),
        in_channels=192, paper_params=2.2e6, paper_flops=0.64e9,
        paper_flops_at={(256, 256): 0.83e9}),
    'spartan-t': dict(
        backbone=dict(type='SpaRTAN', arch='t', out_indices=(3, ),
                      out_norm=None, drop_path_rate=0.1),
        in_channels=256, paper_params=3.8e6, paper_flops=0.83e9,
        paper_flops_at={(256, 256): 1.08e9}),
}

BASELINES: Dict[str, dict] = {
    'swin-t': dict(backbone=dict(type='SwinTransformer', arch='tiny',
                                 img_size=224, drop_path_rate=0.2),
                   in_channels=768),
    # mmpretrain's ConvNeXt pools and norms inside the backbone: no neck.
    'convnext-t': dict(backbone=dict(type='ConvNeXt', arch='tiny',
                                     drop_path_rate=0.1),
                       in_channels=768, neck=None),
    'mobilenet-v2': dict(backbone=dict(type='MobileNetV2', widen_factor=1.0),
                         in_channels=1280),
    'resnet-18': dict(backbone=dict(type='ResNet', depth=18),
                      in_channels=512),
}


def model_names() -> list:
    return sorted(VARIANTS) + sorted(BASELINES)


def build_classifier(name: str, num_classes: Optional[int] = None
                     ) -> nn.Module:
    """An mmpretrain ``ImageClassifier`` (GAP neck, linear head) by name;
    ``num_classes`` defaults to the entry's (1000 unless it says)."""
    table = dict(VARIANTS, **BASELINES)
    if name not in table:
        raise KeyError(f'unknown model {name!r}; known: {model_names()}')
    entry = table[name]
    return build_image_classifier(
        entry['backbone'], entry['in_channels'],
        num_classes or entry.get('num_classes', 1000),
        entry.get('neck', dict(type='GlobalAveragePooling')))


def build_image_classifier(backbone: dict, in_channels: int,
                           num_classes: int,
                           neck: Optional[dict] = dict(
                               type='GlobalAveragePooling')) -> nn.Module:
    """mmpretrain's ``ImageClassifier`` around any backbone config, built
    in mmpretrain's scope whatever scope the caller is in."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(
            type='ImageClassifier', backbone=dict(backbone), neck=neck,
            head=dict(type='LinearClsHead', num_classes=num_classes,
                      in_channels=in_channels)))
