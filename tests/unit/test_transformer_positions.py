"""The Transformer's two position schemes: learned embeddings (GPT-2) and rotary (RoFormer)."""

from __future__ import annotations

import pytest
import torch

from aigc_core.models.chars import build_vocab
from aigc_core.models.transformer import TransformerConfig, TransformerLM, rotary_tables, rotate

VOCAB = build_vocab("abcdefgh .")


def test_rotary_scores_depend_on_the_offset_only():
    """q at p and k at p' score as q at p+s and k at p'+s: attention sees relative positions;
    and a rotation keeps each vector's length."""
    cos, sin = rotary_tables(64, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(p: int, pk: int) -> torch.Tensor:
        return (
            rotate(q[None], cos[p : p + 1], sin[p : p + 1])
            @ rotate(k[None], cos[pk : pk + 1], sin[pk : pk + 1]).T
        )

    torch.testing.assert_close(score(3, 1), score(40, 38), atol=1e-5, rtol=0)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)  # another offset, another score
    torch.testing.assert_close(rotate(q[None], cos[9:10], sin[9:10]).norm(), q.norm())
    torch.testing.assert_close(rotate(q[None], cos[:1], sin[:1]), q[None])  # position 0: as is


def test_a_rotary_model_has_no_position_parameters_and_needs_even_heads():
    learned = TransformerConfig(vocab=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=8)
    rotary = TransformerConfig(
        vocab=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=8, positions="rotary"
    )
    keys = set(TransformerLM(rotary).state_dict())
    assert "pos.weight" in TransformerLM(learned).state_dict() and "pos.weight" not in keys
    assert not any("rotary" in k for k in keys)  # the tables are rebuilt, not saved
    assert TransformerConfig(vocab=VOCAB).positions == "learned"  # what older saved models have
    with pytest.raises(ValueError, match="even head size"):
        TransformerConfig(vocab=VOCAB, n_head=2, n_embd=6, positions="rotary")


def test_a_rotary_model_trains_in_bf16_autocast_and_is_causal():
    cfg = TransformerConfig(
        vocab=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16, positions="rotary"
    )
    torch.manual_seed(0)
    model = TransformerLM(cfg)
    idx = torch.randint(0, len(VOCAB), (3, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, targets=idx)
    loss.backward()
    assert torch.isfinite(loss) and model.tok.weight.grad is not None
    model.eval()
    with torch.no_grad():
        whole, _ = model(idx)
        changed = idx.clone()
        changed[:, 10:] = (changed[:, 10:] + 1) % len(VOCAB)
        head, _ = model(changed)
    torch.testing.assert_close(head[:, :10], whole[:, :10])  # later tokens change nothing before
    assert not torch.allclose(head[:, 10:], whole[:, 10:])
