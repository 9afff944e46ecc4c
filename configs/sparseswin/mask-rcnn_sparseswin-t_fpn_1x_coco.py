# Mask R-CNN + FPN with SparseSwinDense-T, 1x schedule (mmdet's Swin-T
# recipe): AdamW 1e-4, wd 0.05, no decay on norms and
# relative position tables, 1000-iter warm-up, 12 epochs with steps [8, 11],
# batch 2 x 8 GPUs, 1333x800, drop path 0.2. Outputs: strides 4, 8, 16, 32
# with 96, 192, 384, 512 channels; the stride-32 map is the SparTa tokens
# read back into space (SparseSwinDense docstring). The paper has no
# detection results.
# Backbone weights: torchvision's ImageNet-1k Swin-T for stages 1-3
# (https://download.pytorch.org/models/swin_t-704ceda3.pth), the SparTa block
# and the token-to-space layer from scratch; or a SparseSwin classifier
# checkpoint (configs/sparseswin/sparseswin-t_1xb22_in100.py, or the authors' file)
# to start the SparTa block from it too.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

# mmsparx.datasets.CheckedCocoDataset: mmdet's CocoDataset that names each
# box it drops or clips and each broken image (README, "Data checks").
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))

pretrained = 'checkpoints/swin_t-704ceda3.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SparseSwinDense',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        'relative_position_bias_table': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
