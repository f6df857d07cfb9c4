"""models.save_pretrained / load: identical outputs, self-contained folder, what was trained, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import VOCAB, captions, tiny_cfg

from changeagent.data.constants import SPECIALS
from changeagent.data.vocab import Vocabulary
from changeagent.errors import ChangeAgentError
from changeagent.models import ChangeCaptioner, create_model, load, load_model, save_pretrained
from changeagent.models.hub import read_norms


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
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["vocab_size"] == VOCAB and config["model"]["separate_necks"] is True
    loaded = load_model(tmp_path / "m")
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
    save_pretrained(model, tmp_path)
    model.vocab = None
    save_pretrained(model, tmp_path)
    assert not (tmp_path / "vocab.json").exists()
    assert load_model(tmp_path).vocab is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_loading_bad_folders_raises_clear_errors(model, tmp_path):
    with pytest.raises(ChangeAgentError, match="config.json is missing"):
        load_model(tmp_path)
    save_pretrained(model, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ChangeAgentError, match="model.safetensors"):
        load_model(tmp_path)
    save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["mask_decoder"]["channels"] = 8  # weights no longer fit the config
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ChangeAgentError, match="model.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ChangeAgentError, match="config.json"):
        load_model(tmp_path)


def test_vocab_size_mismatch_is_refused(model, tmp_path):
    model.vocab = Vocabulary({s: i for i, s in enumerate(SPECIALS)})
    with pytest.raises(ChangeAgentError, match="4 words"):
        save_pretrained(model, tmp_path)
    assert not list(tmp_path.iterdir())


def test_load_returns_vocab_norm_and_trained_datasets(model, tmp_path):
    norm = {"second_cc": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}
    save_pretrained(model, tmp_path / "m", norm=norm, datasets=["second_cc"])
    assert json.loads((tmp_path / "m" / "config.json").read_text())["norm"] == norm  # the record format
    loaded, vocab, got_norm, datasets = load(tmp_path / "m")
    assert vocab == model.vocab and loaded.vocab is vocab
    assert got_norm == norm
    assert list(datasets) == ["second_cc"] and datasets["second_cc"]["classes"][0] == "unchanged"
    # a run folder resolves to its best/
    save_pretrained(model, tmp_path / "run" / "best", norm=norm, datasets=["second_cc"])
    assert load(tmp_path / "run").datasets == datasets
    assert read_norms(tmp_path / "run") == (norm, tmp_path / "run" / "best" / "config.json")


def test_norm_record_is_per_trained_dataset(model, tmp_path):
    with pytest.raises(ChangeAgentError, match="'levir_mci' is not one of the datasets trained on"):
        save_pretrained(model, tmp_path / "m", norm={"levir_mci": {"mean": [0.5] * 3, "std": [0.2] * 3}},
                        datasets=["second_cc"])
    with pytest.raises(ChangeAgentError, match="same length"):
        save_pretrained(model, tmp_path / "m", norm={"second_cc": {"mean": [0.5] * 3, "std": [0.2]}},
                        datasets=["second_cc"])
    assert not (tmp_path / "m" / "config.json").exists()


def test_folders_of_format_2_give_their_one_data_norm_to_every_trained_dataset(model, tmp_path):
    save_pretrained(model, tmp_path / "m", datasets=["levir_mci", "second_cc"])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    one = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "format_version": 2, "data_norm": one}))
    assert load(tmp_path / "m").norm == {"levir_mci": one, "second_cc": one}


def test_a_folder_without_records_has_no_datasets_and_no_norm(model, tmp_path):
    # its heads (levir_mci + second_cc of a bare create_model) say nothing about what it was trained on
    save_pretrained(model, tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.datasets == {} and loaded.norm is None


def test_load_reads_a_training_checkpoint(model, tmp_path):
    data = {"datasets": ["levir_mci"], "levir_mci": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    state = {"model": model.state_dict(), "config": {"model": model.config, "data": data},
             "vocab": dict(model.vocab.word_to_id)}
    torch.save(state, tmp_path / "last.pt")
    loaded, vocab, norm, datasets = load(tmp_path / "last.pt")
    assert vocab == model.vocab and norm == {"levir_mci": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    assert read_norms(tmp_path / "last.pt") == (norm, tmp_path / "last.pt")
    assert list(datasets) == ["levir_mci"]
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2), n1
    # a checkpoint of the single data.mean/std configs: every trained dataset was read with it
    state["config"]["data"] = {"mean": [0.5] * 3, "std": [0.25] * 3, "datasets": ["levir_mci"]}
    torch.save(state, tmp_path / "old.pt")
    assert load(tmp_path / "old.pt").norm == norm
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ChangeAgentError, match="corrupt"):
        load(tmp_path / "bad.pt")


# that the model code never depends on the hub (lazy attributes included) is tests/test_layering.py's
# contract over the import graph


@pytest.mark.parametrize("encoder", ["resnet18", "mit_b0", "tu-mobilenetv3_small_050"])
def test_load_builds_on_meta_without_initialising(encoder, tmp_path, monkeypatch):
    """Start-up: the model is built on the meta device and the file's tensors put in place (the
    random initialisation of an MiT encoder took seconds); the result equals the saved model."""
    import changeagent.models.hub as hub

    torch.manual_seed(1)
    cfg = tiny_cfg(encoder, "transformer")
    cfg["caption_decoder"]["tie_embeddings"] = True
    saved = create_model(cfg, VOCAB)
    save_pretrained(saved, tmp_path / "m")

    def no_slow_path(*a, **k):
        raise AssertionError("built the slow way (random init, then copied)")

    monkeypatch.setattr(hub, "_build", no_slow_path)
    loaded = load_model(tmp_path / "m")
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    want, got = saved.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert loaded.caption_decoder.head.weight is loaded.caption_decoder.embed.weight  # still tied
    x = torch.randn(1, 2, 3, 64, 64)
    saved.eval()
    assert torch.equal(saved.predict(x, max_len=4)["change"], loaded.predict(x, max_len=4)["change"])
