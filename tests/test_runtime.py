"""One config, two worlds: CPU adaptation of GPU configs."""
import copy

from mmengine.config import Config

from conftest import DEMO_SEG
from mmsparx.utils.runtime import adapt_cfg_to_device


def norm_types(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        if 'type' in node and str(node['type']).endswith('BN'):
            found.append(node['type'])
        for value in node.values():
            norm_types(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            norm_types(value, found)
    return found


def test_cpu_gets_gloo_bn_and_no_device_ids():
    cfg = Config.fromfile(DEMO_SEG)
    assert 'SyncBN' in norm_types(cfg.model)
    changes = adapt_cfg_to_device(cfg, distributed=True, cuda=False)
    assert set(norm_types(cfg.model)) == {'BN'}
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model_wrapper_cfg.broadcast_buffers is True
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert any('SyncBN -> BN' in c for c in changes)


def test_gpu_config_is_left_alone():
    cfg = Config.fromfile(DEMO_SEG)
    before = copy.deepcopy(cfg.to_dict())
    assert adapt_cfg_to_device(cfg, distributed=True, cuda=True) == []
    assert cfg.to_dict() == before


def test_single_process_cpu_keeps_the_wrapper_unset():
    cfg = Config.fromfile(DEMO_SEG)
    adapt_cfg_to_device(cfg, distributed=False, cuda=False)
    assert 'model_wrapper_cfg' not in cfg
    assert set(norm_types(cfg.model)) == {'BN'}
