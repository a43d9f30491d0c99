"""Tied embeddings at init: how large the own-token logits start, and the warning when they are far above O(1).

A tensor E (V, d) that is both the embedding and the readout gives token t the logit h . E_t * mult, where
mult is the readout use's forward multiplier. At init the last hidden state of a pre-norm LM is mostly its
own token's embedding, normalized: h ~ sqrt(d) E_t / |E_t|, so the own-token logit is about

    sqrt(d) * |E_t| * mult = sigma * d * mult          (|E_t| = sigma sqrt(d), sigma the embedding's init std)

Under muP (mult = output_mult / m, d = m d0) that is sigma * d0 * output_mult at every width; under SP it
is sigma * d. paramlab's base network draws embeddings N(0, 1) (embedding_std=1), so a tied readout starts
with logits of size d0: measured on HF GPT-2 and Llama from tiny configs (V = 64, muP, widths 128 and 512,
base 32 / 64), the own-token logit RMS is 17.5-21.7 / 34.8-43.3 (0.55-0.68 of the estimate: positions and
the blocks dilute h) and the loss starts at 17-40 instead of ln 64 = 4.16. embedding_std = 1 / d0 brings it
to RMS 0.04-0.10 and a loss of 4.15-4.18 (SP: 0.2-0.9, 4.14-4.30). The default stays 1 (the documented
measurements use it; an untied embedding wants O(1) coordinates) and `make_plan` warns instead, naming the
embedding_std that makes the estimate 1. The estimate is an upper bound when sigma is small (h is then
mostly the blocks' output: SP at width 512 with sigma = 1/32 estimates 16, measured 0.4-0.9).
"""

from __future__ import annotations

import warnings

# estimates above this start far from a uniform prediction (the loss starts near the own-token logit)
LIMIT = 10.0


def own_logit_estimates(plan) -> list[tuple[str, str, float]]:
    """(tensor, readout use, sigma * d * mult) for every tensor used as an embedding and as a readout."""
    out = []
    for u in plan.uses:
        t = plan[u.tensor]
        if u.role == "output" and t.kind == "embedding" and t.init == "normal":
            out.append((t.name, u.name, t.init_std * t.shape[-1] * u.mult))
    return out


def warn_large_tied_logits(plan, stacklevel: int = 4) -> None:
    """Warn, naming embedding_std, when a tied embedding's own-token logits start far above O(1)."""
    for name, use, est in own_logit_estimates(plan):
        if abs(est) > LIMIT:
            t = plan[name]
            warnings.warn(
                f"{name} is tied to the readout {use}: its own-token logits start at about {est:.3g} (embedding std "
                f"{t.init_std:.3g} x width {t.shape[-1]} x readout multiplier {est / (t.init_std * t.shape[-1]):.3g}), "
                f"so the loss starts near that instead of ln(vocab). Pass embedding_std={t.base_std / abs(est):.3g} (the "
                f"estimate becomes 1; under muP that is 1/(base width x output_mult) at every width; or init={{{name!r}: "
                "std}) to start them O(1), or untie the readout (see paramlab.tied)",
                UserWarning, stacklevel=stacklevel)
