"""Kernels from per-example Jacobians, block by block: the contractions the empirical NTK shares
between its Jacobian path (`paramlab.measure.ntk`) and its layerwise path (`ntk_layerwise`).

A Jacobian provider is ``jac(i0, i1) -> name -> (C, K, numel)``: the Jacobians of the K outputs of
inputs i0..i1-1 with respect to each trained tensor. `tile` assembles the (N1, N2, ...) kernel from
blocks over chunks of inputs, `jacobian_blocks` makes those blocks from two providers (caching what it
can), `jacobian_pairs` gives the aligned pairs Theta(x1[i], x2[i]), `contract` is one block, and
`gram_triangle` is the full kernel of one input set from Jacobians held in memory at once, with the
mirrored half skipped.
"""

from __future__ import annotations

import torch

# Row blocks of `gram_triangle`: B blocks compute (B + 1) / (2B) of the full Gram's flops, as B GEMMs
# of (rows / B, P) x (P, the rows from the block on); smaller blocks run slower. Measured (1 thread,
# CPU, a (640, 36864) G): the full G G^T 0.153 s; B = 2: 0.123, 3: 0.116, 4: 0.113, 8: 0.119, 16: 0.153.
_TRIANGLE_BLOCKS = 4


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """[(i0, i1)] covering 0..n-1 in pieces of `size`."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def contract(ja, jb, w, mode: str, pairs: bool):
    """One kernel block from two Jacobian dicts (name -> (C, K, numel)), weighted per tensor by `w`:
    all pairs (Ca, Cb, ...) or, with `pairs`, aligned pairs (C, ...); mode full, trace or diagonal."""
    out = None
    for n in ja:
        a, b = ja[n], jb[n]
        wn = 1.0 if w is None else w[n]
        if pairs:
            if mode == "full":
                t = torch.einsum("akp,alp->akl", a, b)
            elif mode == "trace":
                t = (a * b).sum((1, 2)) / a.shape[1]
            else:
                t = (a * b).sum(2)
        else:
            ca, k, _ = a.shape
            cb = b.shape[0]
            if mode == "full":
                t = (a.reshape(ca * k, -1) @ b.reshape(cb * k, -1).T).reshape(ca, k, cb, k).permute(0, 2, 1, 3)
            elif mode == "trace":
                t = torch.einsum("akp,bkp->ab", a, b) / k
            else:
                t = torch.einsum("akp,bkp->abk", a, b)
        t = t * wn
        out = t if out is None else out + t
    return out


def tile(block, n1: int, n2: int, c: int, same: bool, mode: str, bar=None) -> torch.Tensor:
    """The (N1, N2, ...) kernel from blocks ``block((i0, i1), (j0, j1))`` over chunks of ``c`` inputs.

    With ``same`` (x2 is x1) only the blocks with j >= i are computed; the others are mirrored
    (Theta(x', x) = Theta(x, x')^T in the outputs), which halves the contraction for many chunks.
    """
    rows, cols = chunks(n1, c), chunks(n2, c)
    blocks: dict[tuple[int, int], torch.Tensor] = {}
    for i, ri in enumerate(rows):
        for j, cj in enumerate(cols):
            if same and j < i:
                blk = blocks[(j, i)].transpose(0, 1)
                blocks[(i, j)] = blk.transpose(2, 3) if mode == "full" else blk
                continue
            blocks[(i, j)] = block(ri, cj)
            if bar is not None:
                bar.update(1)
    return torch.cat([torch.cat([blocks[(i, j)] for j in range(len(cols))], dim=1) for i in range(len(rows))], dim=0)


def jacobian_blocks(jac_a, jac_b, w, mode: str, same: bool, cache_b: bool):
    """`tile`'s block function from per-example Jacobian providers ``jac(i0, i1) -> name -> (C, K, numel)``.

    A row's Jacobians are kept while its columns run; the column ones are cached when ``cache_b`` (with
    ``same``, a row then reuses the Jacobians it had as a column).
    """
    row: dict = {}
    cache: dict = {}

    def block(ri, cj):
        if row.get("key") != ri:
            row.update(key=ri, jac=cache[ri] if same and ri in cache else jac_a(*ri))
        if same and ri == cj:
            jb = row["jac"]
        elif cj in cache:
            jb = cache[cj]
        else:
            jb = jac_b(*cj)
            if cache_b:
                cache[cj] = jb
        return contract(row["jac"], jb, w, mode, pairs=False)

    return block


def jacobian_pairs(jac_a, jac_b, n: int, c: int, same: bool, w, mode: str, bar=None) -> torch.Tensor:
    """Aligned pairs Theta(x1[i], x2[i]) from per-example Jacobian providers, chunk by chunk."""
    outs = []
    for i0, i1 in chunks(n, c):
        ja = jac_a(i0, i1)
        outs.append(contract(ja, ja if same else jac_b(i0, i1), w, mode, pairs=True))
        if bar is not None:
            bar.update(1)
    return torch.cat(outs)


def gram_triangle(jac: dict, w, bar=None) -> torch.Tensor:
    """The full-mode kernel (N, N, K, K) of one input set from all its Jacobians (name -> (N, K, numel)).

    Theta(x_i, x_j)_{kl} = sum_name w_name <J_name[i, k], J_name[j, l]>, i.e. the Gram G G^T of the
    (N K, numel) Jacobian rows, summed over tensors. It is symmetric, so only its upper block triangle
    is computed: row block b (N / B examples) against the rows from block b on, one GEMM per tensor
    and block; the lower triangle is the transpose. B = 4 blocks do 62.5% of the full product's flops
    (half is the least any Gram can do), in GEMMs large enough to run near full speed.
    """
    names = list(jac)
    n, k = jac[names[0]].shape[:2]
    g0 = jac[names[0]]
    out = torch.empty(n * k, n * k, dtype=g0.dtype, device=g0.device)
    c = max(1, -(-n // _TRIANGLE_BLOCKS))
    flat = {nm: jac[nm].reshape(n * k, -1) for nm in names}  # (N K, numel), rows ordered (example, output)
    for i0, i1 in chunks(n, c):
        r0, r1 = i0 * k, i1 * k
        blk = None
        for nm in names:
            g = flat[nm]
            wn = 1.0 if w is None else w[nm]
            if blk is None:
                blk = g[r0:r1] @ g[r0:].T  # (c K, (N - i0) K)
                if wn != 1.0:
                    blk.mul_(wn)
            else:
                blk.addmm_(g[r0:r1], g[r0:].T, alpha=wn)
        out[r0:r1, r0:] = blk
        out[r1:, r0:r1] = blk[:, r1 - r0:].T
        if bar is not None:
            bar.update(1)
    return out.view(n, k, n, k).permute(0, 2, 1, 3).contiguous()
