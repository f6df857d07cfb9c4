"""Grounding head: shapes, pair_index, text inputs and errors; it overfits derived expressions on tiny maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from changeagent.data.grounding import derive
from changeagent.errors import ChangeAgentError
from changeagent.metrics.grounding import GroundingMetrics, binarize
from changeagent.models.grounding_head import GroundingHead, coord_channels

CH = [8, 12, 16, 24]


def feats(b: int, size: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, size // s, size // s, generator=g) for c, s in zip(CH, (4, 8, 16, 32))]


def test_shapes_pair_index_and_pooled_only() -> None:
    torch.manual_seed(0)
    head = GroundingHead(CH, text_dim=16, channels=16, heads=4, attn_levels=2).eval()
    tokens, pad = torch.randn(5, 7, 16), torch.zeros(5, 7, dtype=torch.bool)
    pad[0, 3:] = True
    out = head(feats(3), (64, 64), tokens, pad, pair_index=torch.tensor([0, 0, 1, 2, 2]))
    assert out.shape == (5, 1, 64, 64) and out.dtype == torch.float32
    # expression i on pair pair_index[i] = the same expression run on that pair alone
    alone = head(feats(3), (64, 64), tokens[3:4], pad[3:4], pair_index=torch.tensor([2]))
    assert torch.allclose(out[3], alone[0], atol=1e-5)
    # padding is masked: changing padded token vectors changes nothing
    t2 = tokens.clone()
    t2[0, 3:] = 100.0
    assert torch.allclose(head(feats(3), (64, 64), t2, pad, pair_index=torch.tensor([0, 0, 1, 2, 2]))[0], out[0],
                          atol=1e-5)
    film_only = GroundingHead(CH, text_dim=16, channels=16, attn_levels=0)
    assert film_only(feats(2), (64, 64), pooled=torch.randn(2, 16)).shape == (2, 1, 64, 64)


def test_coord_channels() -> None:
    c = coord_channels(torch.zeros(1, 3, 2, 4))
    assert c.shape == (1, 2, 2, 4)
    assert c[0, 0, 0].tolist() == pytest.approx([-0.75, -0.25, 0.25, 0.75])  # x varies along width
    assert c[0, 1, :, 0].tolist() == pytest.approx([-0.5, 0.5])  # y along height


def test_bad_input() -> None:
    head = GroundingHead(CH, text_dim=16, channels=16, attn_levels=1)
    f = feats(2)
    with pytest.raises(ChangeAgentError, match="tokens and/or pooled"):
        head(f, (64, 64))
    with pytest.raises(ChangeAgentError, match=r"tokens must be float \[N, L, 16\]"):
        head(f, (64, 64), torch.randn(2, 5, 8))
    with pytest.raises(ChangeAgentError, match="no tokens"):
        head(f, (64, 64), torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ChangeAgentError, match="give pair_index"):
        head(f, (64, 64), torch.randn(3, 5, 16))
    with pytest.raises(ChangeAgentError, match=r"pair_index must be in \[0, 2\)"):
        head(f, (64, 64), torch.randn(3, 5, 16), pair_index=torch.tensor([0, 1, 2]))
    with pytest.raises(ChangeAgentError, match="needs the expression tokens"):
        head(f, (64, 64), pooled=torch.randn(2, 16))
    with pytest.raises(ChangeAgentError, match="feature levels"):
        head(f[:3], (64, 64), torch.randn(2, 5, 16))
    with pytest.raises(ChangeAgentError, match="multiple of heads"):
        GroundingHead(CH, text_dim=16, channels=10, heads=4)


def test_overfits_derived_expressions_on_tiny_maps() -> None:
    """A frozen stand-in for the shared features (the class maps, pooled to each stride, randomly
    projected) + a word embedding: the head learns several expressions per pair, each its own mask."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    size = 32
    maps = []
    for _ in range(4):
        m = np.zeros((size, size), np.int64)
        for _ in range(3):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(3, 9, 2)
            m[y:y + h, x:x + w] = rng.integers(1, 3)
        maps.append(m)
    exprs = [(i, e) for i, m in enumerate(maps) for e in derive(m, "levir_mci", i, n=6)]
    assert len({e.type for _, e in exprs}) >= 3
    vocab = {w: i + 1 for i, w in enumerate(sorted({w for _, e in exprs for w in e.text.split()}))}
    width = max(len(e.text.split()) for _, e in exprs)
    ids = torch.zeros(len(exprs), width, dtype=torch.long)
    for k, (_, e) in enumerate(exprs):
        ids[k, :len(e.text.split())] = torch.tensor([vocab[w] for w in e.text.split()])
    target = torch.from_numpy(np.stack([e.mask for _, e in exprs])).float()
    pair = torch.tensor([i for i, _ in exprs])
    onehot = F.one_hot(torch.from_numpy(np.stack(maps)), 3).permute(0, 3, 1, 2).float()
    chans = [8, 8, 8, 8]
    fs = [torch.einsum("bkhw,ck->bchw", F.avg_pool2d(onehot, s), torch.randn(c, 3)) for s, c in zip((4, 8, 16, 32), chans)]
    emb = torch.nn.Embedding(len(vocab) + 1, 32, padding_idx=0)
    head = GroundingHead(chans, 32, channels=16, heads=4, attn_levels=2)
    opt = torch.optim.AdamW([*head.parameters(), *emb.parameters()], lr=3e-3)
    for _ in range(160):
        logits = head(fs, (size, size), emb(ids), ids == 0, pair_index=pair)[:, 0]
        p = logits.sigmoid()
        dice = 1 - (2 * (p * target).sum((1, 2)) + 1) / (p.sum((1, 2)) + target.sum((1, 2)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, target) + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    metric = GroundingMetrics()
    with torch.no_grad():
        metric.update(binarize(head(fs, (size, size), emb(ids), ids == 0, pair_index=pair)), target.long(),
                      [e.type for _, e in exprs])
    out = metric.compute()
    assert out["miou"] > 0.8 and out["oiou"] > 0.8, out
