"""mmsparx: SparX, SpaRTAN and SparseSwin backbones for OpenMMLab."""
import ast
import os
import os.path as osp
import re
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
VERSIONS = osp.join('mmsparx', 'utils', 'versions.py')


def minimum_versions() -> dict:
    """pip name -> specifier, from ``MINIMUMS`` in mmsparx/utils/versions.py
    (read, not imported: torch may not be installed yet)."""
    with open(osp.join(HERE, VERSIONS)) as f:
        tree = ast.parse(f.read())
    table = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and
                 getattr(node.targets[0], 'id', None) == 'MINIMUMS')
    return {entry['package']: f'>={entry["minimum"]}' + (
        f',<{entry["below"]}' if entry['below'] else '') for entry in table}


def requirements(name: str) -> list:
    """The requirement lines of requirements/``name``; a package with a
    minimum in ``VERSIONS`` gets it from there, its one place."""
    bounds = minimum_versions()
    found = []
    with open(osp.join(HERE, 'requirements', name)) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if not line:
                continue
            package = re.match(r'[A-Za-z0-9_.-]+', line).group(0)
            if package in bounds:
                if line != package:
                    raise ValueError(
                        f'requirements/{name}: {line!r} states a version; '
                        f'the range of {package} is kept in {VERSIONS} '
                        f'(MINIMUMS). Write the bare name {package!r}.')
                line += bounds[package]
            found.append(line)
    return found


def version() -> str:
    scope: dict = {}
    with open(osp.join(HERE, 'mmsparx', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def scan_extensions() -> dict:
    """mmsparx's CPU kernels (mmsparx/ops/csrc: the fused selective scan,
    the fused depthwise convolution), built twice: for
    any x86-64/ARM CPU and for AVX2+FMA, picked at run time. Optional: with
    no torch at build time, no compiler, or MMSPARX_NO_EXT=1 mmsparx installs
    without it and the scan uses its PyTorch backend."""
    if os.environ.get('MMSPARX_NO_EXT') == '1':
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print('mmsparx: torch not importable at build time; installing '
              'without the fused CPU scan', file=sys.stderr)
        return {}

    class OptionalBuild(BuildExtension):
        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as error:  # noqa: BLE001 any compiler failure
                print(f'mmsparx: {ext.name} not built ({error}); mmsparx '
                      'uses its PyTorch paths', file=sys.stderr)

    csrc = 'mmsparx/ops/csrc/'
    # -ffast-math lets gcc call glibc's vector exp/log1p in the per-step
    # precomputation (the recurrence itself is exact multiply-adds).
    flags = ['-O3', '-ffast-math', '-fopenmp']
    # -fopenmp: at::parallel_for is an OpenMP pragma in ATen's headers;
    # without it the rows run on one thread.
    exts = [CppExtension('mmsparx.ops._scan_cpu',
                         [csrc + 'selective_scan_cpu.cpp',
                          csrc + 'depthwise_cpu.cpp'],
                         extra_compile_args=flags,
                         extra_link_args=['-fopenmp'])]
    import platform
    if platform.machine() in ('x86_64', 'AMD64'):
        exts.append(CppExtension(
            'mmsparx.ops._scan_cpu_avx2',
            [csrc + 'selective_scan_cpu_avx2.cpp',
             csrc + 'depthwise_cpu_avx2.cpp'],
            extra_compile_args=flags + ['-mavx2', '-mfma'],
            extra_link_args=['-fopenmp']))
    return dict(ext_modules=exts, cmdclass=dict(build_ext=OptionalBuild))


# What `mim` looks for inside an installed package: the configs it trains
# (`mim train mmsparx CONFIG`), the tools it runs and the model index it
# searches and downloads from.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def add_mim_extension() -> None:
    """Put ``MIM_FILES`` into ``mmsparx/.mim`` (as mmdet's setup.py does).

    Editable installs (``pip install -e .``: setuptools' ``editable_wheel``,
    or the old ``develop``) get relative symlinks, so an edited config is
    what mim sees; wheel and sdist builds get copies, which ``package_data``
    ships. A copy build keeps a symlink that already points at the source:
    the build follows it into real files, and the checkout's editable
    install keeps seeing live files. Other setup.py commands leave
    ``mmsparx/.mim`` alone.
    """
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'copy' if os.name == 'nt' else 'symlink'  # no symlinks there
    elif commands & {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'}:
        mode = 'copy'
    else:
        return
    mim_path = osp.join(HERE, 'mmsparx', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        if not osp.exists(src):  # a build from an sdist: its .mim copies
            continue
        dst = osp.join(mim_path, name)
        link = osp.relpath(src, mim_path)
        if osp.islink(dst) and os.readlink(dst) == link and osp.exists(dst):
            continue  # already live (both modes)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(link, dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


add_mim_extension()

setup(
    name='mmsparx',
    version=version(),
    description='SparX, SpaRTAN and SparseSwin backbones for mmdet, mmseg '
    'and mmpretrain',
    packages=find_packages(include=['mmsparx', 'mmsparx.*']),
    package_data={'mmsparx': [
        '.mim/model-index.yml',
        '.mim/configs/**/*.py', '.mim/configs/**/*.yml',
        '.mim/configs/**/*.md',
        '.mim/tools/**/*.py', '.mim/tools/**/*.sh']},
    python_requires='>=3.8',
    install_requires=requirements('runtime.txt'),
    extras_require=dict(
        toolboxes=requirements('toolboxes.txt'),
        tests=requirements('tests.txt'),
        cuda=requirements('cuda.txt')),
    **scan_extensions(),
)
