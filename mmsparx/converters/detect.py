"""Which model a checkpoint holds, read off its keys and shapes.

A wrong file used to fail with every key of the model listed (tens of
thousands of characters) or with a converter's "no rule for key ...". The
loaders and the converters ask :func:`detect_checkpoint` instead and refuse
a wrong file in one paragraph that names what the file holds and the
setting that loads it. Families: SparX-Mamba, SparX-Swin (mmsparx files
only: no authors' weights exist), SpaRTAN, SparseSwin and plain Swin-T
(which SparseSwin starts from); layouts: the authors' or mmsparx's, a bare
backbone or under ``backbone.``, a classifier or a dense model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from mmsparx.archs.sparseswin import ARCH_DEFAULTS as SPARSESWIN_DEFAULTS
from mmsparx.archs.sparseswin import arch_name as sparseswin_arch_name
from mmsparx.archs.spartan import ARCH_DEFAULTS as SPARTAN_DEFAULTS
from mmsparx.archs.spartan import arch_name as spartan_arch_name
from mmsparx.archs.sparx import ARCH_DEFAULTS as SPARX_DEFAULTS
from mmsparx.archs.sparx import arch_name as sparx_arch_name
from mmsparx.archs.sparx import SWIN_ARCH_SETTINGS, layer_signature
from mmsparx.fileio import CheckpointError

# (family, layout, pattern on a backbone key without 'backbone.'). The
# patterns are disjoint between families except that SparseSwin files hold
# Swin-T keys too (stages 1-3): any SparseSwin key decides for SparseSwin.
SIGNATURES: List[Tuple[str, str, 're.Pattern[str]']] = [
    ('SparX-Mamba', 'authors', re.compile(
        r'^(patch_embed\.\d+\.|layers\.\d+\.(blocks\.\d+|downsample)\.)')),
    ('SparX-Mamba', 'mmsparx', re.compile(
        r'^stages\.\d+\.blocks\.\d+\.op\.(A_logs|Ds|x_proj_weight)')),
    ('SparX-Swin', 'mmsparx', re.compile(
        r'^stages\.\d+\.blocks\.\d+\.op\.attn\.')),
    ('SpaRTAN', 'authors', re.compile(
        r'^(conv\.[01]\.(conv|norm)\.|layers\.\d+\.'
        r'(smixer|cmixer|norm_1|norm_2|scale_1|scale_2)\b)')),
    ('SpaRTAN', 'mmsparx', re.compile(
        r'^stages\.\d+\.blocks\.\d+\.(smixer|cmixer|scale_1|scale_2)\b')),
    ('SparseSwin', 'authors', re.compile(r'^(swin_model|step4)\.')),
    ('SparseSwin', 'mmsparx', re.compile(r'^sparta\.')),
    ('Swin', 'torchvision', re.compile(r'^features\.\d+\.\d+\.attn\.')),
    ('Swin', 'swin', re.compile(
        r'^(patch_embed\.projection\.|stages\.\d+\.blocks\.\d+\.attn\.'
        r'w_msa\.)')),
]


@dataclass(frozen=True)
class Family:
    """How a family is named in messages and configs."""
    name: str
    type_name: str  # the registry type that builds it
    letters: Dict[str, str]  # variant name -> its letter in the papers
    converter: Optional[str] = None  # the CLI for the authors' files


FAMILIES: Dict[str, Family] = {
    'SparX-Mamba': Family('SparX-Mamba', 'SparXMamba',
                          {'tiny': 'T', 'small': 'S', 'base': 'B'},
                          'tools/model_converters/sparx_mamba.py'),
    'SparX-Swin': Family('SparX-Swin', 'SparXSwin',
                         {'tiny': 'T', 'base': 'B'}),
    'SpaRTAN': Family('SpaRTAN', 'SpaRTAN', {'xt': 'XT', 't': 'T'},
                      'tools/model_converters/spartan.py'),
    'SparseSwin': Family('SparseSwin', 'SparseSwin', {'tiny': 'T'},
                         'tools/model_converters/sparseswin.py'),
    'Swin': Family('Swin Transformer', 'SwinTransformer', {}),
}
# Backbone classes (their MRO is searched, so subclasses count) -> family.
CLASS_FAMILIES = {'SparXSwin': 'SparX-Swin', 'SparXMamba': 'SparX-Mamba',
                  'SpaRTAN': 'SpaRTAN', 'SparseSwin': 'SparseSwin'}


@dataclass
class CheckpointInfo:
    """What a state dict (or a built backbone) holds."""
    family: Optional[str]  # a FAMILIES key; None: none of them
    layout: Optional[str]  # 'authors', 'mmsparx', 'torchvision', 'swin'
    arch: Optional[dict] = None  # read off the shapes; None if it could not
    variant: Optional[str] = None  # a named variant's registry name
    kwargs: dict = field(default_factory=dict)  # other settings it needs
    sample: Tuple[str, ...] = ()  # its first keys, for messages

    @property
    def label(self) -> str:
        """'SpaRTAN-XT', 'custom SpaRTAN (channels ..., depths ...)'."""
        if self.family is None:
            return 'unknown model'
        family = FAMILIES[self.family]
        if self.variant is not None:
            return f'{family.name}-{family.letters[self.variant]}'
        if self.arch is None:
            return family.name
        return f'custom {family.name} ({_arch_summary(self.arch)})'

    def arch_setting(self) -> str:
        """``arch='xt'``, or the custom arch dict without its defaults."""
        if self.variant is not None:
            return f'arch={self.variant!r}'
        if self.arch is None or self.family not in _DEFAULTS:
            return 'the arch it was trained with'
        return f'arch={_compact(self.arch, _DEFAULTS[self.family])}'

    def config(self) -> str:
        """The backbone settings that load it: ``type='SpaRTAN', arch='t'``.
        """
        if self.family == 'Swin':
            return ("type='SparseSwin' (it starts from Swin-T weights) or "
                    "mmpretrain's type='SwinTransformer'")
        words = [f'type={FAMILIES[self.family].type_name!r}',
                 self.arch_setting()]
        words += [f'{k}={v!r}' for k, v in self.kwargs.items()]
        return ', '.join(words)


def _arch_summary(arch: dict) -> str:
    """The sizes that tell variants apart, for a label."""
    keys = ('embed_dims', 'channels', 'depths', 'num_tokens', 'token_dims')
    return ', '.join(f'{k} {arch[k]}' for k in keys if k in arch)


def _same_value(value, default) -> bool:
    """Equal, counting lists as tuples and one number as one per stage."""
    if isinstance(value, (list, tuple)) and not isinstance(
            default, (list, tuple)):
        default = (default, ) * len(value)
    if isinstance(value, (list, tuple)):
        return isinstance(default, (list, tuple)) and \
            tuple(value) == tuple(default)
    return value == default


def _compact(arch: dict, defaults: dict) -> str:
    """``dict(...)`` source of ``arch`` without the values that are the
    defaults anyway, so a message stays readable."""
    kept = {k: v for k, v in arch.items()
            if k not in defaults or not _same_value(v, defaults[k])}
    return 'dict(' + ', '.join(f'{k}={v!r}' for k, v in kept.items()) + ')'


# Per family, the arch defaults a message leaves out.
_DEFAULTS = {'SparX-Mamba': SPARX_DEFAULTS, 'SpaRTAN': SPARTAN_DEFAULTS,
             'SparseSwin': SPARSESWIN_DEFAULTS}


# -- the family -------------------------------------------------------------
def tensors_of(state: Mapping) -> Dict[str, Tensor]:
    """The tensor entries, without the ``module.`` DataParallel adds."""
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def backbone_part(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The keys under ``backbone.`` (a classifier, detector, segmentor),
    without it, or all keys of a bare backbone."""
    inner = {k[len('backbone.'):]: v for k, v in state.items()
             if k.startswith('backbone.')}
    return inner or dict(state)


def detect_family(state: Mapping[str, Tensor]
                  ) -> Tuple[Optional[str], Optional[str]]:
    """(family, layout) from the key names alone, or (None, None)."""
    counts: Dict[Tuple[str, str], int] = {}
    for key in backbone_part(tensors_of(state)):
        for family, layout, pattern in SIGNATURES:
            if pattern.match(key):
                counts[family, layout] = counts.get((family, layout), 0) + 1
    sparse = {k: n for k, n in counts.items() if k[0] == 'SparseSwin'}
    counts = sparse or counts
    if not counts:
        return None, None
    return max(counts, key=counts.get)


def is_layout(state: Mapping[str, Tensor], family: str, layout: str) -> bool:
    """True when the file holds ``family`` in ``layout``."""
    return detect_family(state) == (family, layout)


# -- the variant ------------------------------------------------------------
def detect_checkpoint(state: Mapping[str, Tensor]) -> CheckpointInfo:
    """Family, layout and, where the shapes tell, the arch and its name
    (read off the backbone's keys: a head or neck tells nothing)."""
    state = tensors_of(state)
    family, layout = detect_family(state)
    info = CheckpointInfo(family, layout, sample=tuple(list(state)[:4]))
    reader = _READERS.get(family)
    if reader is not None:
        try:
            info.arch, info.variant, info.kwargs = reader(
                backbone_part(state), layout)
        except (KeyError, ValueError, IndexError, TypeError,
                ZeroDivisionError):
            pass  # truncated or unusual: the family is still known
    return info


def _read_sparx_swin(state, layout) -> Tuple[dict, Optional[str], dict]:
    arch = sparx_swin_arch(state)
    return arch, sparx_swin_name(arch), {}


# family -> reader(backbone state, layout) -> (arch, variant, kwargs). The
# family converters register theirs (they convert an authors' layout first);
# importing any mmsparx.converters module imports them all.
_READERS: Dict[str, Callable] = {'SparX-Swin': _read_sparx_swin}


def register_reader(family: str) -> Callable[[Callable], Callable]:
    """Decorator: ``reader(state, layout) -> (arch, variant, kwargs)``
    tells :func:`detect_checkpoint` the arch of a ``family`` file."""
    def register(reader: Callable) -> Callable:
        _READERS[family] = reader
        return reader
    return register


def sparx_swin_arch(state: Mapping[str, Tensor]) -> dict:
    """Depths, widths, heads and MLP ratio of an mmsparx SparX-Swin."""
    depths, channels, heads = [], [], []
    for i in range(4):
        pre = f'stages.{i}.blocks.'
        blocks = {int(k[len(pre):].split('.')[0]) for k in state
                  if k.startswith(pre)}
        depths.append(max(blocks) + 1)
        channels.append(state[pre + '0.pos_embed.weight'].shape[0])
        heads.append(state[pre + '0.op.attn.w_msa.relative_position_bias_'
                           'table'].shape[1])
    ratio = state['stages.0.blocks.0.mlp.fc1.weight'].shape[0] / channels[0]
    return dict(depths=tuple(depths), channels=tuple(channels),
                num_heads=tuple(heads), mlp_ratio=ratio)


def sparx_swin_name(arch: Mapping) -> Optional[str]:
    """'tiny' / 'base' when the sizes are that variant's, else None."""
    for name, setting in SWIN_ARCH_SETTINGS.items():
        if all(_same_value(arch[k], setting[k]) for k in
               ('depths', 'channels', 'num_heads', 'mlp_ratio')):
            return name
    return None


# -- the model's side ---------------------------------------------------------
def model_family(model) -> Optional[str]:
    """The family of a built backbone, by its class (or a base class)."""
    for cls in type(model).__mro__:
        if cls.__name__ in CLASS_FAMILIES:
            return CLASS_FAMILIES[cls.__name__]
    return None


def describe_model(model) -> CheckpointInfo:
    """A built backbone described as :func:`detect_checkpoint` describes a
    file: family, arch (``model.arch``, resolved) and its name."""
    family = model_family(model)
    arch = dict(getattr(model, 'arch', None) or {}) or None
    info = CheckpointInfo(family, 'model', arch)
    if family is not None and arch is not None:
        info.variant = _NAMERS[family](arch)
    return info


_NAMERS = {'SparX-Mamba': sparx_arch_name, 'SpaRTAN': spartan_arch_name,
           'SparseSwin': sparseswin_arch_name, 'SparX-Swin': sparx_swin_name}


def same_model(family: str, file_arch: dict, model_arch: dict) -> bool:
    """Whether a file's arch builds the same layers as the model's."""
    if family == 'SparX-Mamba':
        return layer_signature(file_arch) == layer_signature(model_arch)
    return all(_same_value(v, model_arch.get(k)) for k, v in
               file_arch.items() if k != 'sparta_heads')


# -- messages -----------------------------------------------------------------
def family_mismatch(filename: str, info: CheckpointInfo, model) -> str:
    """'checkpoint X holds a SpaRTAN-T model, not SparX-Mamba ...'."""
    expected = FAMILIES[model_family(model)].name
    return (f'checkpoint {filename} holds a {info.label} model, not '
            f'{expected}, so it does not fit {type(model).__name__}: use '
            f'{info.config()} (or give a {expected} checkpoint).')


def variant_mismatch(filename: str, info: CheckpointInfo, model) -> str:
    """'checkpoint X is a SpaRTAN-XT checkpoint but the model is ...'."""
    mine = describe_model(model).label
    settings = [info.arch_setting()] + [
        f'{k}={v!r}' for k, v in info.kwargs.items()
        if getattr(model, k, v) != v]  # e.g. dmca_scale='learned'
    return (f'checkpoint {filename} is a {info.label} checkpoint but the '
            f'model is {mine}, so it does not fit {type(model).__name__}: '
            f'use {", ".join(settings)} (or give a {mine} checkpoint).')


def unknown_model(info: CheckpointInfo) -> str:
    """The sentence for a file of none of the known families."""
    sample = ', '.join(info.sample) or 'no tensors'
    return (f'its keys ({sample}, ...) are none of SparX-Mamba, SparX-Swin, '
            f'SpaRTAN, SparseSwin or Swin-T')


def not_convertible(src: str, info: CheckpointInfo, family: str) -> str:
    """Why a converter CLI has nothing to do with ``src``, and what to do.
    """
    head = f"{src} is not in the authors' {family} layout: "
    if info.family is None:
        return head + unknown_model(info) + \
            f"; give an authors' {family} checkpoint."
    if info.family == family or (family == 'SparseSwin' and
                                 info.family == 'Swin'):
        return head + (f'it is already a {info.label} checkpoint in the '
                       f'{info.layout} layout, nothing to convert: the '
                       f'{family} backbones load it as it is through '
                       "init_cfg=dict(type='Pretrained', checkpoint=...).")
    tool = FAMILIES[info.family].converter
    fix = (f'convert it with {tool}' if tool and info.layout == 'authors'
           else f'load it with {info.config()}')
    return head + (f'it holds a {info.label} model ({info.layout} layout), '
                   f'not {family}; {fix}.')


def refuse_other_family(state_dict: Mapping[str, Tensor], family: str
                        ) -> None:
    """A converter's first step: refuse another family's file by name,
    before any key is renamed (``family``: a :data:`FAMILIES` key)."""
    if detect_family(state_dict)[0] in (None, family):
        return
    info = detect_checkpoint(state_dict)
    raise CheckpointError(
        f'the state dict holds a {info.label} model ({info.layout} layout), '
        f'not {family}: the {family} converter cannot read it; use '
        f'{info.config()}.')
