"""The automation contract: `train -c configs/<x>.yaml data.<x>.root=... run.out_dir=... model=...
train.max_minutes=M` stops cleanly with DIR/best/ loadable; `eval ... --out OUT` writes OUT/metrics.json."""

from __future__ import annotations

import json

import yaml
from engine_helpers import TINY_MODEL, read_jsonl, write_config

from changeagent.cli import main
from changeagent.config import config_dir
from changeagent.models import load_model

CAPTION_KEYS = {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "s_m", "no_change_accuracy"}
TINY_OVERRIDES = ["data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "data.min_count=0",
                  "train.grad_accum=1", "run.threads=1", "run.device=cpu", "eval.meteor=false",
                  "eval.select=miou+bleu4", "eval.every_epochs=null", "train.log_every=1",
                  "model.encoder_weights=null"]  # tests keep random init (the recipe starts from ImageNet)


def test_levir_contract_time_budget_then_eval(tmp_path, synth_roots, capsys):
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    out = tmp_path / "run"
    rc = main(["train", "-c", str(config_dir() / "levir_mci.yaml"), f"data.levir_mci.root={synth_roots['levir_mci']}",
               f"run.out_dir={out}", f"model={model_yaml}", "train.max_minutes=0.02", *TINY_OVERRIDES,
               "--json", str(tmp_path / "summary.json")])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "time_budget"
    assert summary["step"] >= 1
    # stopped cleanly: validated at the last step and saved everything
    records = read_jsonl(out / "metrics.jsonl")
    val = [r for r in records if r["kind"] == "val"]
    assert val and val[-1]["step"] == summary["step"]
    assert (out / "last.pt").is_file() and (out / "metrics.csv").is_file()
    best = out / "best"
    cfg = json.loads((best / "config.json").read_text())
    assert cfg["norm"] == {"levir_mci": {"mean": [0.39073, 0.38623, 0.32989], "std": [0.15329, 0.14628, 0.13648]}}
    assert json.loads((best / "metrics.json").read_text())["levir_mci"]["n_pairs"] == 5
    model = load_model(best)
    assert model.vocab is not None and len(model.vocab) == model.vocab_size
    assert "validation at step" in capsys.readouterr().out

    ev = tmp_path / "eval"
    rc = main(["eval", "-c", str(config_dir() / "levir_mci.yaml"), "--checkpoint", str(best), "--split", "test",
               f"data.levir_mci.root={synth_roots['levir_mci']}", *TINY_OVERRIDES, "eval.meteor=true",
               "eval.method=beam", "eval.beam_size=2", "eval.length_penalty=0.7", "eval.caption_level=id",
               "--out", str(ev), "--save-predictions"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "MIoU" in table and "B4" in table and "levir_mci" in table
    assert "caption metrics on vocabulary ids" in table  # the table says which level it shows
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics) == {"levir_mci", "eval"}
    assert metrics["eval"] == {"method": "beam", "beam_size": 2, "length_penalty": 0.7, "max_len": 41,
                               "caption_level": "id", "meteor": True, "norm": cfg["norm"]}
    assert "method: beam" in (ev / "config.yaml").read_text()  # the validated config that ran
    m = metrics["levir_mci"]
    assert CAPTION_KEYS | {"miou", "iou_per_class"} <= set(m)
    assert len(m["iou_per_class"]) == 3 and 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["bleu4"] <= 1.0
    assert m["n_pairs"] == 5
    assert "change" in m and "no_change" in m  # caption subsets
    preds = ev / "predictions" / "levir_mci"
    assert len(list(preds.glob("*.png"))) == 5
    captions = json.loads((preds / "captions.json").read_text())
    assert len(captions) == 5 and all("prediction" in v for v in captions.values())


def test_joint_staged_training_and_second_keys(tmp_path, synth_roots):
    """Joint stage then caption-only with encoder/neck/mask_decoder frozen; eval reports SECOND's keys."""
    import torch

    stages = [{"name": "joint", "steps": 2},
              {"name": "caption", "steps": 2, "tasks": ["caption"], "freeze": ["encoder", "neck", "mask_decoder"]}]
    cfg = write_config(tmp_path / "c.yaml", synth_roots, ("levir_mci", "second_cc"), train={"stages": stages})
    out = tmp_path / "run"
    assert main(["train", "-c", str(cfg), f"run.out_dir={out}", "train.stop_at_step=2"]) == 0
    after_joint = torch.load(out / "last.pt", weights_only=True)["model"]
    assert main(["train", "-c", str(cfg), f"run.out_dir={out}", "resume=true"]) == 0
    final = torch.load(out / "last.pt", weights_only=True)
    assert final["step"] == 4 and final["stage"] == 2
    for name, t in final["model"].items():
        frozen = name.split(".")[0] in ("encoder", "neck", "mask_decoder")
        if frozen:
            assert torch.equal(t, after_joint[name]), name
    changed = [n for n, t in final["model"].items()
               if n.startswith("caption_decoder") and not torch.equal(t, after_joint[n])]
    assert changed, "the caption stage did not train the caption decoder"

    ev = tmp_path / "eval"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(out / "best"), "--split", "val", "--out", str(ev)]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics) == {"levir_mci", "second_cc", "eval"}
    assert {"oa", "sek", "fscd", "miou", "score", "transition_sek", "iou_per_class"} <= set(metrics["second_cc"])
    assert CAPTION_KEYS <= set(metrics["second_cc"])
    assert len(metrics["second_cc"]["iou_per_class"]) == 7
