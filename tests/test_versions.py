"""The version check ``import mmsparx`` runs (mmsparx/utils/versions.py):
torch or mmengine out of range stops the import with one line naming the
package, its version, the range and the fix; a toolbox that is too old
is left out of the registration with one warning line. Versions are
monkeypatched in this process (nothing is reinstalled)."""
import warnings

import mmengine
import pytest
import torch

from mmsparx import registry
from mmsparx.utils import versions
from mmsparx.utils.versions import (MINIMUMS, VersionError, VersionWarning,
                                    in_range, outdated_toolboxes, release,
                                    require_core_versions)


def entry(package: str) -> dict:
    found, = [e for e in MINIMUMS if e['package'] == package]
    return found


def test_versions_here_pass():
    require_core_versions()
    with warnings.catch_warnings():
        warnings.simplefilter('error', VersionWarning)
        assert outdated_toolboxes() == {}


def test_too_old_torch_is_one_line_naming_it_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch, '__version__', '2.3.0')
    with pytest.raises(VersionError) as info:
        require_core_versions()
    assert isinstance(info.value, ImportError)
    minimum = entry('torch')['minimum']
    assert minimum == '2.4'  # torch.library.custom_op is new in 2.4
    assert str(info.value) == (
        f'mmsparx: torch 2.3.0 is older than {minimum}, the oldest mmsparx '
        f'works with ({entry("torch")["why"]}). Install a version in '
        f"range: pip install 'torch>={minimum}'")
    assert '\n' not in str(info.value)


def test_mmengine_past_the_upper_bound(monkeypatch):
    below = entry('mmengine')['below']
    monkeypatch.setattr(mmengine, '__version__', f'{below}.0')
    with pytest.raises(VersionError, match=(
            f'mmengine {below}.0 is {below} or newer, which mmsparx does '
            'not support yet')) as info:
        require_core_versions()
    minimum = entry('mmengine')['minimum']
    assert str(info.value).endswith(
        f"pip install 'mmengine>={minimum},<{below}'")


def test_missing_core_package_says_install_it():
    message = versions.problem(entry('torch'), None)
    assert message.endswith("it is not installed. Install it: pip install "
                            "'torch>=2.4'")


def test_too_old_toolbox_warns_one_line_and_is_left_out(monkeypatch):
    import mmdet
    monkeypatch.setattr(mmdet, '__version__', '2.28.2')
    with pytest.warns(VersionWarning) as caught:
        reasons = outdated_toolboxes()
    assert list(reasons) == ['mmdet']
    message, = [str(w.message) for w in caught]
    assert message == reasons['mmdet'] and '\n' not in message
    assert message.startswith('mmsparx: mmdet 2.28.2 is older than 3.0.0')
    assert "pip install 'mmdet>=3.0.0'" in message
    assert message.endswith('(until then mmsparx registers nothing into '
                            'mmdet)')

    # What import mmsparx does with it: mmdet's MODELS gets nothing.
    monkeypatch.setattr(registry, 'SKIPPED', {})
    monkeypatch.setattr(registry, '_registries', None)
    registry.skip_toolboxes(reasons)
    assert set(registry.available_toolboxes()) == {'mmseg', 'mmpretrain'}

    class VersionCheckProbe(torch.nn.Module):
        pass

    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    try:
        registry.register_model(VersionCheckProbe)
        assert SEG.get('VersionCheckProbe') is VersionCheckProbe
        assert 'VersionCheckProbe' not in DET.module_dict
    finally:
        for reg in (SEG, registry.toolbox_registries()['mmpretrain']):
            reg.module_dict.pop('VersionCheckProbe', None)
        registry.REGISTERED.pop('VersionCheckProbe', None)


def test_too_old_mmcv_leaves_out_every_toolbox(monkeypatch):
    import mmcv
    monkeypatch.setattr(mmcv, '__version__', '1.7.1')
    with pytest.warns(VersionWarning, match='mmcv 1.7.1 is older than'):
        reasons = outdated_toolboxes()
    assert set(reasons) == {'mmdet', 'mmseg', 'mmpretrain'}


@pytest.mark.parametrize('version,expected', [
    ('2.4.0+cu121', (2, 4, 0)), ('2.0.0rc4', (2, 0, 0)),
    ('2.5.0.dev20240801', (2, 5, 0)), ('0.10.7', (0, 10, 7))])
def test_release_numbers(version, expected):
    assert release(version) == expected


@pytest.mark.parametrize('version,ok', [
    ('2.4', True), ('2.4.0', True), ('2.4.0a0+git1', True),
    ('2.3.1', False), ('2.14.1+cu130', True), ('10.0', True)])
def test_torch_range(version, ok):
    assert in_range(version, '2.4', None) is ok


@pytest.mark.parametrize('version,ok', [
    ('0.10.7', True), ('0.10.6', False), ('0.10.10', True),
    ('0.11.0', False), ('0.11', False)])
def test_mmengine_range(version, ok):
    assert in_range(version, '0.10.7', '0.11') is ok
