"""`model=mci` through the normal commands on tiny data: train, resume, eval, predict, fine-tune."""

from __future__ import annotations

import json

import torch
import yaml
from engine_helpers import write_config
from shared_data import DATA

from changeagent.cli import main
from changeagent.inference import Predictor

TINY_MCI = {"type": "mci", "encoder": "mit_b0", "heads": 2, "mask_neck_layers": 1, "caption_neck_layers": 1,
            "decoder_dim": 32, "pos_size": 2, "max_len": 41}
PAIR = DATA / "real_tiles" / "LEVIR-CD"


def _config(path, roots, model, **sections):
    """write_config with `model` replaced (not merged into the tiny modular model)."""
    write_config(path, roots, **sections)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"] = model
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_mci_trains_resumes_evaluates_predicts_and_fine_tunes(tmp_path, synth_roots, capsys):
    cfg = _config(tmp_path / "c.yaml", synth_roots, TINY_MCI, run={"deterministic": True},
                       train={"steps": 2}, eval={"max_len": 6})
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", "-c", str(cfg), f"run.out_dir={full}"]) == 0
    assert main(["train", "-c", str(cfg), f"run.out_dir={split}", "train.stop_at_step=1"]) == 0
    assert main(["train", "-c", str(cfg), f"run.out_dir={split}", "resume=true"]) == 0
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 2 and a["config"]["model"]["type"] == "mci"
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name

    best = full / "best"
    assert json.loads((best / "config.json").read_text())["model"]["type"] == "mci"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(best), "--split", "test", "eval.max_len=6",
                 "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["levir_mci"]["n_pairs"] == 5

    pred = Predictor.from_pretrained(best, max_len=6, tile=64)
    a_png, b_png = PAIR / "A" / "test_55_0256_0000.png", PAIR / "B" / "test_55_0256_0000.png"
    result = pred.predict(a_png, b_png)
    assert result.mask.shape == (256, 256) and isinstance(result.caption, str)
    assert main(["predict", "--checkpoint", str(best), str(a_png), str(b_png), "-o", str(tmp_path / "p"),
                 "--max-len", "6", "--tile", "64", "--no-progress"]) == 0
    assert (tmp_path / "p" / "test_55_0256_0000_mask.png").is_file()

    # fine-tune from the model folder, the reference's caption stage (encoder and detection frozen)
    ft = tmp_path / "ft"
    stage = {"name": "caption", "steps": 1, "tasks": ["caption"], "freeze": ["encoder", "neck.mask", "mask_decoder"]}
    cfg_ft = _config(tmp_path / "ft.yaml", synth_roots, {"name": "ignored-by-init_from"},
                          train={"init_from": str(best), "stages": [stage]}, eval={"max_len": 6})
    assert main(["train", "-c", str(cfg_ft), f"run.out_dir={ft}"]) == 0
    before = torch.load(full / "last.pt", weights_only=True)["model"]
    after = torch.load(ft / "last.pt", weights_only=True)
    assert after["config"]["model"]["type"] == "mci" and after["vocab"] == a["vocab"]
    changed = {n for n in before if not torch.equal(before[n], after["model"][n])}
    assert changed and all(n.startswith(("caption_decoder.", "neck.caption.")) for n in changed), changed
    capsys.readouterr()


def test_mci_refuses_datasets_it_has_no_head_for(tmp_path, synth_roots, capsys):
    cfg = _config(tmp_path / "c.yaml", synth_roots, TINY_MCI, datasets=("levir_mci", "second_cc"))
    assert main(["train", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err  # refused before anything is built, naming the dataset without a head
    assert err.startswith("error: model.datasets") and "second_cc" in err
