"""RT-DETR (Zhao et al., CVPR 2024) as mmdet 3.x parts, one module a file.

The detector is mmdet's single-stage layout: backbone (``PResNet`` or
``SpaRTAN``) -> neck (``HybridEncoder``: AIFI + CCFM) -> head
(``RTDETRHead``: query selection, contrastive denoising, deformable
decoder, Hungarian-matched losses, top-k post-processing without NMS).
These modules need mmdet and mmcv's ops, so they are registered into
mmdet's ``MODELS`` lazily (``mmsparx.models.LAZY_MODEL_CLASSES``) and
imported when a config first builds one.
"""
