"""Text transfer pairs from tiny Shakespeare (shipped with paramlab, `paramlab.data.shakespeare_text`).

Each factory returns (A, B): A a classification `Task` with token-id inputs (``meta["input"] ==
"token_ids"``: the experiment builds `paramlab.models.cbow` for it), B an `Episodes` pool.

``shakespeare_w2v``: TP4's Word2Vec experiment at CPU size.

    A  CBOW language model on the words of the spoken text: predict the centre word from the
       `window` words on each side (full softmax over a `vocab`-word vocabulary). A paramlab
       classification Task whose inputs are token ids:
           x (N, 2 * window) float32 word ids, -1 where a context word is out of vocabulary
             (or beyond the stream); y (N,) int64 centre word id in 0..vocab-1 (in-vocabulary
             centres only). meta["input"] == "token_ids": the model must embed them (`paramlab.models.cbow`).
       Train / test: the first 90% / last 10% of the word stream (contiguous; no window crosses).
    B  word-category probe on the learned word embeddings: a word's features are the model's
       features of the one-word "context" [w] (= its embedding row). Ten hand-written categories
       of content words (CATEGORIES, fixed before any run), each restricted to the vocabulary.
       Episode e: `k` words of every category to fit the probe, all the other category words to
       test it. 10-way, chance ~0.1.
           pool.x (W, 1) float32 word ids, pool.y (W,) category.

Why a kernel cannot do B: in the infinite-width limit (NNGP, NTK, and a probe on the initial
features) every word's embedding is an independent Gaussian vector, so the kernel between two
different words is 0 (exactly, in the limit) and a held-out word carries no information about its
category: accuracy is the constant predictor's. Any accuracy above that comes from embeddings that
moved during training on A. This is TP4's Word2Vec argument ("NTK/GP embeddings are trivial").

Speaker tags ("ROMEO:" lines) are dropped from the stream, so names are learned only from how they
are used in speech, never from the tag context.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np
import torch

from .episodes import Episodes
from .task import Task, check_pos
from .text import shakespeare_text

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

# Ten categories of content words, written before any model was trained. Ambiguous words were left
# out on purpose (e.g. 'bear', 'arms', 'noble', 'one', 'rivers'). Only words in the vocabulary count.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "rank": tuple("king queen prince princess duke duchess lord lady earl sir madam knight gentleman bishop "
                  "cardinal emperor captain lieutenant servant citizen soldier peer lords gentlemen tribune "
                  "tribunes senator senators".split()),
    "family": tuple("father mother son daughter brother sister wife husband uncle aunt cousin nephew niece child "
                    "children sons daughters brothers kinsman grandam babe heir widow".split()),
    "body": tuple("hand hands head eye eyes heart face tongue blood lips tears breast bosom cheek cheeks brow ear "
                  "ears foot feet knee knees neck bones flesh body hair arm".split()),
    "number": tuple("two three four five six seven eight nine ten eleven twelve twenty forty hundred "
                    "thousand".split()),
    "time": tuple("day night hour morning year years days hours minute week tomorrow tonight yesterday today "
                  "evening noon month months nights age".split()),
    "name": tuple("romeo juliet richard henry edward clarence warwick gloucester buckingham hastings marcius "
                  "coriolanus menenius angelo isabella lucio petruchio katharina bianca tranio prospero leontes "
                  "hermione polixenes paulina camillo bolingbroke mowbray gaunt tybalt mercutio capulet montague "
                  "claudio vincentio lucentio hortensio baptista gremio grumio margaret elizabeth stanley "
                  "northumberland aufidius volumnia cominius".split()),
    "place": tuple("england france rome padua verona mantua naples milan ireland wales bohemia sicilia london pisa "
                   "venice".split()),
    "emotion": tuple("love hate fear joy grief sorrow hope anger rage shame pity woe despair delight mirth fury "
                     "envy".split()),
    "speech_verb": tuple("say speak tell swear pray answer call cry ask said spoke told sworn spake".split()),
    "motion_verb": tuple("go come run fly walk ride follow went came fled gone".split()),
}


def _is_tag(lines: list[str], i: int) -> bool:
    """A speaker tag: a line ending in ':' at the start of a paragraph (tiny Shakespeare's format)."""
    return lines[i].endswith(":") and (i == 0 or lines[i - 1] == "")


@lru_cache(maxsize=1)
def spoken_words() -> tuple[str, ...]:
    """The lower-cased words of tiny Shakespeare's speeches, in order (speaker-tag lines removed)."""
    lines = shakespeare_text().split("\n")
    # a speaker tag is a line ending in ':' at the start of a paragraph (the file's format)
    keep = [ln for i, ln in enumerate(lines) if not _is_tag(lines, i)]
    return tuple(WORD.findall("\n".join(keep).lower()))


@lru_cache(maxsize=4)
def vocabulary(vocab: int) -> tuple[str, ...]:
    """The `vocab` most frequent words (ties broken by first occurrence, so the order is fixed)."""
    counts = Counter(spoken_words())
    if vocab > len(counts):
        raise ValueError(f"vocab={vocab} exceeds the {len(counts)} distinct words of the corpus")
    return tuple(w for w, _ in counts.most_common(vocab))


def cbow_task(vocab: int = 2000, window: int = 2, test_fraction: float = 0.1, max_train: int = 0) -> Task:
    """Task A of `shakespeare_w2v` (see the module docstring). max_train > 0 keeps only the first
    max_train training windows (tiny test sizes; the held-out tenth is unchanged)."""
    check_pos(vocab=vocab, window=window)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    itos = vocabulary(vocab)
    stoi = {w: i for i, w in enumerate(itos)}
    ids = np.array([stoi.get(w, -1) for w in spoken_words()], dtype=np.int64)  # (T,), -1 = out of vocabulary
    T = len(ids)
    cut = int(T * (1 - test_fraction))

    def windows(lo, hi):
        pos = np.arange(lo + window, hi - window)
        pos = pos[ids[pos] >= 0]  # in-vocabulary centres only
        offs = np.r_[-window:0, 1:window + 1]  # (2 * window,)
        return ids[pos[:, None] + offs], ids[pos]  # (N, 2w), (N,)

    x_tr, y_tr = windows(0, cut)
    x_te, y_te = windows(cut, T)  # starts `window` after the cut: no window crosses it
    if max_train:
        x_tr, y_tr = x_tr[:max_train], y_tr[:max_train]
    meta = {"input": "token_ids", "vocab_size": vocab, "window": window, "itos": list(itos), "role": "A",
            "n_words": T}
    return Task("shakespeare_cbow", "classification", torch.from_numpy(x_tr.astype(np.float32)),
                torch.from_numpy(y_tr), torch.from_numpy(x_te.astype(np.float32)), torch.from_numpy(y_te),
                d_in=2 * window, d_out=vocab, n_classes=vocab, meta=meta)


def word_category_episodes(vocab: int = 2000, k: int = 4, n_episodes: int = 50, seed: int = 0,
                           min_words: int = 8) -> Episodes:
    """Task B of `shakespeare_w2v`: k words per category fit the probe, the others test it."""
    check_pos(k=k, n_episodes=n_episodes)
    if min_words <= k:
        raise ValueError(f"min_words={min_words} must exceed k={k}: a category needs test words too")
    stoi = {w: i for i, w in enumerate(vocabulary(vocab))}
    names, words, cats = [], [], []
    for name, ws in CATEGORIES.items():
        inv = [w for w in dict.fromkeys(ws) if w in stoi]
        if len(inv) < min_words:  # too few in this vocabulary to split into shots and tests
            continue
        names.append(name)
        words += inv
        cats += [len(names) - 1] * len(inv)
    if len(names) < 2:
        raise ValueError(f"vocab={vocab}: fewer than 2 categories have {min_words} in-vocabulary words")
    y = np.array(cats, dtype=np.int64)
    if len(set(words)) != len(words):
        raise ValueError("a word is in two categories")
    eps = []
    for e in range(n_episodes):
        g = np.random.default_rng([seed, e])
        tr = np.concatenate([g.choice(np.flatnonzero(y == c), size=k, replace=False) for c in range(len(names))])
        te = np.setdiff1d(np.arange(len(y)), tr)
        eps.append((g.permutation(tr).astype(np.int64), te.astype(np.int64)))
    x = torch.tensor([[stoi[w]] for w in words], dtype=torch.float32)  # (W, 1) word ids
    counts = np.bincount(y)
    return Episodes("shakespeare_word_categories", x, torch.from_numpy(y), len(names), eps,
                    {"input": "token_ids", "vocab_size": vocab, "categories": names, "words": words,
                     "k_per_class": k, "chance": 1 / len(names), "seed": seed,
                     "category_sizes": counts.tolist()})


# The Tempest is the last play of tiny Shakespeare; it starts with this speech (the "Master" calls the
# boatswain). Every speech before it in the held-out tenth belongs to The Taming of the Shrew.
TEMPEST_OPENING = "Master:\nBoatswain!"


def speeches() -> list[tuple[str, list[str], int]]:
    """(speaker, words, offset of the first word in `spoken_words()`) for every speech, in order."""
    lines = shakespeare_text().split("\n")
    out, pos = [], 0
    for i, ln in enumerate(lines):
        if _is_tag(lines, i):
            out.append((ln[:-1], [], pos))
            continue
        words = WORD.findall(ln.lower())
        if out:
            out[-1][1].extend(words)
        pos += len(words)
    if pos != len(spoken_words()):  # the two walks must see the same stream
        raise RuntimeError(f"speech split covers {pos} words, the stream has {len(spoken_words())}")
    return out


def play_episodes(vocab: int = 2000, window: int = 2, k: int = 5, n_episodes: int = 50, seed: int = 0,
                  min_words: int = 10, test_fraction: float = 0.1) -> Episodes:
    """B of `shakespeare_plays`: which play is a speech from, The Taming of the Shrew or The Tempest?

    Items: the speeches that lie wholly in task A's held-out tenth of the stream (never trained on)
    with at least `min_words` in-vocabulary words. x (N, L) float32 word ids padded with -1 (the
    CBOW model's features are then the mean embedding of the speech's words); y: 0 Shrew, 1 Tempest.
    Episode e: k speeches of each play fit the probe; the test set is the rest, subsampled to equal
    counts per play (so the constant predictor scores 0.5).
    """
    stoi = {w: i for i, w in enumerate(vocabulary(vocab))}
    cut = int(len(spoken_words()) * (1 - test_fraction)) + window  # A's first held-out centre
    text = shakespeare_text()
    # the Tempest's first speech: the tag line that starts TEMPEST_OPENING
    tag_line = text[:text.index(TEMPEST_OPENING)].count("\n")
    all_speeches = speeches()
    lines = text.split("\n")
    tags = [i for i in range(len(lines)) if _is_tag(lines, i)]
    n_before = all_speeches[tags.index(tag_line)][2]  # stream offset of the Tempest's first word
    rows, y, starts = [], [], []
    for speaker, words, start in all_speeches:
        if start < cut:
            continue
        ids = [stoi[w] for w in words if w in stoi]
        if len(ids) < min_words:
            continue
        rows.append(ids)
        y.append(int(start >= n_before))
        starts.append(start)
    y = np.array(y, dtype=np.int64)
    L = max(map(len, rows))
    x = np.full((len(rows), L), -1, dtype=np.float32)
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
    eps = []
    check_pos(k=k, n_episodes=n_episodes)
    for e in range(n_episodes):
        g = np.random.default_rng([seed, e])
        tr = np.concatenate([g.choice(np.flatnonzero(y == c), size=k, replace=False) for c in (0, 1)])
        rest = [np.setdiff1d(np.flatnonzero(y == c), tr) for c in (0, 1)]
        n = min(map(len, rest))
        te = np.sort(np.concatenate([g.choice(r, size=n, replace=False) for r in rest]))
        eps.append((g.permutation(tr).astype(np.int64), te.astype(np.int64)))
    return Episodes("shakespeare_plays", torch.from_numpy(x), torch.from_numpy(y), 2, eps,
                    {"input": "token_ids", "vocab_size": vocab, "classes": ["shrew", "tempest"], "k_per_class": k,
                     "chance": 0.5, "counts": np.bincount(y).tolist(), "seed": seed,
                     "starts": starts, "first_heldout_word": cut})


def shakespeare_w2v(k: int = 4, n_episodes: int = 50, seed: int = 0, vocab: int = 2000, window: int = 2,
                    max_train: int = 0):
    """(A, B): CBOW on the spoken words -> which of 10 categories is a held-out word (module docstring)."""
    return cbow_task(vocab, window, max_train=max_train), word_category_episodes(vocab, k, n_episodes, seed)


def shakespeare_plays(k: int = 5, n_episodes: int = 50, seed: int = 0, vocab: int = 2000, window: int = 2,
                      max_train: int = 0):
    """(A, B): the same CBOW A -> which play is a held-out speech from (`play_episodes`)."""
    return cbow_task(vocab, window, max_train=max_train), play_episodes(vocab, window, k, n_episodes, seed)


TEXT_PAIRS = {"shakespeare_w2v": shakespeare_w2v, "shakespeare_plays": shakespeare_plays}
