"""Synthetic multimodal data with known uni-modal / paired-modal ground truth.

Fixed before any tuning of the block (``docs/method.md``); the ground truth is also committed as
``benchmarks/results/method/synthetic_truth.json`` (:func:`truth` writes the same content).

Three modalities, each observed through a fixed random mixing of its latent factors plus noise:

- ``a``: 3 uni-modal factors and 1 paired factor (true uni share 0.75),
- ``b``: 1 uni-modal factor and 3 paired factors (true uni share 0.25),
- ``c``: pure noise (no factor; no share to recover).

The label is ``y = 1[sum_m U_m + gamma * P_a * P_b + 0.25 eps > 0]`` with ``U_m`` the normalised
sum of m's uni factors and ``P_m`` the normalised sum of m's paired factors. ``P_a * P_b`` is
symmetric in the sign of each factor, so it predicts the label only jointly (an XOR of signs):
no function of one modality alone carries it. ``swap=True`` exchanges the factor counts of ``a``
and ``b`` (true shares 0.25 / 0.75), the "moved mix" against which learned shares are checked.

:func:`synthetic` is the registered factory: per seed its own train / valid / test draws,
stacked into one :class:`~pgm_plugins.bench.data.bench_data.BenchData`. torch is imported when
data are generated, not with this module.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pgm_plugins.bench.data.bench_data import BenchData, Fold, check_protocol
from pgm_plugins.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["SPEC", "SyntheticSplit", "digest", "make_synthetic", "synthetic", "truth"]

#: the generator's fixed settings (the committed ground truth is derived from these)
SPEC: dict[str, Any] = {
    "widths": {"a": 16, "b": 16, "c": 16},
    "uni_factors": {"a": 3, "b": 1, "c": 0},
    "paired_factors": {"a": 1, "b": 3, "c": 0},
    "gamma": 1.5,
    "observation_noise": 0.5,
    "label_noise": 0.25,
    "mixing_seed": 1234,
    "sizes": {"train": 1000, "valid": 1000, "test": 2000},
}


@dataclass
class SyntheticSplit:
    x: dict[str, Tensor]  #: modality -> [N, d]
    y: Tensor  #: [N] int64 labels in {0, 1}
    factors: dict[str, Tensor]  #: 'uni.<m>' / 'paired.<m>' -> [N, k] latent factors
    score: Tensor  #: [N] the noiseless label score


def _counts(swap: bool) -> tuple[dict[str, int], dict[str, int]]:
    uni, paired = dict(SPEC["uni_factors"]), dict(SPEC["paired_factors"])
    if swap:
        uni["a"], uni["b"] = uni["b"], uni["a"]
        paired["a"], paired["b"] = paired["b"], paired["a"]
    return uni, paired


def truth(swap: bool = False) -> dict[str, Any]:
    """True uni share per modality (uni factors / all factors; None for the noise modality)."""
    uni, paired = _counts(swap)
    shares: dict[str, float | None] = {
        m: (uni[m] / (uni[m] + paired[m]) if uni[m] + paired[m] else None) for m in uni
    }
    known = {m: s for m, s in shares.items() if s is not None}
    order = sorted(known, key=lambda m: -known[m])
    return {
        "spec": SPEC,
        "swap": swap,
        "uni_factors": uni,
        "paired_factors": paired,
        "true_uni_share": shares,
        "order_by_uni_share": order,
        "paired_factor_modalities": [m for m in paired if paired[m]],
        "noise_modalities": [m for m in uni if not uni[m] + paired[m]],
    }


def make_synthetic(split: str, seed: int, swap: bool = False) -> SyntheticSplit:
    """One split (``train`` / ``valid`` / ``test``) for ``seed``; splits of a seed are disjoint
    draws, the mixing matrices are the same for every seed and split."""
    import torch

    if split not in SPEC["sizes"]:
        raise KeyError(f"unknown split {split!r}; valid: {', '.join(SPEC['sizes'])}.")
    n = SPEC["sizes"][split]
    offset = list(SPEC["sizes"]).index(split)
    g = torch.Generator().manual_seed(10_007 * seed + 101 * offset + (7 if swap else 0))
    mixing = torch.Generator().manual_seed(SPEC["mixing_seed"])
    uni_k, paired_k = _counts(swap)
    x, factors = {}, {}
    score = torch.zeros(n)
    pooled_paired = {}
    for m, d in SPEC["widths"].items():
        k_u, k_p = uni_k[m], paired_k[m]
        mix = torch.randn(max(k_u + k_p, 1), d, generator=mixing) / math.sqrt(max(k_u + k_p, 1))
        u = torch.randn(n, k_u, generator=g)
        p = torch.randn(n, k_p, generator=g)
        factors[f"uni.{m}"], factors[f"paired.{m}"] = u, p
        if k_u + k_p == 0:
            x[m] = torch.randn(n, d, generator=g)
            continue
        if k_u:
            score = score + u.sum(1) / math.sqrt(k_u)
        if k_p:
            pooled_paired[m] = p.sum(1) / math.sqrt(k_p)
        latent = torch.cat([u, p], dim=1)
        x[m] = latent @ mix + SPEC["observation_noise"] * torch.randn(n, d, generator=g)
    prod = torch.ones(n)
    for v in pooled_paired.values():
        prod = prod * v
    score = score + SPEC["gamma"] * prod
    y = (score + SPEC["label_noise"] * torch.randn(n, generator=g) > 0).long()
    return SyntheticSplit(x, y, factors, score)


def digest(split: SyntheticSplit) -> str:
    """SHA-256 of the split's tensors (modalities in order, then labels)."""
    h = hashlib.sha256()
    for m in sorted(split.x):
        h.update(split.x[m].numpy().tobytes())
    h.update(split.y.numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- the factory
def synthetic(
    protocol: str | None = None,
    data_dir: str | None = None,
    seeds: Iterable[int] = tuple(range(10)),
    swap: bool = False,
) -> BenchData:
    """The method study's generator (:func:`make_synthetic`): for each seed in
    ``seeds`` its own train / valid / test draws (1,000 / 1,000 / 2,000 rows, modalities ``a``,
    ``b``, ``c`` of width 16), stacked; ``folds(seed)`` returns that seed's rows. ``swap=True``
    exchanges the factor counts of ``a`` and ``b``. ``data_dir`` is ignored (nothing is read).

    ``extras["truth"]`` is :func:`truth` (true uni share per modality, ``order_by_uni_share``);
    ``extras["factors"]`` the latent factors per row."""
    proto = check_protocol("synthetic", protocol, ("default",))
    seed_list = [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"synthetic: seeds must be distinct and non-empty, got {seed_list}.")
    xs: dict[str, list[np.ndarray]] = {m: [] for m in SPEC["widths"]}
    factors: dict[str, list[np.ndarray]] = {}
    ys, seed_of, split_of = [], [], []
    index: dict[int, dict[str, np.ndarray]] = {}
    start = 0
    h = hashlib.sha256(repr(sorted(SPEC.items())).encode() + repr(swap).encode())
    for seed in seed_list:
        index[seed] = {}
        for split in ("train", "valid", "test"):
            part = make_synthetic(split, seed, swap)
            n = len(part.y)
            for m in xs:
                xs[m].append(part.x[m].numpy().astype(np.float32))
            for k, v in part.factors.items():
                factors.setdefault(k, []).append(v.numpy().astype(np.float32))
            ys.append(part.y.numpy().astype(np.int64))
            seed_of.append(np.full(n, seed, dtype=np.int64))
            split_of.append(np.full(n, split))
            index[seed][split] = np.arange(start, start + n)
            start += n
            h.update(digest(part).encode())

    def folds(seed: int) -> list[Fold]:
        if seed not in index:
            raise ConfigError(
                f"synthetic: seed {seed} was not generated; this data set holds seeds "
                f"{seed_list}. Give options.seeds = [...] covering the suite's seeds."
            )
        rows = index[seed]
        return [Fold(rows["train"], rows["valid"], rows["test"], fold=0, seed=seed)]

    known = truth(swap)
    return BenchData(
        name="synthetic",
        protocol=proto,
        description=(
            "synthetic 3-modality binary task with known uni / paired factors (a mostly uni, "
            "b mostly paired, c noise); per seed 1,000 / 1,000 / 2,000 fresh rows"
            + (" (swapped mix)" if swap else "")
        ),
        x={m: np.concatenate(v) for m, v in xs.items()},
        y=np.concatenate(ys),
        task="classification",
        num_classes=2,
        folds=folds,
        digest=h.hexdigest(),
        primary="acc",
        changes=("generated, not read: each seed draws its own train / valid / test rows",),
        extras={
            "truth": known,
            "factors": {k: np.concatenate(v) for k, v in factors.items()},
            "seed": np.concatenate(seed_of),
            "split": np.concatenate(split_of),
            "independent_seeds": True,
        },
    )
