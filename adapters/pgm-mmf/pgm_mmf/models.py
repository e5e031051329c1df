"""Build mmf models offline: tiny inline configs, mmf's global config, example sample lists.

The PyPI mmf ships no YAML configs and its defaults download GloVe, ResNet-152 and
``bert-base-uncased``. :func:`tiny_config` gives an inline config per model that builds from
nothing on disk: a ``torch`` bag-of-words embedding, region features through a linear projection
(``direct_features_input``) and, for the BERT-based models, :func:`pgm_mmf.text_encoder.tiny_bert`.
:func:`build_model` applies the compatibility shims, registers a minimal global mmf config if none
is registered, and builds through mmf's own ``mmf.utils.build.build_model``.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgm_mmf import compat
from pgm_mmf.patch import SUFFIX
from pgm_mmf.text_encoder import TINY_BERT, default_cache_dir, tiny_bert
from pgm_plugins.errors import UnknownNameError

__all__ = [
    "MODELS",
    "build_model",
    "ensure_global_config",
    "example_sample_list",
    "tiny_config",
]

#: mmf model names this plugin has tiny offline configs (and adapters) for
MODELS = ("concat_bow", "concat_bert", "late_fusion", "unimodal_text", "unimodal_image", "mmbt")
BERT_MODELS = ("concat_bert", "late_fusion", "mmbt")

VOCAB = 64  # token ids are drawn below this (the tiny BERT's vocabulary)
TEXT_DIM = 12  # bag-of-words width
REGION_DIM = 10  # width of one region feature (``image_feature_0``)
MODAL_DIM = 8  # width after the modal encoder's projection
REGIONS = 3  # regions per image
SEQ = 6  # text length


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def _mlp(in_dim: int, out_dim: int) -> dict[str, Any]:
    return {
        "type": "mlp",
        "params": {"in_dim": in_dim, "out_dim": out_dim, "hidden_dim": 16, "num_layers": 1},
    }


def _variant_base(name: str) -> str | None:
    """``"concat_bow"`` for ``"concat_bow_pgm"`` (a variant of a model in :data:`MODELS`)."""
    base = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None
    return base if base in MODELS else None


def _unknown_model(name: str) -> UnknownNameError:
    variants = [m + SUFFIX for m in MODELS]
    near = difflib.get_close_matches(str(name), [*MODELS, *variants], n=1)
    return UnknownNameError(
        f"no tiny mmf config for {name!r}"
        + (f"; did you mean {near[0]!r}?" if near else ".")
        + f" Available: {', '.join(MODELS)}, and their PgM variants {', '.join(variants)} "
        "(built after apply_zoo_patch('mmf.registry')). A model of your own: pass its full "
        "config to build_model."
    )


def tiny_config(
    name: str,
    num_labels: int = 3,
    cache_dir: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A small offline model config for mmf model ``name``: one of :data:`MODELS`, or its PgM
    variant ``<name>_pgm`` (the same config with ``model: <name>_pgm``; mmf builds it once the
    zoo patch ``mmf.registry`` is applied).

    ``overrides`` are merged into the config (nested mappings merge key by key); a ``pgm``
    mapping is read by the ``<name>_pgm`` variants (``PgMConfig`` fields). For BERT-based models
    the tiny text encoder is written under ``cache_dir`` (default ``$PGM_MMF_CACHE``).
    """
    base = _variant_base(name)
    if base is not None:
        return tiny_config(base, num_labels, cache_dir, **overrides) | {"model": name}
    if name not in MODELS:
        raise _unknown_model(name)
    labels = num_labels
    regions = {"modal_encoder": {"type": "projection", "params": {"module": "linear"}}}
    regions["modal_encoder"]["params"] |= {"in_dim": REGION_DIM, "out_dim": MODAL_DIM}
    bow = {
        "type": "embedding",
        "params": {
            "operator": "sum",
            "embedding_params": {
                "type": "torch",
                "params": {"vocab_size": VOCAB, "embedding_dim": TEXT_DIM},
            },
        },
    }
    common: dict[str, Any] = {
        "model": name,
        "num_labels": labels,
        "losses": [{"type": "cross_entropy"}],
        "freeze_text": False,
        "freeze_modal": False,
        "freeze_complete_base": False,
        "finetune_lr_multiplier": 1,
    }
    cfg: dict[str, Any]
    if name in BERT_MODELS:
        bert_dir = str(tiny_bert(cache_dir))
        text = {
            "type": "transformer",
            "params": {"bert_model_name": bert_dir, **TINY_BERT},
        }
        common |= {"bert_model_name": bert_dir, "text_hidden_size": TINY_BERT["hidden_size"]}
    else:
        text = bow
        common["text_hidden_size"] = TEXT_DIM
    if name in ("concat_bow", "concat_bert"):
        cfg = (
            common
            | regions
            | {
                "direct_features_input": True,
                "modal_hidden_size": MODAL_DIM,
                "num_features": REGIONS,
                "text_encoder": text,
                "classifier": _mlp(0, labels),  # in_dim is computed by the model
            }
        )
    elif name == "late_fusion":
        cfg = (
            common
            | regions
            | {
                "direct_features_input": True,
                "modal_hidden_size": MODAL_DIM,
                "num_features": REGIONS,
                "text_encoder": text,
                "modal_classifier": _mlp(0, labels),
                "text_classifier": _mlp(0, labels),
            }
        )
    elif name == "unimodal_text":
        cfg = common | {"text_encoder": text, "classifier": _mlp(0, labels)}
    elif name == "unimodal_image":
        cfg = (
            common
            | regions
            | {
                "direct_features_input": True,
                "modal_hidden_size": MODAL_DIM,
                "classifier": _mlp(0, labels),
            }
        )
        cfg["modal_encoder"]["params"]["num_output_features"] = 1
    else:  # mmbt, classification head
        cfg = (
            common
            | regions
            | {
                "training_head_type": "classification",
                "direct_features_input": True,
                "modal_hidden_size": MODAL_DIM,
                "use_modal_start_token": True,
                "use_modal_end_token": True,
                "fused_feature_only": False,
                "text_encoder": text,
            }
        )
        cfg["text_encoder"]["params"]["num_segments"] = 2
    return _merge(cfg, overrides)


def ensure_global_config(cache_dir: str | Path | None = None) -> None:
    """Register a minimal global mmf config unless one is registered already.

    mmf reads ``registry.get("config")`` when it builds losses (``evaluation.predict``) and
    encoders (``env.cache_dir``); without one it loads ``configs/defaults.yaml``, which the PyPI
    package does not ship.
    """
    compat.import_mmf()
    from mmf.common.registry import registry
    from omegaconf import OmegaConf

    if registry.get("config", no_warning=True) is not None:
        return
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    registry.register(
        "config",
        OmegaConf.create(
            {
                "evaluation": {"predict": False},
                "env": {"cache_dir": str(cache), "data_dir": str(cache)},
                "training": {"seed": -1},
            }
        ),
    )


def _check_registered(name: Any) -> None:
    """Refuse, before mmf's own ``build_model`` fails on it, a model name mmf has not registered.

    A ``<model>_pgm`` name is registered by the zoo patch; the error says to apply it.
    """
    from mmf.common.registry import registry

    if name is None:
        raise UnknownNameError(
            "the model config gives no `model`: set model: <a registered mmf model name>, or "
            f"pass a name to build_model ({', '.join(MODELS)})."
        )
    if registry.get_model_class(name) is not None:
        return
    base = _variant_base(str(name))
    if base is not None:
        raise UnknownNameError(
            f"mmf has no model {name!r} registered: the PgM variants are registered by the zoo "
            "patch. Run `undo = pgm_plugins.api.apply_zoo_patch('mmf.registry')` (or "
            f"models=[{base!r}]) first, then build_model({name!r}); undo() removes the names "
            f"again. Or inject into the plain model: pgm_plugins.inject(build_model({base!r}))."
        )
    registered = sorted(registry.mapping["model_name_mapping"])
    near = difflib.get_close_matches(str(name), registered, n=1)
    raise UnknownNameError(
        f"mmf has no model {name!r} registered"
        + (f"; did you mean {near[0]!r}?" if near else ".")
        + f" Registered: {', '.join(registered)}."
    )


def build_model(config: Mapping[str, Any] | str, **overrides: Any) -> Any:
    """Build an mmf model through ``mmf.utils.build.build_model``.

    ``config`` is a full model config (with ``model: <registered name>``) or a name accepted by
    :func:`tiny_config` (then :func:`tiny_config` with ``overrides``): ``"concat_bow"``, or
    ``"concat_bow_pgm"`` once ``apply_zoo_patch("mmf.registry")`` has registered the variants.
    Applies the shims first; a name mmf has not registered is refused before mmf is asked.
    """
    compat.import_mmf()
    from mmf.utils.build import build_model as mmf_build_model
    from omegaconf import DictConfig, OmegaConf

    if isinstance(config, str):
        config = tiny_config(config, **overrides)
    elif overrides:
        config = _merge(dict(config), overrides)
    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
    _check_registered(cfg.get("model", None))
    ensure_global_config()
    return mmf_build_model(cfg)


def example_sample_list(name: str, batch: int = 4, seed: int = 0, num_labels: int = 3) -> Any:
    """A batch for the tiny config of ``name``: an mmf ``SampleList`` with targets.

    ``batch`` must not be 1 or 2: mmf squeezes a bag-of-words batch of one, and its fusion
    code takes ``text[1]`` from any text output of length 2.
    """
    if batch in (1, 2):
        raise ValueError(
            f"batch={batch}: mmf's FusionBase mistakes a batch of 2 for a (sequence, pooled) "
            "pair and its bag-of-words encoder squeezes a batch of 1; use batch >= 3."
        )
    compat.import_mmf()
    import torch
    from mmf.common.sample import Sample, SampleList

    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(batch):
        ids = torch.randint(1, VOCAB, (SEQ,), generator=g)
        fields = {
            "text": ids,
            "image_feature_0": torch.randn(REGIONS, REGION_DIM, generator=g),
            "targets": torch.randint(0, num_labels, (), generator=g),
        }
        if name in BERT_MODELS:  # unimodal_text takes the BERT path whenever input_ids exist
            fields["input_ids"] = ids
            fields["input_mask"] = torch.ones(SEQ, dtype=torch.long)
            fields["segment_ids"] = torch.zeros(SEQ, dtype=torch.long)
        fields["image_features_0"] = fields["image_feature_0"]  # ConcatBERT reads this name
        samples.append(Sample(fields))
    sample_list = SampleList(samples)
    sample_list.dataset_name = "tiny"
    sample_list.dataset_type = "train"
    return sample_list
