"""An example pgm-plugins plugin: an adapter for a model this package defines."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pgm_plugins import Adapter, Site, hookimpl


class Tower(nn.Module):
    """A GRU over a sequence-first input; returns ``(sequence [T, B, d], final state)``."""

    def __init__(self, d_in: int, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_in, d)
        self.rnn = nn.GRU(d, d)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        seq, last = self.rnn(self.proj(x))
        return seq, last


class TwoTower(nn.Module):
    def __init__(self, d_image: int = 6, d_sound: int = 4, d: int = 8) -> None:
        super().__init__()
        self.image = Tower(d_image, d)
        self.sound = Tower(d_sound, d)
        self.head = nn.Linear(2 * d, 3)

    def forward(self, image: Tensor, sound: Tensor) -> Tensor:
        img, _ = self.image(image)
        snd, _ = self.sound(sound)
        return self.head(torch.cat([img.mean(0), snd.mean(0)], dim=-1))


@hookimpl
def pgm_register_adapters(register: Any) -> None:
    register(
        Adapter(
            "example.two_tower",
            sites={
                "image": Site("image", index=0, layout="TBD"),
                "sound": Site("sound", index=0, layout="TBD"),
            },
            config={"task": "classification", "num_classes": 3},
            description="pgm_example_plugin.TwoTower: each tower's sequence output",
        )
    )


def _example_inputs() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, 6, generator=g), torch.randn(7, 3, 4, generator=g)


@hookimpl
def pgm_register_models(register: Any) -> None:
    register(
        "example.two_tower",
        TwoTower,
        "two GRU towers, sequence-first",
        adapter="example.two_tower",
        example=_example_inputs,
    )


@hookimpl
def pgm_match_adapter(model: Any) -> str | None:
    return "example.two_tower" if isinstance(model, TwoTower) else None
