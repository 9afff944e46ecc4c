"""Variant tables as data: what the backbones build and what the converters
recognise. Both import from here (never from each other), so the dependency
runs one way: backbones -> converters -> archs."""
