"""SGD / Adam / AdamW over stacked (K, ...) tensors, with per-model, per-tensor lr, weight decay and eps.

The hyperparameters are the ones `paramlab.optim.param_groups` gives each model, and the updates
follow torch's SGD and Adam, so a stacked model trains like the same model under `paramlab.optimizer`
(float64: equal to 1e-10 relative after tens of steps, tests/test_stacked.py).

Adam / AdamW on CPU and CUDA run torch's fused kernels (`torch._fused_adam_`, the kernel behind
`torch.optim.Adam(fused=True)`): one pass over memory instead of Adam's ~8 elementwise passes, which
were most of the stacked step's time outside the GEMMs at width 256. A fused call takes one lr / wd /
eps, so the (model, tensor) slices of the stacks (contiguous views, no copies) are grouped by their
hyperparameters: one call per distinct (lr, wd, eps), at most K x (tensors) calls and in practice
K x (the plan's distinct lr rows). Other devices, and SGD, use the stacked elementwise ops with the
per-model lr as a broadcast (K, 1, ...) tensor.
"""

from __future__ import annotations

import torch

from ..optim import param_groups
from ..schemes import optimizer_family
from .model import MLPEnsemble

__all__ = ["StackedOptimizer"]

_FUSED_DEVICES = ("cpu", "cuda")

# Per-model tensor size from which the optimizer updates model by model (a (K, ...) stack of large
# tensors falls out of cache between Adam's passes; one model's slice does not).
_LOOP_NUMEL = 1 << 18


class StackedOptimizer:
    """SGD / Adam / AdamW over (K, ...) tensors with per-model, per-tensor lr, weight decay and eps.

    `ens`: any stack with `models` (the K modules, for their param_groups), `names` and `params` (name ->
    (K, ...) leaf tensor): an `MLPEnsemble` or a functional `Stacked` (paramlab.stacked.functional)."""

    def __init__(self, ens: MLPEnsemble, name: str, lrs, wds, epss, eps_mode, momentum, nesterov, betas):
        self.name = name.lower()
        self.fam = optimizer_family(self.name)
        if self.fam not in ("sgd", "adam"):
            raise ValueError(f"the stacked optimizer runs SGD and Adam; {name!r} ({self.fam}) trains one model at a time "
                             "with paramlab.optimizer")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.step_count = 0
        # per tensor name: lists over models of the torch param group's lr / weight_decay / eps
        hp = {n: {"lr": [], "wd": [], "eps": []} for n in ens.names}
        for m, lr, wd, eps in zip(ens.models, lrs, wds, epss):
            groups = param_groups(m, self.fam, lr, wd, eps=eps if self.fam == "adam" else None, eps_mode=eps_mode)
            for g in groups:
                for n in g["names"]:
                    hp[n]["lr"].append(g["lr"])
                    hp[n]["wd"].append(g["weight_decay"])
                    hp[n]["eps"].append(g.get("eps", eps))
        self.hp = hp
        self.state: dict[str, dict[str, torch.Tensor]] = {n: {} for n in ens.names}
        self._tensors(ens)

    def _tensors(self, ens: MLPEnsemble, rows: list[int] | None = None) -> None:
        """(Re)build the (K, 1, ...) hyperparameter tensors for the models at `rows`."""
        rows = list(range(len(next(iter(self.hp.values()))["lr"]))) if rows is None else rows
        self.rows = rows
        self.t = {}
        for n in ens.names:
            p = ens.params[n]
            shape = (-1,) + (1,) * (p.dim() - 1)
            h = {key: [self.hp[n][key][r] for r in rows] for key in ("lr", "wd", "eps")}
            t = lambda v: torch.tensor(v, dtype=p.dtype, device=p.device).view(shape)  # noqa: E731
            d = {"neg_lr": t([-v for v in h["lr"]]), "lr_py": h["lr"], "eps_py": h["eps"], "wd_py": h["wd"]}
            if any(h["wd"]):
                d["wd"] = t(h["wd"])
                d["decay"] = t([1 - lr * wd for lr, wd in zip(h["lr"], h["wd"])])
            if self.fam == "adam":
                d["eps"] = t(h["eps"])
            self.t[n] = d
        # fused Adam: the (tensor name, row) slices grouped by (lr, wd, eps); views built on first use
        self.fused = self.fam == "adam" and ens.params[ens.names[0]].device.type in _FUSED_DEVICES
        groups: dict[tuple, list[tuple[str, int]]] = {}
        for n in ens.names:
            for r, key in enumerate(zip(self.t[n]["lr_py"], self.t[n]["wd_py"], self.t[n]["eps_py"])):
                groups.setdefault(key, []).append((n, r))
        self.groups = list(groups.items())
        self._views = None

    def keep(self, ens: MLPEnsemble, keep_idx: torch.Tensor) -> None:
        idx = keep_idx.tolist()
        for n in self.state:
            self.state[n] = {k: v[keep_idx] for k, v in self.state[n].items()}
        self._tensors(ens, [self.rows[i] for i in idx])

    @torch.no_grad()
    def step(self, ens: MLPEnsemble) -> None:
        self.step_count += 1
        if self.fused:
            self._step_fused(ens)
            return
        for n in ens.names:
            p = ens.params[n]
            if p[0].numel() >= _LOOP_NUMEL:
                self._step_loop(n, p)
            else:
                self._step_stacked(n, p)

    def _step_fused(self, ens: MLPEnsemble) -> None:
        """Adam / AdamW through torch's fused kernel, one call per (lr, wd, eps) group of slices.

        The views of params and states stay valid across steps (updates are in place; `keep` rebuilds
        them); the gradients are new tensors every step, so only their row views are taken here.
        """
        if self._views is None or self._views[0] is not ens.params:
            for n in ens.names:
                st = self.state[n]
                if "m" not in st:
                    st["m"] = torch.zeros_like(ens.params[n])
                    st["v"] = torch.zeros_like(ens.params[n])
            rows = {n: (ens.params[n].unbind(0), self.state[n]["m"].unbind(0), self.state[n]["v"].unbind(0))
                    for n in ens.names}
            per_group = [tuple([rows[n][j][r] for n, r in members] for j in range(3)) for _, members in self.groups]
            # one step counter for every slice: the kernel only reads it (bias corrections)
            self._step_t = torch.zeros((), dtype=torch.float32, device=ens.params[ens.names[0]].device)
            self._views = (ens.params, per_group)
        self._step_t.fill_(self.step_count)
        grads = {n: ens.params[n].grad.unbind(0) for n in ens.names}
        fn = torch._fused_adamw_ if self.name == "adamw" else torch._fused_adam_
        for ((lr, wd, eps), members), (ps, ms, vs) in zip(self.groups, self._views[1]):
            gs = [grads[n][r] for n, r in members]
            fn(ps, gs, ms, vs, [], [self._step_t] * len(ps), lr=lr, beta1=self.beta1, beta2=self.beta2,
               weight_decay=wd, eps=eps, amsgrad=False, maximize=False)

    def _step_stacked(self, n: str, p: torch.Tensor) -> None:
        """One update of all K models at once: few kernels, for tensors small enough to stay in cache."""
        step = self.step_count
        grad = p.grad
        t, st = self.t[n], self.state[n]
        if self.fam == "sgd":
            if "wd" in t:
                grad = grad + p * t["wd"]
            if self.momentum != 0:
                if "buf" not in st:
                    st["buf"] = grad.clone()
                else:
                    st["buf"].mul_(self.momentum).add_(grad)
                grad = grad + st["buf"] * self.momentum if self.nesterov else st["buf"]
            p.add_(grad * t["neg_lr"])
            return
        # Adam / AdamW as torch's _single_tensor_adam
        if "wd" in t:
            if self.name == "adamw":
                p.mul_(t["decay"])
            else:
                grad = grad + p * t["wd"]
        if "m" not in st:
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        st["m"].lerp_(grad, 1 - self.beta1)
        st["v"].mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bc1 = 1 - self.beta1 ** step
        bc2_sqrt = (1 - self.beta2 ** step) ** 0.5
        ss = torch.tensor([-(lr / bc1) for lr in t["lr_py"]], dtype=p.dtype, device=p.device).view(t["neg_lr"].shape)
        denom = (st["v"].sqrt() / bc2_sqrt).add_(t["eps"])
        p.add_(st["m"] / denom * ss)

    def _step_loop(self, n: str, p: torch.Tensor) -> None:
        """Model by model on views of the stack, with torch's own single-tensor SGD / Adam ops: for
        large tensors, where one model's slice stays in cache across the optimizer's passes."""
        step = self.step_count
        t, st = self.t[n], self.state[n]
        if self.fam == "sgd":
            if self.momentum != 0 and "buf" not in st:
                st["buf"] = torch.empty_like(p)
            for r, (lr, wd) in enumerate(zip(t["lr_py"], t["wd_py"])):
                pr, g = p[r], p.grad[r]
                if wd != 0:
                    g = g.add(pr, alpha=wd)
                if self.momentum != 0:
                    buf = st["buf"][r]
                    if step == 1:
                        buf.copy_(g)
                    else:
                        buf.mul_(self.momentum).add_(g)
                    g = g.add(buf, alpha=self.momentum) if self.nesterov else buf
                pr.add_(g, alpha=-lr)
            return
        if "m" not in st:
            st["m"] = torch.zeros_like(p)
            st["v"] = torch.zeros_like(p)
        bc1 = 1 - self.beta1 ** step
        bc2_sqrt = (1 - self.beta2 ** step) ** 0.5
        for r, (lr, wd, eps) in enumerate(zip(t["lr_py"], t["wd_py"], t["eps_py"])):
            pr, g, m, v = p[r], p.grad[r], st["m"][r], st["v"][r]
            if wd != 0:
                if self.name == "adamw":
                    pr.mul_(1 - lr * wd)
                else:
                    g = g.add(pr, alpha=wd)
            m.lerp_(g, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            denom = (v.sqrt() / bc2_sqrt).add_(eps)
            pr.addcdiv_(m, denom, value=-(lr / bc1))
