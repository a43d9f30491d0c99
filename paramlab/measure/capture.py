"""Capture named module outputs with forward hooks: what a measurement sees of a network's features.

`capture(model, names)` is a context manager; `Capture` the object it yields (name -> output, in the
order the forward calls finish); `features(model, x)` the outputs of one forward pass;
`leaf_module_names` the modules with no children (the default set).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn


def leaf_module_names(model: nn.Module) -> list[str]:
    """Names of modules without children (the root itself if it has none)."""
    return [n for n, m in model.named_modules() if not any(True for _ in m.children())]


class Capture(Mapping):
    """Outputs of named modules recorded by forward hooks (a read-only mapping name -> tensor).

    A module called once per forward pass is recorded under its name; a module called k > 1 times
    (e.g. one activation module shared by all layers) under ``name[0]``, ..., ``name[k-1]``. Calls
    accumulate until ``clear()``, so clear between forward passes. ``order`` lists the recorded names
    in the order the calls *finished* (a container finishes after its children). Non-tensor outputs
    (tuples, dicts) are skipped.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | None = None, *, detach: bool = True,
                 clone: bool = True):
        mods = dict(model.named_modules())
        names = leaf_module_names(model) if names is None else list(names)
        unknown = [n for n in names if n not in mods]
        if unknown:
            raise ValueError(f"no module named {unknown[:5]} in the model; modules are e.g. {list(mods)[:8]}")
        self.names = names
        self.detach, self.clone = detach, clone
        self._calls: dict[str, list[torch.Tensor]] = {}
        self._order: list[tuple[str, int]] = []
        self._handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor):
                return None
            t = out.detach() if self.detach else out
            if self.clone:
                t = t.clone()
            calls = self._calls.setdefault(name, [])
            self._order.append((name, len(calls)))
            calls.append(t)
            return None

        return hook

    def _key(self, name: str, i: int) -> str:
        return name if len(self._calls[name]) == 1 else f"{name}[{i}]"

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        return {self._key(n, i): self._calls[n][i] for n, i in self._order}

    @property
    def order(self) -> list[str]:
        return [self._key(n, i) for n, i in self._order]

    def clear(self) -> None:
        self._calls.clear()
        self._order.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __getitem__(self, key):
        return self.outputs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self._order)


@contextmanager
def capture(model: nn.Module, names: Iterable[str] | None = None, *, detach: bool = True, clone: bool = True):
    """Context manager: record the outputs of modules ``names`` (default: all leaf modules).

        with capture(model, ["layers.0", "layers.1"]) as feats:
            model(x)
        h1 = feats["layers.1"]

    Hooks are removed on exit. See `Capture` for the naming of modules called several times.
    """
    cap = Capture(model, names, detach=detach, clone=clone)
    try:
        yield cap
    finally:
        cap.remove()


@torch.no_grad()
def features(model: nn.Module, x, names: Iterable[str] | None = None, params: Mapping[str, torch.Tensor] | None = None
             ) -> dict[str, torch.Tensor]:
    """Module outputs on the probe batch ``x`` (one no-grad forward pass), name -> tensor.

    ``params`` (name -> tensor, e.g. a checkpoint's state dict) evaluates the model at those values
    with ``torch.func.functional_call`` instead of its own parameters.
    """
    with capture(model, names) as cap:
        if params is None:
            model(x)
        else:
            torch.func.functional_call(model, dict(params), (x,))
        return dict(cap.outputs)
