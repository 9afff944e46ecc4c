"""Losses of the papers' models (torch only)."""
from mmsparx.models.losses.sparta_attention import (SparTaAttentionLoss,
                                                    attention_penalty)

__all__ = ['SparTaAttentionLoss', 'attention_penalty']
