"""SecondCC on a generated fixture in the published layout (restval, missing changeflag, black/white)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from changeagent.data.constants import CANONICAL_NO_CHANGE, IGNORE_INDEX
from changeagent.data.second_cc import SECOND_MEAN, SECOND_STD, SecondCC
from changeagent.data.vocab import build_vocab_from_files
from changeagent.errors import ChangeAgentError


def test_splits_and_restval(second_root):
    train = SecondCC(second_root, "train")
    assert [p.name for p in train.pairs] == ["00001.png", "00002.png", "00003.png"]  # restval is train
    assert [p.name for p in SecondCC(second_root, "val").pairs] == ["00004.png"]
    assert [p.name for p in SecondCC(second_root, "test").pairs] == ["00005.png", "00006.png"]


def test_samples_follow_the_contract(second_root, fx):
    vocab = build_vocab_from_files([second_root / "SECOND-CC-AUG.json"], min_count=0)
    for split in ("train", "val", "test"):
        ds = SecondCC(second_root, split, vocab=vocab, max_len=20)
        for i, info in enumerate(ds.pairs):
            s = ds[i]
            sem_a, sem_b = fx.second_sems_for(info.name, 32)
            assert s["image"].shape == (2, 3, 32, 32) and s["image"].dtype == torch.float32
            assert s["sem"].dtype == torch.int64 and s["sem"].shape == (2, 32, 32)
            assert np.array_equal(s["sem"][0].numpy(), sem_a) and np.array_equal(s["sem"][1].numpy(), sem_b)
            assert torch.equal(s["change"], (s["sem"][0] != 0).long())
            assert "mask" not in s and s["dataset"] == "second_cc" and s["name"] == info.name
            assert s["caption_ids"].shape == (5, 20)
            given = fx.SECOND_PAIRS[info.name][1]
            assert s["changeflag"] == (given if given is not None else int(sem_a.any()))


def test_changeflag_derived_when_absent(second_root):
    ds = SecondCC(second_root, "train")
    flags = {p.name: p.changeflag for p in ds.pairs}
    assert flags == {"00001.png": 1, "00002.png": None, "00003.png": None}
    assert ds[1]["changeflag"] == 1  # black-unchanged map with changes
    assert ds[2]["changeflag"] == 0 and ds[2]["change"].sum() == 0


def test_imagenet_normalisation_and_canonical(second_root):
    ds = SecondCC(second_root, "test", canonical_no_change=True)
    s = ds[1]
    assert s["captions"] == [CANONICAL_NO_CHANGE] * 5
    raw_a = np.asarray(Image.open(second_root / "test/rgb/A/00006.png"))
    restored = s["image"][0].permute(1, 2, 0).numpy() * np.array(SECOND_STD) + np.array(SECOND_MEAN)
    assert np.allclose(restored * 255, raw_a, atol=1e-3)


def test_transforms_get_both_sem_maps(second_root):
    def flip(sample):
        assert set(sample["masks"]) == {"sem_a", "sem_b"}
        sem_a = sample["masks"]["sem_a"][:, ::-1].copy()
        sem_a[:, 0] = IGNORE_INDEX
        return {"image_a": sample["image_a"][:, ::-1], "image_b": sample["image_b"][:, ::-1],
                "masks": {"sem_a": sem_a, "sem_b": sample["masks"]["sem_b"][:, ::-1]},
                "captions": sample["captions"]}

    plain, flipped = SecondCC(second_root, "val")[0], SecondCC(second_root, "val", transforms=flip)[0]
    assert torch.equal(flipped["sem"][1], plain["sem"][1].flip(-1))
    assert (flipped["change"][:, 0] == IGNORE_INDEX).all()
    assert torch.equal(flipped["change"][:, 1:], plain["change"].flip(-1)[:, 1:])


def test_other_captions_file(tmp_path, fx):
    root = fx.write_second_cc(tmp_path / "s", captions_file="captions/SECOND-CC.json")
    with pytest.raises(ChangeAgentError, match=r"SECOND-CC-AUG\.json does not exist"):
        SecondCC(root, "val")
    assert len(SecondCC(root, "val", captions_file="captions/SECOND-CC.json")) == 1
    assert len(SecondCC(root, "val", captions_file=root / "captions/SECOND-CC.json")) == 1


def test_bad_inputs_name_the_path(second_root):
    sem_path = second_root / "val/sem/B/00004.png"
    sem = np.asarray(Image.open(sem_path)).copy()
    sem[5, 5] = (10, 20, 30)
    Image.fromarray(sem).save(sem_path)
    with pytest.raises(ChangeAgentError, match=r"val/sem/B/00004\.png has illegal colour \(10, 20, 30\)"):
        SecondCC(second_root, "val")[0]
    Image.fromarray(np.zeros((32, 30, 3), np.uint8)).save(second_root / "test/rgb/B/00005.png")
    with pytest.raises(ChangeAgentError, match=r"differ in size.*rgb/B/00005\.png is 30x32"):
        SecondCC(second_root, "test")[0]
    (second_root / "test/sem/A/00006.png").unlink()
    with pytest.raises(ChangeAgentError, match=r"sem/A/00006\.png does not exist"):
        SecondCC(second_root, "test")[1]
    shutil.rmtree(second_root / "train/sem")
    with pytest.raises(ChangeAgentError, match=r"train/sem/A does not exist"):
        SecondCC(second_root, "train")
    data = json.loads((second_root / "SECOND-CC-AUG.json").read_text())
    data["images"][4]["sentences"][2] = {"imgid": 4}
    (second_root / "SECOND-CC-AUG.json").write_text(json.dumps(data))
    with pytest.raises(ChangeAgentError, match=r"entry 4 \(00005\.png\) sentence 2 has neither"):
        SecondCC(second_root, "test")
    (second_root / "SECOND-CC-AUG.json").write_text("{not json")
    with pytest.raises(ChangeAgentError, match=r"SECOND-CC-AUG\.json is not valid JSON"):
        SecondCC(second_root, "test")
