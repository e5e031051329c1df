"""PgMConfig: validation with clear errors, JSON round-trip with the version."""

from __future__ import annotations

import json

import pytest

from pgm_plugins import PgMConfig, __version__
from pgm_plugins.errors import ConfigError

MODS = {"text": 16, "audio": 8}


def test_json_round_trip_keeps_every_field_and_the_version(tmp_path):
    cfg = PgMConfig(
        modalities=MODS,
        partitioner="split",
        rho={"text": 0.25, "audio": 0.5},
        task="classification",
        num_classes=4,
        lr_mult={"*.paired": 2.0},
        grad_scale={"text.uni": 0.5},
    )
    data = json.loads(cfg.to_json())
    assert data["pgm_plugins_version"] == __version__
    assert PgMConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "c.json")
    assert PgMConfig.load(tmp_path / "c.json") == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]  # no temporary file left behind


def test_unknown_keys_from_a_newer_version_warn_and_are_dropped():
    data = PgMConfig(modalities=MODS).to_dict() | {"future_switch": 3}
    with pytest.warns(UserWarning, match="future_switch"):
        assert PgMConfig.from_dict(data) == PgMConfig(modalities=MODS)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"partitioner": "gat"},
            r"partitioner='gat' is not valid; choose one of 'gate', 'split', "
            r"'project'. Did you mean 'gate'",
        ),
        ({"paired": "cross"}, r"paired='cross' is not valid.*'attention', 'shared'"),
        ({"mix": "add"}, r"mix='add' is not valid"),
        ({"task": "regresion"}, r"Did you mean 'regression'"),
        ({"rho": 1.5}, r"rho for 'rho' is 1.5; it must be a number in \[0, 1\]"),
        ({"rho": -0.1}, r"in \[0, 1\]"),
        ({"rho": {"txt": 0.3}}, r"rho names modalities \['txt'\].*Did you mean 'text'"),
        ({"rho": {"text": 2.0}}, r"rho for 'text' is 2.0"),
        ({"task": "classification"}, r"needs num_classes >= 2"),
        ({"num_classes": 3}, r"only valid with task='classification'"),
        ({"modalities": {}}, r"non-empty mapping"),
        ({"modalities": {"text": 0}}, r"width of modality 'text' is 0"),
        ({"modalities": {"a b": 3}}, r"must be a Python identifier"),
        ({"paired_width": 30, "heads": 4}, r"divisible by heads=4"),
        ({"lambda_uni": -1.0}, r"lambda_uni=-1.0 must be a finite number >= 0"),
        (
            {"lr_mult": {"text.unii": 2.0}},
            r"lr_mult key 'text.unii' matches no name.*"
            r"Did you mean 'text.uni'",
        ),
        ({"lr_mult": {"decoder": 0.0}}, r"must be a finite number > 0"),
        ({"grad_scale": {"partitioner": 2.0}}, r"grad_scale key 'partitioner' matches no name"),
        ({"partitioner": "split", "rho": 0.0}, r"leaves a part of width 0 for modality 'text'"),
        ({"dropout": 1.0}, r"dropout=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_values_are_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PgMConfig(**({"modalities": MODS} | kwargs))


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        PgMConfig(modalities=MODS, mix="nope")


def test_factors_later_keys_override_patterns():
    cfg = PgMConfig(modalities=MODS, lr_mult={"*.uni": 2.0, "text.uni": 0.5})
    assert cfg.lr_multiplier("text.uni") == 0.5
    assert cfg.lr_multiplier("audio.uni") == 2.0
    assert cfg.lr_multiplier("decoder") == 1.0


def test_every_field_has_help_text():
    assert all(PgMConfig.help().values())
