"""Builders: each makes a module, tags its roles and applies a scheme (see models.build)."""

from .cnn import CNN, cnn
from .mlp import MLP, mlp
from .transformer import Transformer, transformer

BUILDERS = {"mlp": mlp, "cnn": cnn, "transformer": transformer}

__all__ = ["BUILDERS", "CNN", "MLP", "Transformer", "cnn", "mlp", "transformer"]
