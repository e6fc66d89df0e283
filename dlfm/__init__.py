"""dlfm: experiment tracking and a model registry for a DeepLense foundation encoder."""

__version__ = "0.1.0"
