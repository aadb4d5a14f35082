"""The package version (pyproject.toml has the same), importable by every layer."""
__version__ = "0.1.0"
