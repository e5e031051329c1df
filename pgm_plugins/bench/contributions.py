"""What each modality and each part contributes to a trained cell, measured on its test rows.

Three measures, computed by the runner on the best epoch's model when it scores a cell (the
record's ``contributions``; ``docs/results.md``):

- **Part contributions** (arms whose block has a partition, :class:`~pgm_plugins.block.PgMBlock`):
  the test primary metric with modality ``m``'s uni (or paired) part replaced by its mean over the
  training rows (:meth:`PgMBlock.replaced_parts`), minus the intact test metric.
- **Modality contributions** (every arm): exact Shapley values over the modalities of the test
  primary metric, where a modality is absent when its site features are replaced by their
  training mean (hooks ahead of any injected block, :class:`SiteTap`). This is how AGM (Li et
  al., "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation", ICCV 2023)
  and BalanceBenchmark (Xu et al., arXiv 2502.10816) measure modality imbalance; the values sum
  to the intact metric minus the metric with every modality at its mean (the efficiency axiom).
  Exact over ``2^M`` coalitions for ``M <= 4`` modalities (one eval pass on test each), none
  beyond.
- **Mixing scalars** (``betas``, arms with a PgM block of ``mix="gate"``): each modality's
  learned ``beta_m`` in ``h_m + beta_m (h_hat_m - h_m)``, what the host receives. Near 0 the
  block's rebuilt features barely reach the host, and no part can change the prediction.
- **Encoder quality**: a linear probe per modality on the trained model's site features (pooled
  over real steps for sequences): closed-form ridge (:func:`~pgm_plugins.bench.probes.ridge_fit`)
  on one-hot labels (classification) or the standardised target (regression), fitted on the
  training rows, its primary metric on test. An arm whose audio probe beats the host's has
  trained a better audio encoder, whatever the fused output says ("modality laziness").

Means and probes use at most :data:`TRAIN_ROWS` training rows (a fixed draw), with the model in
eval mode. Every difference is in the primary metric's own direction (``higher_is_better`` in
the record): for a lower-is-better metric such as MAE, a useful modality has a negative value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from pgm_plugins.bench.metrics import metrics_of
from pgm_plugins.bench.probes import ridge_fit
from pgm_plugins.bench.step import autocast

__all__ = ["MAX_SHAPLEY", "TRAIN_ROWS", "SiteTap", "measure", "probe_predictions", "shapley"]

#: training rows (at most) the means and the probes are computed from
TRAIN_ROWS = 2000
#: the most modalities exact Shapley values are computed for (``2^M`` eval passes)
MAX_SHAPLEY = 4


def shapley(value: Callable[[frozenset[str]], float], players: tuple[str, ...]) -> dict[str, float]:
    """Exact Shapley values of ``players`` for the set function ``value`` (called once per
    coalition): ``phi_i = sum_S |S|! (M-|S|-1)! / M! (v(S + i) - v(S))`` over ``S`` without
    ``i``."""
    n = len(players)
    cache = {
        frozenset(c): float(value(frozenset(c)))
        for k in range(n + 1)
        for c in itertools.combinations(players, k)
    }
    out = {}
    for p in players:
        rest = [q for q in players if q != p]
        total = 0.0
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for c in itertools.combinations(rest, k):
                s = frozenset(c)
                total += weight * (cache[s | {p}] - cache[s])
        out[p] = total
    return out


def probe_predictions(
    fit_x: np.ndarray,
    fit_y: np.ndarray,
    eval_x: np.ndarray,
    task: str,
    num_classes: int | None,
    alpha: float = 1.0,
) -> np.ndarray:
    """A linear probe's outputs on ``eval_x``, as the host's would be read: class scores
    ``[N, C]`` (ridge on one-hot labels) or regression scores ``[N]`` (ridge on the target
    standardised over the fit rows, mapped back)."""
    if task == "classification":
        classes = int(num_classes or int(np.max(fit_y)) + 1)
        target = np.eye(classes)[np.asarray(fit_y, dtype=np.int64)]
        return ridge_fit(fit_x, target, alpha)(eval_x)
    y = np.asarray(fit_y, dtype=np.float64)
    mu, sd = y.mean(), y.std() or 1.0
    return ridge_fit(fit_x, (y - mu) / sd, alpha)(eval_x) * sd + mu


@dataclass
class _SiteView:
    """One modality's site as the tap reads it."""

    site: Any  #: the :class:`~pgm_plugins.injection.site.Site`
    module: nn.Module
    layout: str | None  #: None: 2-D is BD, 3-D is BTD


@dataclass
class _Pooled:
    rows: list[Tensor] = field(default_factory=list)  #: per row, the mean over real tokens
    total: Tensor | None = None  #: sum over every real token
    count: float = 0.0


class SiteTap:
    """Forward hooks at each modality's site, run ahead of any injected block's hooks.

    ``capture = True``: every forward pools each row's site features (over real tokens) and sums
    them; :meth:`take` hands the pooled rows and the token mean over and resets. ``replace =
    {modality: vector}``: the site's features are replaced by the vector (every real token; for
    a ``token=`` site, that token; for a packed sequence, every step). Reads what the injection
    engine reads (:class:`~pgm_plugins.injection.site.Site`: element, layout, call, ``mask=``
    from the host's forward arguments); a ``TokenFrom`` site is read as the whole sequence.
    Use as a context manager: the hooks come off on leaving.
    """

    def __init__(self, model: nn.Module, views: Mapping[str, _SiteView]) -> None:
        self.model = model
        self.views = dict(views)
        self.capture = False
        self.replace: dict[str, Tensor] = {}
        self._pooled: dict[str, _Pooled] = {m: _Pooled() for m in self.views}
        self._args: tuple[Any, dict[str, Any]] = ((), {})
        self._calls: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> SiteTap:
        try:
            self._handles.append(
                self.model.register_forward_pre_hook(self._root, with_kwargs=True, prepend=True)
            )
            for key, view in self.views.items():
                if view.site.at == "input":

                    def pre(mod: nn.Module, args: Any, kwargs: Any, key: str = key) -> Any:
                        new = self._on_site(key, args)
                        return None if new is None else (new, kwargs)

                    h = view.module.register_forward_pre_hook(pre, with_kwargs=True, prepend=True)
                else:

                    def post(mod: nn.Module, args: Any, out: Any, key: str = key) -> Any:
                        return self._on_site(key, out)

                    h = view.module.register_forward_hook(post, prepend=True)
                self._handles.append(h)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def take(self) -> tuple[dict[str, np.ndarray], dict[str, Tensor]]:
        """The pooled rows ``{m: [N, d]}`` and token means ``{m: [d]}`` captured since the last
        call (forwards in order); resets them."""
        rows = {
            m: torch.cat(p.rows).cpu().numpy().astype(np.float64)
            for m, p in self._pooled.items()
            if p.rows
        }
        means = {
            m: p.total / max(p.count, 1.0) for m, p in self._pooled.items() if p.total is not None
        }
        self._pooled = {m: _Pooled() for m in self.views}
        return rows, means

    def _root(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        self._args = (args, kwargs)
        self._calls = {}

    def _on_site(self, key: str, value: Any) -> Any:
        from pgm_plugins.injection.site import (
            from_block,
            get_element,
            set_element,
            to_block,
            unpack,
            with_data,
        )

        view = self.views[key]
        site = view.site
        calls = self._calls.get(key, 0)
        self._calls[key] = calls + 1
        if (site.call is not None and calls != site.call) or not (
            self.capture or key in self.replace
        ):
            return None
        t = get_element(value, site.element)
        token = site.token if isinstance(site.token, int) else None
        mask: Tensor | None
        if isinstance(t, PackedSequence):
            x, mask = unpack(t)
        else:
            layout = view.layout or ("BD" if t.dim() == 2 else "BTD")
            full = to_block(t, layout)
            mask = site.mask.select(*self._args) if site.mask is not None else None
            x = full[:, token] if token is not None else full
            if mask is not None and (token is not None or tuple(mask.shape) != x.shape[:2]):
                mask = None
        if self.capture:
            self._pool(key, x.detach().float(), mask)
        if key not in self.replace:
            return None
        vec = self.replace[key].to(dtype=x.dtype, device=x.device)
        if isinstance(t, PackedSequence):
            new: Any = with_data(t, vec.expand_as(t.data).contiguous())
        elif token is not None:
            full = full.clone()
            full[:, token] = vec
            new = from_block(full, layout, t)
        else:
            got = vec.expand_as(full)
            if mask is not None:
                got = torch.where(mask.unsqueeze(-1), got, full)
            new = from_block(got.contiguous(), layout, t)
        return set_element(value, site.element, new)

    def _pool(self, key: str, x: Tensor, mask: Tensor | None) -> None:
        p = self._pooled[key]
        if x.dim() == 2:
            p.rows.append(x)
            total, count = x.sum(0), float(x.shape[0])
        else:
            w = (
                torch.ones(x.shape[:2], device=x.device)
                if mask is None
                else mask.to(device=x.device, dtype=x.dtype)
            ).unsqueeze(-1)
            n = w.sum(1)
            p.rows.append((x * w).sum(1) / n.clamp_min(1.0))
            total, count = (x * w).sum((0, 1)), float(n.sum())
        p.total = total if p.total is None else p.total.add(total)
        p.count += count


def site_views(model: nn.Module, sites: Any, handle: Any) -> dict[str, _SiteView] | None:
    """Each modality's site in ``model``: the injected block's resolved sites when ``handle``
    has them, else ``sites`` (None: the matching adapter's) resolved as ``pgm_plugins.plan``
    would. None for a junction (one tensor carries every modality)."""
    import pgm_plugins as pp

    plan = getattr(handle, "plan", None) if handle is not None else None
    if plan is None:
        plan = pp.plan(model, sites=sites, config={"task": "none"}, allow_single=True)
    if plan.junction is not None:
        return None
    return {k: _SiteView(rs.site, rs.module, rs.layout) for k, rs in plan.sites.items()}


def measure(
    run: Any,
    data: Any,
    train: np.ndarray,
    test: np.ndarray,
    handle: Any,
    *,
    batch: int,
    device: torch.device,
    precision: str = "fp32",
    arm: Any = None,
) -> dict[str, Any] | None:
    """The record's ``contributions`` of a trained host run (the module docstring): part
    contributions, Shapley values and probes on ``test``, from the means and probes of up to
    :data:`TRAIN_ROWS` of ``train``; ``arm``: the cell's arm run, whose ``predict(outputs,
    inputs)`` reads the host's outputs as the scored predictions do. None for a task without
    a primary metric of this kind (retrieval) or sites that carry several modalities in one
    tensor."""
    if data.task not in ("classification", "regression"):
        return None
    views = site_views(run.model, run.sites, handle)
    if views is None:
        return None
    train = np.asarray(train)
    if len(train) > TRAIN_ROWS:
        train = np.sort(np.random.default_rng(0).choice(train, TRAIN_ROWS, replace=False))
    block: Any = getattr(handle, "block", None) if handle is not None else None
    parts_of = handle is not None and callable(getattr(block, "replaced_parts", None))

    def predict(rows: np.ndarray, each: Callable[[], None] | None = None) -> np.ndarray:
        outs = []
        for inputs, _, _ in run.batches(data, rows, batch, None):
            with autocast(device, precision):
                out = run.predict(inputs)
                if arm is not None:
                    out = arm.predict(out, inputs)
            outs.append(out.detach().float().cpu().numpy())
            if each is not None:
                each()
        return np.concatenate(outs)

    def score(rows: np.ndarray, out: np.ndarray) -> float:
        return float(metrics_of(data, rows, out)[data.primary])

    part_sums: dict[str, list[Any]] = {}

    def add_parts() -> None:
        for m, p in handle.parts.items():
            for name in ("uni", "paired"):
                t = getattr(p, name).float()
                w = (
                    torch.ones(t.shape[:2], device=t.device)
                    if p.mask is None
                    else p.mask.to(device=t.device, dtype=t.dtype)
                ).unsqueeze(-1)
                got = part_sums.setdefault(f"{m}.{name}", [0.0, 0.0])
                got[0] = got[0] + (t * w).sum((0, 1))
                got[1] += float(w.sum())

    mods = tuple(views)
    with SiteTap(run.model, views) as tap:
        tap.capture = True
        predict(train, add_parts if parts_of else None)
        train_x, means = tap.take()
        intact = score(test, predict(test))
        test_x, _ = tap.take()
        tap.capture = False

        def value(present: frozenset[str]) -> float:
            if present == frozenset(mods):
                return intact
            tap.replace = {m: means[m] for m in mods if m not in present}
            try:
                return score(test, predict(test))
            finally:
                tap.replace = {}

        values = shapley(value, mods) if len(mods) <= MAX_SHAPLEY else None
        at_mean = value(frozenset()) if values is not None else None

    parts: dict[str, dict[str, float]] | None = None
    if parts_of and part_sums:
        parts = {}
        for name, (total, count) in part_sums.items():
            m, _, part = name.rpartition(".")
            with block.replaced_parts({name: total / max(count, 1.0)}):
                parts.setdefault(m, {})[part] = score(test, predict(test)) - intact
    y = np.asarray(data.y)
    probes = {
        m: score(
            test,
            probe_predictions(train_x[m], y[train], test_x[m], data.task, data.num_classes),
        )
        for m in mods
        if m in train_x and m in test_x
    }
    return {
        "metric": data.primary,
        "intact": intact,
        "all_at_mean": at_mean,
        "parts": parts,
        "shapley": values,
        "probes": probes,
        "train_rows": len(train),
        # how far the block's rebuilt features enter the host: h + beta (h_hat - h)
        "betas": block.betas() if parts_of and callable(getattr(block, "betas", None)) else None,
    }
