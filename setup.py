"""mmsparx: SparX, SpaRTAN and SparseSwin backbones for OpenMMLab."""
import os
import os.path as osp
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def requirements(name: str) -> list:
    with open(osp.join(HERE, 'requirements', name)) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


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


setup(
    name='mmsparx',
    version=version(),
    description='SparX, SpaRTAN and SparseSwin backbones for mmdet, mmseg '
    'and mmpretrain',
    packages=find_packages(include=['mmsparx', 'mmsparx.*']),
    python_requires='>=3.8',
    install_requires=requirements('runtime.txt'),
    extras_require=dict(
        toolboxes=requirements('toolboxes.txt'),
        tests=requirements('tests.txt'),
        cuda=requirements('cuda.txt')),
    **scan_extensions(),
)
