"""A composite of a timm image tower and the user's own text tower: the matched ``timm.towers``
adapter finds one modality, which is an error naming the way on, not a silent one-modality
block; ``extend=True`` (or naming the adapter) adds the user's text site to the tower's."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import pgm_plugins as pp
from pgm_plugins.errors import InjectionError

torch.set_num_threads(1)


class ImageAndOwnText(nn.Module):
    """A timm ResNet for images and a text tower of the user's own (embedding bag + linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = timm.create_model(
            "test_resnet", pretrained=False, num_classes=0, in_chans=1
        )
        self.text_encoder = nn.Sequential(nn.EmbeddingBag(50, 12), nn.Linear(12, 12))
        width = self.image_encoder.num_features + 12
        self.head = nn.Linear(width, 3)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.image_encoder(image), self.text_encoder(tokens)], -1))


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 28, 28, generator=g), torch.randint(0, 50, (2, 5), generator=g)


def test_the_matched_tower_alone_is_an_error_naming_the_text_tower_and_the_fix():
    torch.manual_seed(0)
    model = ImageAndOwnText().eval()
    assert pp.match_adapter(model) == "timm.towers"
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InjectionError, match=r"finds 1 modality \('image'") as err:
        pp.inject(model)
    msg = str(err.value)
    assert "from adapter 'timm.towers'" in msg
    assert "text_encoder (Sequential)" in msg and "extend=True" in msg
    assert "allow_single=True" in msg
    assert not hasattr(model, "pgm_block")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("how", ["extend", "named"])
def test_the_users_text_tower_extends_the_matched_adapter(how):
    torch.manual_seed(0)
    model = ImageAndOwnText().eval()
    ref = model(*inputs())
    kwargs = {"extend": True} if how == "extend" else {"adapter": "timm.towers"}
    handle = pp.inject(model, sites={"text": "text_encoder"}, **kwargs)
    plan = handle.plan
    assert plan.adapter == "timm.towers" and set(plan.sites) == {"image", "text"}
    assert plan.sites["image"].origin == "adapter 'timm.towers'"
    assert plan.sites["text"].origin == "user" and plan.sites["text"].width == 12
    assert "adapter 'timm.towers'" in str(plan) and "user" in str(plan)
    torch.testing.assert_close(model(*inputs()), ref)  # identity at initialisation
    handle.remove()


def test_allow_single_keeps_the_one_tower_block_when_asked():
    model = ImageAndOwnText().eval()
    handle = pp.inject(model, allow_single=True)
    assert list(handle.block.config.modalities) == ["image"]
