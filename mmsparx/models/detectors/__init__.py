"""RT-DETR (Zhao et al., CVPR 2024) as mmdet 3.x parts.

The detector is mmdet's single-stage layout: backbone (``PResNet`` or
``SpaRTAN``) -> neck (``HybridEncoder`` in :mod:`mmsparx.models.necks`:
AIFI + CCFM) -> head (``RTDETRHead`` in :mod:`mmsparx.models.dense_heads`:
query selection, contrastive denoising, deformable decoder, Hungarian-
matched losses, top-k post-processing without NMS); its transformer layers
live in :mod:`mmsparx.models.layers.transformer`. These modules need mmdet
and mmcv's ops, so they are registered into mmdet's ``MODELS`` lazily
(``mmsparx.models.LAZY_MODEL_CLASSES``) and imported when a config first
builds one.
"""
