"""A model is a trunk plus one head per task of `model.tasks`: models without a task, the shared
features computed only when read, and model folders written before the task list keep loading."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import VOCAB, captions, tiny_cfg
from safetensors.torch import load_file, save_file

from changeagent.errors import ChangeAgentError
from changeagent.models import create_model, load, save_pretrained

RETR = {"dim": 16, "text_dim": 16, "text_layers": 1, "heads": 2}


def test_a_mask_only_model_has_no_memory_and_no_caption_head():
    model = create_model(tiny_cfg("resnet18", "diff", tasks=["mask"]), VOCAB)
    assert model.tasks == ["mask"] and model.memory is None
    assert set(model.param_counts()) == {"total", "encoder", "neck", "mask_decoder"}
    x = torch.randn(2, 2, 3, 64, 64)
    out = model(x, dataset=["levir_mci", "second_cc"])
    assert set(out) == {"change", "masks"} and out["masks"]["second_cc"].shape == (2, 2, 7, 64, 64)
    assert set(model.predict(x, max_len=3)) == {"change", "masks"}
    with pytest.raises(ChangeAgentError, match=r"no head reads input\(s\) \['captions'\]"):
        model(x, captions(2, 5))


def test_heads_run_only_when_asked_and_shared_features_only_when_read():
    torch.manual_seed(0)
    model = create_model(tiny_cfg("resnet18", "diff", tasks=["mask", "caption", "retrieval"], retrieval=RETR),
                         VOCAB).eval()
    calls = []
    model.memory.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 2, 3, 64, 64)
    assert set(model.predict(x, tasks=["mask"])) == {"change", "masks"} and not calls
    both = model.predict(x, max_len=3)
    assert set(both) == {"change", "masks", "tokens", "pair_emb"} and len(calls) == 1  # one memory, two heads
    with pytest.raises(ChangeAgentError, match="no head for task"):
        model.predict(x, tasks=["qa"])
    feats = model.features(x)
    decoder = feats["decoder"]  # the mask head's top-down map, published for other heads
    assert decoder.shape == (2, model.mask_decoder.feature_channels, 16, 16)
    assert torch.equal(model.mask_decoder.outputs(feats, {})["change"], model.predict(x, tasks=["mask"])["change"])


def _as_old_folder(folder):
    """Rewrite a model folder the way changeagent wrote it before `model.tasks` and `model.memory`."""
    config = json.loads((folder / "config.json").read_text())
    model = config["model"]
    model.pop("tasks")
    model["caption_decoder"].update(model.pop("memory"))
    weights = load_file(str(folder / "model.safetensors"))
    old = {"memory.proj.": "caption_decoder.memory_proj.", "memory.norm.": "caption_decoder.memory_norm.",
           "memory.level_embed": "caption_decoder.level_embed", "memory.dataset_embed.": "caption_decoder.dataset_embed."}
    renamed = {}
    for k, v in weights.items():
        for new, was in old.items():
            if k.startswith(new):
                k = was + k[len(new):]
        renamed[k] = v
    assert any(k.startswith("caption_decoder.memory_proj.") for k in renamed)
    save_file(renamed, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return model


@pytest.mark.parametrize("retrieval", [True, False])
def test_model_folders_written_before_the_task_list_load_with_the_tasks_they_have(tmp_path, retrieval):
    torch.manual_seed(0)
    tasks = ["mask", "caption", "retrieval"] if retrieval else ["mask", "caption"]
    model = create_model(tiny_cfg("resnet18", "diff", tasks=tasks, retrieval=RETR), VOCAB).eval()
    save_pretrained(model, tmp_path)
    old = _as_old_folder(tmp_path)
    assert old["retrieval"]["enabled"] is retrieval and "dim" in old["caption_decoder"]
    back = load(tmp_path).model.eval()
    assert back.tasks == tasks and back.config["memory"] == model.config["memory"]
    x, c = torch.randn(2, 2, 3, 64, 64), captions(2, 6)
    a, b = model(x, c), back(x, c)
    assert set(a) == set(b)
    for key in ("change", "caption", *(("pair_emb", "text_emb") if retrieval else ())):
        assert torch.equal(a[key], b[key]), key
