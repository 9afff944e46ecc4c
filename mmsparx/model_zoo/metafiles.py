"""The metafiles (``configs/<family>/metafile.yml``, listed by the
top-level ``model-index.yml``, OpenMMLab's model-zoo format): one entry per
config with the paper's figures and metrics."""
from __future__ import annotations

import os.path as osp
from typing import Dict, List

import yaml

INDEX = 'model-index.yml'


def metafile_paths(root: str) -> List[str]:
    """The metafiles ``model-index.yml`` imports, relative to ``root``."""
    with open(osp.join(root, INDEX)) as f:
        return list(yaml.safe_load(f)['Import'])


def read_metafile(root: str, path: str) -> dict:
    with open(osp.join(root, path)) as f:
        return yaml.safe_load(f)


def write_metafile(root: str, path: str, content: dict) -> None:
    with open(osp.join(root, path), 'w') as f:
        yaml.safe_dump(content, f, sort_keys=False, width=79,
                       allow_unicode=True)


def entries_by_config(root: str) -> Dict[str, dict]:
    """Config path (relative to ``root``) -> its metafile entry."""
    out = {}
    for path in metafile_paths(root):
        for model in read_metafile(root, path)['Models']:
            if model['Config'] in out:
                raise ValueError(f'{model["Config"]} is listed twice in the '
                                 'metafiles')
            out[model['Config']] = model
    return out


def paper_figures(entry: dict) -> Dict[str, object]:
    """The paper's whole-model parameters and FLOPs (raw counts; None
    where the paper gives none)."""
    meta = entry.get('Metadata', {})
    return dict(paper_params=meta.get('Paper Parameters'),
                paper_flops=meta.get('Paper FLOPs'))
