"""A check of the first forward pass: does the model use its tensors where paramlab put their multipliers?

paramlab decides each tensor's role and multiplier from the module that holds it (`paramlab.roles`,
`paramlab.multipliers`). Code in a parent's forward can use a tensor behind that module's back, and
the scheme would then silently not apply there:

    logits = h @ self.wte.weight.T          a tied readout with no readout multiplier
    att = (q @ k.transpose(-2, -1)) * s     hand-written attention whose scale paramlab cannot set

So the first forward pass of a parameterized foreign model runs under a TorchFunctionMode that
records, with the stack of modules running at the time,

  * every computation on a parameter (anything but reading its shape, dtype or device) made while
    none of the modules that hold it is running;
  * scaled_dot_product_attention calls, and softmaxes of 4-D tensors (B, heads, T, T), made outside the
    attention modules whose scale paramlab sets (skipped with attention='keep').

If anything was found, the forward raises a ValueError that names the tensor or the module and the
fix; otherwise the check removes itself. It runs once, in eager mode (a call traced by torch.compile
skips it), and costs one slower forward pass. parameterize(..., check_forward=False) turns it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

# reading these says nothing about how a tensor enters the network's function
_BENIGN_NAMES = {
    "size", "dim", "numel", "stride", "is_floating_point", "is_complex", "is_contiguous", "element_size",
    "data_ptr", "get_device", "storage_offset", "untyped_storage", "__len__", "__format__", "__repr__", "__hash__",
    "dtype", "device", "shape", "requires_grad", "is_leaf", "layout", "is_cuda", "is_meta", "ndim", "grad", "names",
    "is_sparse", "is_quantized", "itemsize", "nbytes", "_base", "grad_fn", "output_nr", "_version", "is_nested",
}
_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.Tensor.log_softmax}


def _func_name(func) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property such as .T or .dtype: the descriptor's own name
        return getattr(getattr(func, "__self__", None), "__name__", name)
    return name


class _Recorder(TorchFunctionMode):
    def __init__(self, check):
        super().__init__()
        self.check = check

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.check.see(func, args, kwargs)
        return func(*args, **kwargs)


class ForwardCheck:
    """Root forward pre-hook + forward hook running the check (see the module docstring)."""

    def __init__(self, root: nn.Module, plan, check_attention: bool):
        self.root, self.plan, self.check_attention = root, plan, check_attention
        self.stack: list[nn.Module] = []
        self.problems: list[str] = []
        self._handles = []
        self._mode = None

    def _index(self):
        """Who holds each parameter, and which modules are attention paramlab knows (built per check, after copies)."""
        from .attention import handled_modules

        names = dict(self.root.named_modules())
        self.module_name = {id(m): n for n, m in names.items()}
        self.holders: dict[int, set[int]] = {}
        self.param_name: dict[int, str] = {}
        for mname, mod in names.items():
            for pname, p in mod._parameters.items():
                if p is not None:
                    self.holders.setdefault(id(p), set()).add(id(mod))
                    self.param_name.setdefault(id(p), f"{mname}.{pname}" if mname else pname)
        for u in list(self.plan.tensors) + list(self.plan.uses):  # a module using a claimed child's tensor (MHA)
            mod = names.get(u.module)
            obj = mod
            for part in u.attr.split("."):
                obj = getattr(obj, part, None)
            if mod is not None and isinstance(obj, torch.Tensor):
                self.holders.setdefault(id(obj), set()).add(id(mod))
        self.attention_ok = handled_modules(self.root, self.plan.attention)

    # -- hooks ---------------------------------------------------------------------------------------

    def start(self, module, args):
        if torch.compiler.is_compiling() or self._mode is not None:
            return
        self._index()
        self.stack, self.problems = [module], []  # the root is running; its own hooks are not re-entered
        # per-module hooks, not global ones: a push that runs before the module's own pre-hooks and a pop
        # after its own forward hooks (paramlab's OutputAffine uses the bias there, inside the module)
        self._handles = []
        for m in self.root.modules():
            if m is not self.root:
                self._handles.append(m.register_forward_pre_hook(self._push, prepend=True))
                self._handles.append(m.register_forward_hook(self._pop_hook, always_call=True))
        self._mode = _Recorder(self)
        self._mode.__enter__()

    def _push(self, m, args):
        self.stack.append(m)

    def _pop_hook(self, m, args, out):
        self._pop(m)

    def _pop(self, m):
        if self.stack and self.stack[-1] is m:
            self.stack.pop()

    def finish(self, module, args, out):
        if self._mode is None:
            return None
        self._mode.__exit__(None, None, None)
        self._mode = None
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.problems:
            found = list(dict.fromkeys(self.problems))
            raise ValueError(
                "paramlab checked this model's first forward pass and found uses its plan does not cover:\n  - "
                + "\n  - ".join(found[:8]) + ("\n  ..." if len(found) > 8 else "")
                + "\n(If such a use is not part of the network's function, e.g. a regularizer, pass "
                "check_forward=False to paramlab.parameterize.)"
            )
        remove(module)
        return None

    # -- what is recorded ------------------------------------------------------------------------------

    def _where(self) -> str:
        inner = self.stack[-1] if self.stack else None
        if inner is None:
            return "outside any module"
        return f"in {self.module_name.get(id(inner), '?')!r} ({type(inner).__name__}).forward"

    def see(self, func, args, kwargs):
        running = {id(m) for m in self.stack}
        if self.check_attention and not (running & self.attention_ok):
            if func is F.scaled_dot_product_attention:
                self.problems.append(
                    f"scaled_dot_product_attention is called {self._where()}, outside the attention modules whose scale "
                    "paramlab sets. Give that module a head_dim attribute and call sdpa in its own forward, or pass "
                    "attention='keep' to leave attention scales as the model has them"
                )
            elif func in _SOFTMAX and args and isinstance(args[0], torch.Tensor) and args[0].dim() >= 4:
                self.problems.append(
                    f"a softmax over a {args[0].dim()}-D tensor {tuple(args[0].shape)} {self._where()} looks like "
                    "hand-written attention, whose logit scale paramlab cannot set. Call "
                    "F.scaled_dot_product_attention in an attention module instead (paramlab then sets its scale), or pass "
                    "attention='keep' to train with the model's own scale"
                )
        if _func_name(func) in _BENIGN_NAMES:
            return
        for x in tree_leaves((args, kwargs)):
            if isinstance(x, torch.Tensor) and id(x) in self.holders and not (self.holders[id(x)] & running):
                name = self.param_name[id(x)]
                self.problems.append(
                    f"{name} is used by {_func_name(func) or func!r} {self._where()}, not by the module that holds it, so "
                    f"its multiplier is not applied there (e.g. a readout written as h @ emb.weight.T). Use the tensor "
                    f"through a module: for a tied readout an nn.Linear sharing it (head.weight = emb.weight), which "
                    f"paramlab gives the readout role and multiplier"
                )


def install(model: nn.Module, plan, check_attention: bool) -> None:
    chk = ForwardCheck(model, plan, check_attention)
    model.register_forward_pre_hook(_Start(chk))
    model.register_forward_hook(_Finish(chk), always_call=True)


class _Start:
    def __init__(self, chk):
        self.chk = chk

    def __call__(self, module, args):
        self.chk.start(module, args)


class _Finish:
    def __init__(self, chk):
        self.chk = chk

    def __call__(self, module, args, out):
        return self.chk.finish(module, args, out)


HOOK_TYPES = (_Start, _Finish)


def remove(model: nn.Module) -> None:
    """Remove the check's hooks from `model` (done by the check itself after a clean pass)."""
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for k in [k for k, h in hooks.items() if isinstance(h, HOOK_TYPES)]:
            del hooks[k]
            getattr(model, "_forward_hooks_always_called", {}).pop(k, None)


def pending(model: nn.Module) -> bool:
    return any(isinstance(h, HOOK_TYPES) for h in model._forward_pre_hooks.values())
