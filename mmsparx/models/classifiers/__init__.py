"""Classifiers that extend a toolbox's own (they import that toolbox).

Not imported by ``mmsparx.models``: ``mmsparx.models.LAZY_MODEL_CLASSES``
registers each in its toolbox only, imported on first build, so a process
that never builds one does not load that toolbox's model zoo.
"""
