"""`changeagent model-info` and `changeagent bench` through the real CLI."""

from __future__ import annotations

import json

import torch

from changeagent.cli import main


def test_model_info_writes_param_counts(tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main(["model-info", "model=fast", "model.neck.depth=2", "--vocab-size", "100", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    params = data["params"]
    assert set(params) == {"total", "encoder", "neck", "memory", "mask_decoder", "caption_decoder", "retrieval", "qa",
                           "grounding_head"}
    assert data["tasks"] == ["mask", "caption", "retrieval", "qa", "grounding"]
    assert params["total"] == sum(v for k, v in params.items() if k != "total")
    assert data["config"]["neck"]["depth"] == 2 and data["vocab_size"] == 100
    printed = capsys.readouterr().out
    assert "caption_decoder" in printed and f"{params['total']:,}" in printed
    # a bigger vocabulary only grows the caption decoder (embedding + output layer)
    out2 = tmp_path / "info2.json"
    assert main(["model-info", "model=fast", "model.neck.depth=2", "--vocab-size", "110", "--json", str(out2)]) == 0
    p2 = json.loads(out2.read_text())["params"]
    dim = data["config"]["memory"]["dim"]
    assert p2["caption_decoder"] - params["caption_decoder"] == 10 * (2 * dim + 1)
    assert p2["encoder"] == params["encoder"]
    # ... and the retrieval head's caption encoder (its token embedding)
    assert p2["retrieval"] - params["retrieval"] == 10 * data["config"]["retrieval"]["text_dim"]


def test_bench_writes_timings(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "model=fast", "model.neck.dim=32", "model.memory.dim=32",
            "model.caption_decoder.heads=2", "model.mask_decoder.channels=16", "--vocab-size", "30",
            "--batch", "2", "--size", "64", "--steps", "2", "--warmup", "1", "--threads", "1",
            "--caption-len", "6", "--decode-len", "4", "--infer-batches", "1,3", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    for key in ("train_s_per_pair", "infer_s_per_pair_b1", "infer_s_per_pair_b3", "peak_rss_mb"):
        assert data[key] > 0, key
    assert data["train_s_per_pair"] == data["train_s_per_step"] / 2
    assert data["params"]["total"] > 0 and data["size"] == 64
    assert "ms/pair" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["model-info", "model=nosuchmodel"]) == 2
    assert "nosuchmodel" in capsys.readouterr().err
    assert main(["model-info", "model.encoder=resnet18"]) == 2
    assert "model=NAME" in capsys.readouterr().err
    assert main(["bench", "model=fast", "--size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "model=fast", "--device", "cuda:0", "--size", "64"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
