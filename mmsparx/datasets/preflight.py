"""Before a launch: do the config's data and pretrained weights exist?

Run in the launching process (``tools/dist_train.sh`` through ``python -m
mmsparx.datasets preflight``, ``tools/train.py``, ``tools/test.py``), so a
missing dataset or ImageNet file stops within seconds with one paragraph
that says where it goes, instead of a traceback from inside a worker after
the launch. Only paths are looked at: no model, no dataset is built.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

TRAIN_SPLITS = ('train', 'val')
TEST_SPLITS = ('test', )
_IMAGENET_TYPES = ('ImageNet', 'ImageNet21k', 'CustomDataset')


@dataclass
class DatasetPaths:
    """What one dataset entry of a config needs on disk."""
    key: str                      # 'train_dataloader.dataset'
    family: str                   # 'COCO', 'ADE20K' or 'ImageNet'
    data_root: str
    # (relative name for the layout, full path, is a folder)
    needed: List[Tuple[str, str, bool]] = field(default_factory=list)


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def _prefix(prefix, *names: str) -> Optional[str]:
    if isinstance(prefix, str):
        return prefix
    if isinstance(prefix, dict):
        for name in names:
            if name in prefix:
                return prefix[name]
    return None


def _paths_of(key: str, ds: dict) -> Optional[DatasetPaths]:
    """The annotation files and image folders of a COCO, ADE20K or
    ImageNet style dataset entry; None for other datasets (CIFAR and the
    like download themselves)."""
    name = str(ds.get('type', '')).rsplit('.', 1)[-1]
    root = ds.get('data_root') or ''
    prefix = ds.get('data_prefix', '')
    ann_file = ds.get('ann_file') or ''
    if name in _IMAGENET_TYPES:
        # With ``split`` and no ann_file, meta/{split}.txt is optional
        # (without it the class folders are the labels).
        folder = _prefix(prefix, 'img_path', 'img') or ds.get('split') or ''
        paths = DatasetPaths(key, 'ImageNet', root)
        if ann_file:
            paths.needed.append((ann_file, _join(root, ann_file), False))
        paths.needed.append((folder or '.', _join(root, folder), True))
        return paths
    if isinstance(prefix, dict) and 'seg_map_path' in prefix:
        paths = DatasetPaths(key, 'ADE20K', root)
        if ann_file:
            paths.needed.append((ann_file, _join(root, ann_file), False))
        for part in ('img_path', 'seg_map_path'):
            paths.needed.append((prefix[part], _join(root, prefix[part]),
                                 True))
        return paths
    if 'Coco' in name or (isinstance(prefix, dict) and 'img' in prefix
                          and str(ann_file).endswith('.json')):
        paths = DatasetPaths(key, 'COCO', root)
        if ann_file:
            paths.needed.append((ann_file, _join(root, ann_file), False))
        img = _prefix(prefix, 'img') or ''
        paths.needed.append((img or '.', _join(root, img), True))
        return paths
    return None


def _datasets(node: dict, key: str) -> Iterator[Tuple[str, dict]]:
    """Each leaf dataset of a (wrapped or concatenated) dataset entry."""
    if isinstance(node.get('dataset'), dict):
        yield from _datasets(node['dataset'], f'{key}.dataset')
    elif isinstance(node.get('datasets'), (list, tuple)):
        for i, child in enumerate(node['datasets']):
            yield from _datasets(child, f'{key}.datasets.{i}')
    else:
        yield key, node


def dataset_paths(cfg, splits: Sequence[str]) -> List[DatasetPaths]:
    """The on-disk needs of the ``{split}_dataloader`` datasets of ``cfg``."""
    found = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not isinstance(loader, dict) or not isinstance(
                loader.get('dataset'), dict):
            continue
        for key, ds in _datasets(loader['dataset'],
                                 f'{split}_dataloader.dataset'):
            paths = _paths_of(key, ds)
            if paths is not None:
                found.append(paths)
    return found


def _evaluator_files(cfg, splits: Sequence[str]) -> Iterator[Tuple[str, str]]:
    """``(key, path)`` of the annotation files the evaluators read (COCO's
    ``CocoMetric`` opens its own ``ann_file`` when it is built)."""
    for split in splits:
        name = {'train': None}.get(split, f'{split}_evaluator')
        evaluator = cfg.get(name) if name else None
        entries = evaluator if isinstance(evaluator, (list, tuple)) else [
            evaluator]
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and entry.get('ann_file'):
                key = name if len(entries) == 1 else f'{name}.{i}'
                yield f'{key}.ann_file', entry['ann_file']


_FOLDER_NOTES = {'COCO': ('images', 'images'),
                 'ADE20K': ('images .jpg', 'label maps .png'),
                 'ImageNet': ('one folder of images per class', '')}


def _layout(family: str, root: str,
            needed: Sequence[Tuple[str, str, bool]]) -> str:
    """A small tree of the files and folders under ``root``."""
    names = sorted({(rel.rstrip('/') + ('/' if is_dir else ''))
                    for rel, _, is_dir in needed})
    images, labels = _FOLDER_NOTES[family]
    lines = [f'    {root.rstrip("/") or "."}/']
    for i, rel in enumerate(names):
        branch = '└──' if i == len(names) - 1 else '├──'
        note = '' if not rel.endswith('/') else (
            f'  ({labels})' if 'ann' in rel else f'  ({images})')
        lines.append(f'    {branch} {rel}{note}')
    return '\n'.join(lines)


def _placeholder(root: str) -> str:
    return '/path/to/' + (osp.basename(root.rstrip('/')) or 'dataset')


def check_data(cfg, splits: Sequence[str] = TRAIN_SPLITS,
               config: str = 'the config') -> Optional[str]:
    """One paragraph on what data ``cfg`` lacks for ``splits``, or None."""
    groups: Dict[Tuple[str, str], List[DatasetPaths]] = {}
    for paths in dataset_paths(cfg, splits):
        groups.setdefault((paths.family, paths.data_root), []).append(paths)
    evaluators = list(_evaluator_files(cfg, splits))
    missing: Dict[str, List[str]] = {}  # what is missing -> who needs it
    blocks = []
    for (family, root), entries in groups.items():
        gone = [(full, is_dir, p.key) for p in entries
                for _, full, is_dir in p.needed if not osp.exists(full)]
        prefix = _join(root, '')
        gone += [(path, False, key) for key, path in evaluators
                 if root and path.startswith(prefix) and
                 not osp.exists(path)]
        if not gone:
            continue
        if root and not osp.exists(root):
            what = f'the {family} data root {prefix}'
            missing.setdefault(what, []).extend(k for *_, k in gone)
        else:
            for full, is_dir, key in gone:
                what = f'{family} {"folder" if is_dir else "file"} {full}'
                missing.setdefault(what, []).append(key)
        needed = [n for p in entries for n in p.needed]
        blocks.append(_fix_for(cfg, family, root, needed))
    covered = {path for (_, root) in groups for _, path in evaluators
               if root and path.startswith(_join(root, ''))}
    for key, path in evaluators:
        if not osp.exists(path) and path not in covered:
            missing.setdefault(f'annotation file {path}', []).append(key)
    if not missing:
        return None
    listed = '; '.join(f'{what} (for {", ".join(dict.fromkeys(keys))})'
                       for what, keys in missing.items())
    return (f'{config}: the data is not where the config looks for it. '
            f'Missing: {listed} (relative paths are read from the current '
            f'directory, {os.getcwd()}). ' + ' '.join(blocks))


def _fix_for(cfg, family: str, root: str, needed) -> str:
    """The expected layout and the two ways to point the config at a
    dataset already on disk."""
    other = _placeholder(root)
    options = []
    for split in ('train', 'val', 'test'):
        for paths in dataset_paths(cfg, [split]):
            if paths.data_root == root:
                options.append(f'{paths.key}.data_root={other}/')
    prefix = _join(root, '')
    for key, path in _evaluator_files(cfg, ('val', 'test')):
        if root and path.startswith(prefix):
            options.append(f'{key}={other}/{path[len(prefix):]}')
    parent = osp.dirname(root.rstrip('/'))
    link = (f'mkdir -p {parent} && ' if parent else '') + \
        f'ln -s {other} {root.rstrip("/")}'
    overrides = ' '.join(dict.fromkeys(options))
    return (f'The {family} layout it expects:\n'
            f'{_layout(family, root, needed)}\n'
            f'A copy already on disk: link it with `{link}`, or point the '
            f'config at it with `--cfg-options {overrides}`.')


# Where each backbone family's pretrained weights come from: (README,
# what the file is, the command that converts a copy on disk, the command
# that fetches and converts the published file).
_WEIGHTS = {
    'SparXMamba': (
        'configs/sparx/README.md ("Weights")',
        "the authors' ImageNet file sparx_mamba_{arch}_in1k.pth",
        'python tools/model_converters/sparx_mamba.py '
        'sparx_mamba_{arch}_in1k.pth {dst}',
        'python tools/model_converters/download.py '
        'sparx_mamba_{arch}_in1k.pth --out {dst}'),
    'SparXSwin': (
        'configs/sparx/README.md ("Weights")',
        'no published weights: train the backbone with '
        'configs/sparx/sparx-swin-t_16xb128_in1k.py (or -b)', None, None),
    'SpaRTAN': (
        'configs/spartan/README.md',
        'no public SpaRTAN-XT/T weights: train them with '
        'configs/spartan/spartan-t_16xb128_in1k.py (or -xt), or take an '
        "authors' file",
        'python tools/model_converters/spartan.py AUTHORS.pth {dst}', None),
    'SparseSwin': (
        'configs/sparseswin/README.md',
        "torchvision's ImageNet Swin-T "
        '(https://download.pytorch.org/models/swin_t-704ceda3.pth), loaded '
        "as it is, or an authors' SparseSwin file",
        'python tools/model_converters/sparseswin.py AUTHORS.pt {dst}', None),
    'PResNet': (
        'configs/rtdetr/README.md',
        "the official ImageNet backbone (ResNet18_vd_pretrained_from_paddle"
        ".pth or the R34 one)",
        'python tools/model_converters/rtdetr.py '
        'ResNet18_vd_pretrained_from_paddle.pth {dst}', None),
}
_WEIGHTS['SparseSwinDense'] = _WEIGHTS['SparseSwin']
_ARCH_FILE = {'tiny': 'tiny', 't': 'tiny', 'small': 'small', 's': 'small',
              'base': 'base', 'b': 'base'}


def _is_local(path) -> bool:
    return isinstance(path, str) and bool(path) and '://' not in path


def _pretrained(node, key: str, owner: Optional[dict] = None
                ) -> Iterator[Tuple[str, str, Optional[dict]]]:
    """``(key, checkpoint, owning module cfg)`` of each Pretrained
    ``init_cfg`` below ``node``."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and 'checkpoint' in node:
            yield f'{key}.checkpoint', node['checkpoint'], owner
            return
        for name, value in node.items():
            inner = node if 'type' in node and name == 'init_cfg' else owner
            yield from _pretrained(value, f'{key}.{name}', inner)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained(value, f'{key}.{i}', owner)


def check_weights(cfg, config: str = 'the config') -> Optional[str]:
    """One paragraph on the local checkpoints that ``cfg`` starts from
    (``init_cfg`` Pretrained, ``load_from``) but that do not exist."""
    notes = []
    for key, path, owner in _pretrained(cfg.get('model'), 'model'):
        if not _is_local(path) or osp.exists(path):
            continue
        family = str((owner or {}).get('type', '')).rsplit('.', 1)[-1]
        readme, source, convert, fetch = _WEIGHTS.get(family, (None, ) * 4)
        arch = (owner or {}).get('arch')
        arch = _ARCH_FILE.get(arch, 'tiny') if isinstance(arch, str) \
            else 'tiny'
        text = (f'{key} is {path}, which does not exist (relative to '
                f'{os.getcwd()})')
        if readme:
            text += (f'. It holds the {family} ImageNet weights: '
                     f'{source.format(arch=arch)} (see {readme})')
        if fetch:
            text += (f'; fetch and convert it with '
                     f'`{fetch.format(arch=arch, dst=path)}`, convert a '
                     f'copy downloaded by hand with '
                     f'`{convert.format(arch=arch, dst=path)}`, or give the '
                     f'file (or its URL) itself with `--cfg-options '
                     f'{key}=/path/to/FILE`')
        elif convert:
            folder = osp.dirname(path)
            mkdir = f'mkdir -p {folder} && ' if folder else ''
            text += (f'; convert it once with `{mkdir}'
                     f'{convert.format(arch=arch, dst=path)}`, or give the '
                     f'downloaded file itself with `--cfg-options '
                     f'{key}=/path/to/FILE`')
        else:
            text += f'; give another file with `--cfg-options {key}=FILE`'
        owner_key = key.rsplit('.init_cfg', 1)[0]
        text += (f'. To train without them (from scratch, far lower '
                 f'accuracy): `--cfg-options {owner_key}.init_cfg=None`')
        notes.append(text)
    load_from = cfg.get('load_from')
    if _is_local(load_from) and not osp.exists(load_from):
        notes.append(f'load_from is {load_from}, which does not exist: give '
                     f'the checkpoint with `--cfg-options load_from=FILE`, '
                     f'or `load_from=None` to start from the init_cfg '
                     f'weights')
    if not notes:
        return None
    return f'{config}: pretrained weights missing: ' + '. '.join(notes) + '.'


def ensure_ready(cfg, config: str, splits: Sequence[str] = TRAIN_SPLITS,
                 weights: bool = True) -> None:
    """Print what is missing (data first, then weights) to stderr and exit
    with status 2; return quietly when everything is there."""
    problem = check_data(cfg, splits, config)
    if problem is None and weights:
        problem = check_weights(cfg, config)
    if problem is not None:
        print(problem, file=sys.stderr, flush=True)
        raise SystemExit(2)
