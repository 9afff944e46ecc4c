"""Restricted unpickling: read a pickle without running any code from it.

A checkpoint is a pickle, and unpickling a foreign class imports its module
and calls its constructor or ``__setstate__``: code chosen by whoever wrote
the file. torch's weights-only unpickler avoids that by refusing such files
outright, which also throws away the tensors of files that merely carry a
foreign object next to them (an omegaconf ``DictConfig`` saved next to the
weights, a whole ``torch.save(model)``).

This module is the fallback :mod:`mmsparx.fileio` uses for those files:
a ``pickle_module`` for :func:`torch.load` whose unpickler resolves only
allow-listed globals (torch's own, the user's, and the safe list the caller
passes in) to the real objects. Every other class or function becomes an
inert :class:`ForeignObject` placeholder that records what the pickle asked
of it and runs nothing: nothing named in the file is imported, looked up or
called, yet the tensors load and stay reachable. The placeholder-tree
helpers below find those tensors again, and read the state dict of a pickled
``nn.Module`` without calling any of its methods.
"""
from __future__ import annotations

import pickle
import re
import types
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional)

import torch
from torch import nn

# Python 2 pickles name these modules the old way.
_PY2_MODULES = {'__builtin__': 'builtins', 'copy_reg': 'copyreg'}


class ForeignObject:
    """Inert stand-in for an object of a class the safe loader won't import.

    The restricted unpickler gives it whatever the pickle meant for the real
    class (constructor arguments, ``__setstate__`` state, appended and set
    items) and it only stores them: no code of the file's classes runs, yet
    the tensors inside stay reachable (a pickled ``nn.Module`` keeps its
    ``_parameters`` / ``_buffers`` / ``_modules`` in ``foreign_state``).
    Each foreign global gets its own subclass, named like the original, whose
    ``foreign_name`` is the dotted name the file used.
    """
    foreign_name = 'ForeignObject'

    def __new__(cls, *args: Any, **kwargs: Any) -> 'ForeignObject':
        # NEWOBJ calls only __new__, REDUCE calls the class: keep the
        # arguments here so both paths record them the same way.
        obj = super().__new__(cls)
        obj.foreign_args = args
        obj.foreign_kwargs = kwargs
        obj.foreign_state = None
        obj.foreign_items = []
        obj.foreign_list = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments were stored by ``__new__``; nothing runs here."""

    def __setstate__(self, state: Any) -> None:
        # BUILD: keep the state instead of applying it.
        self.foreign_state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        # SETITEM(S) on a dict subclass.
        self.foreign_items.append((key, value))

    def append(self, item: Any) -> None:
        """APPEND on a list subclass."""
        self.foreign_list.append(item)

    def extend(self, items: Any) -> None:
        """APPENDS on a list subclass."""
        self.foreign_list.extend(items)

    def add(self, item: Any) -> None:
        """ADDITEMS on a set subclass."""
        self.foreign_list.append(item)

    def __call__(self, *args: Any, **kwargs: Any) -> 'ForeignObject':
        # A REDUCE whose callable is itself a placeholder (a foreign
        # function's result, a method fetched by getattr): another record.
        return type(self)(*args, **kwargs)

    def __repr__(self) -> str:
        return f'<ignored {self.foreign_name}>'


def _is_foreign(obj: Any) -> bool:
    return isinstance(obj, ForeignObject) or (
        isinstance(obj, type) and issubclass(obj, ForeignObject))


class ForeignRecorder:
    """One restricted load: its placeholder classes, in order of first use.

    Also serves the few allow-listed names whose real function could be
    steered into foreign objects, with versions that return placeholders.
    ``safe_getattr`` is the caller's allow-listed ``builtins.getattr``
    (``None``: every ``getattr`` becomes a record); it raises
    ``pickle.UnpicklingError`` or ``ImportError`` for what it won't serve.
    """

    def __init__(self,
                 safe_getattr: Optional[Callable[[Any, str], Any]] = None
                 ) -> None:
        self.classes: Dict[str, type] = {}
        self.safe_getattr = safe_getattr

    @property
    def names(self) -> List[str]:
        return list(self.classes)

    def placeholder(self, module: str, name: str) -> type:
        full = f'{module}.{name}'
        cls = self.classes.get(full)
        if cls is None:
            # The file's names are only data: they become the placeholder's
            # name, nothing is imported or looked up.
            short = re.sub(r'\W', '_', str(name).rpartition('.')[2]) or '_'
            cls = type(short, (ForeignObject,), {
                '__module__': str(module), '__qualname__': str(name),
                'foreign_name': full})
            self.classes[full] = cls
        return cls

    def getattr(self, obj: Any, name: str) -> Any:
        """``builtins.getattr``: what ``safe_getattr`` allows (HistoryBuffer
        statistics), else a record."""
        if self.safe_getattr is not None:
            try:
                return self.safe_getattr(obj, name)
            except (pickle.UnpicklingError, ImportError):
                pass
        return self.placeholder('builtins', 'getattr')(obj, name)

    def reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` (protocol 0/1 objects), never calling
        ``base``: a foreign class gives its own placeholder."""
        if _is_foreign(cls) and isinstance(cls, type):
            return cls() if state is None else cls(state)
        return self.placeholder('copyreg', '_reconstructor')(cls, base, state)

    def rebuild_from_type(self, func: Any, new_type: Any, args: tuple,
                          state: Any) -> Any:
        """``torch._tensor._rebuild_from_type_v2`` for foreign tensor
        subclasses: keep the plain tensor, drop the subclass (its
        ``__setstate__`` would be code from the file)."""
        if _is_foreign(func) or _is_foreign(new_type):
            return func(*args)
        return torch._tensor._rebuild_from_type_v2(func, new_type, args,
                                                   state)


def _restricted_globals(recorder: ForeignRecorder,
                        safe_globals: Iterable[Any]) -> Dict[str, Any]:
    """Dotted name -> real object for everything the fallback may resolve:
    torch's own weights-only allow-list (tensor/storage rebuild functions,
    storage types, dtypes, ``OrderedDict``), globals the user allowed with
    ``torch.serialization.add_safe_globals``, the caller's ``safe_globals``
    (entries as for ``torch.serialization.safe_globals``: an object, or an
    ``(object, dotted name)`` pair) and the builtin containers."""
    from torch import _weights_only_unpickler as weights_only_unpickler
    allowed: Dict[str, Any] = dict(
        weights_only_unpickler._get_allowed_globals())
    allowed.update(weights_only_unpickler._get_user_allowed_globals())
    for entry in safe_globals:
        if isinstance(entry, tuple):
            allowed[entry[1]] = entry[0]
        else:
            allowed[f'{entry.__module__}.{entry.__qualname__}'] = entry
    for container in (dict, list, tuple, set, frozenset):
        allowed[f'builtins.{container.__name__}'] = container
    allowed['builtins.getattr'] = recorder.getattr
    allowed['copyreg._reconstructor'] = recorder.reconstructor
    allowed['torch._tensor._rebuild_from_type_v2'] = (
        recorder.rebuild_from_type)
    return allowed


def restricted_pickle_module(recorder: ForeignRecorder,
                             safe_globals: Iterable[Any]) -> types.ModuleType:
    """A ``pickle_module`` for :func:`torch.load` that resolves only the
    globals of :func:`_restricted_globals`.

    torch subclasses ``pickle_module.Unpickler`` (its wrapper maps legacy
    storage names, then calls our ``find_class``) and sets
    ``persistent_load`` on the instance, so storages load as usual; only
    ``find_class`` is restricted, and it never imports anything.
    """
    allowed = _restricted_globals(recorder, safe_globals)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            module = _PY2_MODULES.get(module, module)
            real = allowed.get(f'{module}.{name}')
            if real is not None:
                return real
            return recorder.placeholder(module, name)

    def load(file, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    module = types.ModuleType('mmsparx_restricted_pickle')
    module.Unpickler = Unpickler
    module.load = load
    module.UnpicklingError = pickle.UnpicklingError
    return module


def _children(obj: Any) -> Iterator[Any]:
    if isinstance(obj, Mapping):
        yield from obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from obj
    elif isinstance(obj, ForeignObject):
        yield from (obj.foreign_args, obj.foreign_kwargs, obj.foreign_state,
                    obj.foreign_items, obj.foreign_list)


def holds_tensor(root: Any) -> bool:
    """Whether any tensor was recovered (inside placeholders too)."""
    seen = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            return True
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        stack.extend(_children(obj))
    return False


def _foreign_module_state(obj: Any) -> Optional[Mapping]:
    """The ``__dict__`` of a pickled ``nn.Module`` kept by a placeholder."""
    if not isinstance(obj, ForeignObject):
        return None
    state = obj.foreign_state
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
        state = state[0]
    if isinstance(state, Mapping) and all(
            isinstance(state.get(k), Mapping)
            for k in ('_parameters', '_buffers', '_modules')):
        return state
    return None


def is_module(obj: Any) -> bool:
    return isinstance(obj, nn.Module) or _foreign_module_state(obj) is not None


def module_weights(module: Any,
                   prefix: str = '',
                   ancestors: Optional[set] = None) -> Dict[str, torch.Tensor]:
    """``module.state_dict()`` of a real or placeholder module, without
    calling any of its methods: parameters, persistent buffers, then the
    children under dotted names, in ``nn.Module.state_dict`` order.
    Extra state (``get_extra_state``) and state-dict hooks are code, so a
    placeholder module's dict leaves them out."""
    if isinstance(module, nn.Module):
        return dict(module.state_dict(prefix=prefix))
    state = _foreign_module_state(module)
    if state is None:
        return {}
    ancestors = set() if ancestors is None else ancestors
    if id(module) in ancestors:  # a cycle in a crafted file
        return {}
    ancestors.add(id(module))
    weights: Dict[str, torch.Tensor] = {}
    transient = state.get('_non_persistent_buffers_set')
    transient = transient if isinstance(transient, (set, frozenset)) else ()
    for name, value in state['_parameters'].items():
        if isinstance(value, torch.Tensor):
            weights[f'{prefix}{name}'] = value.detach()
    for name, value in state['_buffers'].items():
        if isinstance(value, torch.Tensor) and name not in transient:
            weights[f'{prefix}{name}'] = value.detach()
    for name, child in state['_modules'].items():
        if child is not None:
            weights.update(
                module_weights(child, f'{prefix}{name}.', ancestors))
    ancestors.discard(id(module))
    return weights
