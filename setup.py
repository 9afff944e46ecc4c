"""mmsparx: SparX, SpaRTAN and SparseSwin backbones for OpenMMLab."""
import os.path as osp

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
)
