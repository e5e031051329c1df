"""Each MMSA host's own training recipe, and one trainer step per host.

MMSA's trainers do not run here (the MulT and MMIM trainers pass a scheduler argument torch
removed, ``MMSA_run`` fails on CPU, LMF's trainer never updates its fusion weights, Self-MM and
MMIM file parameters into optimizer groups by name substrings, which would misfile a PgM
block's). :class:`HostTrainer` re-implements one training step of each, faithful to the
trainer in ``MMSA/trains`` (losses, weights, optimizer groups, learning rates, gradient
clipping), with these departures, listed in ``HostTrainer.changes``:

- one optimizer step per batch (MMSA accumulates ``update_epochs`` batches for some hosts);
- groups are built from parameter identity, never name substrings;
- the dense text module that replaces BERT is trained at the host's main learning rate (BERT's
  5e-5 is a fine-tuning rate for pretrained weights; ours start random);
- TFN: every trainable parameter is optimised (MMSA's ``list(model.parameters())[2:]`` leaves out
  the audio subnet's BatchNorm by accident); LMF: the fusion weights and bias are optimised with
  the factors (MMSA's ``[:3]`` / ``[5:]`` slices leave them out);
- Self-MM: uni-modal labels are generated as in MMSA from +-1 labels (``excludeZero`` holds: no
  label is 0), initialised when a sample is first seen, and class centres use seen samples only;
- MMIM: both stages (lld maximisation with the MMILB optimizer, then the main loss) run on each
  batch, where MMSA runs stage 1 over the whole epoch first.

With a PgM handle, the block's groups (``handle.param_groups``) join the host's and
``handle.aux_loss(labels)`` joins the host's losses.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgm_mmsa.adapters import _inner, host_kind
from pgm_mmsa.hosts import TEXT_MODULE, host_info, host_parts
from pgm_plugins.bench.step import Clip, Stage, Stepper

SELFMM_TASKS = {"M": "fusion", "T": "text", "A": "audio", "V": "vision"}
SELFMM_FEATURES = {
    "fusion": "Feature_f",
    "text": "Feature_t",
    "audio": "Feature_a",
    "vision": "Feature_v",
}
__all__ = ["HostTrainer", "cmd_loss", "diff_loss", "host_param_groups"]

CHANGES = (
    "one optimizer step per batch (no update_epochs accumulation)",
    "optimizer groups by parameter identity, not name substrings",
    "Adam fused where torch supports it (same update rule, fewer kernel calls)",
    "the dense text module trains at the host's main learning rate, not BERT's",
)
KIND_CHANGES = {
    "tfn": ("all trainable parameters optimised (MMSA's [2:] slice skips a BatchNorm)",),
    "lmf": ("fusion weights/bias optimised at factor_lr (MMSA's slices skip them)",),
    "self_mm": (
        "uni-modal label generation on +-1 labels, initialised per sample when first seen",
    ),
    "mmim": (
        "MMILB stage and main stage both run on each batch",
        "the entropy term is skipped when MMSA's estimate is not finite (small batches)",
    ),
}


# ---------------------------------------------------------------------- MISA's losses
def diff_loss(a: Tensor, b: Tensor) -> Tensor:
    """MISA's soft orthogonality between two representations (``DiffLoss``)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True).detach() + 1e-6)
    b = b / (b.norm(dim=1, keepdim=True).detach() + 1e-6)
    return (a.t() @ b).pow(2).mean()


def cmd_loss(x1: Tensor, x2: Tensor, n_moments: int = 5) -> Tensor:
    """MISA's central moment discrepancy (``CMD``)."""
    m1, m2 = x1.mean(0), x2.mean(0)
    s1, s2 = x1 - m1, x2 - m2
    total = (m1 - m2).pow(2).sum().sqrt()
    for k in range(2, n_moments + 1):
        total = total + (s1.pow(k).mean(0) - s2.pow(k).mean(0)).pow(2).sum().sqrt()
    return total


def _misa_losses(net: nn.Module, cfg: Mapping[str, Any]) -> dict[str, Tensor]:
    sh = [net.utt_shared_t, net.utt_shared_v, net.utt_shared_a]
    pr = [net.utt_private_t, net.utt_private_v, net.utt_private_a]
    diff = sum(diff_loss(p, s) for p, s in zip(pr, sh, strict=True))
    diff = diff + diff_loss(pr[2], pr[0]) + diff_loss(pr[2], pr[1]) + diff_loss(pr[0], pr[1])
    cmd = (cmd_loss(sh[0], sh[1]) + cmd_loss(sh[0], sh[2]) + cmd_loss(sh[2], sh[1])) / 3.0
    recon = (
        F.mse_loss(net.utt_t_recon, net.utt_t_orig)
        + F.mse_loss(net.utt_v_recon, net.utt_v_orig)
        + F.mse_loss(net.utt_a_recon, net.utt_a_orig)
    ) / 3.0
    if not cfg.get("use_cmd_sim", True):
        raise ValueError("MISA with use_cmd_sim=False (adversarial similarity) is not supported.")
    return {
        "diff": cfg["diff_weight"] * diff,
        "sim": cfg["sim_weight"] * cmd,
        "recon": cfg["recon_weight"] * recon,
    }


# ---------------------------------------------------------------------- optimizer groups
def _params(named: Sequence[tuple[str, nn.Parameter]]) -> list[nn.Parameter]:
    return [p for _, p in named if p.requires_grad]


def host_param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The host's optimizer groups as its MMSA trainer builds them (for MMIM: the main
    optimizer's; :class:`HostTrainer` keeps the MMILB group apart). Each group is named."""
    kind = host_kind(model)
    if kind is None:
        raise ValueError(f"{type(model).__name__} is not an MMSA model.")
    cfg = host_info(model).config
    parts = host_parts(model)
    every = [np for part in parts.values() for np in part]
    if kind in ("mult", "misa", "tfn"):  # one Adam group at learning_rate
        return [{"name": "host", "params": _params(every), "lr": cfg["learning_rate"]}]
    if kind == "lmf":
        factor_names = ("audio_factor", "video_factor", "text_factor", "fusion_weights")
        factors = [
            (n, p) for n, p in every if n.rsplit(".", 1)[-1] in (*factor_names, "fusion_bias")
        ]
        ids = {id(p) for _, p in factors}
        rest = [(n, p) for n, p in every if id(p) not in ids]
        wd = cfg.get("weight_decay", 0.0)
        return [
            {
                "name": "factors",
                "params": _params(factors),
                "lr": cfg["factor_lr"],
                "weight_decay": wd,
            },
            {
                "name": "host",
                "params": _params(rest),
                "lr": cfg["learning_rate"],
                "weight_decay": wd,
            },
        ]
    if kind == "self_mm":
        other = parts["fusion"] + parts["heads"]
        return [
            {
                "name": "text",
                "params": _params(parts["text"]),
                "lr": cfg["learning_rate_other"],
                "weight_decay": cfg["weight_decay_bert"],
            },
            {
                "name": "audio",
                "params": _params(parts["audio"]),
                "lr": cfg["learning_rate_audio"],
                "weight_decay": cfg["weight_decay_audio"],
            },
            {
                "name": "vision",
                "params": _params(parts["vision"]),
                "lr": cfg["learning_rate_video"],
                "weight_decay": cfg["weight_decay_video"],
            },
            {
                "name": "other",
                "params": _params(other),
                "lr": cfg["learning_rate_other"],
                "weight_decay": cfg["weight_decay_other"],
            },
        ]
    # mmim: the main optimizer (text at lr_main, see CHANGES); MMILB kept apart
    mmilb = {id(p) for p in _mmilb_params(model)}
    main = [(n, p) for n, p in every if id(p) not in mmilb]
    return [
        {
            "name": "host",
            "params": _params(main),
            "lr": cfg["lr_main"],
            "weight_decay": cfg["weight_decay_main"],
        }
    ]


def _mmilb_params(model: nn.Module) -> list[nn.Parameter]:
    net, _ = _inner(model)
    mods = [getattr(net, n) for n in ("mi_tv", "mi_ta", "mi_va") if hasattr(net, n)]
    return [p for m in mods for p in m.parameters() if p.requires_grad]


def _adam(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam as MMSA's trainers use it, fused where torch supports it (the same update, one
    kernel per group: a PgM block's many small tensors make the per-tensor loop costly)."""
    try:
        return torch.optim.Adam(groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(groups)


# ---------------------------------------------------------------------- the trainer
class HostTrainer:
    """One training step of an MMSA host as its own trainer does it, optionally with PgM.

    Args:
        model: a host from :func:`pgm_mmsa.build_host` (``AMIO`` or bare), possibly injected.
        handle: the ``PgMHandle`` of a block injected into ``model``; its groups and
            ``aux_loss`` join the host's.
        block_lr: the block's base learning rate (default: the host's main one).
        train_samples: Self-MM only: how many training samples (its label maps are per sample).
        init_seed: MMIM only: seed of the generator its re-initialisation draws from (default
            ``torch.initial_seed()``, the last ``torch.manual_seed``), so a host starts from the
            same weights with or without a block injected before the trainer is built (the
            block's own init would otherwise shift the global RNG).

    ``step(inputs, labels, index=None)`` runs one step on host inputs (as
    :func:`pgm_mmsa.host_inputs` makes them) and ``[B]`` labels in {-1, +1}; returns the loss
    terms as floats. Call :meth:`next_epoch` between epochs (Self-MM updates its labels from
    the second epoch on).
    """

    def __init__(
        self,
        model: nn.Module,
        handle: Any = None,
        *,
        block_lr: float | None = None,
        train_samples: int | None = None,
        init_seed: int | None = None,
    ) -> None:
        kind = host_kind(model)
        if kind is None:
            raise ValueError(f"{type(model).__name__} is not an MMSA model.")
        self.kind, self.model, self.handle = kind, model, handle
        #: what the training forwards call: ``model``, or its DistributedDataParallel wrapper
        self.train_model: nn.Module = model
        self.info = host_info(model)
        self.cfg = self.info.config
        self.net, _ = _inner(model)
        self.changes = CHANGES + KIND_CHANGES.get(kind, ())
        self.epoch, self.batches = 1, 0
        groups = host_param_groups(model)
        main_lr = groups[-1]["lr"]
        if kind == "mmim":
            self._mmim_init(torch.initial_seed() if init_seed is None else init_seed)
        if handle is not None:
            groups = handle.param_groups(base_lr=block_lr or main_lr, host_groups=groups)
        self.optimizer = _adam(groups)
        self.mmilb_optimizer = (
            _adam(
                [
                    {
                        "params": _mmilb_params(model),
                        "lr": self.cfg["lr_mmilb"],
                        "weight_decay": self.cfg["weight_decay_mmilb"],
                    }
                ]
            )
            if kind == "mmim"
            else None
        )
        self.mem: dict[str, list[dict[str, Tensor]]] = {"tv": [], "ta": [], "va": []}
        self.train_samples = train_samples
        self._selfmm: dict[str, Tensor] = {}

    def _mmim_init(self, seed: int) -> None:
        """MMSA's MMIM trainer re-initialises every non-text matrix (xavier normal); drawn here
        from a generator seeded by ``seed``, in parameter order, never from the global RNG."""
        text = TEXT_MODULE["mmim"] + "."
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                if p.dim() > 1 and not name.startswith((text, "pgm_")):
                    drawn = torch.empty(p.shape, dtype=p.dtype)  # on the CPU generator's device
                    nn.init.xavier_normal_(drawn, generator=gen)
                    p.copy_(drawn)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.batches = 0

    # ------------------------------------------------------------------ the step
    def _clip(self) -> Clip | None:
        clip = self.cfg.get("grad_clip", -1.0)
        if self.kind in ("mult", "misa") and clip != -1.0:
            return Clip("value", clip)
        if self.kind == "mmim":
            return Clip("norm", clip)
        return None

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The recipe's optimizers by name: ``"main"``, and MMIM's ``"mmilb"``."""
        out = {"main": self.optimizer}
        if self.mmilb_optimizer is not None:
            out["mmilb"] = self.mmilb_optimizer
        return out

    def losses(
        self, outputs: Mapping[str, Any], labels: Tensor, index: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The host's loss terms (task + its auxiliary losses) for one forward's outputs."""
        y = labels.reshape(-1, 1).to(outputs["M"].dtype)
        if self.kind == "misa":
            return {"task": F.mse_loss(outputs["M"], y), **_misa_losses(self.net, self.cfg)}
        if self.kind == "self_mm":
            return self._selfmm_losses(outputs, labels, index)
        return {"task": F.l1_loss(outputs["M"], y)}

    def stages(
        self, inputs: Sequence[Any], labels: Tensor, index: Tensor | None = None
    ) -> Iterator[Stage]:
        """One training step as :class:`~pgm_plugins.bench.step.Stage` s (the runner, or
        :meth:`step`, runs backward, clipping and the optimizer of each); the block's
        ``aux_loss`` is added by whoever runs them."""
        if self.kind == "misa" and labels.numel() < 2:
            raise ValueError(
                f"MISA's training step needs at least 2 samples per batch; got {labels.numel()}. "
                "Its CMD loss over one sample is sqrt(0), whose gradient is NaN and would turn "
                "every weight NaN. Train with a batch size of at least 2 and drop or merge a last "
                "batch of one (DataLoader(..., drop_last=True), or "
                "pgm_plugins.bench.bench_host.batch_rows); nothing was changed."
            )
        self.model.train()
        if self.kind == "mmim":
            yield from self._mmim_stages(inputs, labels)
            return
        outputs = self.train_model(*inputs)
        terms = self.losses(outputs, labels, index)
        yield Stage(terms, clip=self._clip(), block_targets=labels.reshape(-1).float())
        if self.kind == "self_mm":
            self._selfmm_update(outputs, index)
        self.batches += 1

    def step(
        self, inputs: Sequence[Any], labels: Tensor, index: Tensor | None = None
    ) -> dict[str, float]:
        """Run :meth:`stages` with backward, clipping and the optimizer steps, in fp32 on the
        model's device; returns the loss terms as floats (``"loss"`` the total)."""
        stepper = Stepper(self.model, self.optimizers, handle=self.handle)
        terms = stepper.step(self.stages(inputs, labels, index), labels)
        return {k: float(v) for k, v in terms.items()}

    # ------------------------------------------------------------------ MMIM
    def _mmim_stages(self, inputs: Sequence[Any], labels: Tensor) -> Iterator[Stage]:
        cfg = self.cfg
        text, audio, vision = inputs[:3]
        aim = labels.reshape(-1).float()
        # stage 1: maximise the lld lower bound with the MMILB optimizer. The block's losses of
        # this forward join it, which keeps them out of stage 2's aux_loss (aux_loss covers
        # every training forward since the last read); the gradients they leave on the block
        # are cleared before stage 2, as MMSA's MMILB optimizer holds only the MMILB parameters
        out = self.train_model(text, audio, vision)
        yield Stage(
            {"lld": -out["lld"]},
            optimizer="mmilb",
            clip=Clip("norm", cfg["grad_clip"], over="model"),
            block_targets=aim,
            report=False,
        )
        # stage 2: the main loss
        y = labels.reshape(-1, 1).float()
        ready = self.batches >= cfg["mem_size"] and len(self.mem["tv"]) > 0
        mem = (
            {
                k: {
                    "pos": [m["pos"] for m in self.mem[k]],
                    "neg": [m["neg"] for m in self.mem[k]],
                }
                if self.mem[k]
                else None
                for k in ("tv", "ta", "va")
            }
            if ready
            else {"tv": None, "ta": None, "va": None}
        )
        out = self.train_model(text, audio, vision, y=y, mem=mem)
        terms = {"task": F.l1_loss(out["M"], y)}
        if cfg["contrast"]:
            terms["nce"] = cfg["alpha"] * out["nce"]
            terms["lld"] = -cfg["beta"] * out["lld"]
        # MMSA's entropy estimate (log-determinants of the class covariances) is NaN when a
        # batch plus memory holds too few samples of a class; the term is then left out
        h = out["H"]
        if self.batches > cfg["mem_size"] and isinstance(h, Tensor) and torch.isfinite(h):
            terms["entropy"] = -cfg["beta"] * h
        yield Stage(terms, clip=self._clip(), block_targets=aim)
        for k, pn in out["pn_dic"].items():
            if pn is None or pn.get("pos") is None:
                continue
            entry = {"pos": pn["pos"].detach(), "neg": pn["neg"].detach()}
            if len(self.mem[k]) < cfg["mem_size"]:
                self.mem[k].append(entry)
            else:
                self.mem[k][self.batches % cfg["mem_size"]] = entry
        self.batches += 1

    # ------------------------------------------------------------------ Self-MM

    def _selfmm_state(self, index: Tensor, outputs: Mapping[str, Any]) -> None:
        n = self.train_samples or int(index.max()) + 1
        if int(index.max()) >= n:
            raise ValueError(
                f"Self-MM sample index {int(index.max())} >= train_samples {n}; give "
                "HostTrainer(..., train_samples=N) with N the training set size."
            )
        if not self._selfmm:
            s: dict[str, Tensor] = {"seen": torch.zeros(n, dtype=torch.bool)}
            for mode, feat in SELFMM_FEATURES.items():
                s[f"label_{mode}"] = torch.zeros(n)
                s[f"feature_{mode}"] = torch.zeros(n, outputs[feat].shape[-1])
            self._selfmm = s

    def _selfmm_losses(
        self, outputs: Mapping[str, Any], labels: Tensor, index: Tensor | None
    ) -> dict[str, Tensor]:
        if index is None:
            index = torch.arange(labels.shape[0])
        index = index.reshape(-1).cpu()
        self._selfmm_state(index, outputs)
        s = self._selfmm
        new = ~s["seen"][index]
        for mode in SELFMM_FEATURES:
            s[f"label_{mode}"][index[new]] = labels.reshape(-1).float().cpu()[new]
        s["seen"][index] = True
        self._index = index
        terms = {}
        fusion = s["label_fusion"][index]
        for key, mode in SELFMM_TASKS.items():
            target = s[f"label_{mode}"][index]
            pred = outputs[key].reshape(-1)
            w = torch.ones_like(pred) if mode == "fusion" else torch.tanh((target - fusion).abs())
            terms["task" if key == "M" else f"uni_{mode}"] = (
                (w * (pred - target.to(pred))).abs().mean()
            )
        return terms

    def _selfmm_update(self, outputs: Mapping[str, Any], index: Tensor | None) -> None:
        s, index = self._selfmm, self._index
        feats = {m: outputs[f].detach().cpu().float() for m, f in SELFMM_FEATURES.items()}
        if self.epoch > 1:
            self._selfmm_labels(feats, index)
        for m, f in feats.items():
            s[f"feature_{m}"][index] = f

    def _selfmm_labels(self, feats: Mapping[str, Tensor], index: Tensor) -> None:
        s, eps, seen = self._selfmm, 1e-8, self._selfmm["seen"]

        def centre(mode: str, sign: int) -> Tensor:
            labels = s[f"label_{mode}"]
            pick = seen & ((labels > 0) if sign > 0 else (labels < 0))
            return s[f"feature_{mode}"][pick].mean(0)

        def delta(mode: str) -> Tensor:
            dp = (feats[mode] - centre(mode, 1)).norm(dim=-1)
            dn = (feats[mode] - centre(mode, -1)).norm(dim=-1)
            return (dn - dp) / (dp + eps)

        delta_f = delta("fusion")
        y_f = s["label_fusion"][index]
        n = self.epoch
        for mode in ("text", "audio", "vision"):
            delta_s = delta(mode)
            alpha = delta_s / (delta_f + eps)
            new = 0.5 * alpha * y_f + 0.5 * (y_f + delta_s - delta_f)
            new = new.clamp(-self.cfg["H"], self.cfg["H"])
            old = s[f"label_{mode}"][index]
            s[f"label_{mode}"][index] = (n - 1) / (n + 1) * old + 2 / (n + 1) * new
