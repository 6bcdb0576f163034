"""The package version (one place; ``wdlab --version`` and stored studies read it)."""

__version__ = "0.2.0"
