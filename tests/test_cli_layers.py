"""``pgm layers`` on the models users have: module factories, Hugging Face classes built from a
config, timm names, text models fed token ids, and a clear error (exit 2) for every bad spec.

Everything is built offline with random weights from tiny configs."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from torch import nn

from pgm_plugins.cli import main
from pgm_plugins.errors import ConfigError
from pgm_plugins.injection.model_spec import InputSpec, example_inputs, parse_assignments

#: a CLIP small enough to build and run in a fraction of a second
TINY_CLIP = [
    *(f"text_config.{k}" for k in ("num_hidden_layers=1", "hidden_size=32", "vocab_size=64")),
    *(f"vision_config.{k}" for k in ("num_hidden_layers=1", "hidden_size=32", "image_size=32")),
    "text_config.intermediate_size=64",
    "text_config.num_attention_heads=2",
    "text_config.max_position_embeddings=16",
    "text_config.bos_token_id=1",
    "text_config.eos_token_id=2",
    "vision_config.intermediate_size=64",
    "vision_config.num_attention_heads=2",
    "vision_config.patch_size=16",
    "projection_dim=16",
]
TINY_TEXT = [k.removeprefix("text_config.") for k in TINY_CLIP if k.startswith("text_config.")]


def pgm_layers(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``pgm layers ARGS`` in this process: (exit code, stdout, stderr)."""
    message = ""
    try:
        code = main(["layers", *args])
    except SystemExit as exc:  # argparse refuses a malformed option (it prints the message)
        code, message = (exc.code, "") if isinstance(exc.code, int) else (1, str(exc.code))
    out = capsys.readouterr()
    return code, out.out, out.err + message


def rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by layer name (columns split on runs of 2+ spaces)."""
    import re

    lines = stdout.splitlines()[2:]  # the model line and the header
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in lines)}


def test_module_factory_with_float_inputs_and_constructor_kwargs(capsys):
    code, out, err = pgm_layers(
        capsys, "pgm_plugins.toy:LateFusion", "--example-shapes", "2x16", "2x8"
    )
    assert code == 0, err
    assert out.startswith("pgm_plugins.toy:LateFusion: LateFusion, ")
    assert rows(out)["encoders.text"][-1] == "2x32"
    code, out, err = pgm_layers(
        capsys,
        "pgm_plugins.toy:LateFusion",
        "--kwargs",
        'widths={"a": 4, "b": 6}',
        "hidden=8",
        "--example-shapes",
        "2x4",
        "2x6",
    )
    assert code == 0, err
    assert rows(out)["encoders.b.0"][-1] == "2x8"


def test_hugging_face_class_is_built_from_its_config_and_fed_keyword_token_ids(capsys):
    code, out, err = pgm_layers(
        capsys,
        "transformers:CLIPModel",
        "--config-kwargs",
        *TINY_CLIP,
        "--example-shapes",
        "input_ids=2x7:int",
        "pixel_values=2x3x32x32",
    )
    assert code == 0, err
    table = rows(out)
    assert table["text_model.encoder.layers.0.mlp.fc1"][-1] == "2x7x64"
    assert table["vision_model.encoder.layers.0"][-1] == "2x5x32"  # 4 patches + class token
    assert table["text_model.embeddings.token_embedding"][2] == f"{64 * 32:,}"


def test_text_model_takes_integer_token_ids_and_floats_get_a_hint(capsys):
    config = ["--config", "transformers:CLIPTextConfig", "--config-kwargs", *TINY_TEXT]
    code, out, err = pgm_layers(
        capsys, "transformers:CLIPTextModel", *config, "--example-shapes", "2x7:int:64"
    )
    assert code == 0, err
    # transformers 4 names it text_model.final_layer_norm, 5 final_layer_norm
    (norm,) = [r for name, r in rows(out).items() if name.endswith("final_layer_norm")]
    assert norm[-1] == "2x7x32"
    code, out, err = pgm_layers(
        capsys, "transformers:CLIPTextModel", *config, "--example-shapes", "2x7"
    )
    assert code == 2 and out == ""
    assert "the dry run failed" in err and "CLIPTextModel.forward takes (input_ids" in err
    assert (
        "it was given (2x7 float32)" in err
        and "Token ids are integers: write them as 2x7:int" in err
    )


def test_auto_model_from_a_config_json_file(capsys, tmp_path):
    path = tmp_path / "config.json"
    bert = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    path.write_text(json.dumps({"model_type": "bert", "vocab_size": 50, **bert}))
    code, out, err = pgm_layers(
        capsys,
        "transformers:AutoModel",
        "--config",
        str(path),
        "--config-kwargs",
        "intermediate_size=24",
        "--example-shapes",
        "input_ids=2x5:int",
        "--filter",
        "encoder.layer.0.intermediate.dense",
    )
    assert code == 0, err
    assert "BertModel" in out.splitlines()[0]
    assert rows(out)["encoder.layer.0.intermediate.dense"][-1] == "2x5x24"


def test_timm_names_build_through_create_model_without_weights(capsys):
    code, out, err = pgm_layers(capsys, "timm:resnet18", "--filter", "layer4.1.conv2")
    assert code == 0, err
    assert rows(out)["layer4.1.conv2"][:2] == ["layer4.1.conv2", "Conv2d"]
    code, out, err = pgm_layers(
        capsys, "timm:test_resnet", "--kwargs", "num_classes=0", "--example-shapes", "1x3x32x32"
    )
    assert code == 0, err
    assert rows(out)["global_pool"][-1].startswith("1x")
    code, out, err = pgm_layers(capsys, "timm:resnt18")
    assert code == 2 and "timm has no 'resnt18'" in err and "Did you mean 'resnet18'" in err
    code, out, err = pgm_layers(capsys, "timm:resnet18", "--kwargs", "pretrained=true")
    assert code == 2 and "downloads nothing" in err


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pgm_plugins.toy:LateFusoin", "Did you mean 'LateFusion'"),
        ("transformers:ClipModel", "Did you mean 'CLIPModel'"),
        ("pgm_plugin.toy:LateFusion", "no module named 'pgm_plugin'. Did you mean 'pgm_plugins'"),
        ("pgm_plugins.tyo:LateFusion", "Did you mean 'pgm_plugins.toy'"),
        ("pgm_plugins:toy", "pgm_plugins.toy is a module; name what builds the model in it"),
        ("pgm_plugins.toy", "must be MODULE:FACTORY, e.g. pgm_plugins.toy:LateFusion"),
    ],
)
def test_misspelt_module_or_factory_names_the_nearest_real_one(capsys, spec, expected):
    code, out, err = pgm_layers(capsys, spec)
    assert code == 2 and out == ""
    assert err.startswith("pgm layers: ") and expected in err


def test_a_misspelt_factory_never_suggests_an_imported_module(capsys):
    code, _, err = pgm_layers(capsys, "pgm_plugins.toy:Toch")
    assert code == 2 and "'torch'" not in err
    assert "It defines: LateFusion, make_uni_paired." in err


def test_failing_construction_names_the_signature_and_the_options(capsys):
    code, _, err = pgm_layers(capsys, "pgm_plugins.toy:LateFusion", "--kwargs", "dims=3")
    assert code == 2
    assert "building pgm_plugins.toy:LateFusion failed: TypeError" in err
    assert "It takes (widths:" in err and "--kwargs KEY=VALUE" in err
    code, _, err = pgm_layers(capsys, "pgm_plugins.toy:LateFusion", "--config-kwargs", "a=1")
    assert code == 2 and "LateFusion has no config class" in err
    code, _, err = pgm_layers(
        capsys, "transformers:CLIPTextModel", "--config-kwargs", "num_hidden_layer=1", "x"
    )
    assert code == 2 and "--config-kwargs 'x': write KEY=VALUE" in err


def test_bad_example_inputs_are_refused_clearly(capsys):
    code, _, err = pgm_layers(capsys, "pgm_plugins.toy:LateFusion", "--example-shapes", "2x16:intt")
    assert code == 2 and "write [NAME=]SHAPE[:float|:int|:int:HIGH]" in err
    code, _, err = pgm_layers(
        capsys, "pgm_plugins.toy:LateFusion", "--example-shapes", "2x16", "audio=2x8"
    )
    assert code == 2 and "give them all by name" in err
    code, _, err = pgm_layers(
        capsys, "pgm_plugins.toy:LateFusion", "--example-shapes", "2x17", "2x8"
    )
    assert code == 2 and "mat1 and mat2 shapes cannot be multiplied" in err
    assert "LateFusion.forward takes (*inputs" in err and "given (2x17 float32, 2x8 float32)" in err
    code, _, err = pgm_layers(capsys, "pgm_plugins.toy:LateFusion", "--filter", "encoder.*")
    assert code == 2 and "no layer matches --filter 'encoder.*'" in err
    assert "Did you mean 'encoders'" in err


def test_example_inputs_from_a_callable(capsys, monkeypatch):
    mod = types.ModuleType("layers_examples")
    mod.named = lambda model: {"audio": torch.zeros(3, 8), "text": torch.zeros(3, 16)}  # type: ignore[attr-defined]
    mod.broken = lambda: 1 / 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "layers_examples", mod)
    code, out, err = pgm_layers(
        capsys, "pgm_plugins.toy:LateFusion", "--example-inputs", "layers_examples:named"
    )
    assert code == 0, err
    assert rows(out)["encoders.audio"][-1] == "3x32"
    code, _, err = pgm_layers(
        capsys, "pgm_plugins.toy:LateFusion", "--example-inputs", "layers_examples:broken"
    )
    assert code == 2 and "--example-inputs layers_examples:broken failed: ZeroDivisionError" in err


def test_input_specs_and_assignments():
    spec = InputSpec.parse("input_ids=2x7:int")
    assert (spec.name, spec.shape, spec.dtype, spec.high) == ("input_ids", (2, 7), "int", None)
    model = nn.Sequential(nn.Embedding(100, 4), nn.Embedding(9, 4))
    ids = example_inputs([spec], model)["input_ids"]
    assert ids.dtype == torch.int64 and int(ids.max()) < 9  # valid for every embedding
    (floats,) = example_inputs([InputSpec.parse("2,3")], model)
    assert floats.shape == (2, 3) and floats.is_floating_point()
    with pytest.raises(ConfigError, match=r"no nn.Embedding .* e.g. 2x7:int:1000"):
        example_inputs([InputSpec.parse("2x7:int")], nn.Linear(2, 2))
    assert parse_assignments(["a.b=1", "a.c=[1, 2]", "d=gelu", 'a={"e": true}']) == {
        "a": {"b": 1, "c": [1, 2], "e": True},
        "d": "gelu",
    }


def test_a_model_without_submodules_says_so(capsys):
    from pgm_plugins import cli

    code = cli.main(["layers", "torch.nn:Linear", "--kwargs", "in_features=4", "out_features=2"])
    err = capsys.readouterr().err
    assert code == 2 and "no submodules" in err and "--filter" not in err
