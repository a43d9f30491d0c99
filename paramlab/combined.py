"""One optimizer object over several torch optimizers (Muon for hidden matrices + AdamW for the rest).

`Combined(parts)` is a `torch.optim.Optimizer` whose `param_groups` are the parts' own group dicts
(the same objects, in order), so whatever sets `group["lr"]` — a `for g in opt.param_groups` loop, any
torch scheduler — sets it in the part that steps with it, and every part's own step hooks (paramlab's
per-tensor lr multipliers) keep applying. `step()` steps each part; `zero_grad()` clears every
group's gradients; `state_dict()` / `load_state_dict()` hold one entry per part.
"""

from __future__ import annotations

from collections import ChainMap

import torch

__all__ = ["Combined"]


class Combined(torch.optim.Optimizer):
    """Step several optimizers as one; `parts` keep their classes, state and hooks."""

    def __init__(self, parts):
        parts = list(parts)
        if not parts or not all(isinstance(o, torch.optim.Optimizer) for o in parts):
            raise TypeError("Combined takes a non-empty list of torch optimizers")
        self.parts = parts
        # the parts' own dicts: add_param_group keeps the dict it is given (defaults {} add nothing)
        super().__init__([g for o in parts for g in o.param_groups], {})
        self.state = ChainMap(*(o.state for o in parts))

    def __repr__(self):
        return "Combined(" + ", ".join(type(o).__name__ for o in self.parts) + ")"

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = None if closure is None else closure()  # evaluated once, then every part steps
        for o in self.parts:
            o.step()
        return loss

    def state_dict(self):
        return {"parts": [o.state_dict() for o in self.parts]}

    def load_state_dict(self, state_dict):
        parts = state_dict.get("parts") if isinstance(state_dict, dict) else None
        if parts is None or len(parts) != len(self.parts):
            raise ValueError(f"this state_dict is not from a Combined optimizer of {len(self.parts)} parts")
        for o, sd in zip(self.parts, parts):
            o.load_state_dict(sd)
        # torch's load_state_dict makes new group dicts and state: point at the parts' new ones
        self.param_groups = [g for o in self.parts for g in o.param_groups]
        self.state = ChainMap(*(o.state for o in self.parts))
