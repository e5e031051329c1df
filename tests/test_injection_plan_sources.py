"""How a plan's sites are chosen and said: fewer than two modalities is an error unless asked for
(``allow_single``), ``sites=`` beside a named adapter (or ``extend=True``) override its sites by
modality name and add new ones, ``sites=`` alone keep their meaning, and ``print(plan)`` says
where each site came from."""

from __future__ import annotations

import pytest
import torch
from test_injection import hooks_of, refused

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError
from pgm_plugins.toy import LateFusion

pytestmark = pytest.mark.usefixtures("one_thread")

X = (torch.randn(2, 16), torch.randn(2, 8))


def origins(plan: pp.Plan) -> dict[str, str]:
    return {k: rs.origin for k, rs in plan.sites.items()}


def test_one_modality_is_an_error_naming_what_was_found_and_the_ways_on():
    model = LateFusion()
    with refused(model, InjectionError, r"finds 1 modality \('text' at encoders.text") as err:
        pp.inject(model, sites={"text": "encoders.text"})
    msg = str(err.value)
    assert "(from user)" in msg and "paired-modal learner has no partner" in msg
    assert "allow_single=True" in msg and "list_layers" in msg
    assert "modules holding no site: fusion (Sequential)." in msg  # encoders holds the site


def test_allow_single_builds_a_one_modality_block_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = LateFusion()
    handle = pp.inject(model, sites={"text": "encoders.text"}, allow_single=True)
    assert list(handle.block.config.modalities) == ["text"]
    assert "one modality (allow_single=True)" in str(handle.plan)
    model(*X)
    handle.aux_loss(torch.zeros(2)).backward()
    pp.save(handle, tmp_path)  # a saved one-modality block loads without asking again
    torch.manual_seed(0)
    fresh = LateFusion()
    pp.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(*X), model(*X))


def test_sites_beside_a_named_adapter_override_by_modality_and_add():
    model = LateFusion(widths={"text": 16, "audio": 8, "video": 4})
    p = pp.plan(model, "toy.late_fusion", sites={"text": pp.Site("encoders.text.0")})
    assert origins(p) == {
        "text": "user, over adapter 'toy.late_fusion'",
        "audio": "adapter 'toy.late_fusion'",
        "video": "adapter 'toy.late_fusion'",
    }
    assert p.sites["text"].site.layer == "encoders.text.0"
    text = str(p)
    assert "site from" in text and "user, over adapter 'toy.late_fusion'" in text


def test_a_none_site_drops_one_of_the_adapters_and_unknown_drops_are_named():
    model = LateFusion()
    p = pp.plan(model, "toy.late_fusion", sites={"audio": None}, allow_single=True)
    assert origins(p) == {"text": "adapter 'toy.late_fusion'"}
    with refused(model, InjectionError, r"drops a site.*its sites: 'text', 'audio'.*'audio'\?"):
        pp.inject(model, "toy.late_fusion", sites={"audoi": None})
    with refused(model, InjectionError, r"no adapter named there is none to drop"):
        pp.inject(model, sites={"text": "encoders.text", "audio": None})


def test_extend_adds_to_the_matched_adapter_and_sites_alone_keep_their_meaning():
    model = LateFusion(widths={"text": 16, "audio": 8, "video": 4})
    extended = pp.plan(model, sites={"video": "encoders.video.0"}, extend=True)
    assert extended.adapter == "toy.late_fusion"
    assert origins(extended)["video"] == "user, over adapter 'toy.late_fusion'"
    assert set(extended.sites) == {"text", "audio", "video"}
    alone = pp.plan(model, sites={"text": "encoders.text", "audio": "encoders.audio"})
    assert alone.adapter is None and origins(alone) == {"text": "user", "audio": "user"}
    assert hooks_of(model) == 0


def test_a_matched_adapter_finding_one_modality_names_the_adapter_and_extend():
    class OneKnown(LateFusion):
        """Recognised by the toy adapter, whose sites name one modality only."""

    adapter = pp.Adapter("toy.one", sites={"text": "encoders.text"})
    model = OneKnown()
    with refused(model, InjectionError, r"\(from adapter 'toy.one'\).*inject\(model, 'toy.one'"):
        pp.inject(model, adapter)
    handle = pp.inject(model, adapter, sites={"audio": "encoders.audio"})
    assert origins(handle.plan) == {"text": "adapter 'toy.one'", "audio": "user"}


def test_a_junction_says_whether_the_adapter_or_the_user_gave_it():
    from tiny_models import Concat

    junction = pp.Junction("mix", widths={"a": 5, "b": 6})
    x = (torch.randn(2, 3), torch.randn(2, 4))
    p = pp.plan(Concat(), pp.Adapter("toy.mix", junction=junction), example_inputs=x)
    assert {rs.origin for rs in p.sites.values()} == {"adapter 'toy.mix'"}
    assert "(junction)" in str(p) and "adapter 'toy.mix'" in str(p)
    assert {rs.origin for rs in pp.plan(Concat(), junction=junction).sites.values()} == {"user"}
