"""The package version, importable without the package root (which loads models and strategies)."""

__version__ = "0.1.0"
