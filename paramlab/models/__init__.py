"""Builders: each makes a module, tags its roles and applies a scheme (see models.build).

The builder functions live in their modules (`paramlab.models.mlp.mlp`, ...; also `paramlab.mlp`):
the package keeps the module names, so `paramlab.models.mlp` is the module, never shadowed.
"""

from . import cbow, cnn, mlp, transformer
from .build import BASE_WIDTH
from .cbow import CBOW
from .cnn import CNN
from .mlp import MLP
from .transformer import Transformer

# name -> builder function: builder(sizes..., width, *, scheme=..., base_width=..., **plan options)
BUILDERS = {"mlp": mlp.mlp, "cnn": cnn.cnn, "transformer": transformer.transformer, "cbow": cbow.cbow}

__all__ = ["BASE_WIDTH", "BUILDERS", "CBOW", "CNN", "MLP", "Transformer", "cbow", "cnn", "mlp", "transformer"]
