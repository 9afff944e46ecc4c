"""The package's layers, written once: each kind of thing lives in one
place and imports only from its own layer or the ones below it, and no
module imports, at module level or inside a function, one that imports it
back. docs/contributing.md draws the same table."""
import ast
import os
import os.path as osp
from typing import Dict, List, Set, Tuple

from conftest import ROOT

PACKAGE = 'mmsparx'
# Bottom to top. A package may import its own modules and any package of a
# lower layer; packages of one layer do not import each other.
LAYERS: List[Tuple[str, ...]] = [
    ('mmsparx.version', 'mmsparx.registry'),
    ('mmsparx.utils', ),
    ('mmsparx.archs', 'mmsparx.ops', 'mmsparx.fileio'),
    ('mmsparx.converters', ),
    ('mmsparx.models', ),
    ('mmsparx.datasets', 'mmsparx.engine', 'mmsparx.visualization'),
    ('mmsparx.apis', ),
    ('mmsparx.analysis', 'mmsparx.model_zoo', 'mmsparx.deploy'),
    ('mmsparx', ),  # the package's __init__: registers everything
]


def modules() -> Dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for folder, _, files in os.walk(osp.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith('.py'):
                path = osp.join(folder, name)
                dotted = osp.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                found[dotted.removesuffix('.__init__')] = path
    return found


def imports_of(name: str, path: str, known: Set[str]) -> Set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    is_package = path.endswith('__init__.py')
    targets = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            heads = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = name.split('.')[:len(name.split('.')) - node.level +
                                        (1 if is_package else 0)]
                base = '.'.join(parts + ([base] if base else []))
            heads = [f'{base}.{alias.name}' for alias in node.names]
            heads = [h if h in known else base for h in heads]
        else:
            continue
        for head in heads:
            while head not in known and '.' in head:
                head = head.rsplit('.', 1)[0]
            if head in known and head != name:
                targets.add(head)
    return targets


def graph() -> Dict[str, Set[str]]:
    known = modules()
    return {name: imports_of(name, path, known)
            for name, path in known.items()}


def layer_of(name: str) -> Tuple[int, str]:
    """(layer index, package) of a module: its longest listed prefix."""
    best = None
    for index, layer in enumerate(LAYERS):
        for package in layer:
            if name == package or name.startswith(package + '.'):
                if best is None or len(package) > len(best[1]):
                    best = (index, package)
    assert best is not None, f'{name} is in no layer: add it to LAYERS'
    return best


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_import_goes_up_or_sideways():
    wrong = []
    for name, targets in graph().items():
        level, package = layer_of(name)
        for target in targets:
            their_level, their_package = layer_of(target)
            if their_level > level or (their_level == level
                                       and their_package != package):
                wrong.append(f'{name} ({package}) imports {target} '
                             f'({their_package})')
    assert not wrong, 'imports against the layer order:\n' + '\n'.join(
        sorted(wrong))


def find_cycle(edges: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as [a, b, ..., a], or [] when there is none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle():
    # A package's __init__ imports its modules; a module importing from its
    # own package's __init__ is then a cycle too.
    cycle = find_cycle(graph())
    assert not cycle, 'import cycle: ' + ' -> '.join(cycle)


def test_the_checks_see_cycles_and_layers():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == \
        ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) == []
    assert layer_of('mmsparx.models.layers.ss2d') == (4, 'mmsparx.models')
    assert layer_of('mmsparx') == (len(LAYERS) - 1, 'mmsparx')
    edges = graph()
    assert 'mmsparx.fileio.reading' in edges['mmsparx.fileio']
    # an import inside a function counts
    assert 'mmsparx.converters.loading' in edges[
        'mmsparx.models.backbones.base']


def test_no_module_imports_another_modules_private_names():
    wrong = []
    known = modules()
    for name, path in known.items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith(PACKAGE) and \
                    node.module != name:
                wrong += [f'{name}: {node.module}.{alias.name}'
                          for alias in node.names
                          if alias.name.startswith('_')
                          and not alias.name.startswith('__')]
    assert not wrong, 'private names imported across modules:\n' + \
        '\n'.join(wrong)
