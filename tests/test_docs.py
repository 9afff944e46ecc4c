"""What users read leads somewhere real: every tool a page quotes exists,
every option it passes to that tool is one the tool (or the package code
that builds its parser) defines, the README stays short, and no page cites
notes a user has never seen.

Options are looked up in the source, not in ``--help`` output: a
subprocess per tool would cost minutes, and a parser's options are string
literals of the tool or of the mmsparx modules it imports."""
import ast
import glob
import os.path as osp
import re
import subprocess
import sys
from functools import lru_cache
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from conftest import ROOT

PAGES = ['README.md'] + sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
# The family READMEs quote commands too.
FAMILY_PAGES = sorted(osp.relpath(p, ROOT) for p in glob.glob(
    osp.join(ROOT, 'configs', '*', 'README.md')))
TOOL = re.compile(r'(?<![\w/.])((?:tools|demo)/[\w/]+\.(?:py|sh))')
OPTION = re.compile(r'(?<![\w-])(--[a-z][a-z0-9_-]*)')
# Commands of other programs, whose options are theirs.
FOREIGN = re.compile(r'^\s*(?:pip|pytest|sbatch|srun|git|torchrun|mim|'
                     r'\S*python\S* -m (?:pip|pytest))\b')
MODULE = re.compile(r'python -m ((?:mmsparx)(?:\.\w+)*)')
# Launchers hand every argument they do not take to this tool.
PASSES_TO = {
    'tools/dist_train.sh': 'tools/train.py',
    'tools/slurm_train.sh': 'tools/train.py',
    'tools/dist_test.sh': 'tools/test.py',
    'tools/slurm_test.sh': 'tools/test.py',
    'tools/analysis_tools/gpu_check.sh': 'tools/analysis_tools/gpu_check.py',
}
# Text that points at notes users cannot read.
INTERNAL = re.compile(
    r'\bissue \d+|\bspec(?:\b(?!\w)|\s+\d)|\.device/|shared/(?:gpu|spec)|'
    r'closing note', re.IGNORECASE)


def read(path: str) -> str:
    with open(osp.join(ROOT, path), encoding='utf-8') as f:
        return f.read()


def commands(text: str) -> Iterator[str]:
    """Every command a page quotes: the lines of code blocks (with ``\\``
    continuations joined, comments cut) and inline code spans."""
    for block in re.findall(r'```[^\n]*\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            yield line.split(' #')[0]
    prose = re.sub(r'```.*?```', '', text, flags=re.S)
    yield from re.findall(r'`([^`\n]+)`', prose.replace('\n', ' '))


def tool_options(command: str) -> List[Tuple[str, List[str]]]:
    """(tool, options given to it) for each tool a command names."""
    found = []
    for match in TOOL.finditer(command):
        rest = command[match.end():]
        following = TOOL.search(rest)
        if following:
            rest = rest[:following.start()]
        found.append((match.group(1), OPTION.findall(rest)))
    return found


@lru_cache(maxsize=None)
def string_literals(path: str) -> Set[str]:
    text = read(path)
    if path.endswith('.py'):
        return {node.value for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)}
    return set(re.findall(r'(--[a-z][\w-]*)', text))


def module_files(name: str) -> List[str]:
    """The source files of an mmsparx module; all of a package's."""
    base = osp.join(*name.split('.'))
    if osp.isfile(osp.join(ROOT, base + '.py')):
        return [base + '.py']
    if osp.isdir(osp.join(ROOT, base)):
        return sorted(osp.relpath(p, ROOT) for p in glob.glob(
            osp.join(ROOT, base, '**', '*.py'), recursive=True))
    return []


def imported_modules(path: str) -> Set[str]:
    if not path.endswith('.py'):
        return set()
    names = set()
    for node in ast.walk(ast.parse(read(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f'{node.module}.{a.name}' for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split('.')[0] == 'mmsparx'}


@lru_cache(maxsize=None)
def known_options(tool: str) -> Set[str]:
    """The option strings of a tool: its own literals, those of the
    mmsparx modules it imports (where shared parsers and subcommands are
    built) and, for a launcher, those of the tool it runs."""
    files = [tool]
    for name in imported_modules(tool):
        files += module_files(name)
    options = set()
    for path in files:
        options.update(s for s in string_literals(path)
                       if s.startswith('--'))
    if tool in PASSES_TO:
        options |= known_options(PASSES_TO[tool])
    return options


@lru_cache(maxsize=None)
def all_options() -> Set[str]:
    options = {'--help'}
    for pattern in ('tools/**/*.*', 'mmsparx/**/*.py', 'demo/*.py'):
        for path in glob.glob(osp.join(ROOT, pattern), recursive=True):
            if path.endswith(('.py', '.sh')):
                options |= known_options(osp.relpath(path, ROOT))
    return options


def quoted() -> Dict[str, List[Tuple[str, List[str]]]]:
    return {page: [found for command in commands(read(page))
                   for found in tool_options(command)]
            for page in PAGES + FAMILY_PAGES}


def test_the_readme_is_short_and_leads_to_the_docs():
    readme = read('README.md')
    assert len(readme.splitlines()) <= 150
    assert readme.startswith('# mmsparx\n\n```bash\nmake demo')
    for page in PAGES[1:]:
        assert f'({page})' in readme, f'README.md does not link {page}'


@pytest.mark.parametrize('page', PAGES + FAMILY_PAGES)
def test_every_quoted_tool_and_option_exists(page):
    missing = []
    for tool, options in quoted()[page]:
        if not osp.isfile(osp.join(ROOT, tool)):
            missing.append(f'{tool} does not exist')
            continue
        known = known_options(tool)
        missing += [f'{tool} has no {option}' for option in options
                    if option not in known]
    assert not missing, f'{page}: ' + '; '.join(missing)


@pytest.mark.parametrize('page', PAGES)
def test_every_option_and_module_in_prose_exists(page):
    text = read(page)
    everywhere = all_options()
    unknown = sorted({option for command in commands(text)
                      if not TOOL.search(command)
                      and not FOREIGN.search(command)
                      for option in OPTION.findall(command)} - everywhere)
    assert not unknown, f'{page} quotes options no tool defines: {unknown}'
    for name in MODULE.findall(text):
        assert module_files(name), f'{page}: no module {name}'


@pytest.mark.parametrize('page', PAGES + FAMILY_PAGES)
def test_every_relative_link_resolves(page):
    folder = osp.dirname(osp.join(ROOT, page))
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', read(page)):
        if '://' not in target:
            assert osp.exists(osp.join(folder, target)), \
                f'{page} links {target}, which does not exist'


def user_texts() -> Iterator[Tuple[str, str]]:
    for page in PAGES:
        yield page, read(page)
    for pattern in ('configs/**/*.py', 'configs/**/*.md'):
        for path in glob.glob(osp.join(ROOT, pattern), recursive=True):
            rel = osp.relpath(path, ROOT)
            yield rel, read(rel)


def test_no_internal_references_in_what_users_read():
    found = [f'{path}: {m.group(0)!r}' for path, text in user_texts()
             for m in INTERNAL.finditer(text)]
    assert not found, found


def help_texts() -> Iterator[Tuple[str, str]]:
    """What ``--help`` prints is built from a tool's string literals (its
    description, docstring and help strings) and its shell comments."""
    for path in glob.glob(osp.join(ROOT, 'tools', '**', '*.*'),
                          recursive=True):
        rel = osp.relpath(path, ROOT)
        if rel.endswith('.py'):
            yield rel, '\n'.join(string_literals(rel))
        elif rel.endswith('.sh'):
            yield rel, read(rel)


def test_no_internal_references_in_tools_help():
    found = [f'{path}: {m.group(0)!r}' for path, text in help_texts()
             for m in INTERNAL.finditer(text)]
    assert not found, found


def test_the_checker_catches_what_it_is_for():
    """The checks above would pass on an empty page; these are the
    mistakes they exist to catch."""
    line = ('python tools/train.py CFG --resum --work-dir D '
            '| tools/dist_train.sh CFG 2 --amp configs/demo/x.py')
    assert tool_options(line) == [('tools/train.py', ['--resum',
                                                      '--work-dir']),
                                  ('tools/dist_train.sh', ['--amp'])]
    assert '--resume' in known_options('tools/train.py')
    assert '--work-dir' in known_options('tools/train.py')  # shared parser
    assert '--resum' not in known_options('tools/train.py')
    assert '--amp' in known_options('tools/dist_train.sh')
    for text in ('see issue 21', 'spec 1.6', 'the spec', '.device/gpu'):
        assert INTERNAL.search(text), text
    for text in ('find_spec', 'inspect', 'specific', 'spectral'):
        assert not INTERNAL.search(text), text
    assert FOREIGN.search('pip install --no-deps -e .')
    assert not FOREIGN.search('python tools/train.py CFG')


def test_a_quoted_help_really_lists_its_options():
    """The source lookup agrees with one tool's real ``--help``."""
    out = subprocess.run([sys.executable, 'tools/test.py', '--help'],
                         capture_output=True, text=True, cwd=ROOT,
                         timeout=120).stdout
    printed = set(re.findall(r'^  (?:-\w, )?(--[\w-]+)', out, re.M))
    assert '--cfg-options' in printed and '--local_rank' in printed
    assert printed <= known_options('tools/test.py') | {'--help'}
