"""The suite's optimizer patch (conftest.linear_param_group_check, on in
every test) builds the groups torch builds and refuses what torch
refuses, with torch's messages."""
from typing import Callable

import pytest
import torch
from torch import nn

import conftest


def outcome(monkeypatch, add: Callable, make: Callable):
    """``make()``'s groups (each parameter as its ``id``, so that equal
    means the same tensors) or its error, with ``add`` as
    ``Optimizer.add_param_group``."""
    monkeypatch.setattr(torch.optim.Optimizer, 'add_param_group', add)
    try:
        optimizer = make()
    except (TypeError, ValueError) as err:
        return type(err), str(err)
    return [{k: ([id(p) for p in v] if k == 'params' else v)
             for k, v in group.items()} for group in optimizer.param_groups]


MODEL = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
PARAMS = list(MODEL.parameters())


def one_group_each():  # mmengine's constructor: a group per parameter
    return torch.optim.AdamW([dict(params=[p], lr=0.1 * i)
                              for i, p in enumerate(PARAMS)], lr=1e-3)


def then_more():
    optimizer = torch.optim.SGD([dict(params=PARAMS[:2])], lr=0.1)
    optimizer.add_param_group(dict(params=PARAMS[2:], momentum=0.9))
    return optimizer


def twice():
    return torch.optim.SGD([dict(params=PARAMS[:3]),
                            dict(params=PARAMS[2:])], lr=0.1)


def after_load():
    """A group list replaced by load_state_dict still counts."""
    optimizer = torch.optim.SGD([dict(params=PARAMS[:2])], lr=0.1)
    optimizer.load_state_dict(optimizer.state_dict())
    optimizer.add_param_group(dict(params=PARAMS[1:3]))
    return optimizer


def names_mixed():
    named = list(MODEL.named_parameters())
    optimizer = torch.optim.SGD([dict(params=named[:2])], lr=0.1)
    optimizer.add_param_group(dict(params=PARAMS[2:]))
    return optimizer


def not_a_dict():
    optimizer = torch.optim.SGD(PARAMS[:1], lr=0.1)
    optimizer.add_param_group(PARAMS[1:])
    return optimizer


@pytest.mark.parametrize('make', [one_group_each, then_more, twice,
                                  after_load, names_mixed, not_a_dict])
def test_patched_check_is_torchs(monkeypatch, make):
    patched = torch.optim.Optimizer.add_param_group
    assert patched is not conftest.TORCH_ADD_PARAM_GROUP  # the patch is on
    got = outcome(monkeypatch, patched, make)
    assert got == outcome(monkeypatch, conftest.TORCH_ADD_PARAM_GROUP, make)
    refused = make in (twice, after_load, names_mixed, not_a_dict)
    assert isinstance(got, tuple) is refused
