# UperNet with SpaRTAN-T on ADE20K, 160k iterations (mmseg's Swin-T UperNet
# recipe): AdamW 6e-5, wd 0.01 (none on norms), 1500-iter linear warm-up
# from 1e-6, poly decay (power 1.0), batch 2 x 8 GPUs, 512x512 crops;
# UPerHead 512 channels, pool scales (1, 2, 3, 6), auxiliary FCNHead on
# stage 3 with weight 0.4. Beyond the paper: segmentation is the question
# its authors leave open.
# The backbone's BatchNorms are converted to SyncBN when training on
# several GPUs (sync_bn='torch', as mmseg trains its BN backbones); on a
# CPU-only machine the tools drop that and log it.
# ImageNet weights: see configs/spartan/mask-rcnn_spartan-t_fpn_1x_coco.py.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
pretrained = 'checkpoints/spartan_t_in1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SpaRTAN',
        arch='t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        out_norm='ln',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[32, 64, 128, 256], num_classes=150),
    auxiliary_head=dict(in_channels=128, num_classes=150))
sync_bn = 'torch'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
         by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
