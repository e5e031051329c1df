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
MMIM with :class:`pgm_mmsa.DenseText` over ``D``-wide text features in place of MMSA's BERT
(which needs ``bert-base-uncased`` weights; offline only ``dense_text`` works). The variant's
``model.pgm`` is the ``PgMHandle`` (``aux_loss``, ``param_groups``, ``stats``, ``remove``);
``args.model_name`` stays ``"mult_pgm"``. MMSA's own trainers (``MMSA_run``) are not patched:
they do not run on this machine (see :mod:`pgm_mmsa.recipes`).

What the patch changes, all restored by ``undo``: the name ``get_config_regression`` in
``MMSA``, ``MMSA.config`` and ``MMSA.run``; ``AMIO.__init__``; ``MMSA.run.SUPPORTED_MODELS``
(the variants appended). It refuses to apply twice, and refuses when MMSA already knows a
variant's name.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

from pgm_mmsa.adapters import BLOCK_DEFAULTS, KINDS

__all__ = ["VARIANTS", "apply_patch", "is_patched"]

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


def apply_patch(block: dict[str, Any] | None = None) -> Callable[[], None]:
    """Patch MMSA so that ``<kind>_pgm`` names build PgM variants; returns the undo callable.

    Args:
        block: ``PgMConfig`` fields every variant's config starts from (default: the adapters'
            defaults); a variant's ``args.pgm["config"]`` can still be edited per model.
    """
    MMSA, config_mod, run_mod, AMIO = _modules()
    if is_patched():
        raise RuntimeError("the MMSA zoo patch is applied already; call its undo first.")
    import json
    from pathlib import Path

    known = set(
        json.loads(
            (Path(config_mod.__file__).parent / "config" / "config_regression.json").read_text()
        )
    )
    clash = sorted(set(VARIANTS) & (known | set(run_mod.SUPPORTED_MODELS)))
    if clash:
        raise RuntimeError(
            f"MMSA already has models named {clash}; the zoo patch would overwrite them."
        )
    original_get = config_mod.get_config_regression
    original_init = AMIO.__init__
    base_block = dict(BLOCK_DEFAULTS) | dict(block or {})
    holders = [
        m
        for m in (MMSA, config_mod, run_mod)
        if getattr(m, "get_config_regression", None) is original_get
    ]

    def get_config_regression(model_name: str, dataset_name: str, config_file: str = "") -> Any:
        if model_name not in VARIANTS:
            return original_get(model_name, dataset_name, config_file)
        args = original_get(VARIANTS[model_name], dataset_name, config_file)
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


def _build_variant(self: Any, args: Any, original_init: Callable[..., None]) -> None:
    import pgm_plugins as pp
    from pgm_mmsa.hosts import TEXT_MODULE, DenseText, _no_bert

    name = args["model_name"]
    kind = VARIANTS[name]
    spec = dict(args.get("pgm") or {})
    base = copy.copy(args)
    base["model_name"] = kind
    dense = spec.get("dense_text")
    if dense and kind in TEXT_MODULE:
        hidden = int(args.get("text_out", 0) or 0) if kind == "self_mm" else None
        with _no_bert(), warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="enable_nested_tensor is True", category=UserWarning
            )
            original_init(self, base)
        net = self.Model
        width = hidden or (args.feature_dims[0] if kind == "mmim" else 768)
        setattr(net, TEXT_MODULE[kind], DenseText(int(dense), int(width)))
    else:
        original_init(self, base)
    self.pgm = pp.inject(self, spec.get("adapter", f"mmsa.{kind}"), config=spec.get("config"))
