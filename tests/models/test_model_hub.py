"""save_pretrained / from_pretrained: identical outputs, self-contained folder, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import VOCAB, captions, tiny_cfg

from changeagent.data.constants import SPECIALS
from changeagent.data.vocab import Vocabulary
from changeagent.errors import ChangeAgentError
from changeagent.models import ChangeCaptioner, create_model


@pytest.fixture
def model() -> ChangeCaptioner:
    torch.manual_seed(0)
    cfg = tiny_cfg("resnet18", "transformer", separate_necks=True)
    cfg["caption_decoder"]["tie_embeddings"] = True
    m = create_model(cfg, VOCAB)
    m.vocab = Vocabulary({**{s: i for i, s in enumerate(SPECIALS)}, **{f"w{i}": i for i in range(4, VOCAB)}})
    # a few training steps so batch-norm statistics and weights differ from a fresh init
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(2):
        out = m(torch.randn(2, 2, 3, 64, 64), captions(2, 6))
        (out["change"].mean() + out["caption"].logsumexp(-1).mean()).backward()
        opt.step()
        opt.zero_grad()
    return m.eval()


def test_round_trip_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["vocab_size"] == VOCAB and config["model"]["separate_necks"] is True
    loaded = ChangeCaptioner.from_pretrained(tmp_path / "m")
    assert loaded.vocab == model.vocab
    assert loaded.config == model.config
    assert loaded.caption_decoder.head.weight is loaded.caption_decoder.embed.weight  # still tied
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1
    image = torch.randn(2, 2, 3, 64, 96)
    a = model.predict(image, ["levir_mci", "second_cc"], method="beam", max_len=6)
    b = loaded.predict(image, ["levir_mci", "second_cc"], method="beam", max_len=6)
    assert torch.equal(a["change"], b["change"]) and torch.equal(a["tokens"], b["tokens"])
    assert torch.equal(a["masks"]["second_cc"], b["masks"]["second_cc"])


def test_saving_again_without_vocab_removes_the_stale_one(model, tmp_path):
    model.save_pretrained(tmp_path)
    model.vocab = None
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "vocab.json").exists()
    assert ChangeCaptioner.from_pretrained(tmp_path).vocab is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_loading_bad_folders_raises_clear_errors(model, tmp_path):
    with pytest.raises(ChangeAgentError, match="config.json is missing"):
        ChangeCaptioner.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ChangeAgentError, match="model.safetensors"):
        ChangeCaptioner.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["mask_decoder"]["channels"] = 8  # weights no longer fit the config
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ChangeAgentError, match="model.safetensors"):
        ChangeCaptioner.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ChangeAgentError, match="config.json"):
        ChangeCaptioner.from_pretrained(tmp_path)


def test_vocab_size_mismatch_is_refused(model, tmp_path):
    model.vocab = Vocabulary({s: i for i, s in enumerate(SPECIALS)})
    with pytest.raises(ChangeAgentError, match="4 words"):
        model.save_pretrained(tmp_path)
    assert not list(tmp_path.iterdir())
