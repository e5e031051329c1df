"""Site features for real hosts: nested outputs, one token of a sequence, padding masks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import pgm_plugins as pp
from pgm_plugins import InputMask, Site
from pgm_plugins.errors import InjectionError


class LstmHost(nn.Module):
    """Audio through an LSTM whose final hidden state ``(out, (h, c))[1][0]`` the host uses."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.text = nn.Linear(5, 6)
        self.audio = nn.LSTM(3, 4, batch_first=True)
        self.out = nn.Linear(10, 1)

    def forward(self, t: Tensor, a: Tensor) -> Tensor:
        ht = self.text(t)
        _, (h, _) = self.audio(a)
        return self.out(torch.cat([ht, h[-1]], -1)).squeeze(-1)


class TokenHost(nn.Module):
    """A text encoder over padded tokens ``ids [B, 3, L]`` (MMSA's layout: ids, mask, types);
    the host reads position 0, as SELF_MM and MMIM do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 6)
        self.enc = nn.Linear(6, 6)
        self.audio = nn.Linear(3, 4)
        self.out = nn.Linear(10, 1)

    def forward(self, text: Tensor, audio: Tensor) -> Tensor:
        seq = self.enc(self.emb(text[:, 0].long()))
        return self.out(torch.cat([seq[:, 0], self.audio(audio)], -1)).squeeze(-1)


def token_inputs(pad: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 20, (4, 5), generator=g)
    mask = torch.ones(4, 5)
    mask[1, 3:] = 0
    ids = ids * mask.long()
    if pad:
        ids = torch.cat([ids, torch.zeros(4, pad, dtype=torch.long)], 1)
        mask = torch.cat([mask, torch.zeros(4, pad)], 1)
    text = torch.stack([ids.float(), mask, torch.zeros_like(mask)], 1)
    return text, torch.randn(4, 3, generator=g)


def test_nested_index_reaches_an_lstm_hidden_state():
    model = LstmHost()
    x = (torch.randn(4, 5), torch.randn(4, 7, 3))
    ref = model(*x)
    handle = pp.inject(
        model,
        sites={"text": "text", "audio": Site("audio", index=(1, 0), layout="TBD")},
        config={"task": "regression"},
        example_inputs=x,
    )
    torch.testing.assert_close(model(*x), ref, rtol=0, atol=0)  # identity at initialisation
    assert handle.plan is not None and handle.plan.sites["audio"].width == 4
    handle.aux_loss(torch.zeros(4)).backward()
    assert any(p.grad is not None for p in handle.block.parameters())


def test_token_site_changes_one_position_only():
    model = TokenHost()
    x = token_inputs()
    handle = pp.inject(
        model,
        sites={"text": Site("enc", token=0), "audio": "audio"},
        config={"task": "regression", "mix": "replace"},
        example_inputs=x,
    )
    plain = model.enc(model.emb(x[0][:, 0].long()))  # outside the forward: the host's output
    seen = {}
    model.enc.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    model(*x)
    assert not torch.equal(seen["out"][:, 0], plain[:, 0])
    torch.testing.assert_close(seen["out"][:, 1:], plain[:, 1:], rtol=0, atol=0)
    assert handle.plan is not None and handle.plan.sites["text"].width == 6


def test_input_mask_makes_the_block_ignore_padding():
    model = TokenHost()
    x = token_inputs()
    pp.inject(
        model,
        sites={"text": Site("enc", mask=InputMask(arg=0, row=1)), "audio": "audio"},
        config={"task": "regression", "mix": "replace"},
        example_inputs=x,
    )
    base = model(*x)
    padded = model(*token_inputs(pad=4))
    torch.testing.assert_close(padded, base, rtol=1e-5, atol=1e-6)


def test_without_the_mask_padding_changes_the_output():
    model = TokenHost()
    x = token_inputs()
    pp.inject(
        model,
        sites={"text": "enc", "audio": "audio"},
        config={"task": "regression", "mix": "replace"},
        example_inputs=x,
    )
    assert not torch.allclose(model(*token_inputs(pad=4)), model(*x))


def test_site_fields_are_validated_and_round_trip_through_json(tmp_path):
    with pytest.raises(InjectionError, match="token="):
        Site("enc", token="first")  # type: ignore[arg-type]
    with pytest.raises(InjectionError, match="InputMask"):
        Site("enc", mask=1)  # type: ignore[arg-type]
    with pytest.raises(InjectionError, match="tuple of them"):
        Site("enc", index=(1, 2.5))  # type: ignore[arg-type]
    site = Site("audio", index=(1, 0), mask=InputMask(arg="text", row=1))
    assert Site.coerce(site.to_dict()) == site
    model = TokenHost()
    x = token_inputs()
    handle = pp.inject(
        model,
        sites={"text": Site("enc", mask=InputMask(arg=0, row=1)), "audio": "audio"},
        example_inputs=x,
    )
    pp.save(handle, tmp_path)
    fresh = TokenHost()
    pp.load(fresh, tmp_path)
    torch.testing.assert_close(fresh(*token_inputs(pad=2)), model(*token_inputs(pad=2)))


class PackedHost(nn.Module):
    """Audio through a packed LSTM (MISA / Self-MM style); the host pools the padded output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.text = nn.Linear(5, 6)
        self.audio = nn.LSTM(3, 4, batch_first=True)
        self.out = nn.Linear(10, 1)

    def forward(self, t: Tensor, a: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            a, lengths, batch_first=True, enforce_sorted=False
        )
        seq, _ = self.audio(packed)
        ht = self.text(t)
        padded, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True)
        pooled = padded.sum(1) / lengths[:, None]
        return self.out(torch.cat([ht, pooled], -1)).squeeze(-1)


@pytest.mark.parametrize("mode", ["joint", "independent"])
def test_packed_sequence_sites_see_real_steps_only(mode):
    model = PackedHost()
    g = torch.Generator().manual_seed(5)
    t, a = torch.randn(4, 5, generator=g), torch.randn(4, 6, 3, generator=g)
    lengths = torch.tensor([6, 2, 4, 3])
    ref = model(t, a, lengths)
    handle = pp.inject(
        model,
        sites={"audio": Site("audio", index=0), "text": "text"},
        mode=mode,
        config={"task": "regression", "paired": "shared" if mode == "independent" else "bilinear"},
        example_inputs=(t, a, lengths),
    )
    torch.testing.assert_close(model(t, a, lengths), ref, rtol=0, atol=0)
    assert handle.plan is not None and handle.plan.sites["audio"].width == 4
    with torch.no_grad():
        for p in handle.block.parameters():
            if p.dim() == 0:
                p.fill_(1.0)
    out = model(t, a, lengths)
    assert not torch.allclose(out, ref)
    # what lies beyond each sequence's length does not matter
    noisy = a.clone()
    noisy[1, 2:] = 100.0
    torch.testing.assert_close(model(t, noisy, lengths), out, rtol=1e-5, atol=1e-6)
    (out.sum() + handle.aux_loss(torch.zeros(4))).backward()
    assert all(p.grad is not None for p in model.audio.parameters())


class ConvHost(nn.Module):
    """An image tower returning a feature map list (timm ``features_only`` style) and a vector
    modality; the host pools the last map."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3))
        self.audio = nn.Linear(3, 5)
        self.out = nn.Linear(11, 1)

    def forward(self, img: Tensor, aud: Tensor) -> Tensor:
        fmap, a = self.image(img), self.audio(aud)
        return self.out(torch.cat([fmap.mean((2, 3)), a], -1)).squeeze(-1)


def test_feature_map_sites_run_the_block_over_positions():
    model = ConvHost()
    x = (torch.randn(2, 1, 7, 7), torch.randn(2, 3))
    ref = model(*x)
    handle = pp.inject(model, sites={"image": "image", "audio": "audio"}, example_inputs=x)
    assert handle.plan is not None
    assert (handle.plan.sites["image"].layout, handle.plan.sites["image"].width) == ("BDHW", 6)
    torch.testing.assert_close(model(*x), ref, rtol=0, atol=0)
    with torch.no_grad():
        for p in handle.block.parameters():
            if p.dim() == 0:
                p.fill_(1.0)
    out = model(*x)
    assert out.shape == ref.shape and not torch.allclose(out, ref)
    channels_last = Site("image", layout="BHWD")
    handle.remove()
    with pytest.raises(InjectionError, match="layout 'BHWD'"):
        pp.inject(model, sites={"image": channels_last, "audio": "audio"}, example_inputs=x)


class EotHost(nn.Module):
    """A text tower pooled at the end-of-text token (the largest id), as open_clip's CLIP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.token_embedding = nn.Embedding(20, 6)
        self.ln_final = nn.LayerNorm(6)
        self.image = nn.Linear(3, 6)

    def encode_text(self, ids: Tensor) -> Tensor:
        x = self.ln_final(self.token_embedding(ids))
        return x[torch.arange(ids.shape[0]), ids.argmax(-1)]

    def forward(self, ids: Tensor, img: Tensor) -> Tensor:
        return (self.encode_text(ids) * self.image(img)).sum(-1)


def test_token_from_another_layers_input_picks_each_samples_position():
    from pgm_plugins import TokenFrom

    model = EotHost()
    ids = torch.tensor([[1, 5, 19, 0, 0], [2, 3, 4, 19, 0]])
    img = torch.randn(2, 3)
    text_site = Site("ln_final", token=TokenFrom("token_embedding"))
    handle = pp.inject(
        model,
        sites={"text": text_site, "image": "image"},
        mode="independent",
        config={"paired": "shared", "task": "none", "mix": "replace"},
        example_inputs=(ids, img),
    )
    seen = {}
    model.ln_final.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    emb = model.encode_text(ids)  # on its own, many times: each call picks its own positions
    torch.testing.assert_close(model.encode_text(ids), emb, rtol=0, atol=0)
    out = seen["out"]  # the engine changed the end-of-text rows only
    ref = nn.functional.layer_norm(
        model.token_embedding(ids), (6,), model.ln_final.weight, model.ln_final.bias
    )
    eot = ids.argmax(-1)
    rows = torch.arange(2)
    assert not torch.allclose(out[rows, eot], ref[rows, eot])
    keep = torch.ones(2, 5, dtype=torch.bool)
    keep[rows, eot] = False
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)
    with pytest.raises(InjectionError, match="token's layer 'token_embeding' not found"):
        pp.plan(EotHost(), sites={"text": Site("ln_final", token=TokenFrom("token_embeding"))})
    assert Site.coerce(text_site.to_dict()) == text_site
    handle.remove()
