"""The SparX-Mamba configs' recipes, and the 3x config trained with
tools/dist_train.sh. (Every config trains one iteration and evaluates in
test_config_matrix.py.)"""
import os.path as osp

from mmengine.config import Config

from conftest import ROOT

# The generated 160x128 images at 64x51 (padded to 64x64).
SMALL_DET = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
SMALL_TEST = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                          'img_shape', 'scale_factor')),
]


def test_configs_name_the_recipe():
    one = Config.fromfile(osp.join(ROOT, 'configs', 'maskrcnn_sparx_t_1x.py'))
    three = Config.fromfile(osp.join(ROOT, 'configs',
                                     'maskrcnn_sparx_t_3x.py'))
    assert one.model.neck.in_channels == [96, 192, 320, 512]
    assert one.optim_wrapper.optimizer.lr == 1e-4
    assert one.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    assert one.param_scheduler[1].milestones == [8, 11]
    assert three.train_cfg.max_epochs == 36
    assert three.param_scheduler[1].milestones == [27, 33]


def test_maskrcnn_sparx_t_3x_dist_train_two_processes(coco_root, tmp_path):
    """The 3x config, unchanged but for data, image size, batch (one image
    per process), boxes kept at validation and checkpoint writing (off),
    trains with tools/dist_train.sh on 2 CPU processes (gloo) and
    validates."""
    import glob

    from conftest import free_port, run_tool
    config = tmp_path / 'small.py'
    ann = osp.join(coco_root, 'annotations', 'instances_{}.json')
    config.write_text(f"""
_base_ = [{osp.join(ROOT, 'configs', 'maskrcnn_sparx_t_3x.py')!r}]
classes = ('rectangle', 'ellipse', 'triangle')
model = dict(backbone=dict(init_cfg=None),
             roi_head=dict(bbox_head=dict(num_classes=3),
                           mask_head=dict(num_classes=3)),
             test_cfg=dict(rpn=dict(max_per_img=100),
                           rcnn=dict(max_per_img=20)))
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(
    data_root={coco_root + '/'!r}, ann_file='annotations/instances_train.json',
    data_prefix=dict(img='train/'), metainfo=dict(classes=classes),
    indices=2, pipeline={SMALL_DET!r}))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(
    data_root={coco_root + '/'!r}, ann_file='annotations/instances_val.json',
    data_prefix=dict(img='val/'), metainfo=dict(classes=classes),
    pipeline={SMALL_TEST!r}))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={ann.format('val')!r})
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1)
default_hooks = dict(checkpoint=dict(interval=-1, save_last=False,
                                     save_best=None))
""")
    # The launcher's data check is skipped (MMSPARX_PREFLIGHT=0): it has
    # its own tests (test_preflight.py, and test_training.py's
    # dist_train.sh run); the two training processes are the point here.
    result = run_tool(['bash', 'tools/dist_train.sh', str(config), '2',
                       '--work-dir', str(tmp_path / 'work')],
                      env={'PORT': str(free_port()),
                           'MMSPARX_PREFLIGHT': '0'})
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    log = open(glob.glob(str(tmp_path / 'work' / '*' / '*.log'))[0]).read()
    # 2 images, 1 per rank: 1 iteration.
    assert 'GPU number: 2' in log and 'Epoch(train) [1][1/1]' in log
    assert 'coco/segm_mAP' in log
