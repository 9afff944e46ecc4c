"""One image through a model: the image demo's pictures for detection,
segmentation and classification, the toolboxes' Inferencers held against
``mmsparx.apis.inference`` on the same file and weights, the two Python
examples, and the demo's refusals.

Small models at small sizes: the Mask R-CNN demo config at 128x160, the
SparX FPN segmentor and the SparX-Mamba classifier with a small arch
(the RT-DETR demo's), the classifier cropping to 64."""
from __future__ import annotations

import importlib.util
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_tool

CONFIGS = {
    'detection': 'configs/demo/maskrcnn_sparx_small_fpn_shapes.py',
    'segmentation': 'configs/sparx/fpn_sparx-mamba-t_4xb4-80k_ade20k-'
                    '512x512.py',
    'classification': 'configs/sparx/sparx-mamba-t_16xb128_in1k.py',
}
# The small SparX-Mamba of configs/demo/rtdetr_sparx_shapes.py.
SMALL_ARCH = dict(depths=(1, 1, 3, 1), channels=(48, 96, 192, 288),
                  stem='v1', strides=(1, 1, 2, 1),
                  ganglion_start=(None, 1, 0, 0))
H, W = 128, 160  # the test image; detection and segmentation keep it


def options(task: str) -> dict:
    """Config overrides for a small, fast model of ``task`` (a new dict
    each time: merging consumes the ``_delete_`` keys)."""
    pipeline = 'test_dataloader.dataset.pipeline'
    if task == 'detection':
        return {f'{pipeline}.1.scale': (W, H)}
    small = {'model.backbone.arch': dict(SMALL_ARCH, _delete_=True),
             'model.backbone.init_cfg': None}
    if task == 'segmentation':
        return dict(small, **{'model.neck.in_channels': [48, 96, 192, 288],
                              f'{pipeline}.1.scale': (W, H)})
    return dict(small, **{'model.head.in_channels': 288,
                          f'{pipeline}.1.scale': 72,
                          f'{pipeline}.2.crop_size': 64})


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """``config(task)``: the task's config with :func:`options` merged,
    written to a file (what a user's small config would be)."""
    from mmengine.config import Config
    folder = tmp_path_factory.mktemp('configs')
    written = {}

    def write(task: str) -> str:
        if task not in written:
            cfg = Config.fromfile(osp.join(ROOT, CONFIGS[task]))
            cfg.merge_from_dict(options(task))
            written[task] = str(folder / f'{task}.py')
            cfg.dump(written[task])
        return written[task]
    return write


def load_script(name: str):
    """A demo/ script as a module, to call its main() in this process."""
    spec = importlib.util.spec_from_file_location(
        f'demo_{name}', osp.join(ROOT, 'demo', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def image(tmp_path_factory) -> str:
    """A smooth gradient with a rectangle and an ellipse (PNG, HxW)."""
    import cv2
    ramp = np.linspace(60, 190, W)[None, :, None]
    pixels = np.broadcast_to(ramp + np.array([0, 20, 40]), (H, W, 3))
    pixels = pixels.astype(np.uint8).copy()
    cv2.rectangle(pixels, (20, 30), (70, 100), (40, 180, 40), -1)
    cv2.ellipse(pixels, (115, 60), (30, 20), 0, 0, 360, (200, 60, 30), -1)
    path = str(tmp_path_factory.mktemp('image') / 'image.png')
    cv2.imwrite(path, pixels)
    return path


@pytest.fixture(scope='module')
def weights(tmp_path_factory, config):
    """``weights(task)``: (checkpoint with the class names, as
    tools/train.py saves, and the same weights as a bare state dict)."""
    from mmsparx.apis import load_model
    from mmsparx.apis.inference import dataset_meta
    from mmsparx.deploy import restored_default_scope
    made = {}

    def make(task: str):
        if task not in made:
            folder = tmp_path_factory.mktemp(task)
            torch.manual_seed(0)
            with restored_default_scope():
                model, _, cfg = load_model(config(task))
                meta, _ = dataset_meta(cfg, {})
            state = model.state_dict()
            full, bare = str(folder / 'full.pth'), str(folder / 'bare.pth')
            torch.save(dict(meta=dict(dataset_meta=meta), state_dict=state),
                       full)
            torch.save(state, bare)
            made[task] = full, bare
        return made[task]
    return make


def ours(config: str, checkpoint: str, image: str):
    """(predictor, data sample) of ``mmsparx.apis.inference``."""
    from mmsparx.apis import load_predictor, predict
    predictor = load_predictor(config, checkpoint)
    return predictor, predict(predictor, image)


def read(path: str) -> np.ndarray:
    import cv2
    assert osp.isfile(path), path
    return cv2.imread(path, cv2.IMREAD_COLOR)


def test_detection_demo_cli(config, image, weights, tmp_path):
    """The CLI (one subprocess): a PNG of the image's size with the
    boxes it prints drawn in the classes' colours."""
    from mmsparx.visualization.drawing import class_colours
    checkpoint, _ = weights('detection')
    out = str(tmp_path / 'det.png')
    result = run_tool([sys.executable, 'demo/image_demo.py',
                       config('detection'), checkpoint, image, '--out', out,
                       '--score-thr', '0.3'],
                      env=dict(OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    picture, original = read(out), read(image)
    assert picture.shape == original.shape
    rows = re.findall(r'^  (\w+) \((\d+)\) ([\d.]+) \[([^\]]+)\]$',
                      result.stdout, re.M)
    count = int(re.search(r'(\d+) detections with score >= 0.3, mask',
                          result.stdout).group(1))
    assert count == len(rows) > 0, result.stdout
    predictor, sample = ours(config('detection'), checkpoint, image)
    pred = sample.pred_instances[sample.pred_instances.scores >= 0.3]
    assert [int(r[1]) for r in rows] == pred.labels.tolist()
    np.testing.assert_allclose([float(r[2]) for r in rows],
                               pred.scores.numpy(), atol=1e-4)
    # The strongest box is drawn last: its left and right sides (below
    # its label) are its class colour.
    name, label, _, box = rows[0]
    assert name == predictor.classes[int(label)]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box.split(', '))
    colour = class_colours(3, predictor.palette)[int(label)]
    sides = np.concatenate([picture[y1 + 12:y2, x] for x in (x1, x2)
                            if 0 <= x < W])
    assert len(sides) and (sides == colour).all(-1).mean() > 0.9
    assert (picture != original).any(-1).sum() > 0


def test_segmentation_demo(config, image, weights, tmp_path, capsys):
    """The class map blended over the image (half each, checked below the
    legend), the classes printed by their share of the map."""
    from mmsparx.visualization.drawing import class_colours
    from mmsparx.visualization.predictions import SEG_ALPHA
    checkpoint, _ = weights('segmentation')
    out = str(tmp_path / 'seg.png')
    demo = load_script('image_demo')
    assert demo.main([config('segmentation'), checkpoint, image, '--out',
                      out]) == 0
    printed = capsys.readouterr().out
    predictor, sample = ours(config('segmentation'), checkpoint, image)
    seg = sample.pred_sem_seg.data[0].numpy()
    picture, original = read(out), read(image)
    assert picture.shape == original.shape
    labels, counts = np.unique(seg, return_counts=True)
    top = int(labels[counts.argmax()])
    assert f'  {predictor.classes[top]} ({top}) ' in printed
    assert 'class names from the checkpoint' in printed
    colours = np.array(class_colours(150, predictor.palette), float)
    want = (1 - SEG_ALPHA) * original + SEG_ALPHA * colours[seg]
    below = slice(H - 16, H)  # the legend holds at most 9 short lines
    assert np.abs(picture[below] - want[below]).max() <= 1


def test_classification_demo_top5(config, image, weights, tmp_path,
                                  capsys):
    """The printed top-5 is the model's (mmpretrain's Inferencer on the
    same file and weights); it is written over the top of the picture,
    the rest of the image untouched."""
    from mmpretrain.apis import ImageClassificationInferencer
    checkpoint, _ = weights('classification')
    out = str(tmp_path / 'cls.png')
    demo = load_script('image_demo')
    assert demo.main([config('classification'), checkpoint, image, '--out',
                      out, '--topk', '5']) == 0
    printed = capsys.readouterr().out
    rows = re.findall(r'^  (\d)\. (.+) \((\d+)\) ([\d.]+)$', printed, re.M)
    theirs = ImageClassificationInferencer(config('classification'),
                                           pretrained=checkpoint,
                                           device='cpu')(image)[0]
    scores = torch.from_numpy(theirs['pred_scores'])
    values, indices = scores.topk(5)
    assert [int(r[2]) for r in rows] == indices.tolist()
    np.testing.assert_allclose([float(r[3]) for r in rows], values.numpy(),
                               atol=1e-5)
    assert rows[0][1] == theirs['pred_class']
    picture, original = read(out), read(image)
    assert picture.shape == original.shape
    assert (picture[:5] != original[:5]).any()
    assert (picture[-40:] == original[-40:]).all()


def test_inferencers_agree_with_ours(config, image, weights):
    """DetInferencer, MMSegInferencer and ImageClassificationInferencer,
    given our config and a tools/train.py-style checkpoint, answer as
    ``mmsparx.apis.inference`` does."""
    from mmdet.apis import DetInferencer
    from mmengine.registry import init_default_scope
    from mmpretrain.apis import ImageClassificationInferencer
    from mmseg.apis import MMSegInferencer
    for task in CONFIGS:
        checkpoint, _ = weights(task)
        cfg = config(task)
        if task == 'detection':
            theirs = DetInferencer(cfg, checkpoint, device='cpu',
                                   show_progress=False)(
                image, return_datasamples=True)['predictions'][0]
        elif task == 'segmentation':
            theirs = MMSegInferencer(cfg, checkpoint, device='cpu')(
                image, return_datasamples=True)
        else:
            # It builds its pipeline in the current default scope (here
            # the last Inferencer's): a process of one toolbox has none.
            init_default_scope('mmpretrain')
            theirs = ImageClassificationInferencer(
                cfg, pretrained=checkpoint, device='cpu')(image)[0]
        _, sample = ours(cfg, checkpoint, image)
        assert_same(task, sample, theirs)


def assert_same(task: str, sample, theirs) -> None:
    """Equal answers: the same boxes and labels, maps, probabilities."""
    if task == 'detection':
        a, b = sample.pred_instances, theirs.pred_instances
        assert a.labels.tolist() == b.labels.tolist()
        torch.testing.assert_close(a.bboxes, b.bboxes, atol=1e-4, rtol=0)
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
        assert torch.equal(a.masks, b.masks)
    elif task == 'segmentation':
        torch.testing.assert_close(sample.seg_logits.data,
                                   theirs.seg_logits.data, atol=1e-5,
                                   rtol=0)
        assert torch.equal(sample.pred_sem_seg.data,
                           theirs.pred_sem_seg.data)
    else:
        scores = theirs['pred_scores'] if isinstance(theirs, dict) else \
            theirs.pred_score.numpy()
        np.testing.assert_allclose(sample.pred_score.numpy(), scores,
                                   atol=1e-5)


@pytest.mark.parametrize('task,first', [('detection', 'rectangle'),
                                        ('segmentation', 'wall'),
                                        ('classification', 'tench, Tinca '
                                         'tinca')])
def test_toolbox_inferencer_names_a_bare_file(task, first, config, image,
                                              weights):
    """A file without class names (a converted or hand-saved state dict):
    the toolbox's Inferencer from ``toolbox_inferencer`` carries the
    config's dataset names (the Inferencer alone would use COCO's or
    Cityscapes'), loads the weights whole, and answers as ours."""
    from mmsparx.apis import toolbox_inferencer
    full, bare = weights(task)
    inferencer = toolbox_inferencer(config(task), bare, 'cpu')
    if task == 'classification':
        names = inferencer.classes
        theirs = inferencer(image)[0]
    else:
        names = inferencer.model.dataset_meta['classes']
        assert inferencer.visualizer.dataset_meta['classes'] == names
        assert len(inferencer.visualizer.dataset_meta['palette']) == \
            len(names)
        theirs = inferencer(image, return_datasamples=True)
        if task == 'detection':
            theirs = theirs['predictions'][0]
    assert names[0] == first
    _, sample = ours(config(task), full, image)
    assert_same(task, sample, theirs)


def test_demo_refusals(config, image, weights, tmp_path, capsys):
    """One paragraph and exit status 2 for each bad input; 'none' runs the
    random initial weights."""
    demo = load_script('image_demo')
    seg_checkpoint, _ = weights('segmentation')
    out = str(tmp_path / 'out.png')
    not_toolbox = tmp_path / 'plain.py'
    not_toolbox.write_text("model = dict(type='Nothing')\n")
    cases = [
        ([config('detection'), 'none', str(tmp_path / 'no.png'), '--out',
          out], 'no.png is missing'),
        ([str(tmp_path / 'no_config.py'), 'none', image, '--out', out],
         'no_config.py does not exist'),
        ([config('detection'), str(tmp_path / 'no.pth'), image, '--out',
          out], "no.pth does not exist: give the trained model"),
        ([str(not_toolbox), 'none', image, '--out', out],
         'not one of mmdet / mmseg / mmpretrain'),
        ([config('classification'), seg_checkpoint, image, '--out', out,
          ], 'does not fit the model'),
        ([config('classification'), 'none', image, '--out',
          str(tmp_path / 'out.unknown')], 'writes no such file type'),
    ]
    capsys.readouterr()
    for argv, message in cases:
        assert demo.main(argv) == 2, argv
        # One line (after what the model's build may warn about).
        last = capsys.readouterr().err.rstrip('\n').split('\n')[-1]
        assert last.startswith('image_demo.py: error: ') and message in last
    assert not osp.exists(out)
    assert demo.main([config('classification'), 'none', image, '--out',
                      out]) == 0
    assert 'weights none (random weights)' in capsys.readouterr().out
    assert read(out).shape == (H, W, 3)


def test_backbone_features_example(capsys):
    """The printed shapes are the model's outputs: SparX-Mamba-T's widths
    at strides 4 to 32 of 224."""
    from mmsparx.archs.sparx import ARCH_SETTINGS
    shapes = load_script('backbone_features').main()
    printed = [tuple(int(v) for v in m.split(', ')) for m in re.findall(
        r'stage \d: \(([\d, ]+)\)', capsys.readouterr().out)]
    assert printed == shapes
    assert shapes == [(1, c, 224 // s, 224 // s) for c, s in zip(
        ARCH_SETTINGS['tiny']['channels'], (4, 8, 16, 32))]


def test_detect_image_example(config, image, weights, capsys):
    """The example prints the detector's answer above the threshold."""
    checkpoint, _ = weights('detection')
    found = load_script('detect_image').main(
        [image, '--config', config('detection'), '--checkpoint', checkpoint,
         '--score-thr', '0.3'])
    _, sample = ours(config('detection'), checkpoint, image)
    pred = sample.pred_instances[sample.pred_instances.scores >= 0.3]
    assert len(found) == len(pred) > 0
    np.testing.assert_allclose([f[2] for f in found], pred.bboxes.numpy(),
                               atol=1e-4)
    assert f'{len(found)} detections with score >= 0.3' in \
        capsys.readouterr().out
