# SparseSwin-T classifier as the authors' code trains it: Swin-T
# stages 1-3 start from torchvision's ImageNet-1k Swin-T, the SparTa block
# (49 tokens x 512, 2 layers, 16 heads, qkv bias) from scratch; head LN ->
# mean over tokens -> linear. The attention regulariser is a loss term of
# SparseSwinClassifier (logged as loss_attn_reg).
# Weights: https://download.pytorch.org/models/swin_t-704ceda3.pth
# (torchvision's Swin_T_Weights.IMAGENET1K_V1; it loads as it is, its stage 4
# and head reported unused). A SparseSwin file (mmsparx or the authors')
# works too.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/swin_t-704ceda3.pth'
model = dict(
    type='SparseSwinClassifier',
    backbone=dict(
        type='SparseSwin', arch='tiny', img_size=224, drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=None,  # the backbone averages its normalised tokens
    head=dict(type='LinearClsHead', num_classes=100, in_channels=512,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    attn_reg=dict(type='SparTaAttentionLoss', mode='l2', loss_weight=1e-4))

# The authors normalise with ImageNet statistics for every dataset.
data_preprocessor = dict(
    num_classes=100,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=1,
                                     max_keep_ckpts=3, save_best='auto'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
