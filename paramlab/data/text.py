"""Text for language models: tiny Shakespeare shipped in the package, and a token-stream task.

``shakespeare_char()`` is nanoGPT's ``shakespeare_char`` (Karpathy's char-rnn corpus: 40,000 lines
of Shakespeare, public-domain text): a character vocabulary of the 65 characters in the file, the
first 90% of the characters for training and the last 10% for validation. The file ships inside
paramlab (``tinyshakespeare.txt.xz``) and its sha256 is checked on every load, so nothing is ever
downloaded and a damaged install fails loudly instead of training on other text.

``lm_task(tokens, vocab_size)`` wraps any 1-d token array (a user's own corpus, a BPE stream) in
the same interface: contiguous train/val split, random windows of ``context`` tokens, and a
held-out loss computed on fixed windows.
"""

from __future__ import annotations

import hashlib
import lzma
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch

SHAKESPEARE_FILE = "tinyshakespeare.txt.xz"
SHAKESPEARE_BYTES = 1_115_394
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """The tiny Shakespeare corpus as one string, checked against its sha256 (raises if damaged)."""
    raw = lzma.decompress(resources.files(__package__).joinpath(SHAKESPEARE_FILE).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if len(raw) != SHAKESPEARE_BYTES or digest != SHAKESPEARE_SHA256:
        raise RuntimeError(
            f"paramlab's packaged {SHAKESPEARE_FILE} is damaged ({len(raw)} bytes, sha256 {digest}; expected "
            f"{SHAKESPEARE_BYTES} bytes, {SHAKESPEARE_SHA256}): reinstall paramlab"
        )
    return raw.decode("utf-8")


@dataclass(frozen=True, eq=False, repr=False)
class LMTask:
    """A token stream split into train and validation parts, for next-token prediction.

    Attributes:
        name:        e.g. ``"shakespeare_char"``.
        train, val:  1-d int64 tensors of token ids in ``0..vocab_size-1`` (val follows train in
                     the source: no window crosses the split, so nothing of val is seen in training).
        vocab_size:  number of token ids.
        itos:        id -> string (characters for a char-level task), or None if unknown.
        meta:        extras (split fraction, source hash, ...).
    """

    name: str
    train: torch.Tensor
    val: torch.Tensor
    vocab_size: int
    itos: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "val"):
            t = getattr(self, split)
            if not torch.is_tensor(t) or t.dtype != torch.int64 or t.dim() != 1:
                raise TypeError(f"LMTask.{split} must be a 1-d int64 tensor of token ids")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
                raise ValueError(f"LMTask.{split} has token ids outside 0..{self.vocab_size - 1}")
        if self.itos is not None and len(self.itos) != self.vocab_size:
            raise ValueError(f"itos has {len(self.itos)} entries for vocab_size {self.vocab_size}")

    kind = "lm"

    def windows(self, n: int, context: int, split: str = "train", generator: torch.Generator | None = None):
        """``n`` random windows: x (n, context) and the next-token targets y (n, context).

        Window starts are uniform over the split (seeded by ``generator``), as nanoGPT's get_batch.
        """
        data = self._split(split)
        if context < 1 or len(data) <= context:
            raise ValueError(f"context {context} needs a {split} split longer than it ({len(data)} tokens)")
        starts = torch.randint(len(data) - context, (n,), generator=generator)  # (n,)
        offs = torch.arange(context + 1)  # (context + 1,)
        win = data[starts[:, None] + offs]  # (n, context + 1)
        return win[:, :-1], win[:, 1:]

    def eval_windows(self, n: int, context: int, split: str = "val", seed: int = 0):
        """A fixed set of ``n`` windows (the same for every run with this seed): the held-out batch."""
        return self.windows(n, context, split, torch.Generator().manual_seed(int(seed)))

    def encode(self, text: str) -> torch.Tensor:
        if self.itos is None:
            raise ValueError(f"task {self.name!r} has no vocabulary to encode text with")
        stoi = {s: i for i, s in enumerate(self.itos)}
        bad = sorted({c for c in text if c not in stoi})
        if bad:
            raise ValueError(f"characters {bad} are not in the vocabulary of {self.name!r}")
        return torch.tensor([stoi[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        if self.itos is None:
            raise ValueError(f"task {self.name!r} has no vocabulary to decode with")
        return "".join(self.itos[int(i)] for i in ids)

    def _split(self, split: str) -> torch.Tensor:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    def __repr__(self) -> str:
        return f"LMTask({self.name!r}, vocab_size={self.vocab_size}, train={len(self.train)}, val={len(self.val)})"


def lm_task(tokens, vocab_size: int | None = None, val_fraction: float = 0.1, name: str = "tokens",
            itos: Sequence[str] | None = None, meta: dict | None = None) -> LMTask:
    """An LMTask from any 1-d token array: the first ``1 - val_fraction`` for training, the rest for
    validation (a contiguous split, as nanoGPT's). ``vocab_size`` defaults to ``max id + 1``."""
    t = torch.as_tensor(np.asarray(tokens), dtype=torch.int64).flatten()
    if t.numel() < 2:
        raise ValueError(f"a token stream needs at least 2 tokens, got {t.numel()}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    vocab = int(t.max()) + 1 if vocab_size is None else int(vocab_size)
    n_train = int(len(t) * (1.0 - val_fraction))
    if n_train < 1 or n_train >= len(t):
        raise ValueError(f"val_fraction {val_fraction} leaves an empty split of {len(t)} tokens")
    return LMTask(name, t[:n_train].clone(), t[n_train:].clone(), vocab,
                  tuple(itos) if itos is not None else None,
                  {"val_fraction": val_fraction, "n_tokens": int(len(t)), **dict(meta or {})})


def char_task(text: str, val_fraction: float = 0.1, name: str = "chars") -> LMTask:
    """A character-level LMTask of ``text``: vocabulary = the sorted set of its characters."""
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    ids = np.fromiter((stoi[c] for c in text), dtype=np.int64, count=len(text))
    return lm_task(ids, len(itos), val_fraction, name, itos)


def shakespeare_char(val_fraction: float = 0.1) -> LMTask:
    """Tiny Shakespeare at the character level (nanoGPT's shakespeare_char): 65 characters, the
    first 90% for training (1,003,854 characters) and the last 10% for validation (111,540)."""
    task = char_task(shakespeare_text(), val_fraction, "shakespeare_char")
    return LMTask(task.name, task.train, task.val, task.vocab_size, task.itos,
                  {**task.meta, "sha256": SHAKESPEARE_SHA256})


LM_TASKS = {"shakespeare_char": shakespeare_char}
