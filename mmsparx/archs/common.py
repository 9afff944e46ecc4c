"""What every family's variant table needs: a name or a dict in, a checked
dict out; and the way back, from a dict read off a file to a name."""
from __future__ import annotations

import copy
from typing import Dict, Mapping, Optional, Sequence, Union


def lookup(arch: Union[str, dict], settings: Mapping[str, dict],
           aliases: Mapping[str, str], required: Sequence[str],
           family: str) -> dict:
    """A copy of the named variant's setting, or of a custom dict once it
    has every ``required`` key; errors name the valid choices."""
    if isinstance(arch, str):
        name = aliases.get(arch.lower(), arch.lower())
        if name not in settings:
            valid = sorted(set(settings) | set(aliases))
            raise KeyError(f'{family}: unknown arch {arch!r}; valid names: '
                           f'{valid}, or a dict with keys {tuple(required)}')
        arch = settings[name]
    if not isinstance(arch, Mapping):
        raise TypeError(f'{family}: arch must be a name or a dict, got '
                        f'{type(arch).__name__}')
    missing = [k for k in required if k not in arch]
    if missing:
        raise KeyError(f'{family}: custom arch lacks {missing} (needs '
                       f'{tuple(required)})')
    return copy.deepcopy(dict(arch))


def named_variant(arch: Mapping, settings: Mapping[str, dict],
                  defaults: Mapping) -> Optional[str]:
    """The variant whose setting (defaults filled) agrees with every key of
    ``arch``, or None; per-stage lists and tuples compare alike."""
    for name, setting in settings.items():
        full: Dict = dict(defaults, **setting)
        if all(k in full and _as_tuple(full[k]) == _as_tuple(v)
               for k, v in arch.items()):
            return name
    return None


def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value
