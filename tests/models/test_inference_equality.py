"""The inference optimisations give eager's outputs (atol 1e-4) for `fast`, `mamba` (PyTorch scan) and `mci`.

Small sizes of the three configs, random init, eval mode. Each side of a comparison is the call the
benchmark and the predictor make (`models.bench.bench_predict` = `model.predict` with a fixed caption
length): channels-last on and off (the `channels_last` model key, with NHWC weights as training leaves
them), `torch.compile` of every part (`compile_model`, what `compile: true` and `bench --compile` do;
slow), one encoder pass for every head against each head alone (`tasks=[t]`, the bench's per-task
column), and batched greedy decoding against one pair at a time.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from changeagent.data.constants import NULL
from changeagent.models import create_model
from changeagent.models.bench import bench_predict, predict_inputs
from changeagent.models.change_captioner import compile_model

ROOT = Path(__file__).resolve().parents[2]
VOCAB, SIZE, DECODE = 40, 64, 6


def _config(name: str) -> dict[str, Any]:
    cfg = yaml.safe_load((ROOT / "configs" / "model" / f"{name}.yaml").read_text())
    cfg.pop("recipe", None)
    if name == "mci":  # the faithful layout on MiT-B0 with narrow necks and decoder
        return {**cfg, "encoder": "mit_b0", "heads": 2, "mask_neck_layers": 1, "caption_neck_layers": 1,
                "pos_size": 4, "decoder_dim": 32, "channels_last": False}
    small = {**cfg, "mask_decoder": {**cfg["mask_decoder"], "channels": 8}, "memory": {**cfg["memory"], "dim": 32},
             "caption_decoder": {**cfg["caption_decoder"], "layers": 1, "heads": 2}}
    if name == "mamba":
        return {**small, "neck": {**cfg["neck"], "dim": 32, "depth": 1, "d_state": 4, "expand": 1}}
    return {**small, "neck": {**cfg["neck"], "dim": 32, "heads": 2},  # fast: its five heads, narrow
            "mask_decoder": {**small["mask_decoder"], "fine": 8},
            "retrieval": {**cfg["retrieval"], "dim": 8, "text_dim": 16, "text_layers": 1, "heads": 2},
            "qa": {**cfg["qa"], "dim": 16, "text_layers": 1, "fusion_layers": 1, "heads": 2},
            "grounding": {**cfg["grounding"], "channels": 8, "heads": 2, "text_dim": 16}}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(_config(name), VOCAB).eval()
    # a random caption decoder says the same words for any image, which would make the per-item
    # comparisons vacuous: 10x cross-attention outputs let the image decide the argmax (measured)
    with torch.no_grad():
        for layer in model.caption_decoder.layers:
            attn = layer.cross_attn
            (attn.out if hasattr(attn, "out") else attn.out_proj).weight.mul_(10.0)
    return model


def _inputs(model: Any, batch: int, seed: int = 1) -> tuple[torch.Tensor, list[str], dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 2, 3, SIZE, SIZE, generator=gen) * torch.linspace(0.5, 3.0, batch)[:, None, None, None,
                                                                                                   None]
    names = [model.datasets[i % len(model.datasets)] for i in range(batch)]
    extra = predict_inputs(model, batch, 8, gen, torch.device("cpu"))
    if "retrieval" in model.tasks:  # the text side too: caption ids to embed
        extra["texts"] = torch.randint(4, VOCAB, (5, 7), generator=gen)  # 5 != batch: not sliced per item
    return image, names, extra


def assert_same(a: Any, b: Any, where: str = "out", atol: float = 1e-4) -> None:
    """Float tensors within atol, integer tensors and everything else equal, key for key."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}", atol)
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, f"{where}: {tuple(a.shape)} vs {b!r:.80}"
        if a.is_floating_point():
            torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=0, msg=lambda m: f"{where}: {m}")
        else:
            assert torch.equal(a, b), f"{where}: {a.tolist()} != {b.tolist()}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _rows(out: dict[str, Any], i: int, batch: int) -> dict[str, Any]:
    """Item i of a batch's outputs: per-pair tensors and lists sliced at row i (others, e.g. text_emb, kept)."""
    def take(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: take(x) for k, x in v.items()}
        if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == batch:
            return v[i : i + 1]
        return v
    rows = {k: take(v) for k, v in out.items() if not k.startswith(("qa_", "grounding"))}
    if "tokens" in rows:  # the batch's <NULL> padding is not part of item i's caption
        t = rows["tokens"]
        used = (t != NULL).any(0).nonzero()
        rows["tokens"] = t[:, : int(used.max()) + 1 if used.numel() else 1]
    return rows


MODELS = ["fast", "mamba", "mci"]
TASK_KEYS = {"mask": {"change", "masks"}, "caption": {"tokens"}, "retrieval": {"pair_emb", "text_emb"},
             "qa": {"qa_answers", "qa_logits"}, "grounding": {"grounding"}}


@pytest.fixture(scope="module", params=MODELS)
def built(request: pytest.FixtureRequest) -> tuple[str, Any, tuple[torch.Tensor, list[str], dict[str, Any]]]:
    model = _model(request.param)
    return request.param, model, _inputs(model, 3)


def test_every_task_has_outputs_that_differ_per_item(built):
    """The comparisons below are not vacuous: every task answers, and items get different captions."""
    name, model, (image, names, extra) = built
    out = bench_predict(model, image, names, extra, DECODE)
    for task in model.tasks:
        assert TASK_KEYS[task] <= set(out), (task, sorted(out))
    assert out["tokens"].shape == (3, DECODE)
    assert len({tuple(r) for r in out["tokens"].tolist()}) > 1, out["tokens"]


def test_channels_last_equals_contiguous(built):
    name, model, (image, names, extra) = built
    eager = copy.deepcopy(model)
    eager.config["channels_last"] = False
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)  # as the training engine leaves it
    nhwc.config["channels_last"] = True
    ref = bench_predict(eager, image, names, extra, DECODE)
    assert_same(bench_predict(nhwc, image, names, extra, DECODE), ref, name)
    nhwc.config["channels_last"] = False  # NHWC weights alone (a saved model loads contiguous ones)
    assert_same(bench_predict(nhwc, image, names, extra, DECODE), ref, name)


def test_one_encoder_pass_equals_each_head_alone(built):
    name, model, (image, names, extra) = built
    together = bench_predict(model, image, names, extra, DECODE)
    seen: set[str] = set()
    for task in model.tasks:
        alone = bench_predict(model, image, names, extra, DECODE, tasks=[task])
        assert alone and not set(alone) & seen, (task, sorted(alone))  # each key from one head
        seen |= set(alone)
        assert_same(alone, {k: together[k] for k in alone}, f"{name}/{task}")
    assert seen == set(together)


def test_batched_greedy_equals_one_pair_at_a_time(built):
    name, model, (image, names, extra) = built
    extra = {k: v for k, v in extra.items() if not k.startswith(("qa_", "expression"))}  # per-pair heads only
    batched = bench_predict(model, image, names, extra, DECODE)
    for i in range(image.shape[0]):
        one = bench_predict(model, image[i : i + 1], names[i : i + 1], extra, DECODE)
        assert_same(one, _rows(batched, i, image.shape[0]), f"{name}[{i}]")


@pytest.mark.slow  # inductor compiles every part of three models: minutes on 2 cores
@pytest.mark.parametrize("name", MODELS)
def test_torch_compile_equals_eager(name):
    model = _model(name)
    image, names, extra = _inputs(model, 2)
    ref = bench_predict(model, image, names, extra, DECODE)
    compiled = compile_model(copy.deepcopy(model))
    assert_same(bench_predict(compiled, image, names, extra, DECODE), ref, name)
