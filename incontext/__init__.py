"""incontext: in-context generalist segmentation (SegGPT / Painter) in JAX/Flax NNX."""

__version__ = "0.1.0"
