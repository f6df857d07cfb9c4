"""One decoder (issue 17, 2.2): `eval` scores the class maps of `models.mask_decoder.class_maps`, and
`predict` writes masks decoded by the same function, so eval's MIoU / SeK / F1 of a checkpoint on a
split equal the scores of the masks `predict` writes for the same files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from engine_helpers import write_config
from PIL import Image

from changeagent.cli import main
from changeagent.data.registry import get_spec


def test_eval_and_predict_decode_with_the_one_function():
    from changeagent.inference import postprocess
    from changeagent.models import mask_decoder
    from changeagent.tasks import mask

    assert postprocess.class_maps is mask.class_maps is mask_decoder.class_maps
    # semantic_pair: unchanged where the change logit is not > 0, else 1 + argmax over classes 1..K-1
    change = torch.tensor([[[1.0, -1.0]]])  # [1, 1, 2]
    logits = torch.zeros(1, 2, 3, 1, 2)
    logits[0, :, 0] = 9.0  # class 0 wins the plain argmax, but is never a land-cover answer
    logits[0, 1, 2] = 1.0
    changed, maps = mask_decoder.class_maps(change, logits, "semantic_pair")
    assert changed.tolist() == [[[1, 0]]] and maps.tolist() == [[[[1, 0]], [[2, 0]]]]


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_roots):
    """A checkpoint trained a few steps on the three kinds of mask datasets."""
    base = tmp_path_factory.mktemp("one_decoder")
    roots = {**synth_roots, "levir_cd": base / "levir_cd"}
    get_spec("levir_cd").synth(roots["levir_cd"], 8, 3, 4, size=32, seed=3, progress=False)
    cfg = write_config(base / "c.yaml", roots, ("levir_mci", "second_cc", "levir_cd"),
                       data={"eval_batch_size": 1}, train={"steps": 3})
    assert main(["train", "-c", str(cfg)]) == 0
    return base, roots, cfg


def _varied_checkpoint(base, roots, cfg_path, head):
    """The trained model with its 1x1 heads spread (a few steps predict one class almost everywhere)
    and the change threshold at the median of `head`'s test pixels, so the maps vary."""
    from changeagent.engine.loaders import make_dataset
    from changeagent.engine.schema import load_run_config
    from changeagent.models import load, save_pretrained

    loaded = load(base / "run" / "best")
    model, dec = loaded.model.eval(), loaded.model.mask_decoder
    g = torch.Generator().manual_seed(0)
    items = make_dataset(head, roots[head], "test", load_run_config(cfg_path), loaded.vocab, train=False)
    with torch.no_grad():
        for conv in [dec.change_head, *dec.heads.values()]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 2.0)
            conv.bias.zero_()
        change = model.predict(torch.stack([items[i]["image"] for i in range(len(items))]), head,
                               tasks=["mask"])["change"]
        dec.change_head.bias -= change.median()
    return save_pretrained(model, base / f"ckpt_{head}", vocab=loaded.vocab, norm=loaded.norm,
                           datasets=loaded.datasets)
FOLDERS = {"levir_mci": ("images/test/A", "images/test/B"), "second_cc": ("test/rgb/A", "test/rgb/B"),
           "levir_cd": ("A", "B")}


@pytest.mark.parametrize("head", ["levir_mci", "second_cc", "levir_cd"])
def test_eval_scores_equal_the_scores_of_the_masks_predict_writes(run, head):
    from changeagent.data.vocab import Vocabulary
    from changeagent.engine.loaders import make_dataset
    from changeagent.engine.schema import load_run_config
    from changeagent.metrics import SegmentationMetrics, SemanticChangeMetrics
    from changeagent.metrics.segmentation import binary_scores

    base, roots, cfg_path = run
    ckpt = _varied_checkpoint(base, roots, cfg_path, head)
    ev = base / f"ev_{head}"
    assert main(["eval", "-c", str(cfg_path), "--checkpoint", str(ckpt), "--split", "test", "--out", str(ev),
                 f"data.datasets=[{head}]"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    out = base / f"pred_{head}"
    a, b = (roots[head] / f for f in FOLDERS[head])
    assert main(["predict", "-k", str(ckpt), "--a-dir", str(a), "--b-dir", str(b), "-o", str(out),
                 "--head", head, "--batch-size", "1", "--max-len", "4", "--no-vis", "--no-progress"]) == 0
    cfg = load_run_config(cfg_path)
    vocab = Vocabulary.load(ckpt / "vocab.json")
    spec = get_spec(head)
    test = make_dataset(head, roots[head], "test", cfg, vocab, train=False)

    def png(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(Image.open(out / name), np.int64))

    if spec.decoding == "semantic_pair":
        seg, scd = SegmentationMetrics(spec.num_classes, class_names=spec.classes), SemanticChangeMetrics()
        for item in test:
            stem = item["name"].rsplit(".", 1)[0]
            maps = torch.stack([png(f"{stem}_from.png"), png(f"{stem}_to.png")])[None]
            scd.update_stacked(maps, item["sem"][None])
            seg.update(maps.flatten(0, 1), item["sem"][None].flatten(0, 1))
        scores = {**{k: v for k, v in seg.compute().items() if k.startswith("iou")}, **scd.compute()}
        keys = ("sek", "fscd", "miou", "oa")
    else:
        binary = spec.decoding == "binary"
        seg = SegmentationMetrics(2 if binary else spec.num_classes,
                                  class_names=("no_change", "change") if binary else spec.classes)
        for item in test:
            stem = item["name"].rsplit(".", 1)[0]
            seg.update(png(f"{stem}_mask.png")[None], item["change" if binary else "mask"][None])
        scores = binary_scores(seg.compute()) if binary else seg.compute()
        keys = ("f1", "iou", "precision", "recall", "oa") if binary else ("miou", "oa")
    got = metrics[head]
    assert 0.05 < got["oa"] < 0.95, got  # the maps are neither all right nor all wrong: a decoding slip shows
    for k in keys:
        assert scores[k] == pytest.approx(got[k], abs=1e-9), (k, scores[k], got[k])
    assert len(test) == got["n_pairs"]
