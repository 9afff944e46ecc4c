"""The oldest versions mmsparx works with, and the check ``import mmsparx``
runs against them.

``MINIMUMS`` is the one table: setup.py reads it (without importing the
package) to add the bounds to the names in requirements/runtime.txt and
toolboxes.txt, and ``import mmsparx`` checks what is installed. torch and
mmengine are what the core needs: a version out of range stops the import
with :class:`VersionError`. The toolboxes are optional: one that is too old
is left out of the registration, with one warning line.
"""
from __future__ import annotations

import importlib
import re
import sys
import warnings
from importlib import metadata
from typing import Dict, Optional, Tuple

# package: the pip name; module: what imports it; minimum, below: the range
# (below: None = no upper bound); why: what needs the minimum; used_by:
# for an optional package, the toolbox scopes that cannot work without it.
# A literal (setup.py reads it with ast.literal_eval).
MINIMUMS = (
    {'package': 'torch', 'module': 'torch', 'minimum': '2.4',
     'below': None, 'used_by': None,
     'why': 'mmsparx registers its scan kernels with '
            'torch.library.custom_op'},
    {'package': 'mmengine', 'module': 'mmengine', 'minimum': '0.10.7',
     'below': '0.11', 'used_by': None,
     'why': "mmsparx's runner hooks and checkpoint loading are written "
            'against mmengine 0.10.7'},
    {'package': 'mmcv', 'module': 'mmcv', 'minimum': '2.0.0', 'below': None,
     'used_by': ('mmdet', 'mmseg', 'mmpretrain'),
     'why': 'the OpenMMLab 2.0 bricks and ops'},
    {'package': 'mmdet', 'module': 'mmdet', 'minimum': '3.0.0',
     'below': None, 'used_by': ('mmdet', ),
     'why': 'the mmdet 3.x registries and data structures'},
    {'package': 'mmsegmentation', 'module': 'mmseg', 'minimum': '1.0.0',
     'below': None, 'used_by': ('mmseg', ),
     'why': 'the mmseg 1.x registries and data structures'},
    {'package': 'mmpretrain', 'module': 'mmpretrain', 'minimum': '1.0.0',
     'below': None, 'used_by': ('mmpretrain', ),
     'why': 'the mmpretrain 1.x registries and models'},
)


class VersionError(ImportError):
    """torch or mmengine out of the range mmsparx works with; the message
    is one line: the package, its version, the range and the fix."""


class VersionWarning(UserWarning):
    """An optional toolbox older than mmsparx works with (left out)."""


def release(version: str) -> Tuple[int, ...]:
    """The numeric release of ``version``: '2.4.0+cu121' -> (2, 4, 0),
    '2.0.0rc4' -> (2, 0, 0), '2.5.0.dev20240801' -> (2, 5, 0). Pre-release
    and local parts are ignored: a release candidate counts as its
    release."""
    match = re.match(r'\s*v?(\d+(?:\.\d+)*)', str(version))
    if match is None:
        raise ValueError(f'not a version number: {version!r}')
    return tuple(int(part) for part in match.group(1).split('.'))


def _padded(version: Tuple[int, ...], length: int) -> Tuple[int, ...]:
    return version + (0, ) * (length - len(version))


def in_range(version: str, minimum: str, below: Optional[str]) -> bool:
    """Whether ``minimum <= version < below`` (release numbers only)."""
    ours = release(version)
    for bound, wanted in ((minimum, True), (below, False)):
        if bound is None:
            continue
        other = release(bound)
        length = max(len(ours), len(other))
        if (_padded(ours, length) >= _padded(other, length)) != wanted:
            return False
    return True


def specifier(entry: dict) -> str:
    """``'>=2.4'`` or ``'>=0.10.7,<0.11'``: the entry's pip specifier."""
    spec = f'>={entry["minimum"]}'
    return spec + (f',<{entry["below"]}' if entry['below'] else '')


def installed_version(entry: dict) -> Optional[str]:
    """The version of ``entry``'s package here, or None if absent: the
    imported module's ``__version__`` when it is imported (what runs),
    else the installed distribution's (without importing it)."""
    module = sys.modules.get(entry['module'])
    version = getattr(module, '__version__', None)
    if version is not None:
        return str(version)
    try:
        return metadata.version(entry['package'])
    except metadata.PackageNotFoundError:
        return None


def problem(entry: dict, version: Optional[str]) -> Optional[str]:
    """One line naming the package, its version, the range and the fix;
    None when ``version`` is in range."""
    wanted = f"{entry['package']}{specifier(entry)}"
    if version is None:
        return (f"mmsparx needs {entry['package']} >= {entry['minimum']} "
                f"({entry['why']}); it is not installed. Install it: "
                f"pip install '{wanted}'")
    if in_range(version, entry['minimum'], entry['below']):
        return None
    if release(version) < release(entry['minimum']):
        relation = (f"older than {entry['minimum']}, the oldest mmsparx "
                    'works with')
    else:
        relation = (f"{entry['below']} or newer, which mmsparx does not "
                    'support yet')
    return (f"mmsparx: {entry['package']} {version} is {relation} "
            f"({entry['why']}). Install a version in range: "
            f"pip install '{wanted}'")


def require_core_versions() -> None:
    """Raise :class:`VersionError` (one line) if torch or mmengine is
    missing or out of range; run first by ``import mmsparx``."""
    for entry in MINIMUMS:
        if entry['used_by'] is not None:
            continue
        try:
            importlib.import_module(entry['module'])
        except ModuleNotFoundError as err:
            if err.name != entry['module']:
                raise
        message = problem(entry, installed_version(entry))
        if message is not None:
            raise VersionError(message)


def outdated_toolboxes() -> Dict[str, str]:
    """``{scope: reason}`` for each installed toolbox that mmsparx leaves
    out because it, or a package it needs (mmcv), is out of range; warns
    one :class:`VersionWarning` line per outdated package. A package that
    is not installed is no problem here (the toolbox is optional)."""
    reasons: Dict[str, str] = {}
    for entry in MINIMUMS:
        if entry['used_by'] is None:
            continue
        version = installed_version(entry)
        if version is None:
            continue
        message = problem(entry, version)
        if message is None:
            continue
        scopes = ', '.join(entry['used_by'])
        message += f' (until then mmsparx registers nothing into {scopes})'
        warnings.warn(message, VersionWarning, stacklevel=2)
        for scope in entry['used_by']:
            reasons.setdefault(scope, message)
    return reasons
