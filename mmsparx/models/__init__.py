"""mmsparx models. They depend on torch and mmengine only, so they import
on a machine that carries neither mmcv's compiled ops nor any toolbox."""
from .backbones import (SparseSwin, SparseSwinDense, SpaRTAN, SparXMamba,
                        SparXSwin)
from .losses import SparTaAttentionLoss

# Every class listed here is registered into each installed toolbox.
MODEL_CLASSES: list = [SparXMamba, SparXSwin, SpaRTAN, SparseSwin,
                       SparseSwinDense, SparTaAttentionLoss]

# Subclasses of one toolbox's models: name -> (toolbox, 'module:Class'),
# registered in that toolbox only and imported when first built.
LAZY_MODEL_CLASSES: dict = {
    'SparseSwinClassifier': (
        'mmpretrain', 'mmsparx.models.classifiers.sparseswin:'
        'SparseSwinClassifier'),
}
