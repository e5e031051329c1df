"""Cross-modal retrieval on av-digits: a dual encoder with and without PgM.

A timm image tower (``pgm_timm.create_tower``, 28x28 grey images) and a small 1-D conv audio tower
over MFCC frames each project to a shared embedding. Training loss: class-aware (supervised
contrastive) InfoNCE across the modalities, every same-digit item in the batch a positive (pairs
are label-level, so plain InfoNCE would push apart true matches). The train pairs are re-drawn
within digit and the batches reshuffled every epoch. Early stopping on validation mAP (mean of
both directions, speaker lucas) with an epoch cap; test (speaker theo) is scored once, with the
weights chosen on valid: audio->image over the 1,000 test images, image->audio over the 500 test
clips, P@1, P@10 and mAP (relevance = same digit).

Arms (same seeds, data order, optimizer, schedule and budget):

- ``baseline``: the dual encoder alone;
- ``pgm``: a PgM block injected with ``pgm_plugins.inject`` at the two embeddings
  (``image_proj``, ``audio_proj``), independent mode, ``paired='shared'``, ``task='none'``; its
  auxiliary loss (``handle.aux_loss()``) is added to the contrastive loss;
- ``capacity``: the same-size residual-MLP control (``pgm_plugins.bench.arms.CapacityControl``)
  injected by the same engine at the same sites (``block_factory=``).

One record per cell under ``benchmarks/results/av_digits/<suite>/``, in the result schema of
``pgm bench`` (``pgm_plugins/bench/record.py``: data set ``av-digits``, protocol ``retrieval``,
host ``dual_encoder``, the fold numbering the test speaker), read through the same reader, so
``pgm bench report main --results benchmarks/results/av_digits`` reports them like any suite
(the first records, of an older layout, are read the same way); a rerun skips finished cells.
``summary.md`` holds this benchmark's own table (every retrieval metric, mean +- std over seeds;
differences to baseline and to capacity with ``pgm_plugins.bench.stats.compare``'s paired-t 95 %
intervals over seeds).

Why it is not a runner task: its evaluation ranks every test clip against every test image
(500 x 1,000) and the reverse, which is not a function of per-row predictions (what the runner
scores), and its training pairs clips with images drawn anew each epoch at label level; it
shares the runner's records, reader and statistics instead.

    python benchmarks/av_digits_retrieval.py                    # 3 arms x 3 seeds
    python benchmarks/av_digits_retrieval.py --seeds 0 1 2 3 4 --data-dir DIR
    python benchmarks/av_digits_retrieval.py --summary-only     # rebuild the table
    python benchmarks/av_digits_retrieval.py --suite lr3e-4 --lr 3e-4   # another setting
    python benchmarks/av_digits_retrieval.py --held-out george --seeds 0   # one LOSO fold
    python benchmarks/av_digits_retrieval.py --loso             # table across the LOSO folds
    python benchmarks/av_digits_retrieval.py --select main lr3e-4   # per arm, the setting with
                                                                    # the best mean valid mAP
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgm_plugins._io import atomic_write_text
from pgm_plugins.bench.arms import block_factory, count_parameters
from pgm_plugins.bench.data import av_digits
from pgm_plugins.bench.hosts import AudioTower
from pgm_plugins.bench.legacy import RETRIEVAL_KINDS, RETRIEVAL_SPEAKERS, retrieval_record
from pgm_plugins.bench.metrics import RETRIEVAL_DIRECTIONS
from pgm_plugins.bench.record import DIGEST_SCHEME, read_records
from pgm_plugins.bench.results import ResultStore, code_digest, environment
from pgm_plugins.bench.runner import cell_digest
from pgm_plugins.bench.stats import compare

RESULTS = Path(__file__).resolve().parent / "results" / "av_digits"
ARM_NAMES = ("baseline", "pgm", "capacity")
DIRECTIONS = ("audio2image", "image2audio")
METRICS = ("p@1", "p@10", "map")


@dataclass
class Spec:
    image_tower: str = "timm:resnet18"
    dim: int = 128  #: shared embedding width (the sites' width)
    audio_hidden: int = 128
    temperature: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch: int = 100
    max_epochs: int = 12
    patience: int = 3
    frames: int = 32
    clip: float = 5.0


class DualEncoder(nn.Module):
    """``encode_image`` / ``encode_audio`` give un-normalised embeddings; ``forward`` both."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        from pgm_timm import create_tower

        self.image_encoder = create_tower(spec.image_tower, in_chans=1)
        self.image_proj = nn.Linear(int(self.image_encoder.num_features), spec.dim)
        self.audio_encoder = AudioTower(av_digits.NUM_CEP, hidden=spec.audio_hidden)
        self.audio_proj = nn.Linear(self.audio_encoder.width, spec.dim)

    def encode_image(self, images: Tensor) -> Tensor:
        return self.image_proj(self.image_encoder(images))

    def encode_audio(self, frames: Tensor) -> Tensor:
        return self.audio_proj(self.audio_encoder(frames))

    def forward(self, images: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_image(images), self.encode_audio(frames)


def supcon_loss(za: Tensor, zb: Tensor, ya: Tensor, yb: Tensor, temperature: float) -> Tensor:
    """Symmetric cross-modal InfoNCE with every same-label item of the other modality a positive
    (the mean log-probability of the positives, per query)."""
    logits = F.normalize(za, dim=-1) @ F.normalize(zb, dim=-1).T / temperature
    pos = (ya[:, None] == yb[None, :]).float()

    def one_way(lg: Tensor, p: Tensor) -> Tensor:
        logp = lg.log_softmax(dim=1)
        return -((logp * p).sum(1) / p.sum(1).clamp_min(1.0)).mean()

    return 0.5 * (one_way(logits, pos) + one_way(logits.T, pos.T))


def _embed(fn: Any, x: Tensor, chunk: int = 500) -> np.ndarray:
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)]).cpu().numpy()


def evaluate(
    model: DualEncoder, data: av_digits.AvDigits, split: str, device: str = "cpu"
) -> dict[str, Any]:
    """Retrieval on ``split``: its clips query its images and the reverse (embedded separately,
    one modality per call, under ``no_grad``, on ``device``; the ranking runs on the CPU)."""
    clips, rows = data.clips(split), data.image_rows(split)
    model.eval()
    with torch.no_grad():
        frames = torch.from_numpy(data.audio_frames[clips]).to(device)
        za = _embed(model.encode_audio, frames)
        zi = _embed(model.encode_image, torch.from_numpy(data.images[rows]).unsqueeze(1).to(device))
    ya, yi = data.audio_label[clips], data.image_label[rows]
    out: dict[str, Any] = {
        "audio2image": av_digits.retrieval_metrics(za, ya, zi, yi),
        "image2audio": av_digits.retrieval_metrics(zi, yi, za, ya),
    }
    out["map_mean"] = 0.5 * (out["audio2image"]["map"] + out["image2audio"]["map"])
    return out


def run_cell(
    arm: str,
    seed: int,
    data: av_digits.AvDigits,
    spec: Spec,
    block_config: Mapping[str, Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """Train and score one cell on ``device``: the weights are drawn on the CPU (the same
    initialisation on every device), the data set moves to the device once, and the batches'
    order and pairs come from a NumPy generator (no torch generator is mixed across devices)."""
    import pgm_plugins as pp

    start = time.perf_counter()
    torch.manual_seed(seed)
    model = DualEncoder(spec).to(device)
    host_params = count_parameters(model)
    handle = None
    if arm != "baseline":
        factory = block_factory("capacity", {}) if arm == "capacity" else None
        handle = pp.inject(
            model,
            sites={"image": "image_proj", "audio": "audio_proj"},
            config={"task": "none", "paired": "shared", **block_config},
            mode="independent",
            block_factory=factory,
        )
        groups = handle.param_groups(base_lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        groups = [{"params": list(model.parameters()), "lr": spec.lr}]
        groups[0]["weight_decay"] = spec.weight_decay
    block_params = count_parameters(model) - host_params
    opt = torch.optim.AdamW(groups)
    rng = np.random.default_rng(seed)
    train_clips = data.clips("train")
    frames = torch.from_numpy(data.audio_frames).to(device)
    images = torch.from_numpy(data.images).unsqueeze(1).to(device)
    labels = torch.from_numpy(data.audio_label).to(device)
    best: tuple[float, int, dict[str, Tensor]] = (-1.0, -1, {})
    curves: dict[str, list[float]] = {"train_loss": [], "aux_loss": [], "valid_map": []}
    for epoch in range(spec.max_epochs):
        model.train()
        pair = av_digits.redraw_pairs(data, "train", rng)  # fresh label-level pairs
        order = rng.permutation(len(train_clips))
        tot, tot_aux, n = 0.0, 0.0, 0
        for i in range(0, len(order), spec.batch):
            b = order[i : i + spec.batch]
            clip_idx = torch.from_numpy(train_clips[b]).to(device)
            img_idx = torch.from_numpy(pair[b]).to(device)
            y = labels[clip_idx]
            zi, za = model(images[img_idx], frames[clip_idx])
            loss = supcon_loss(za, zi, y, y, spec.temperature)
            tot += float(loss.detach()) * len(b)
            if handle is not None:
                aux = handle.aux_loss()
                tot_aux += float(aux.detach()) * len(b)
                loss = loss + aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
            opt.step()
            n += len(b)
        valid = evaluate(model, data, "valid", device)
        curves["train_loss"].append(tot / n)
        curves["aux_loss"].append(tot_aux / n)
        curves["valid_map"].append(valid["map_mean"])
        print(
            f"  {arm} seed {seed} epoch {epoch}: loss {tot / n:.4f} aux {tot_aux / n:.4f} "
            f"valid mAP {valid['map_mean']:.4f}",
            flush=True,
        )
        if valid["map_mean"] > best[0]:
            best = (valid["map_mean"], epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= spec.patience:
            break
    model.load_state_dict(best[2])
    record: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "spec": asdict(spec),
        "metrics": {
            "valid": evaluate(model, data, "valid", device),
            "test": evaluate(model, data, "test", device),
        },
        "best_epoch": best[1],
        "epochs_run": len(curves["valid_map"]),
        "curves": curves,
        "parameters": {"host": host_params, "block": block_params},
        "block_config": None,
    }
    if handle is not None:
        record["block_config"] = handle.block.config.to_dict()
        record["betas"] = handle.block.betas()
        handle.remove()
    record["wall_s"] = time.perf_counter() - start
    return record


def _score(record: Mapping[str, Any], direction: str, metric: str, split: str = "test") -> float:
    """A record's ``metric`` (``p@1``, ``p@10``, ``map``) in ``direction`` on ``split``."""
    return float(record["metrics"][split][f"{metric}_{RETRIEVAL_DIRECTIONS[direction]}"])


def _fmt(values: Sequence[float]) -> str:
    a = np.asarray(values, dtype=float)
    sd = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():.3f} +- {sd:.3f}"


def select(suites: Mapping[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per arm, the records of the suite (setting) with the best mean validation mAP over seeds
    (ties: the first suite given); and one line per arm saying what was chosen."""
    chosen: list[dict[str, Any]] = []
    notes = []
    for arm in ARM_NAMES:
        scores = {}
        for name, records in suites.items():
            cells = [r for r in records if r["key"]["arm"] == arm]
            if cells:
                scores[name] = float(np.mean([c["metrics"]["valid"]["map"] for c in cells]))
        if not scores:
            continue
        best = max(scores, key=lambda k: scores[k])  # first of equal maxima
        chosen += [r for r in suites[best] if r["key"]["arm"] == arm]
        tried = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
        notes.append(f"- {arm}: `{best}` (mean valid mAP per setting: {tried})")
    return chosen, notes


def summarise(records: list[dict[str, Any]], digest: str | None, notes: Sequence[str] = ()) -> str:
    """The markdown table: per arm mean +- std; differences with paired-t 95 % intervals."""
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by_arm.setdefault(r["key"]["arm"], {})[r["key"]["seed"]] = r
    arms = [a for a in ARM_NAMES if a in by_arm]
    held = records[0]["data"].get("test_speaker", "theo") if records else "theo"
    valid_speaker = "lucas" if held == "theo" else av_digits.LOSO_VALID[held]
    lines = [
        f"# av-digits cross-modal retrieval (test speaker {held}; 500 clips, 1,000 images)",
        "",
        "Written by `benchmarks/av_digits_retrieval.py`; one JSON per cell next to this file.",
        f"Data digest (SHA-256 of every file read): `{digest}`." if digest else "",
        "",
        "Mean +- sd over seeds (n per arm in brackets); weights chosen by early stopping on",
        f"validation mAP (speaker {valid_speaker}). Reference (README, logistic-regression class",
        "probabilities): audio->image mAP 0.742, image->audio mAP 0.750; chance about 0.10.",
        "",
        "| arm | n | a->i P@1 | a->i P@10 | a->i mAP | i->a P@1 | i->a P@10 | i->a mAP "
        "| valid mAP | best epoch | block params |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if notes:
        lines[9:9] = ["Setting chosen per arm on validation mAP only:", "", *notes, ""]
    for a in arms:
        cells = list(by_arm[a].values())
        vals = [_fmt([_score(c, d, m) for c in cells]) for d in DIRECTIONS for m in METRICS]
        valid = _fmt([c["metrics"]["valid"]["map"] for c in cells])
        ep = ", ".join(str(c["best_epoch"]) for c in cells)
        lines.append(
            f"| {a} | {len(cells)} | {' | '.join(vals)} | {valid} | {ep} | "
            f"{cells[0]['parameters']['block']} |"
        )
    lines += [
        "",
        "Differences (arm - reference), paired over seeds, 95 % t interval, two-sided p, (wins/n):",
        "",
        "| arm vs reference | metric | audio->image | image->audio |",
        "| --- | --- | --- | --- |",
    ]
    for a, ref in (("pgm", "baseline"), ("capacity", "baseline"), ("pgm", "capacity")):
        if a not in by_arm or ref not in by_arm:
            continue
        seeds = sorted(set(by_arm[a]) & set(by_arm[ref]))
        if len(seeds) < 2:
            continue
        for m in METRICS:
            row = []
            for d in DIRECTIONS:
                xa = [_score(by_arm[a][s], d, m) for s in seeds]
                xb = [_score(by_arm[ref][s], d, m) for s in seeds]
                row.append(compare(xa, xb).text())
            lines.append(f"| {a} vs {ref} | {m} | {row[0]} | {row[1]} |")
    return "\n".join(lines) + "\n"


def summarise_loso(folds: Mapping[str, list[dict[str, Any]]], seed: int = 0) -> str:
    """Leave-one-speaker-out: per test speaker, every arm's test mAP at ``seed`` (the seed every
    fold ran); differences paired over speakers (each speaker one fold, so the folds share most
    training speakers: the t interval treats them as independent and is optimistic)."""
    by = {
        speaker: {r["key"]["arm"]: r for r in records if r["key"]["seed"] == seed}
        for speaker, records in sorted(folds.items())
    }
    arms = [a for a in ARM_NAMES if any(a in cells for cells in by.values())]
    lines = [
        "# av-digits cross-modal retrieval, leave one speaker out",
        "",
        f"Written by `benchmarks/av_digits_retrieval.py --loso`; seed {seed} in every fold; per",
        "fold the test speaker's 500 clips against the 1,000 test images, validation on the next",
        "speaker (`LOSO_VALID`), training on the other four. Test mAP per fold:",
        "",
        "| test speaker | " + " | ".join(f"{a} a->i | {a} i->a" for a in arms) + " |",
        "| --- |" + " --- | --- |" * len(arms),
    ]
    for speaker, cells in by.items():
        row = [
            f"{_score(cells[a], d, 'map'):.3f}" if a in cells else "-"
            for a in arms
            for d in DIRECTIONS
        ]
        lines.append(f"| {speaker} | {' | '.join(row)} |")
    lines += [
        "",
        "Differences (arm - reference) in test mAP, paired over speakers, 95 % t interval,",
        "two-sided p, (wins/n):",
        "",
        "| arm vs reference | audio->image | image->audio |",
        "| --- | --- | --- |",
    ]
    for a, ref in (("pgm", "baseline"), ("capacity", "baseline"), ("pgm", "capacity")):
        both = [cells for cells in by.values() if a in cells and ref in cells]
        if len(both) < 2:
            continue
        row = [
            compare(
                [_score(c[a], d, "map") for c in both],
                [_score(c[ref], d, "map") for c in both],
            ).text()
            for d in DIRECTIONS
        ]
        lines.append(f"| {a} vs {ref} | {row[0]} | {row[1]} |")
    return "\n".join(lines) + "\n"


def _cell_settings(
    arm: str,
    spec: Spec,
    digest: str | None,
    held: str,
    limit: int,
    env: Mapping[str, Any],
    device: str = "cpu",
) -> dict[str, Any]:
    """What decides a retrieval cell besides its key (the runner's digest scheme): the arm, the
    recipe, the data, the held-out speaker, the code (this script's and the packages') and the
    device when it is not the CPU (another device rounds differently; the CPU cells' settings
    are those of the records written before the option existed)."""
    device_key = {} if device == "cpu" else {"device": device}
    return {
        **device_key,
        "digest_scheme": DIGEST_SCHEME,
        "code": {
            "pgm_plugins": env["versions"]["pgm_plugins"],
            "pgm_plugins code": code_digest("pgm_plugins"),
            "pgm_timm code": code_digest("pgm_timm"),
            "script": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
        },
        "arm": {"kind": RETRIEVAL_KINDS.get(arm, "pgm")},
        "data_digest": digest,
        "spec": asdict(spec),
        "held_out": held,
        "limit": limit,
    }


def _device(parser: argparse.ArgumentParser, name: str) -> str:
    """``name`` as a torch device string; a clear error (nothing run) for one this torch
    cannot use."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        parser.error(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N.")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if not count or (device.index is not None and device.index >= count):
            valid = f"cpu or cuda:0..{count - 1}" if count else "cpu (no GPU here)"
            parser.error(
                f"--device {name}: this machine's torch sees {count} CUDA device(s); use {valid}."
            )
    elif device.type != "cpu":
        parser.error(f"--device {name!r}: only cpu and cuda devices are supported.")
    return str(device)


def _records(folder: Path, suite: str | None = None) -> list[dict[str, Any]]:
    """The folder's cell records through the one reader (unusable files reported)."""
    good, problems = read_records(folder, suite or folder.name)
    for p in problems:
        print(f"warning: {p.text()}", file=sys.stderr)
    return [r for _, r in good]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding av-digits/ (PGM_DATA_DIR)")
    p.add_argument("--results", default=None, help=f"result folder (default {RESULTS})")
    p.add_argument("--suite", default=None, help="sub-folder of the results (default main)")
    p.add_argument("--arms", nargs="+", default=list(ARM_NAMES), choices=ARM_NAMES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--image-tower", default=Spec.image_tower)
    p.add_argument("--max-epochs", type=int, default=Spec.max_epochs)
    p.add_argument("--patience", type=int, default=Spec.patience)
    p.add_argument("--lr", type=float, default=Spec.lr)
    p.add_argument("--batch", type=int, default=Spec.batch)
    p.add_argument("--limit", type=int, default=0, help="train on the first N train clips (tests)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device",
        default="cpu",
        help="where cells train: cpu (default), cuda, cuda:N (a GPU cell is its own cell: the "
        "device is part of its settings)",
    )
    p.add_argument(
        "--held-out",
        default=None,
        metavar="SPEAKER",
        help="leave-one-speaker-out fold: SPEAKER's clips are the test clips (suite "
        "loso-SPEAKER unless --suite is given)",
    )
    p.add_argument("--summary-only", action="store_true")
    p.add_argument(
        "--select",
        nargs="+",
        metavar="SUITE",
        help="summarise these suites: per arm the one with the best mean valid mAP "
        "(written to RESULTS/summary.md)",
    )
    p.add_argument(
        "--loso",
        action="store_true",
        help="summarise every loso-* suite under RESULTS across speakers (RESULTS/loso.md)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = _device(p, args.device)
    root = Path(args.results) if args.results else RESULTS
    if args.loso:
        folds = {
            d.name.removeprefix("loso-"): _records(d)
            for d in sorted(root.glob("loso-*"))
            if d.is_dir()
        }
        folds = {k: v for k, v in folds.items() if v}
        if not folds:
            print(f"no loso-* results under {root}", file=sys.stderr)
            return 1
        text = summarise_loso(folds)
        atomic_write_text(root / "loso.md", text)
        print(text)
        return 0
    suite = args.suite or (f"loso-{args.held_out}" if args.held_out else "main")
    store = ResultStore(root / suite)
    spec = Spec(
        image_tower=args.image_tower,
        max_epochs=args.max_epochs,
        patience=args.patience,
        lr=args.lr,
        batch=args.batch,
    )
    digest = None
    if not args.summary_only:
        data = av_digits.load(args.data_dir, frames=spec.frames)
        digest = data.digest
        if args.held_out:
            data = av_digits.held_out_speaker(data, args.held_out)
        if args.limit:
            keep = data.clips("train")[: args.limit]
            drop = np.setdiff1d(data.clips("train"), keep)
            split = data.audio_split.copy()
            split[drop] = "unused"
            data = replace(data, audio_split=split)  # the caller's object stays as it was
        env = environment()
        held = args.held_out or "theo"
        fold = RETRIEVAL_SPEAKERS.index(held)
        done = {
            (r["key"]["arm"], r["key"]["seed"], r["key"]["fold"]): r
            for r in _records(store.root, suite)
        }
        changed = []
        for (arm, seed, f), r in done.items():
            now = _cell_settings(arm, spec, digest, held, args.limit, env, device)
            if f == fold and r.get("cell_digest") and r["cell_digest"] != cell_digest(now):
                old = r.get("cell_settings") or {}
                diff = [k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
                changed.append(f"  {arm} seed {seed}: {', '.join(diff)}")
        if changed:
            print(
                f"{len(changed)} finished cell(s) in {store.root} ran with other settings, data "
                "or code than now:\n" + "\n".join(changed) + "\nNothing was run. Move the "
                "folder away, or give another suite with --suite / --results to keep both.",
                file=sys.stderr,
            )
            return 2
        for seed in args.seeds:
            for arm in args.arms:
                if (arm, seed, fold) in done:
                    print(f"{arm} seed {seed}: done, skipped")
                    continue
                raw = run_cell(arm, seed, data, spec, {}, device)
                raw.update(
                    {
                        "key": {"arm": arm, "seed": seed},
                        "data_digest": digest,
                        "limit": args.limit,
                        "held_out": held,
                        **env,
                    }
                )
                record = retrieval_record(raw, suite)
                record["cell_settings"] = _cell_settings(
                    arm, spec, digest, held, args.limit, env, device
                )
                record["cell_digest"] = cell_digest(record["cell_settings"])
                path = store.write(record.pop("key"), record)
                t = record["metrics"]["test"]
                print(
                    f"{arm} seed {seed}: test mAP a->i {t['map_a2i']:.3f} "
                    f"i->a {t['map_i2a']:.3f} ({raw['wall_s']:.0f} s) -> {path.name}",
                    flush=True,
                )
    notes: list[str] = []
    if args.select:
        suites = {name: _records(root / name, name) for name in args.select}
        empty = [name for name, recs in suites.items() if not recs]
        if empty:
            print(f"no results under {', '.join(str(root / e) for e in empty)}", file=sys.stderr)
            return 1
        records, notes = select(suites)
        out = root / "summary.md"
    else:
        records = _records(store.root, suite)
        out = store.root / "summary.md"
    if not records:
        print(f"no results under {store.root}", file=sys.stderr)
        return 1
    digest = digest or records[0]["data"].get("digest")
    text = summarise(records, digest, notes)
    atomic_write_text(out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
