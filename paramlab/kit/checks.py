"""Option checks the runners share (`paramlab.runners.Option.check`): each returns None for a good
value and the reason otherwise, so a bad value is refused before any run starts."""

from __future__ import annotations

from ..runners import non_negative, positive
from ..train_checks import betas_reason, eps_reason, momentum_reason, seed_reason


def check_scheme(v) -> str | None:
    from ..schemes import get_scheme

    try:
        get_scheme(v)
    except (ValueError, TypeError) as e:
        return f"is not a scheme ({e})"
    return None


def check_task(v) -> str | None:
    from ..data import TASKS

    return None if v.strip().lower().replace("-", "_") in TASKS else f"is not a task: known are {sorted(TASKS)}"


def check_activation(v) -> str | None:
    from ..models.activations import ACTIVATIONS

    return None if v in ACTIVATIONS else f"is not an activation: known are {sorted(ACTIVATIONS)}"


def check_optimizer(v) -> str | None:
    return None if v.lower() in ("sgd", "adam", "adamw") else "is not an optimizer: sgd, adam or adamw"


def check_betas(v) -> str | None:
    return betas_reason(v) or (None if isinstance(v, list) else "must be a list of two numbers in [0, 1)")


def check_device(v) -> str | None:
    import torch

    try:
        torch.device(v)
    except (RuntimeError, ValueError):
        return "is not a torch device (cpu, cuda, cuda:1, ...)"
    return None


def check_link(v) -> str | None:
    from ..data import LINKS

    return None if v in LINKS else f"is not a link: known are {sorted(LINKS)}"


def check_transfer_pair(v) -> str | None:
    from ..data import TRANSFER_PAIRS

    return None if v in TRANSFER_PAIRS else f"is not a transfer pair: known are {sorted(TRANSFER_PAIRS)}"


def check_dtype(v) -> str | None:
    return None if v in ("float32", "float64") else "is not a dtype: float32 or float64"


def check_widths(v) -> str | None:
    ok = isinstance(v, list) and len(v) >= 2 and all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                                        for w in v)
    return None if ok else "must be a list of at least 2 positive ints"


# option name -> check, for the options every experiment and runner spells the same way
CHECKS = {
    "scheme": check_scheme, "task": check_task, "activation": check_activation, "optimizer": check_optimizer,
    "betas": check_betas, "device": check_device, "widths": check_widths, "link": check_link, "dtype": check_dtype,
    "width": positive, "base_width": positive, "depth": positive, "lr": positive, "batch_size": positive,
    "seeds": positive, "steps": non_negative, "ft_steps": non_negative, "n_train": positive, "n_test": positive, "d": positive,
    "k": positive, "momentum": momentum_reason, "weight_decay": non_negative, "eps": eps_reason,
    "gain": positive, "readout_gain": non_negative, "output_mult": positive, "bias_std": non_negative,
    "embedding_std": non_negative, "eval_every": positive,
    # the Transformer-LM and probe sizes: 0 gives an empty batch or evaluation (NaN, recorded as a divergence)
    "batch": positive, "n_eval": positive, "context": positive, "n_heads": positive, "probe": positive,
    "ntk_probe": positive, "probe_size": positive, "sample_chars": non_negative, "vocab_size": positive,
    "seq_len": positive, "ft_lr_ratio": positive, "gamma0": positive,
    **{k: seed_reason for k in ("seed", "data_seed", "eval_seed", "probe_seed")},
}


def check_heads(cfg) -> str | None:
    """Every Transformer width (width, base_width, each of widths) divisible by n_heads."""
    if "n_heads" not in cfg or cfg.get("model", "transformer") != "transformer":
        return None
    ws = [cfg[k] for k in ("width", "base_width") if isinstance(cfg.get(k), int)] + list(cfg.get("widths") or [])
    bad = [w for w in ws if isinstance(w, int) and w % cfg["n_heads"]]
    return (f"width {bad[0]} is not divisible by n_heads={cfg['n_heads']} (each head gets width / n_heads "
            "dims): choose widths that are multiples of n_heads") if bad else None


# checks of several options of one resolved config: each returns None or the reason
CROSS_CHECKS = (check_heads,)


def cross_check(cfg: dict) -> dict:
    """A Runner's `prepare`: every `CROSS_CHECKS` rule on the resolved config (raises SpecError)."""
    from ..runners import SpecError

    for rule in CROSS_CHECKS:
        why = rule(cfg)
        if why:
            raise SpecError(why)
    return cfg
