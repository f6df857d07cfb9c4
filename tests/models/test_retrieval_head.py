"""The retrieval head: outputs in forward/predict, config checks, save/load, and models without it."""

from __future__ import annotations

import pytest
import torch
from model_helpers import VOCAB, captions, tiny_cfg

from changeagent.errors import ChangeAgentError
from changeagent.models import create_model, load, save_pretrained
from changeagent.models.factory import resolve_config

RETR = {"enabled": True, "dim": 24, "text_dim": 16, "text_layers": 1, "heads": 2}


def test_forward_and_predict_give_normalised_embeddings() -> None:
    torch.manual_seed(0)
    model = create_model(tiny_cfg(encoder="tu-mobilenetv3_small_050", retrieval=RETR), VOCAB)
    x = torch.randn(3, 2, 3, 64, 64)
    out = model(x, captions=captions(3, 7), dataset=["levir_mci"] * 3)
    assert out["pair_emb"].shape == (3, 24) and out["text_emb"].shape == (3, 24)
    assert torch.allclose(out["pair_emb"].norm(dim=1), torch.ones(3), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-4)
    pred = model.predict(x, dataset=["levir_mci"] * 3, max_len=4)
    model.eval()
    with torch.no_grad():
        again = model(x, captions=captions(3, 7), dataset=["levir_mci"] * 3)
    assert torch.allclose(pred["pair_emb"], again["pair_emb"], atol=1e-5)  # same pass as the masks
    text = model.predict(x, dataset=["levir_mci"] * 3, tasks=["retrieval"], inputs={"texts": captions(3, 7)})
    assert torch.allclose(text["text_emb"], again["text_emb"], atol=1e-5)
    assert "tokens" not in text and "change" not in text  # only the asked-for head ran
    # padding does not change a caption's embedding
    padded = torch.cat([captions(3, 7), torch.zeros(3, 4, dtype=torch.long)], dim=1)
    assert torch.allclose(model.head("retrieval").text(padded), text["text_emb"], atol=1e-5)
    assert model.param_counts()["retrieval"] > 0


def test_model_without_head_works_and_says_so() -> None:
    model = create_model(tiny_cfg(encoder="tu-mobilenetv3_small_050"), VOCAB)
    assert model.tasks == ["mask", "caption"] and "retrieval" not in model.param_counts()
    x = torch.randn(2, 2, 3, 64, 64)
    out = model(x, captions=captions(2, 5))
    assert "pair_emb" not in out and "pair_emb" not in model.predict(x, max_len=3)
    with pytest.raises(ChangeAgentError, match="no 'retrieval' head"):
        model.head("retrieval")
    with pytest.raises(ChangeAgentError, match=r"no head reads input\(s\) \['texts'\]"):
        model.predict(x, inputs={"texts": captions(2, 5)})


def test_save_and_load_keep_the_head(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model(tiny_cfg(encoder="tu-mobilenetv3_small_050", retrieval=RETR), VOCAB)
    save_pretrained(model, tmp_path)
    back = load(tmp_path)[0]
    c = captions(2, 6)
    assert back.tasks == ["mask", "caption", "retrieval"]
    assert torch.equal(back.eval().head("retrieval").text(c), model.eval().head("retrieval").text(c))


@pytest.mark.parametrize("bad, msg", [
    ({"dims": 3}, "model.retrieval.dims: unknown key .did you mean .dim.?"),
    ({"dim": 0}, "retrieval.dim"),
    ({"text_dim": 30, "heads": 4}, "not divisible"),
    ({"temperature": 0}, "temperature"),
    ("yes", "model.retrieval: expected a mapping"),
])
def test_bad_config(bad, msg) -> None:
    with pytest.raises(ChangeAgentError, match=msg):
        resolve_config({"retrieval": bad})


def test_fast_lists_the_head_and_old_configs_keep_their_meaning() -> None:
    from changeagent.config import load_model_config

    fast = resolve_config(load_model_config("fast"))
    assert fast["tasks"] == ["mask", "caption", "retrieval", "qa", "grounding"] and fast["retrieval"]["enabled"] is True
    assert resolve_config({})["tasks"] == ["mask", "caption"] and resolve_config({})["retrieval"]["enabled"] is False
    # a config written before model.tasks: its retrieval.enabled decides, as it did
    assert resolve_config({"retrieval": {"enabled": True}})["tasks"] == ["mask", "caption", "retrieval"]
    assert resolve_config({"retrieval": {"enabled": False}})["tasks"] == ["mask", "caption"]
    # resolving twice changes nothing (the saved config is built from the resolved one)
    assert resolve_config(fast) == fast
