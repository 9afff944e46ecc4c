"""Generated datasets (COCO, ADE20K and ImageNet formats) for tests and demos."""
from .generate import generate_ade20k, generate_coco, generate_imagenet

__all__ = ['generate_coco', 'generate_ade20k', 'generate_imagenet']
