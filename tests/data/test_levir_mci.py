"""LevirMCI on a generated fixture in the published layout, and on real LEVIR-CD / LEVIR-CC tiles."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import DATA
from torch.utils.data import DataLoader

from changeagent.data.constants import CANONICAL_NO_CHANGE, IGNORE_INDEX, LEVIR_MEAN, LEVIR_STD, START
from changeagent.data.levir_mci import LevirMCI
from changeagent.data.vocab import Vocabulary, build_vocab_from_files
from changeagent.errors import ChangeAgentError

REAL = DATA


@pytest.fixture
def vocab(levir_root):
    return build_vocab_from_files([levir_root / "LevirCCcaptions.json"], min_count=0)


def test_samples_follow_the_contract(levir_root, fx, vocab):
    ds = LevirMCI(levir_root, "train", vocab=vocab)
    assert [p.name for p in ds.pairs] == list(fx.LEVIR_PAIRS["train"])  # JSON order, gaps kept
    for i, info in enumerate(ds.pairs):
        s = ds[i]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (2, 3, 32, 32)
        expected = fx.levir_mask_for(info.name, 32, fx.LEVIR_PAIRS["train"][info.name][1])
        assert s["mask"].dtype == torch.int64 and np.array_equal(s["mask"].numpy(), expected)
        assert torch.equal(s["change"], (s["mask"] > 0).long())
        assert s["caption_ids"].shape == (5, 41) and s["caption_ids"].dtype == torch.int64
        assert (s["caption_ids"][:, 0] == START).all()
        assert [vocab.decode(row) for row in s["caption_ids"]] == s["captions"]
        assert s["dataset"] == "levir_mci" and s["name"] == info.name
        assert s["changeflag"] == fx.LEVIR_PAIRS["train"][info.name][1]
        assert "sem" not in s


def test_normalisation_uses_reference_stats(levir_root, fx):
    s = LevirMCI(levir_root, "val")[0]
    raw_a = np.asarray(Image.open(levir_root / "images/val/A/val_000001.png"))
    restored = s["image"][0].permute(1, 2, 0).numpy() * np.array(LEVIR_STD) + np.array(LEVIR_MEAN)
    assert np.allclose(restored * 255, raw_a, atol=1e-3)
    assert "caption_ids" not in s


def test_raw_captions_are_tokenized(levir_root):
    ds = LevirMCI(levir_root, "train")
    raw_only = ds.pairs[1]  # train_000002 has only "raw" sentences
    assert raw_only.captions[:3] == [
        "a road is built at the top",
        "some buildings appear , and a road is built",
        "a house is constructed on the bareland",
    ]
    assert raw_only.captions == ds.pairs[2].captions  # same text given as tokens


def test_flag_mask_disagreement_and_canonical_no_change(levir_root):
    ds = LevirMCI(levir_root, "train", canonical_no_change=True)
    names = [p.name for p in ds.pairs]
    s = ds[names.index("train_000007.png")]
    assert s["changeflag"] == 0 and s["change"].sum() > 0  # loaded, not "fixed"
    assert s["captions"] == [CANONICAL_NO_CHANGE] * 5
    assert ds[names.index("train_000002.png")]["captions"][0] == "a road is built at the top"
    assert LevirMCI(levir_root, "train")[0]["captions"][0] == "there is no difference"


def test_transforms_run_before_normalisation(levir_root, vocab):
    seen = {}

    def crop_and_pad(sample):
        seen.update(a=sample["image_a"].dtype, m=sample["masks"]["mask"].dtype, c=list(sample["captions"]))
        mask = sample["masks"]["mask"][:16, :16].copy()
        mask[0, :] = IGNORE_INDEX  # as crop padding would
        return {"image_a": sample["image_a"][:16, :16], "image_b": sample["image_b"][:16, :16],
                "masks": {"mask": mask}, "captions": ["a road"] * 5}

    s = LevirMCI(levir_root, "train", vocab=vocab, transforms=crop_and_pad)[1]
    assert seen["a"] == np.uint8 and seen["m"] == np.int64 and len(seen["c"]) == 5
    assert s["image"].shape == (2, 3, 16, 16) and s["mask"].shape == (16, 16)
    assert (s["change"][0] == IGNORE_INDEX).all()
    assert set(s["change"][1:].unique().tolist()) <= {0, 1}
    assert s["captions"] == ["a road"] * 5 and vocab.decode(s["caption_ids"][0]) == "a road"

    def broken(sample):
        return {"image_a": sample["image_a"]}

    with pytest.raises(ChangeAgentError, match="transforms returned"):
        LevirMCI(levir_root, "train", transforms=broken)[0]


def test_dataloader_with_worker(levir_root, tmp_path, vocab):
    vocab.save(tmp_path / "vocab.json")
    ds = LevirMCI(levir_root, "test", vocab=str(tmp_path / "vocab.json"))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=1)))
    assert batch["image"].shape == (2, 2, 3, 32, 32) and batch["caption_ids"].shape == (2, 5, 41)
    assert batch["name"] == ["test_000002.png", "test_000003.png"]


def test_extra_files_on_disk_are_ignored(levir_root):
    for sub in ("A", "B", "label"):
        shutil.copy(levir_root / f"images/val/{sub}/val_000001.png", levir_root / f"images/val/{sub}/val_000002.png")
    assert [p.name for p in LevirMCI(levir_root, "val").pairs] == ["val_000001.png", "val_000003.png"]


def test_bad_inputs_name_the_path(levir_root, tmp_path):
    with pytest.raises(ChangeAgentError, match=r"nothere does not exist"):
        LevirMCI(tmp_path / "nothere")
    with pytest.raises(ChangeAgentError, match="split must be"):
        LevirMCI(levir_root, "trainval")
    shutil.rmtree(levir_root / "images/test")
    with pytest.raises(ChangeAgentError, match=r"images/test/A does not exist"):
        LevirMCI(levir_root, "test")
    (levir_root / "images/val/B/val_000003.png").unlink()
    with pytest.raises(ChangeAgentError, match=r"images/val/B/val_000003\.png does not exist"):
        LevirMCI(levir_root, "val")[1]
    Image.fromarray(np.zeros((20, 32, 3), np.uint8)).save(levir_root / "images/val/B/val_000001.png")
    with pytest.raises(ChangeAgentError, match=r"differ in size.*val/B/val_000001\.png is 32x20"):
        LevirMCI(levir_root, "val")[0]
    path = levir_root / "images/train/label/train_000002.png"
    label = np.asarray(Image.open(path)).copy()
    label[0, 0] = 64
    Image.fromarray(label).save(path)
    with pytest.raises(ChangeAgentError, match=r"label/train_000002\.png has illegal value 64"):
        LevirMCI(levir_root, "train")[1]
    path = levir_root / "images/train/A/train_000004.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ChangeAgentError, match=r"cannot read image .*A/train_000004\.png"):
        LevirMCI(levir_root, "train")[2]
    caption_file = levir_root / "LevirCCcaptions.json"
    data = json.loads(caption_file.read_text())
    data["images"][3]["sentences"] = []
    caption_file.write_text(json.dumps(data))
    with pytest.raises(ChangeAgentError, match=r"LevirCCcaptions\.json: entry 3 \(train_000005\.png\) has no sentences"):
        LevirMCI(levir_root, "train")
    caption_file.unlink()
    with pytest.raises(ChangeAgentError, match=r"LevirCCcaptions\.json does not exist"):
        LevirMCI(levir_root, "train")


def _real_caption_tokens() -> dict:
    return json.loads((REAL / "levir_mci_captions/captions.json").read_text())["tokens"]


def test_real_levir_cd_tiles_with_binary_labels(tmp_path, fx):
    """Real 0/255 LEVIR-CD labels through the LEVIR-MCI path, explicitly in binary mode."""
    src = REAL / "real_tiles/LEVIR-CD"
    root = tmp_path / "levir_cd"
    stems = sorted(p.stem for p in (src / "label").glob("*.png"))
    images = []
    for i, stem in enumerate(stems):
        for sub in ("A", "B", "label"):
            (root / "images/test" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copy(src / sub / f"{stem}.png", root / "images/test" / sub / f"{stem}.png")
        changed = bool(np.asarray(Image.open(src / "label" / f"{stem}.png")).any())
        images.append(fx.karpathy_entry(f"{stem}.png", "test", int(changed), False, i))
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": images}))
    ds = LevirMCI(root, "test", mask_mode="binary")
    assert len(ds) == len(stems) >= 7
    for i, stem in enumerate(stems):
        s = ds[i]
        label = np.asarray(Image.open(src / "label" / f"{stem}.png"))
        assert s["image"].shape == (2, 3, 256, 256)
        assert np.array_equal(s["mask"].numpy(), np.where(label == 255, 2, 0))
        assert np.array_equal(s["change"].numpy(), (label == 255).astype(np.int64))
        assert s["changeflag"] == int(label.any())
    empty = stems.index("train_386_0512_0768")
    assert ds[empty]["change"].sum() == 0


def test_real_levir_cc_pair_with_real_captions(tmp_path):
    """Real LEVIR-CC images train_000016 with their five real captions.

    LEVIR-MCI masks of these pairs are not available, so the label written here is empty and only
    the images and captions are checked.
    """
    name = "train_000016.png"
    tokens = _real_caption_tokens()[name]
    root = tmp_path / "levir_cc"
    for sub in ("A", "B"):
        (root / "images/train" / sub).mkdir(parents=True)
        shutil.copy(REAL / "real_tiles/LEVIR-CC" / sub / name, root / "images/train" / sub / name)
    (root / "images/train/label").mkdir()
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(root / "images/train/label" / name)
    sentences = [{"raw": " ".join(t) + " .", "imgid": 0, "sentid": j} for j, t in enumerate(tokens)]
    entry = {"filename": name, "filepath": "train", "split": "train", "imgid": 0,
             "sentences": sentences, "sentids": list(range(5)), "changeflag": 1}
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": [entry]}))
    vocab = Vocabulary.load(REAL / "levir_mci_captions/vocab.json")
    s = LevirMCI(root, "train", vocab=vocab)[0]
    assert s["captions"] == [" ".join(t) for t in tokens]
    assert s["captions"][0] == "several houses appear on the bareland at the bottom"
    assert [vocab.decode(r) for r in s["caption_ids"]] == s["captions"]  # every word is in the real vocab
    raw_b = np.asarray(Image.open(REAL / "real_tiles/LEVIR-CC/B" / name))
    restored = s["image"][1].permute(1, 2, 0).numpy() * np.array(LEVIR_STD) + np.array(LEVIR_MEAN)
    assert np.allclose(restored * 255, raw_b, atol=1e-3)
