"""The MMSA zoo patch: MMSA's own entry points build PgM variants by name.

After ``undo = pgm_plugins.apply_zoo_patch("mmsa")`` (or :func:`apply_patch`)::

    args = MMSA.get_config_regression("mult_pgm", "mosi")  # MulT's config + args.pgm
    model = MMSA.models.AMIO(args)  # MulT with a PgM block at mmsa.mult's sites
    out = model(text, audio, vision)
    loss = criterion(out["M"], y) + model.pgm.aux_loss(y)  # the variant's auxiliary loss
    opt = torch.optim.Adam(model.pgm.param_groups(base_lr, host_groups=...))
    undo()  # MMSA's maps and functions exactly as they were

for ``mult_pgm``, ``misa_pgm``, ``self_mm_pgm``, ``tfn_pgm``, ``lmf_pgm``, ``mmim_pgm``.

``args.pgm`` holds ``{"adapter": "mmsa.mult", "config": {...PgMConfig fields...},
"dense_text": None}``; edit it before ``AMIO(args)``. ``dense_text=D`` builds MISA, Self-MM and
MMIM with :class:`pgm_mmsa.DenseText` over ``D``-wide text features in place of MMSA's BERT;
without it they build MMSA's ``BertTextEncoder`` from ``args.pretrained`` (``bert-base-uncased``
unless set to a local BERT folder), whose width the adapters read from its config. The variant's
``model.pgm`` is the ``PgMHandle`` (``aux_loss``, ``param_groups``, ``stats``, ``remove``);
``args.model_name`` stays ``"mult_pgm"``. MMSA's own trainers (``MMSA_run``) are not patched:
they do not run on this machine (see :mod:`pgm_mmsa.recipes`).

What the patch changes, all restored by ``undo``: the name ``get_config_regression`` in
``MMSA``, ``MMSA.config`` and ``MMSA.run``; ``AMIO.__init__``; ``MMSA.run.SUPPORTED_MODELS``
(the variants appended). It refuses to apply twice, and refuses when MMSA already knows a
variant's name.

Errors leave MMSA as it was and say how to go on: a model or dataset name MMSA's config does not
have gets :class:`~pgm_plugins.errors.UnknownNameError` (a ``KeyError``, where MMSA raises a bare
one) with the nearest name; a BERT variant whose ``args.pretrained`` cannot be loaded gets
:class:`PretrainedTextError` (an ``OSError``) naming ``dense_text`` and ``args.pretrained``.
"""

from __future__ import annotations

import copy
import difflib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgm_mmsa.adapters import BLOCK_DEFAULTS, KINDS
from pgm_mmsa.hosts import TEXT_MODULE, DenseText, _no_bert
from pgm_plugins.errors import PgMError, UnknownNameError, did_you_mean

__all__ = ["VARIANTS", "PretrainedTextError", "apply_patch", "is_patched"]

#: variant name -> host kind
VARIANTS = {f"{kind}_pgm": kind for kind in KINDS.values()}
_MARK = "__pgm_mmsa_patched__"


def _modules() -> tuple[Any, Any, Any, Any]:
    from pgm_mmsa.hosts import import_mmsa

    MMSA = import_mmsa()
    import MMSA.config as config_mod
    import MMSA.run as run_mod
    from MMSA.models import AMIO

    return MMSA, config_mod, run_mod, AMIO


def is_patched() -> bool:
    _, _, _, AMIO = _modules()
    return bool(getattr(AMIO.__init__, _MARK, False))


def _config_names(config_mod: Any, config_file: str = "") -> dict[str, list[str]]:
    """MMSA's regression models and, for each, its datasets, from ``config_file`` (default:
    the JSON MMSA ships)."""
    path = Path(config_file) if config_file else _default_config(config_mod)
    table = json.loads(path.read_text())
    return {
        name: sorted(entry.get("datasetParams", {}))
        for name, entry in table.items()
        if name != "datasetCommonParams"
    }


def _default_config(config_mod: Any) -> Path:
    return Path(config_mod.__file__).parent / "config" / "config_regression.json"


def _nearest(given: str, choices: list[str], default: str) -> str:
    close = difflib.get_close_matches(str(given), choices, n=1, cutoff=0.5)
    return close[0] if close else default


def _unknown_config(
    exc: KeyError, model_name: str, dataset_name: str, names: dict[str, list[str]]
) -> UnknownNameError:
    """The error for a ``get_config_regression`` call MMSA answered with a bare ``KeyError``:
    an unknown model (variants included) or a dataset that model has no config for."""
    kind = VARIANTS.get(model_name, model_name)
    if kind not in names:
        models = sorted(names) + list(VARIANTS)
        use = _nearest(model_name, models, next(iter(VARIANTS)))
        return UnknownNameError(
            f"MMSA has no model {model_name!r}.{did_you_mean(model_name, models, n=1)} The "
            f"PgM variants (from the zoo patch) are {', '.join(VARIANTS)}; MMSA's own models "
            f"are {', '.join(sorted(names))}. Run e.g. "
            f"MMSA.get_config_regression({use!r}, {dataset_name!r})."
        )
    datasets = names[kind]
    if dataset_name not in datasets:
        use = _nearest(dataset_name, datasets, "mosi" if "mosi" in datasets else datasets[0])
        return UnknownNameError(
            f"MMSA's config for {kind!r} has no dataset {dataset_name!r}."
            f"{did_you_mean(dataset_name, datasets, n=1)} Valid: {', '.join(datasets)}. Run "
            f"MMSA.get_config_regression({model_name!r}, {use!r})."
        )
    return UnknownNameError(
        f"MMSA.get_config_regression({model_name!r}, {dataset_name!r}) failed on the key "
        f"{exc}: its config file lacks an entry MMSA needs for this pair."
    )


def _check_free(config_mod: Any, run_mod: Any) -> None:
    """Refuse when MMSA already has a model named like a variant (the patch would shadow it)."""
    known = set(_config_names(config_mod)) | set(run_mod.SUPPORTED_MODELS)
    clash = sorted(set(VARIANTS) & known)
    if clash:
        raise RuntimeError(
            f"MMSA already has models named {clash}; the zoo patch would overwrite them."
        )


def apply_patch(block: dict[str, Any] | None = None) -> Callable[[], None]:
    """Patch MMSA so that ``<kind>_pgm`` names build PgM variants; returns the undo callable.

    Args:
        block: ``PgMConfig`` fields every variant's config starts from (default: the adapters'
            defaults); a variant's ``args.pgm["config"]`` can still be edited per model.
    """
    MMSA, config_mod, run_mod, AMIO = _modules()
    if is_patched():
        raise RuntimeError("the MMSA zoo patch is applied already; call its undo first.")
    _check_free(config_mod, run_mod)
    original_get = config_mod.get_config_regression
    original_init = AMIO.__init__
    base_block = dict(BLOCK_DEFAULTS) | dict(block or {})
    holders = [
        m
        for m in (MMSA, config_mod, run_mod)
        if getattr(m, "get_config_regression", None) is original_get
    ]

    def get_config_regression(model_name: str, dataset_name: str, config_file: str = "") -> Any:
        try:
            args = original_get(VARIANTS.get(model_name, model_name), dataset_name, config_file)
        except KeyError as exc:
            names = _config_names(config_mod, config_file)
            raise _unknown_config(exc, model_name, dataset_name, names) from None
        if model_name not in VARIANTS:
            return args
        args.model_name = model_name
        args.pgm = {
            "adapter": f"mmsa.{VARIANTS[model_name]}",
            "config": copy.deepcopy(base_block),
            "dense_text": None,
        }
        return args

    def __init__(self: Any, args: Any) -> None:
        name = args["model_name"]
        if name not in VARIANTS:
            original_init(self, args)
            return
        _build_variant(self, args, original_init)

    get_config_regression.__wrapped__ = original_get  # type: ignore[attr-defined]
    setattr(__init__, _MARK, True)
    __init__.__wrapped__ = original_init  # type: ignore[attr-defined]
    added = [v for v in VARIANTS if v not in run_mod.SUPPORTED_MODELS]

    for m in holders:
        m.get_config_regression = get_config_regression
    AMIO.__init__ = __init__
    run_mod.SUPPORTED_MODELS.extend(added)

    def undo() -> None:
        if AMIO.__init__ is not __init__:
            raise RuntimeError("AMIO.__init__ was changed after the zoo patch; not undoing.")
        AMIO.__init__ = original_init
        for m in holders:
            m.get_config_regression = original_get
        for v in added:
            run_mod.SUPPORTED_MODELS.remove(v)

    return undo


class PretrainedTextError(PgMError, OSError):
    """A BERT-based variant could not load its pretrained text encoder (offline, no cache)."""


def _build_variant(self: Any, args: Any, original_init: Callable[..., None]) -> None:
    """Build the host as MMSA does (or with :class:`DenseText` when ``args.pgm["dense_text"]``
    is set), then inject the variant's block."""
    import pgm_plugins as pp

    name = args["model_name"]
    kind = VARIANTS[name]
    spec = dict(args.get("pgm") or {})
    base = copy.copy(args)
    base["model_name"] = kind
    dense = spec.get("dense_text")
    if dense and kind in TEXT_MODULE:
        _build_dense(self, base, original_init, kind, int(dense))
    elif kind in TEXT_MODULE:
        _build_with_bert(self, base, original_init, name)
    else:
        original_init(self, base)
    self.pgm = pp.inject(self, spec.get("adapter", f"mmsa.{kind}"), config=spec.get("config"))


def _build_dense(
    self: Any, base: Any, original_init: Callable[..., None], kind: str, dense: int
) -> None:
    """MISA, Self-MM or MMIM with :class:`DenseText` over ``dense``-wide features in place of
    its BERT, at the width the host reads (Self-MM ``text_out``, MMIM ``feature_dims[0]``,
    MISA 768)."""
    hidden = int(base.get("text_out", 0) or 0) if kind == "self_mm" else None
    with _no_bert(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="enable_nested_tensor is True", category=UserWarning
        )
        original_init(self, base)
    width = hidden or (base["feature_dims"][0] if kind == "mmim" else 768)
    setattr(self.Model, TEXT_MODULE[kind], DenseText(dense, int(width)))


def _build_with_bert(self: Any, base: Any, original_init: Callable[..., None], name: str) -> None:
    """MMSA's own build, whose ``BertTextEncoder`` loads ``args.pretrained``; a load that fails
    (offline without the weights) is reported with the two ways out."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="enable_nested_tensor is True", category=UserWarning
            )
            original_init(self, base)
    except OSError as exc:
        pretrained = base.get("pretrained", "bert-base-uncased")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PretrainedTextError(
            f"{name}: MMSA's {VARIANTS[name].upper()} builds its text encoder "
            f"(BertTextEncoder) from {pretrained!r}, which could not be loaded ({first}). "
            f"Either feed dense text features: set args.pgm['dense_text'] = D (features per "
            "token, D wide, in MMSA's BERT input layout: pgm_mmsa.hosts.bert_layout) before "
            "AMIO(args); or make the BERT loadable: set args.pretrained to a local folder "
            "holding a BERT model and its tokenizer, or download "
            f"{pretrained!r} once with the network on (HF_HUB_OFFLINE unset)."
        ) from exc
