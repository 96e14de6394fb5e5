"""The installed gradconceal version (one place; ``gradconceal.__version__`` re-exports it)."""

__version__ = "0.1.0"
