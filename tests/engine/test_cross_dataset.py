"""Across binary change datasets (issue 22): a LEVIR-MCI model is evaluated on LEVIR-CD and DSIFN-CD
through its shared change head, fine-tuned on them with `train.init_from` (fresh parts for what the
new dataset needs, the new folder records both), and `predict --head levir_cd` follows the same rule;
a dataset that needs a semantic head the model lacks (SECOND-CC) stays an `error:`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import write_config
from PIL import Image

from changeagent.cli import main
from changeagent.config import config_dir
from changeagent.models import load_model

CD_RUN = ["data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "run.threads=1", "run.device=cpu",
          "train.log_every=1", "eval.every_epochs=null", "eval.meteor=false", "data.augment.crop=null"]
NOTE = "scored by the shared change head; no semantic head for it"


@pytest.fixture(scope="module")
def cd_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny LEVIR-CD and DSIFN-CD folders (32 px, binary change labels only)."""
    base = tmp_path_factory.mktemp("cd")
    roots = {}
    for seed, name in enumerate(("levir_cd", "dsifn_cd"), start=3):
        roots[name] = base / name
        assert main(["data", "synth", "--format", name.replace("_", "-"), "--out", str(roots[name]), "--n-train", "8",
                     "--n-val", "4", "--n-test", "4", "--size", "32", "--seed", str(seed), "--no-progress"]) == 0
    return roots


@pytest.fixture(scope="module")
def mci_best(tmp_path_factory, synth_roots) -> Path:
    """best/ of a tiny model trained on LEVIR-MCI alone (mask + caption heads, heads for levir_mci only)."""
    base = tmp_path_factory.mktemp("mci")
    assert main(["train", "-c", str(write_config(base / "c.yaml", synth_roots))]) == 0
    best = base / "run" / "best"
    assert json.loads((best / "config.json").read_text())["model"]["datasets"] == ["levir_mci"]
    return best


def _eval(checkpoint: Path, dataset: str, root: Path, out: Path, *extra: str) -> int:
    return main(["eval", "-c", str(config_dir() / "levir_cd.yaml"), "--checkpoint", str(checkpoint), "--split",
                 "test", f"data.datasets=[{dataset}]", f"data.{dataset}.root={root}", *CD_RUN, *extra,
                 "--out", str(out), "--save-predictions"])


def _confusion(pred_dir: Path, root: Path) -> tuple[int, int, int]:
    """(tp, fp, fn) of the written masks against the test labels, every pixel once."""
    tp = fp = fn = 0
    names = sorted(p.name for p in (root / "label").glob("test_*.png"))
    assert names and sorted(p.name for p in pred_dir.glob("*.png")) == names
    for name in names:
        p = np.asarray(Image.open(pred_dir / name)) > 0
        label = np.asarray(Image.open(root / "label" / name))
        t = (label.max(axis=-1) if label.ndim == 3 else label) > 0
        tp, fp, fn = tp + int((p & t).sum()), fp + int((p & ~t).sum()), fn + int((~p & t).sum())
    return tp, fp, fn


@pytest.mark.parametrize("dataset", ["levir_cd", "dsifn_cd"])
def test_eval_on_a_binary_dataset_the_model_was_not_trained_on(dataset, mci_best, cd_roots, tmp_path, capsys):
    out = tmp_path / "ev"
    assert _eval(mci_best, dataset, cd_roots[dataset], out) == 0
    err = capsys.readouterr().err
    assert err.count(f"note: {dataset}: {NOTE}") == 1  # which head scores it, said once
    m = json.loads((out / "metrics.json").read_text())[dataset]
    assert {"precision", "recall", "f1", "iou", "oa"} <= set(m) and "bleu4" not in m and m["n_pairs"] == 4
    # the scores are those of the change head's masks eval wrote
    tp, fp, fn = _confusion(out / "predictions" / dataset, cd_roots[dataset])
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0, abs=1e-6)
    assert m["iou"] == pytest.approx(tp / (tp + fp + fn) if tp + fp + fn else 1.0, abs=1e-6)


def test_a_dataset_needing_a_semantic_head_the_model_lacks_is_an_error(mci_best, synth_roots, tmp_path, capsys):
    rc = main(["eval", "-c", str(config_dir() / "second_cc.yaml"), "--checkpoint", str(mci_best),
               f"data.second_cc.root={synth_roots['second_cc']}", *CD_RUN, "eval.select=miou"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "no heads for second_cc" in err and "['levir_mci']" in err and "semantic head" in err


def test_init_from_fine_tunes_a_levir_mci_model_on_dsifn_cd(mci_best, cd_roots, synth_roots, tmp_path, capsys):
    out = tmp_path / "ft"
    # the mask decoder trains (the shared change head); the rest is frozen, so it must equal the source
    stage = "[{name: change, steps: 3, tasks: [mask], freeze: [encoder, neck, memory, caption_decoder]}]"
    rc = main(["train", "-c", str(config_dir() / "levir_cd.yaml"), "data.datasets=[dsifn_cd]",
               f"data.dsifn_cd.root={cd_roots['dsifn_cd']}", f"train.init_from={mci_best}",
               f"run.out_dir={out}", f"train.stages={stage}", *CD_RUN])
    assert rc == 0
    err = capsys.readouterr().err
    assert (f"note: train.init_from={mci_best}: loaded encoder, neck, memory, mask_decoder, caption_decoder; "
            "fresh for dsifn_cd: memory.dataset_embed[dsifn_cd]") in err
    cfg = json.loads((out / "best" / "config.json").read_text())
    src = json.loads((mci_best / "config.json").read_text())
    assert cfg["model"]["datasets"] == ["levir_mci", "dsifn_cd"]
    assert list(cfg["datasets"]) == ["levir_mci", "dsifn_cd"]  # both heads are recorded as trained
    assert cfg["norm"] == {"levir_mci": src["norm"]["levir_mci"],
                           "dsifn_cd": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    assert list(cfg["training"]["datasets"]) == ["dsifn_cd"]  # what this run trained on
    before, after = load_model(mci_best).state_dict(), load_model(out / "best").state_dict()
    for name, t in after.items():
        if name.startswith(("encoder.", "neck.", "caption_decoder.", "memory.")) and "dataset_embed" not in name:
            assert torch.equal(t, before[name]), name
    emb_a, emb_b = after["memory.dataset_embed.weight"], before["memory.dataset_embed.weight"]
    assert emb_a.shape[0] == emb_b.shape[0] + 1  # a row for dsifn_cd; levir_mci's and "none" kept
    assert torch.equal(emb_a[0], emb_b[0]) and torch.equal(emb_a[-1], emb_b[-1])
    assert not torch.equal(after["mask_decoder.change_head.weight"], before["mask_decoder.change_head.weight"])
    # last.pt records the same (models.load of it knows both datasets, with their statistics)
    from changeagent.models.hub import read_norms

    assert read_norms(out / "last.pt")[0] == cfg["norm"]
    # the fine-tuned model has a head for dsifn_cd now: eval says nothing about shared heads
    assert _eval(out / "best", "dsifn_cd", cd_roots["dsifn_cd"], tmp_path / "ev") == 0
    assert NOTE not in capsys.readouterr().err
    # and its LEVIR-MCI head is still evaluated with the recorded statistics
    assert main(["eval", "-c", str(config_dir() / "levir_mci.yaml"), "--checkpoint", str(out / "best"),
                 f"data.levir_mci.root={synth_roots['levir_mci']}", *CD_RUN, "eval.select=miou"]) == 0


def test_init_from_gives_a_new_dataset_a_fresh_semantic_head(mci_best, synth_roots, tmp_path, capsys):
    out = tmp_path / "ft"
    cfg = write_config(tmp_path / "c.yaml", synth_roots, ("second_cc",), train={"init_from": str(mci_best)})
    assert main(["train", "-c", str(cfg), f"run.out_dir={out}"]) == 0
    err = capsys.readouterr().err
    assert "fresh for second_cc: " in err and "mask_decoder.heads.second_cc" in err
    saved = json.loads((out / "best" / "config.json").read_text())
    assert saved["model"]["datasets"] == ["levir_mci", "second_cc"] and set(saved["norm"]) == {"levir_mci", "second_cc"}


def test_predict_head_of_a_dataset_the_model_was_not_trained_on(mci_best, cd_roots, tmp_path, capsys):
    from changeagent.inference.predictor import Predictor

    capsys.readouterr()
    cd = Predictor.from_pretrained(mci_best, head="levir_cd")
    assert "note: levir_cd: predicted by the shared change head" in capsys.readouterr().err
    assert [t.name for t in cd.tasks] == ["mask"]  # no caption from an untrained dataset token
    mci = Predictor.from_pretrained(mci_best, head="levir_mci")
    # LEVIR-CD's registry statistics are LEVIR-MCI's: the same change logits from the shared head
    a = cd_roots["levir_cd"] / "A" / "test_13_0000_0000.png"
    b = cd_roots["levir_cd"] / "B" / "test_13_0000_0000.png"
    x = cd.prepare_pair(a, b)[None]
    assert np.array_equal(cd.run_windows(x)[0][:, 0], mci.run_windows(x)[0][:, 0])
    assert cd.run_windows(x)[0].shape[1] == 1  # the change channel alone
    assert main(["predict", "--checkpoint", str(mci_best), "--head", "levir_cd", str(a), str(b),
                 "-o", str(tmp_path / "p"), "--no-progress"]) == 0
    assert (tmp_path / "p" / "test_13_0000_0000_mask.png").is_file()
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(mci_best), "--head", "second_cc", str(a), str(b),
                 "-o", str(tmp_path / "q"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no heads for second_cc" in err and "['levir_mci']" in err
