"""Make one config run on GPUs (nccl, SyncBN) and on CPUs (gloo, BN).

mmengine 0.10.7 assumes CUDA in three places when launched distributed:
``init_dist`` calls ``torch.cuda.set_device``, the DDP wrapper is given
``device_ids=[LOCAL_RANK]``, and SyncBN refuses CPU modules. The tools
call :func:`adapt_cfg_to_device` and :func:`init_cpu_dist` so the same
config file trains with ``tools/dist_train.sh CONFIG N`` on either machine.
"""
from __future__ import annotations

import os
from typing import Any, List

import torch


def _replace_sync_bn(node: Any, path: str, changes: List[str]) -> None:
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
            changes.append(f'{path}.type: {node["type"]} -> BN')
            node['type'] = 'BN'
        for key, value in node.items():
            _replace_sync_bn(value, f'{path}.{key}', changes)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _replace_sync_bn(value, f'{path}[{i}]', changes)


def adapt_cfg_to_device(cfg, distributed: bool,
                        cuda: bool | None = None) -> List[str]:
    """Edit ``cfg`` in place for a machine without CUDA; return the changes.

    On a CUDA machine nothing changes. Without CUDA: SyncBN becomes BN
    (rank 0's statistics are broadcast each step), the process-group
    backend becomes gloo, the DDP wrapper gets ``device_ids=None`` and
    ``sync_bn`` conversion is dropped.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    changes: List[str] = []
    if cuda:
        return changes
    _replace_sync_bn(cfg.get('model'), 'model', changes)
    if cfg.get('sync_bn'):
        changes.append(f'sync_bn: {cfg.sync_bn} -> None')
        cfg.sync_bn = None
    if distributed:
        env_cfg = cfg.setdefault('env_cfg', {})
        dist_cfg = env_cfg.setdefault('dist_cfg', {})
        if dist_cfg.get('backend', 'nccl') != 'gloo':
            changes.append(
                f"env_cfg.dist_cfg.backend: {dist_cfg.get('backend', 'nccl')}"
                ' -> gloo')
            dist_cfg['backend'] = 'gloo'
        wrapper = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None
        # Plain BN keeps statistics per rank; broadcasting rank 0's buffers
        # keeps every rank (and the saved checkpoint) on the same model.
        wrapper['broadcast_buffers'] = True
        cfg.model_wrapper_cfg = wrapper
        changes.append('model_wrapper_cfg: device_ids=None (CPU modules), '
                       'broadcast_buffers=True (BN statistics of rank 0)')
    return changes


def _slurm_env() -> None:
    """Fill torch's env:// variables from SLURM's, as mmengine does."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
    if 'MASTER_ADDR' not in os.environ:
        import subprocess
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')


def init_cpu_dist(launcher: str, backend: str = 'gloo') -> bool:
    """Start the process group without touching CUDA; True if started.

    Only acts when CUDA is absent: with GPUs mmengine's own ``init_dist``
    (which binds each rank to its device) is the right one.
    """
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available() or (
            dist.is_available() and dist.is_initialized()):
        return False
    if launcher == 'slurm':
        _slurm_env()
    elif launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} is not supported without '
                         'CUDA; use --launcher pytorch (tools/dist_train.sh)'
                         ' or slurm.')
    dist.init_process_group(backend=backend, init_method='env://')
    return True


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down.

    Left to interpreter exit, gloo's worker threads can outlive the group
    and abort the process ("terminate called without an active
    exception") after a run that finished fine.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
