"""paramlab's version (one place; the package root and run records read it)."""

__version__ = "0.1.0"
