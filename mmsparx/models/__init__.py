"""mmsparx models. They depend on torch and mmengine only, so they import
on a machine that carries neither mmcv's compiled ops nor any toolbox."""
from mmsparx.models.backbones import (PResNet, SparseSwin, SparseSwinDense,
                                      SpaRTAN, SparXMamba, SparXSwin)
from mmsparx.models.losses import SparTaAttentionLoss

# Every class listed here is registered into each installed toolbox.
MODEL_CLASSES: list = [SparXMamba, SparXSwin, SpaRTAN, SparseSwin,
                       SparseSwinDense, PResNet, SparTaAttentionLoss]

# Subclasses of one toolbox's models: name -> (toolbox, 'module:Class'),
# registered in that toolbox only and imported when first built.
LAZY_MODEL_CLASSES: dict = {
    'SparseSwinClassifier': (
        'mmpretrain', 'mmsparx.models.classifiers.sparseswin:'
        'SparseSwinClassifier'),
    # RT-DETR (mmsparx.models.detectors): mmdet only.
    'RTDETR': ('mmdet', 'mmsparx.models.detectors.rtdetr:RTDETR'),
    'HybridEncoder': (
        'mmdet', 'mmsparx.models.necks.hybrid_encoder:HybridEncoder'),
    'RTDETRHead': (
        'mmdet', 'mmsparx.models.dense_heads.rtdetr_head:RTDETRHead'),
    'RTDETRVarifocalLoss': (
        'mmdet', 'mmsparx.models.losses.varifocal_loss:'
        'RTDETRVarifocalLoss'),
    'BatchSyncDiscreteResize': (
        'mmdet', 'mmsparx.models.data_preprocessors.'
        'batch_sync_discrete_resize:'
        'BatchSyncDiscreteResize'),
}
