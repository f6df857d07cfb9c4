"""The QA head: shapes, padding, answer masks, the question-only switch, on a real model's memory, and that
it fits derived questions on tiny maps by looking at them (where the question alone cannot)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from model_helpers import VOCAB, tiny_cfg
from shared_data import DATA

from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa.answers import AnswerVocab
from changeagent.data.qa.derive import derive
from changeagent.data.qa.vocab import PAD, UNK, QuestionVocab, tokenize_question
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import position_2d
from changeagent.models.qa_head import QAConfig, QAHead, encode_questions

ANS = AnswerVocab.default()
QV = QuestionVocab.build()
CFG = QAConfig(enabled=True, dim=32, text_layers=1, fusion_layers=1, heads=2, dropout=0.0)


def test_question_vocab():
    assert QV.words[:2] == ("<pad>", "<unk>") and {"non-vegetated", "pre-change", "how", "many"} <= set(QV.words)
    assert tokenize_question("What is the change ratio of NVG_surface in the pre-event image?") == \
        ["what", "is", "the", "change", "ratio", "of", "nvg_surface", "in", "the", "pre-event", "image"]
    assert QV.encode("how many zebras?")[-1] == UNK and QV.encode("") == [UNK]
    assert QuestionVocab.from_json(json.loads(json.dumps(QV.to_json()))) == QV
    more = QuestionVocab.build(["how many zebras?", "zebras again"], lexicons=("levir",), min_count=1)
    assert "zebras" in more.words and "again" not in more.words and "non-vegetated" not in more.words
    with pytest.raises(ChangeAgentError):
        QuestionVocab(("a", "b"))


@pytest.mark.skipif(not (DATA / "cdvqa_val" / "Val_questions.json").is_file(), reason="CDVQA Val absent")
def test_template_vocab_covers_every_real_val_word():
    qs = json.loads((DATA / "cdvqa_val" / "Val_questions.json").read_text())["questions"]
    assert QuestionVocab.build(lexicons=("second",)).unknown_rate(q["question"] for q in qs) == 0.0


def test_shapes_padding_and_allowed():
    torch.manual_seed(0)
    head = QAHead(len(QV), 24, len(ANS), CFG).eval()
    ids = encode_questions(QV, ["How many buildings have changed?", "Did the areas of water change?"])
    mem = torch.randn(2, 10, 24)
    logits = head(ids, mem)
    assert logits.shape == (2, len(ANS)) and logits.dtype == torch.float32
    padded = torch.cat([ids, torch.full((2, 5), PAD)], dim=1)
    assert torch.allclose(head(padded, mem), logits, atol=1e-5)  # padding changes nothing
    assert not torch.allclose(head(ids, torch.randn(2, 10, 24)), logits)  # the memory matters
    allowed = torch.tensor(ANS.allowed(["change_count", "change_or_not"]))
    pred = head(ids, mem, allowed).argmax(1)
    assert ANS.answer(pred[0]).isdigit() or ANS.answer(pred[0]).startswith("more_than")
    assert ANS.answer(pred[1]) in ("yes", "no")
    with pytest.raises(ChangeAgentError, match="memory must be"):
        head(ids, torch.randn(2, 10, 16))
    with pytest.raises(ChangeAgentError, match="int64"):
        head(ids.float(), mem)
    with pytest.raises(ChangeAgentError, match=r"in \[0"):
        head(ids + len(QV), mem)
    with pytest.raises(ChangeAgentError, match="allowed"):
        head(ids, mem, allowed.int())


def test_question_only_ignores_the_images():
    torch.manual_seed(0)
    head = QAHead(len(QV), 24, len(ANS), CFG, question_only=True).eval()
    ids = encode_questions(QV, ["How many buildings have changed?"] * 2)
    a = head(ids, torch.randn(2, 10, 24))
    assert torch.equal(a, head(ids, None)) and torch.equal(a[0], a[1])


def test_on_a_real_models_memory():
    from changeagent.models import create_model

    torch.manual_seed(0)
    model = create_model(tiny_cfg(encoder="tu-mobilenetv3_small_050"), VOCAB)
    memory = model.features(torch.randn(2, 2, 3, 64, 64), ["levir_mci"] * 2)["memory"]  # the shared token memory
    head = QAHead(len(QV), memory.shape[-1], len(ANS), CFG)
    logits = head(encode_questions(QV, ["Has anything changed?", "Where is the most change?"]), memory)
    assert logits.shape == (2, len(ANS))
    logits.logsumexp(1).sum().backward()  # the answer loss reaches the shared encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def _tiles(n: int = 12, size: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(n):
        m = np.zeros((size, size), np.int64)
        for _ in range(int(rng.integers(0, 4))):
            y, x = rng.integers(0, size - 3, 2)
            m[y:y + int(rng.integers(3, 5)), x:x + int(rng.integers(3, 5))] = int(rng.integers(1, 3))
        tiles.append(m)
    return tiles


def _memory(m: np.ndarray, proj: torch.Tensor) -> torch.Tensor:
    """Stand-in for the fused image tokens: class fractions of each 2x2 patch, projected, plus 2-D positions."""
    h = m.shape[0] // 2
    onehot = np.eye(3)[m].reshape(h, 2, h, 2, 3).mean((1, 3)).reshape(h * h, 3)
    return torch.tensor(onehot, dtype=torch.float32) @ proj + position_2d(h, h, proj.shape[1], torch.device("cpu"))


def test_fits_derived_questions_by_looking_at_the_maps():
    """Derived LEVIR-MCI questions of 12 tiny maps: the head fits them; the question-only head cannot beat
    the best answer per question text (its ceiling; 50 steps already take a head that sees the maps
    past it), and the learned head must beat that ceiling."""
    torch.manual_seed(0)
    lex = lexicon_for("levir")
    proj = torch.randn(3, 24) * 2
    texts, answers, mems = [], [], []
    for i, m in enumerate(_tiles()):
        for g in derive(m[None], lex, seed=0, key=str(i)):
            for it in g:
                texts.append(it.text)
                answers.append(ANS.index(it.answer))
                mems.append(_memory(m, proj))
    by_text: dict[str, Counter[int]] = defaultdict(Counter)
    for t, a in zip(texts, answers):
        by_text[t][a] += 1
    ceiling = sum(c.most_common(1)[0][1] for c in by_text.values()) / len(texts)
    ids = encode_questions(QV, texts)
    mem = torch.stack(mems)
    target = torch.tensor(answers)

    def fit(question_only: bool, steps: int) -> float:
        torch.manual_seed(0)
        head = QAHead(len(QV), 24, len(ANS), CFG, question_only=question_only)
        opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.05, steps)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(head(ids, mem), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        head.eval()
        with torch.no_grad():
            return (head(ids, mem).argmax(1) == target).float().mean().item()

    learned, blind = fit(False, 160), fit(True, 50)
    assert len(texts) > 150 and ceiling < 0.8
    assert learned > 0.95 and learned > ceiling + 0.1, (learned, ceiling)
    assert blind <= ceiling + 1e-6, (blind, ceiling)
