"""Optimizer wrappers: bfloat16 autocast on a CPU for ``--amp``
(registered when :mod:`mmsparx.engine.optimizers.cpu_amp` is imported, as
``tools/train.py`` does)."""
