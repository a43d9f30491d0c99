"""Tiny Shakespeare shipped in the package (hash-checked), the char-level split and the LM task."""

import hashlib

import numpy as np
import pytest
import torch

from paramlab import data as D
from paramlab.data import text as T


def test_packaged_corpus_is_the_pinned_file():
    s = D.shakespeare_text()
    raw = s.encode("utf-8")
    assert len(raw) == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert s.startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_a_damaged_corpus_is_refused(monkeypatch):
    monkeypatch.setattr(T, "SHAKESPEARE_SHA256", "0" * 64)
    T.shakespeare_text.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="damaged.*reinstall"):
            T.shakespeare_text()
    finally:
        monkeypatch.undo()
        T.shakespeare_text.cache_clear()


def test_char_split_is_nanogpts_and_round_trips():
    t = D.get_lm_task("shakespeare-char")
    assert t.vocab_size == 65 and len(t.itos) == 65
    assert len(t.train) == 1_003_854 and len(t.val) == 111_540  # int(n * 0.9) and the rest
    text = D.shakespeare_text()
    assert t.decode(t.train[:200]) == text[:200]
    assert t.decode(t.val[-50:]) == text[-50:]
    # the split is contiguous: val is exactly the tail, no character of it is in train's range
    assert t.decode(t.train[-20:]) + t.decode(t.val[:20]) == text[len(t.train) - 20:len(t.train) + 20]
    assert torch.equal(t.encode("To be, or not"), t.train.new_tensor([t.itos.index(c) for c in "To be, or not"]))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        t.encode("naïve")


def test_windows_are_seeded_next_token_pairs_inside_their_split():
    t = D.lm_task(np.arange(1000) % 97, vocab_size=97, val_fraction=0.2)
    assert (len(t.train), len(t.val)) == (800, 200)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x1, y1 = t.windows(16, 32, "train", g1)
    x2, y2 = t.windows(16, 32, "train", g2)
    assert x1.shape == y1.shape == (16, 32) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(y1[:, :-1], x1[:, 1:])  # y is x shifted by one token
    assert torch.equal((x1 + 1) % 97, y1)  # the stream counts up: every target is the next id
    xv, _ = t.eval_windows(8, 32, seed=0)
    xv2, _ = t.eval_windows(8, 32, seed=0)
    assert torch.equal(xv, xv2)
    # val windows come from the val tokens only: ids of positions 800..999
    val_ids = set((np.arange(800, 1000) % 97).tolist())
    assert set(xv.flatten().tolist()) <= val_ids


@pytest.mark.parametrize("kw, match", [
    (dict(tokens=[1]), "at least 2 tokens"),
    (dict(tokens=[0, 1, 2], val_fraction=1.5), "val_fraction"),
    (dict(tokens=[0, 1, 5], vocab_size=3), "outside 0..2"),
])
def test_bad_token_streams_are_refused(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        D.lm_task(**kw)


def test_context_longer_than_the_split_is_refused():
    t = D.lm_task(np.arange(100), val_fraction=0.1)
    with pytest.raises(ValueError, match="context 20 needs a val split longer"):
        t.windows(2, 20, "val")
