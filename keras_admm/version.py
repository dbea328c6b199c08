"""The one version string of keras-admm (setup.py reads it)."""

__version__ = "0.1.0"
