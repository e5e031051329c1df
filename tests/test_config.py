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
            r"'project', 'none'. Did you mean 'gate'",
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
        ({"lr_mult": {"*.decoder": 0.0}}, r"must be a finite number > 0"),
        ({"lr_mult": {"decoder": 2.0}}, r"lr_mult key 'decoder' matches no name"),
        ({"grad_scale": {"partitioner": 2.0}}, r"grad_scale key 'partitioner' matches no name"),
        ({"partitioner": "split", "rho": 0.0}, r"leaves a part of width 0 for modality 'text'"),
        ({"dropout": 1.0}, r"dropout=1.0 must be a number in \[0, 1\)"),
        # wrong types name the field; strings and numbers are never read as booleans
        ({"decoder": "False"}, r"decoder='False' \(str\) must be True or False"),
        ({"uni_learner": 1}, r"uni_learner=1 \(int\) must be True or False"),
        ({"check_finite": 0.5}, r"check_finite=0.5 \(float\) must be True or False"),
        ({"separate_lrs": None}, r"separate_lrs=None"),
        ({"tau": float("inf")}, r"tau=inf must be a finite number > 0"),
        ({"tau": 0}, r"tau=0 must be a finite number > 0"),
        ({"lambda_uni": True}, r"lambda_uni=True must be a finite number >= 0"),
        ({"lambda_rec": float("nan")}, r"lambda_rec=nan must be a finite number"),
        ({"dropout": "0.1"}, r"dropout='0.1' must be a number"),
        ({"rho": True}, r"rho for 'rho' is True"),
        ({"heads": 2.0}, r"heads=2.0 must be a positive int"),
        ({"bottleneck": 0}, r"bottleneck=0 must be a positive int or None"),
        ({"rho_bounds": (0.8, 0.2)}, r"rho_bounds=\(0.8, 0.2\) must be two numbers"),
        ({"partitioner": 1}, r"partitioner=1 is not valid"),
        ({"num_classes": True, "task": "classification"}, r"needs num_classes >= 2"),
        ({"grad_scale": {"text.uni": "0"}}, r"grad_scale\['text.uni'\]='0' must be a finite"),
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


@pytest.mark.parametrize("bad", [["text", "audio"], "rho=0.3", 3, None])
def test_a_config_that_is_not_a_mapping_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"must be a mapping of field names to values"):
        PgMConfig.from_fields(bad, modalities=MODS)
    with pytest.raises(ConfigError, match=r"must be a mapping of field names to values"):
        PgMConfig.from_dict(bad)


def test_unknown_field_names_the_nearest_one():
    with pytest.raises(ConfigError, match=r"unknown PgMConfig field 'rhoo'.*Did you mean 'rho'"):
        PgMConfig.from_fields({"rhoo": 0.3}, modalities=MODS)
    assert PgMConfig.from_fields({"rho": 0.3}, modalities=MODS).rho == 0.3
