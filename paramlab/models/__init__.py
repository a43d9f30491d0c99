"""Builders: each makes a module, tags its roles and applies a scheme (see models.build)."""

from .mlp import MLP, mlp

BUILDERS = {"mlp": mlp}

__all__ = ["BUILDERS", "MLP", "mlp"]
