"""One helper that puts mmsparx models into every installed toolbox.

mmdet, mmseg and mmpretrain each own a ``MODELS`` registry (children of
mmengine's root); a config's bare ``type`` is looked up in its own scope and
the parents, never in siblings. So each class is registered into every
toolbox that is importable, under the same name, and never over a name that
the toolbox (or mmengine) already owns.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import warnings
from typing import Dict, Iterable, Optional, Type

TOOLBOXES = ('mmdet', 'mmseg', 'mmpretrain')

# name -> class of everything mmsparx registered; used to explain
# "X is not in the registry" errors when a config forgot custom_imports.
REGISTERED: Dict[str, type] = {}

# scope -> why mmsparx leaves that installed toolbox out (a version it
# does not support); set by ``import mmsparx`` before anything registers.
SKIPPED: Dict[str, str] = {}

_registries: Optional[Dict[str, object]] = None


def skip_toolboxes(reasons: Dict[str, str]) -> None:
    """Register nothing into the scopes of ``reasons`` (``{scope: why}``),
    e.g. a toolbox too old for mmsparx, which its version check found."""
    global _registries
    SKIPPED.update(reasons)
    if reasons:
        _registries = None  # looked up again, without them


def toolbox_registries() -> Dict[str, object]:
    """Return ``{scope: MODELS}`` for each toolbox that imports here.

    A toolbox that is not installed is skipped silently; one that is
    installed but fails to import (e.g. its mmcv version check) is skipped
    with a warning that carries the reason, so the user can fix it; one
    in ``SKIPPED`` is left out.
    """
    global _registries
    if _registries is None:
        found = {}
        for scope in TOOLBOXES:
            if scope in SKIPPED:
                continue  # warned when skipped
            try:
                found[scope] = importlib.import_module(
                    f'{scope}.registry').MODELS
            except ModuleNotFoundError as err:
                if err.name and err.name.split('.')[0] == scope:
                    continue  # not installed: nothing to register into
                warnings.warn(f'mmsparx: {scope} is installed but failed to '
                              f'import ({err}); its models are unavailable. '
                              f'Install the missing package.')
            except Exception as err:  # e.g. mmdet's mmcv version assert
                warnings.warn(f'mmsparx: {scope} is installed but failed to '
                              f'import ({type(err).__name__}: {err}); fix '
                              f'its install to use mmsparx models in it.')
        _registries = found
    return _registries


def available_toolboxes() -> tuple:
    """Scopes (``'mmdet'`` ...) into which mmsparx registers its models."""
    return tuple(toolbox_registries())


def _existing(registry, name: str):
    """The class already bound to ``name`` in ``registry`` or its parents.

    The toolbox's own models are not force-imported here (that costs
    seconds per process): a name one of them registers later makes that
    import fail loudly, so nothing is ever shadowed silently, and the
    tests check every mmsparx name against the fully imported toolboxes.
    """
    node = registry
    while node is not None:
        if name in node.module_dict:
            return node.module_dict[name], node.scope
        node = node.parent
    return None, None


class UnknownArgumentError(TypeError):
    """A model built with an argument its class does not take: one line
    naming it and the closest valid name, not a bare ``TypeError``."""


def _unknown_argument(cls: Type, key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = (f"did you mean '{close[0]}'?" if close else
            f"it takes {', '.join(valid)}.")
    return f"{cls.__name__} has no argument '{key}': {hint}"


def check_arguments(cls: Type) -> Type:
    """Make ``cls(...)`` with an unknown keyword argument (a typo in a
    config or ``--cfg-options``) raise :class:`UnknownArgumentError` naming
    it and the closest valid name. Classes whose ``__init__`` takes
    ``**kwargs`` pass them on and are left as they are."""
    init = cls.__dict__.get('__init__')
    if init is None or getattr(init, '_checks_arguments', False):
        return cls  # inherited (already checked there) or done
    params = inspect.signature(init).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return cls
    valid = [n for n, p in params.items() if n != 'self' and p.kind in (
        p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        for key in kwargs:
            if key not in params:
                raise UnknownArgumentError(_unknown_argument(cls, key, valid))
        init(self, *args, **kwargs)

    checked_init._checks_arguments = True
    cls.__init__ = checked_init
    return cls


def register_model(cls: Type, name: Optional[str] = None,
                   registries: Optional[Dict[str, object]] = None) -> Type:
    """Register ``cls`` as ``name`` in the ``MODELS`` of every toolbox.

    Args:
        cls: the model class.
        name: registry name; defaults to ``cls.__name__``.
        registries: ``{scope: registry}``; defaults to every installed
            toolbox (:func:`toolbox_registries`).

    Its keyword arguments are checked (:func:`check_arguments`).

    Raises:
        KeyError: ``name`` already means another class in a toolbox: mmsparx
            never shadows an existing model.
    """
    name = name or cls.__name__
    if isinstance(cls, type):
        check_arguments(cls)
    targets = toolbox_registries() if registries is None else registries
    for scope, registry in targets.items():
        existing, owner = _existing(registry, name)
        if existing is cls:
            continue
        if existing is not None:
            raise KeyError(
                f"mmsparx: '{name}' is already registered in {owner}'s MODELS "
                f'as {existing.__module__}.{existing.__qualname__}; mmsparx '
                f'does not shadow it. Register {cls.__qualname__} under '
                f'another name.')
        registry.register_module(name=name, module=cls)
    REGISTERED[name] = cls
    return cls


def register_models(classes: Iterable[Type]) -> None:
    """Register each class of ``classes`` under its own name."""
    for cls in classes:
        register_model(cls)


_lazy_builders: Dict[tuple, object] = {}


def register_lazy_model(name: str, target: str, scope: str) -> None:
    """Register ``name`` in ``scope``'s ``MODELS`` only, as a builder that
    imports ``target`` (``'package.module:Class'``) when first built.

    For subclasses of a toolbox's own models (mmpretrain's
    ``ImageClassifier``): importing them loads that toolbox's model zoo
    (seconds), which an mmdet or mmseg process should not pay for. Skipped
    when ``scope`` is not installed.
    """
    registries = toolbox_registries()
    if scope not in registries:
        return
    builder = _lazy_builders.get((scope, name))
    if builder is None:
        module_name, _, class_name = target.partition(':')

        def builder(*args, **kwargs):
            cls = getattr(importlib.import_module(module_name), class_name)
            return cls(*args, **kwargs)

        builder.__name__ = builder.__qualname__ = name
        builder.__doc__ = f'Builds {target} (imported on first use).'
        _lazy_builders[(scope, name)] = builder
    register_model(builder, name, {scope: registries[scope]})


def register_lazy_models(entries: Dict[str, tuple]) -> None:
    """:func:`register_lazy_model` for each ``name: (scope, target)``."""
    for name, (scope, target) in entries.items():
        register_lazy_model(name, target, scope)
