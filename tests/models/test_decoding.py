"""Batched greedy and beam search give exactly the one-by-one results; caching matches teacher forcing."""

from __future__ import annotations

import pytest
import torch
from model_helpers import VOCAB, fitted_decoder, tiny_cfg

from changeagent.data.constants import END, NULL, START
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model
from changeagent.models.caption_decoder import CaptionDecoder
from changeagent.models.decoding import beam_search, greedy_decode

B = 6


@pytest.fixture(scope="module")
def fitted() -> tuple[CaptionDecoder, torch.Tensor]:
    torch.set_num_threads(1)
    return fitted_decoder(B)


@pytest.fixture
def decoder(fitted) -> CaptionDecoder:
    return fitted[0]


@pytest.fixture
def memory(fitted) -> torch.Tensor:
    return fitted[1]


def _lengths(tokens: torch.Tensor) -> list[int]:
    return (tokens != NULL).sum(1).tolist()


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    t = max(r.shape[1] for r in rows)
    return torch.cat([torch.nn.functional.pad(r, (0, t - r.shape[1]), value=NULL) for r in rows])


def test_greedy_batched_equals_one_by_one(decoder, memory):
    batched = greedy_decode(decoder, memory, max_len=12)
    single = _pad([greedy_decode(decoder, memory[i:i + 1], max_len=12) for i in range(B)])
    assert torch.equal(batched, single)
    assert len(set(_lengths(batched))) > 1, "test data should give captions of several lengths"
    # output format: no specials except <NULL> padding, which only trails
    assert not ((batched == START) | (batched == END)).any()
    for row in batched:
        n = int((row != NULL).sum())
        assert (row[:n] != NULL).all() and (row[n:] == NULL).all()


@pytest.mark.parametrize("beam_size,length_penalty", [(3, 1.0), (4, 0.0), (2, 2.0)])
def test_beam_batched_equals_one_by_one(decoder, memory, beam_size, length_penalty):
    batched = beam_search(decoder, memory, beam_size=beam_size, max_len=12, length_penalty=length_penalty)
    single = _pad([beam_search(decoder, memory[i:i + 1], beam_size=beam_size, max_len=12,
                               length_penalty=length_penalty) for i in range(B)])
    assert torch.equal(batched, single)
    assert not ((batched == START) | (batched == END)).any()


def _score(decoder: CaptionDecoder, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of `tokens` followed by <END> (teacher forcing)."""
    seq = torch.cat([torch.full((tokens.shape[0], 1), START), tokens, torch.full((tokens.shape[0], 1), END)], 1)
    with torch.no_grad():
        logp = torch.log_softmax(decoder(memory, seq).float(), -1)
    return logp.gather(2, seq[:, 1:, None])[..., 0].sum(1)


def test_beam_of_one_is_greedy_and_wide_beam_scores_no_worse(decoder, memory):
    greedy = greedy_decode(decoder, memory, max_len=12)
    assert torch.equal(beam_search(decoder, memory, beam_size=1, max_len=12, length_penalty=0.0), greedy)
    for i in range(B):
        g = greedy[i:i + 1, :_lengths(greedy[i:i + 1])[0]]
        b5 = beam_search(decoder, memory[i:i + 1], beam_size=5, max_len=12, length_penalty=0.0)
        assert _score(decoder, memory[i:i + 1], b5) >= _score(decoder, memory[i:i + 1], g) - 1e-5


def test_cached_steps_match_teacher_forcing(decoder, memory):
    tokens = greedy_decode(decoder, memory[:2], max_len=8, min_len=8)
    seq = torch.cat([torch.full((2, 1), START), tokens], 1)
    with torch.no_grad():
        full = decoder(memory[:2], seq)  # [2, 8, V]: position t predicts seq[:, t+1]
        cache = decoder.start(memory[:2])
        steps = torch.stack([decoder.step(seq[:, t], cache, t) for t in range(8)], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-4)


def test_max_len_min_len_and_bad_arguments(decoder, memory):
    assert greedy_decode(decoder, memory, max_len=3).shape[1] <= 3
    fixed = greedy_decode(decoder, memory, max_len=7, min_len=7)
    assert fixed.shape == (B, 7) and (fixed != NULL).all()
    assert (beam_search(decoder, memory, max_len=5, min_len=5) != NULL).all()
    with pytest.raises(ChangeAgentError, match="max_len"):
        greedy_decode(decoder, memory, max_len=0)
    with pytest.raises(ChangeAgentError, match="beam_size"):
        beam_search(decoder, memory, beam_size=0)


def test_model_predict_batched_equals_one_by_one():
    torch.manual_seed(0)
    model = create_model(tiny_cfg("resnet18", "transformer"), VOCAB)
    with torch.no_grad():
        model.caption_decoder.head.bias[END] += 2.0
    model.train()  # predict must switch to eval itself (dropout, batch norm) and switch back
    image = torch.randn(3, 2, 3, 64, 64)
    names = ["levir_mci", "second_cc", "levir_mci"]
    for method in ("greedy", "beam"):
        batched = model.predict(image, names, method=method, beam_size=3, max_len=10)
        assert model.training
        single = [model.predict(image[i:i + 1], names[i:i + 1], method=method, beam_size=3, max_len=10)
                  for i in range(3)]
        assert torch.equal(batched["tokens"], _pad([s["tokens"] for s in single]))
        torch.testing.assert_close(batched["change"], torch.cat([s["change"] for s in single]),
                                   atol=1e-5, rtol=1e-4)
    with pytest.raises(ChangeAgentError, match="method"):
        model.predict(image, method="sample")
