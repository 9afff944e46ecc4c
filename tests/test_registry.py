"""The registration helper against the real toolbox registries."""
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModule

import mmsparx
from mmsparx.registry import REGISTERED, register_model, toolbox_registries


class TinyNet(BaseModule):
    """A stand-in backbone: one conv, returns a tuple like backbones do."""

    def __init__(self, width: int = 4, init_cfg=None):
        super().__init__(init_cfg)
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)

    def forward(self, x):
        return (self.conv(x), )


def test_all_toolboxes_are_found():
    assert set(mmsparx.available_toolboxes()) == {'mmdet', 'mmseg',
                                                  'mmpretrain'}


def test_registered_class_builds_in_each_toolbox():
    register_model(TinyNet, name='MmsparxTinyNet')
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG
    for registry in (DET, SEG, CLS):
        net = registry.build(dict(type='MmsparxTinyNet', width=5))
        assert isinstance(net, TinyNet)
        assert net(torch.zeros(1, 3, 8, 8))[0].shape == (1, 5, 8, 8)
    assert REGISTERED['MmsparxTinyNet'] is TinyNet
    # Registering the same class again is a no-op, not an error.
    register_model(TinyNet, name='MmsparxTinyNet')


def test_registered_backbone_inside_a_toolbox_model():
    register_model(TinyNet, name='MmsparxTinyNet')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='MmsparxTinyNet', width=6),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=3, in_channels=6)))
    scores = classifier(torch.rand(2, 3, 16, 16), mode='tensor')
    assert scores.shape == (2, 3)


def test_never_shadows_an_existing_name():
    import mmdet.models  # noqa: F401  the toolbox's own names, all loaded

    class ResNet(TinyNet):
        pass

    with pytest.raises(KeyError, match="'ResNet' is already registered"):
        register_model(ResNet)
    from mmdet.models.backbones import ResNet as DetResNet
    from mmdet.registry import MODELS
    assert MODELS.get('ResNet') is DetResNet


def test_no_mmsparx_name_exists_in_any_toolbox():
    from mmsparx.models import MODEL_CLASSES
    for scope, registry in toolbox_registries().items():
        registry.import_from_location()
        for cls in MODEL_CLASSES:
            assert registry.module_dict.get(cls.__name__) is cls, scope
            assert cls.__name__ not in registry.parent.module_dict


def test_registries_are_the_toolboxes_own():
    from mmdet.registry import MODELS as DET
    assert toolbox_registries()['mmdet'] is DET


BLOCK = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
sys.meta_path.insert(0, Block())
import mmsparx
print(','.join(mmsparx.available_toolboxes()))
'''


@pytest.mark.parametrize('blocked,expected', [
    (('mmseg', ), 'mmdet,mmpretrain'),
    (('mmdet', 'mmseg', 'mmpretrain'), ''),
])
def test_import_with_only_some_toolboxes(blocked, expected):
    out = subprocess.run([sys.executable, '-c',
                          BLOCK.format(blocked=set(blocked))],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
    assert 'Warning' not in out.stderr


def test_unknown_argument_names_the_closest(capsys):
    """A typo in --cfg-options ends in one line naming the argument and
    the closest valid one; the tools exit with status 2, no traceback."""
    from mmsparx.apis import load_model, refusals_exit
    from mmsparx.registry import UnknownArgumentError
    config = 'configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py'
    with pytest.raises(UnknownArgumentError) as err:
        load_model(config, {'model.backbone.drop_path_rat': 0.1})
    assert str(err.value) == ("SparXMamba has no argument 'drop_path_rat': "
                              "did you mean 'drop_path_rate'?")
    with pytest.raises(SystemExit) as exit_:
        with refusals_exit():
            load_model(config, {'model.backbone.out_indice': (3, )})
    assert exit_.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said == ["error: SparXMamba has no argument 'out_indice': did "
                    "you mean 'out_indices'?"]
