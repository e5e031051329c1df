"""Scaled dot-product attention without projections, as the paired-modal learner reads it.

Two forms of one computation (``docs/design.md``, "Paired-modal learner"):
:func:`masked_attention` reads one modality's keys, with a padding mask, and
:func:`stacked_reads` computes ``c_m``, the mean over the other modalities of what ``m`` reads, for
every modality of an unmasked ``[M, N, w]`` stack at once, in the same order of operations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["masked_attention", "stacked_reads"]


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, heads: int
) -> Tensor:
    """Multi-head scaled dot-product attention without projections.

    ``q [B, Tq, w]``, ``k, v [B, Tk, w]``, ``key_mask [B, Tk]`` (True = real token). A sample with
    no real key reads zeros. ``[B, w]`` queries or keys/values are one token each; the result has
    ``q``'s shape.
    """
    if k.dim() == 2 or (k.shape[1] == 1 and key_mask is None):
        # one real key: its softmax weight is exactly 1 and the scores' gradient exactly 0, so
        # every query reads v (the same numbers as the general path, without its ops)
        v1 = v if v.dim() == 2 else v[:, 0]
        return v1 if q.dim() == 2 else v1.unsqueeze(1).expand(q.shape)
    if q.dim() == 2:
        return masked_attention(q.unsqueeze(1), k, v, key_mask, heads).squeeze(1)
    b, tq, w = q.shape
    tk = k.shape[1]
    dh = w // heads
    if heads == 1:  # no head axis to split off: the same products with fewer view ops
        qh, kh, vh = q, k, v
    else:
        qh = q.reshape(b, tq, heads, dh).transpose(1, 2)
        kh = k.reshape(b, tk, heads, dh).transpose(1, 2)
        vh = v.reshape(b, tk, heads, dh).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh)  # [B, H, Tq, Tk] ([B, Tq, Tk] for 1)
    if key_mask is not None:
        keep = key_mask[:, None, :] if heads == 1 else key_mask[:, None, None, :]
        scores = scores.masked_fill(~keep, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.where(keep, weights, torch.zeros_like(weights))  # all-masked rows: 0
    else:
        weights = torch.softmax(scores, dim=-1)
    if heads == 1:
        return weights @ vh
    return (weights @ vh).transpose(1, 2).reshape(b, tq, w)


def stacked_reads(a: Tensor, b: Tensor, shape: tuple[int, ...], heads: int) -> Tensor:
    """``c_m`` for every m at once: the mean over the other modalities n of ``Attn(a_m, b_n,
    b_n)`` (``a``, ``b``: ``[M, B*T, w]``, every modality of input ``shape``, no mask)."""
    n, tokens, w = a.shape
    others = [[j for j in range(n) if j != i] for i in range(n)]
    keys = b.flip(0).unsqueeze(1) if n == 2 else b[torch.tensor(others, device=b.device)]
    if len(shape) == 2 or shape[1] == 1:
        # one key each: its softmax weight is exactly 1, every query reads its value
        return keys.mean(1)
    bsz, t = shape[0], shape[1]
    dh = w // heads
    q = a.view(n, 1, bsz, t, w)
    k = keys.view(n, n - 1, bsz, t, w)
    if heads > 1:
        q = q.reshape(n, 1, bsz, t, heads, dh).transpose(-2, -3)
        k = k.reshape(n, n - 1, bsz, t, heads, dh).transpose(-2, -3)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    read = torch.softmax(scores, dim=-1) @ k
    if heads > 1:
        read = read.transpose(-2, -3).reshape(n, n - 1, bsz, t, w)
    return read.mean(1).reshape(n, tokens, w)
