"""The model zoo: shapes, the VAE's loss, causal attention, seeded sampling, save and load."""

from __future__ import annotations

import json

import pytest
import torch

from aigc_core import families
from aigc_core.generation.text import next_token
from aigc_core.generation.text_options import SamplingParams
from aigc_core.models.charlstm import CharLSTM, CharLSTMConfig
from aigc_core.models.chars import build_vocab, decode, encode
from aigc_core.models.io import load_model, save_model
from aigc_core.models.transformer import TransformerConfig, TransformerLM
from aigc_core.models.vae import VAE, VAEConfig, VAEDecoder, vae_loss

VOCAB = build_vocab("hello world, abc")
LSTM = CharLSTMConfig(vocab=VOCAB, embed_dim=8, hidden=16, block_size=12)
GPT = TransformerConfig(vocab=VOCAB, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


def test_vocab_round_trip_and_unknown_characters_are_named():
    ids = encode("hello", VOCAB)
    assert ids.dtype == torch.long and decode(ids, VOCAB) == "hello"
    with pytest.raises(ValueError, match=r"\['Z'\]"):
        encode("helloZ", VOCAB)


def test_vae_shapes_loss_and_decoder_range():
    torch.manual_seed(0)
    cfg = VAEConfig(z_dim=4, width=4)
    vae = VAE(cfg)
    x = torch.rand(3, 1, 28, 28)
    logits, mu, logvar = vae(x, torch.randn(3, 4))
    assert logits.shape == (3, 1, 28, 28) and mu.shape == logvar.shape == (3, 4)
    loss, recon, kl = vae_loss(logits, x, mu, logvar, beta=0.5)
    assert torch.isclose(loss, recon + 0.5 * kl) and kl >= 0 and recon > 0
    # KL is zero exactly when the posterior is the prior
    _, _, kl0 = vae_loss(logits, x, torch.zeros(3, 4), torch.zeros(3, 4), beta=1.0)
    assert kl0.abs() < 1e-6
    img = vae.decoder(torch.randn(5, 4))
    assert img.shape == (5, 1, 28, 28) and img.min() >= -1 and img.max() <= 1
    s = vae.decoder.sample(2, generator=torch.Generator().manual_seed(0))
    assert s.shape == (2, 1, 28, 28) and s.min() >= 0 and s.max() <= 1


@pytest.mark.parametrize("cfg", [LSTM, GPT], ids=["charlstm", "transformer"])
def test_language_models_shapes_and_initial_loss_near_uniform(cfg):
    torch.manual_seed(0)
    model = CharLSTM(cfg) if isinstance(cfg, CharLSTMConfig) else TransformerLM(cfg)
    idx = torch.randint(len(VOCAB), (4, 12))
    out = model(idx, idx)
    logits, loss = out[0], out[1]
    assert logits.shape == (4, 12, len(VOCAB))
    # an untrained model is close to uniform: ln V nats
    assert abs(loss.item() - torch.log(torch.tensor(float(len(VOCAB)))).item()) < 0.5


def test_transformer_attention_is_causal():
    torch.manual_seed(0)
    model = TransformerLM(GPT).eval()
    a = torch.randint(len(VOCAB), (1, 10))
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 1) % len(VOCAB)  # change the future only
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[0, :6], lb[0, :6], atol=1e-6)
    assert not torch.allclose(la[0, 6:], lb[0, 6:])
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 13, dtype=torch.long))


def picker(temperature: float, top_k: int, seed: int):
    """The models' `pick` argument, (B, V) logits -> (B, 1) ids, from the project's sampler."""
    g = torch.Generator().manual_seed(seed)
    params = SamplingParams(temperature=temperature, top_k=top_k)
    return lambda logits: next_token(logits, params, g).unsqueeze(-1)


@pytest.mark.parametrize("cfg", [LSTM, GPT], ids=["charlstm", "transformer"])
def test_generation_is_seeded_and_greedy_is_argmax(cfg):
    torch.manual_seed(0)
    model = CharLSTM(cfg) if isinstance(cfg, CharLSTMConfig) else TransformerLM(cfg)
    prompt = encode("hel", VOCAB)[None]  # (1, 3)
    a = model.generate(prompt, 20, picker(temperature=1.0, top_k=5, seed=7))
    b = model.generate(prompt, 20, picker(temperature=1.0, top_k=5, seed=7))
    assert a.shape == (1, 23) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    logits = torch.tensor([[0.1, 3.0, -1.0]])
    assert next_token(logits, SamplingParams(temperature=0)).item() == 1
    g = torch.Generator().manual_seed(0)
    top1 = SamplingParams(temperature=1.0, top_k=1)
    draws = {next_token(logits, top1, generator=g).item() for _ in range(20)}
    assert draws == {1}  # top-1 leaves only the best token


@pytest.mark.parametrize(
    "module, cfg",
    [
        (VAEDecoder(VAEConfig(z_dim=4, width=4)), VAEConfig(z_dim=4, width=4)),
        (CharLSTM(LSTM), LSTM),
        (TransformerLM(GPT), GPT),
    ],
    ids=["vae", "charlstm", "transformer"],
)
def test_save_and_load_rebuild_each_family(tmp_path, module, cfg):
    paths = save_model(tmp_path, module, cfg.to_dict())
    family = families.get(cfg.to_dict()["family"])
    back = family.load_generator(paths["weights"], paths["config"]).module
    assert type(back) is type(module) and back.cfg == cfg and not back.training
    for (k, v), (k2, v2) in zip(
        module.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    # models logged before they carried code load through `load_model`: the same module
    legacy = load_model(paths["weights"], paths["config"])
    assert type(legacy) is type(module) and legacy.cfg == cfg
    with pytest.raises(ValueError, match="unknown model family 'gpt9'"):
        load_model(paths["weights"], _with_family(paths["config"], "gpt9"))


def _with_family(config, family: str):
    out = config.with_name("other.json")
    out.write_text(json.dumps({**json.loads(config.read_text()), "family": family}))
    return out
