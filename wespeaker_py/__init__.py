"""wespeaker_py: a recipe-driven speaker verification toolkit in PyTorch."""

__version__ = "0.1.0"
