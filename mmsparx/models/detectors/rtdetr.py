"""RT-DETR as an mmdet detector: backbone -> HybridEncoder -> RTDETRHead."""
from mmdet.models.detectors import SingleStageDetector


class RTDETR(SingleStageDetector):
    """RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object
    Detection", CVPR 2024).

    mmdet's single-stage layout already is RT-DETR's: ``extract_feat`` runs
    the backbone (``PResNet`` or ``SpaRTAN``, strides 8/16/32) and the neck
    (``HybridEncoder``), and the head (``RTDETRHead``) owns the decoder,
    denoising, matching, losses and post-processing; ``_forward`` (FLOP
    counting, ``mode='tensor'``) returns the head's eval outputs dict.
    Nothing is overridden: only the name, so configs read like the paper.

    Notes for users:
        - Labels must be 0-based (mmdet's datasets map COCO category ids).
        - The official recipe trains with a total batch of 16; with fewer
          images set ``auto_scale_lr`` (base_batch_size=16).
        - The head works in normalised coordinates of each image's
          ``img_shape``; the recipe resizes every image to a square without
          padding, so it is also the network input frame.
    """
