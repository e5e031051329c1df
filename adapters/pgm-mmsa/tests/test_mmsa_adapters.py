"""Recognition without importing MMSA, the adapters' registry entries, and bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from pgm_mmsa.adapters import ADAPTERS, KINDS, UnsupportedModelError
from pgm_mmsa.data import check_widths
from pgm_mmsa.hosts import DATA_WIDTHS, MOSI_WIDTHS, build_host, host_info
from torch import nn

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError


def fake(name: str, module: str) -> type:
    return type(name, (nn.Module,), {"__module__": module})


def test_recognition_does_not_import_mmsa():
    code = textwrap.dedent(
        """
        import sys
        from torch import nn
        import pgm_plugins as pp
        MULT = type("MULT", (nn.Module,), {"__module__": "MMSA.models.singleTask.MULT"})
        AMIO = type("AMIO", (nn.Module,), {"__module__": "MMSA.models.AMIO"})
        amio = AMIO(); amio.Model = MULT()
        print(pp.match_adapter(MULT()), pp.match_adapter(amio), pp.match_adapter(nn.Linear(2, 2)))
        print("MMSA" in sys.modules, "transformers" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split("\n")
    assert out[0] == "mmsa.mult mmsa.mult None"
    assert out[1] == "False False"


def test_every_adapter_and_host_is_registered():
    assert set(ADAPTERS) <= set(pp.list_adapters("mmsa.*"))
    from pgm_plugins.api import list_models

    assert {f"mmsa.{k}" for k in KINDS.values()} <= set(list_models("mmsa.*"))


def test_unsupported_mmsa_kind_lists_the_supported_ones():
    MFN = fake("MFN", "MMSA.models.singleTask.MFN")
    MFN.forward = lambda self, x: x
    with pytest.raises(UnsupportedModelError, match="mult, misa, self_mm, tfn, lmf, mmim"):
        pp.inject(MFN())
    AMIO = fake("AMIO", "MMSA.models.AMIO")
    amio = AMIO()
    amio.Model = MFN()
    with pytest.raises(UnsupportedModelError, match="MFN"):
        pp.plan(amio)


def test_adapter_for_the_wrong_kind_says_which_it_is():
    torch.manual_seed(0)
    model = build_host("lmf", widths=DATA_WIDTHS, seq_len=2)
    with pytest.raises(InjectionError, match=r"expects an MMSA MULT.*mmsa\.lmf"):
        pp.plan(model, "mmsa.mult")


def test_mult_whose_projection_never_runs_is_refused():
    torch.manual_seed(0)
    model = build_host("mult", widths={"text": 50, "audio": 73, "vision": 100}, seq_len=2)
    with pytest.raises(InjectionError, match=r"never run: proj_l.*mmsa\.mult\.mem"):
        pp.plan(model)
    assert not hasattr(model, "pgm_block")


def test_unknown_kind_and_bad_widths():
    with pytest.raises(ValueError, match=r"'mlt'.*did you mean 'mult'"):
        build_host("mlt")
    with pytest.raises(ValueError, match="positive int for each of text, audio, vision"):
        build_host("tfn", widths={"text": 100, "audio": 73})


def test_widths_that_do_not_match_the_data_name_both():
    torch.manual_seed(0)
    model = build_host("lmf", seq_len=2)  # MOSI widths 768/5/20
    assert host_info(model).widths == MOSI_WIDTHS
    with pytest.raises(ValueError, match=r"text: host 768, data 100.*audio: host 5, data 73"):
        check_widths(host_info(model).widths, DATA_WIDTHS)
    check_widths(DATA_WIDTHS, DATA_WIDTHS)


def test_registered_host_factories_build_and_run_their_examples():
    from pgm_mmsa.plugin import EXAMPLES

    from pgm_plugins.registry import get_registry

    for name, example in EXAMPLES.items():
        spec = get_registry().models.entry(name).value
        assert spec.adapter == name
        torch.manual_seed(0)
        model, x = spec.factory(), example()
        with torch.no_grad():
            assert model(*x)["M"].shape == (x[0].shape[0], 1)
        assert pp.match_adapter(model) == name
