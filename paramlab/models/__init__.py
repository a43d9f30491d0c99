"""Builders: each makes a module, tags its roles and applies a scheme (see models.build)."""

from .mlp import MLP, mlp

__all__ = ["MLP", "mlp"]
