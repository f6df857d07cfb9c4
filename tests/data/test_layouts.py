"""Every registered dataset reads its published layout (issue 12): the registry, the binary change
folders (crop + official, 0/255 and 0/1 labels, bad values named), LEVIR-CC, SECOND, the custom
layout with `data check` listing its problems, and `data synth --format` for every id."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import DATA

from changeagent.cli import main
from changeagent.data.binary_cd import decode_binary_label
from changeagent.data.check import check_layout
from changeagent.data.registry import REGISTRY, bind_spec, dataset_ids, get_spec
from changeagent.data.synth import MARKER
from changeagent.errors import ChangeAgentError

ISSUE_IDS = ["levir_mci", "second_cc", "levir_cd", "whu_cd", "dsifn_cd", "levir_cc", "second", "custom"]
QA_IDS = ["cdvqa", "qag360k"]  # question datasets (tests/data/test_qa_readers.py)
REAL = DATA / "real_tiles"


def test_registry_holds_every_dataset_and_its_config_section():
    from changeagent.engine.schema import DataCfg

    assert dataset_ids() == ISSUE_IDS + QA_IDS
    names = {f.name for f in fields(DataCfg)}
    for name in ISSUE_IDS + QA_IDS:
        spec = get_spec(name)
        assert spec.id == name and name in names
        assert spec.reader.dataset_id == name
    assert "layout" in {f.name for f in fields(get_spec("levir_cd").config)}
    with pytest.raises(ChangeAgentError, match="known: .*levir_cd"):
        get_spec("levir-cdd")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """`changeagent data synth --format ID` for every dataset id (32 px, a few pairs each)."""
    base = tmp_path_factory.mktemp("layouts")
    for name in ISSUE_IDS:
        rc = main(["data", "synth", "--format", name, "--out", str(base / name), "--n-train", "4", "--n-val", "2",
                   "--n-test", "2", "--size", "32", "--seed", "3", "--no-progress"])
        assert rc == 0, name
    rc = main(["data", "synth", "--format", "levir_cd", "--layout", "official", "--out", str(base / "official"),
               "--n-train", "3", "--n-val", "1", "--n-test", "1", "--size", "32", "--no-progress"])
    assert rc == 0
    return base


@pytest.mark.parametrize("name", ISSUE_IDS)
def test_synthetic_folder_in_each_layout_passes_data_check(synth, name, capsys):
    rc = main(["data", "check", str(synth / name), "--format", name, "--no-progress", "--json",
               str(synth / f"{name}.json")])
    assert rc == 0, capsys.readouterr()
    spec = bind_spec(name, synth / name)
    ds = spec.reader(synth / name, split=spec.splits[0])
    item = ds[0]
    assert item["dataset"] == name and tuple(item["image"].shape) == (2, 3, 32, 32)
    assert ("change" in item) == spec.has_mask and ("captions" in item) == spec.has_captions
    if spec.dates == 2:
        assert tuple(item["sem"].shape) == (2, 32, 32) and int(item["sem"].max()) <= 6
    if spec.dates == 1:
        assert int(item["mask"].max()) < spec.num_classes


def test_layout_files_on_disk(synth):
    assert all((synth / d / MARKER).is_file() for d in ("levir_cd", "official", "second"))  # marked synthetic
    assert sorted(p.name for p in (synth / "levir_cd").iterdir() if p.name != MARKER) == ["A", "B", "label", "list"]
    assert sorted(p.name for p in (synth / "official").iterdir() if p.name != MARKER) == ["test", "train", "val"]
    assert sorted(p.name for p in (synth / "official" / "train").iterdir()) == ["A", "B", "label"]
    assert sorted(p.name for p in (synth / "second").iterdir() if p.name != MARKER) == ["test", "train"]
    assert sorted(p.name for p in (synth / "second" / "train").iterdir()) == ["im1", "im2", "label1", "label2"]
    assert sorted(p.name for p in (synth / "levir_cc" / "images" / "train").iterdir()) == ["A", "B"]
    label = np.asarray(Image.open(next((synth / "levir_cd" / "label").iterdir())))
    assert label.ndim == 2 and set(np.unique(label).tolist()) <= {0, 255}
    ds = get_spec("levir_cd").reader(synth / "official", split="train")
    assert ds.layout == "official" and len(ds) == 3


def _crop_layout_from_real(root: Path, folder: str = "LEVIR-CD", binary01: bool = False) -> list[str]:
    names = sorted(p.name for p in (REAL / folder / "A").glob("*.png"))
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            if sub == "label" and binary01:
                arr = (np.asarray(Image.open(REAL / folder / sub / n)) > 0).astype(np.uint8)
                Image.fromarray(arr).save(root / sub / n)
            else:
                shutil.copy(REAL / folder / sub / n, root / sub / n)
    (root / "list").mkdir(exist_ok=True)
    (root / "list" / "train.txt").write_text("\n".join(names[:-2]) + "\n")
    (root / "list" / "test.txt").write_text("\n".join(Path(n).stem for n in names[-2:]) + "\n")  # stems too
    return names


@pytest.mark.parametrize("folder,name", [("LEVIR-CD", "levir_cd"), ("DSIFN-CD", "dsifn_cd")])
def test_real_tiles_in_the_crop_layout(tmp_path, folder, name):
    names = _crop_layout_from_real(tmp_path, folder)
    ds = get_spec(name).reader(tmp_path, split="test")
    assert ds.layout == "crop" and len(ds) == 2
    item = ds[1]
    label = np.asarray(Image.open(REAL / folder / "label" / names[-1]))
    assert np.array_equal(item["change"].numpy(), (label > 0).astype(np.int64))
    assert item["changeflag"] == int((label > 0).any())


def test_zero_one_labels_are_accepted_and_other_values_named(tmp_path):
    names = _crop_layout_from_real(tmp_path / "ok", binary01=True)
    ds = get_spec("levir_cd").reader(tmp_path / "ok", split="train")
    ref = np.asarray(Image.open(REAL / "LEVIR-CD" / "label" / names[0])) > 0
    assert np.array_equal(ds[0]["change"].numpy(), ref.astype(np.int64))
    with pytest.raises(ChangeAgentError, match=r"x\.png has illegal value 128"):
        decode_binary_label(np.array([[0, 128], [255, 0]], np.uint8), "x.png")
    with pytest.raises(ChangeAgentError, match="mixes values 1 and 255"):
        decode_binary_label(np.array([[0, 1], [255, 0]], np.uint8), "y.png")
    # a broken label inside a folder: data check names the file and the value
    bad = tmp_path / "ok" / "label" / names[0]
    Image.fromarray(np.full((256, 256), 7, np.uint8)).save(bad)
    report = check_layout(tmp_path / "ok", "levir_cd", progress=False)
    assert any(str(bad) in e and "value 7" in e for e in report["errors"]), report["errors"]


def test_official_release_reads_real_1024_images(tmp_path):
    for sub in ("A", "B", "label"):
        (tmp_path / "test" / sub).mkdir(parents=True)
        shutil.copy(REAL / "LEVIR-CD-1024" / sub / "test_7.png", tmp_path / "test" / sub / "test_7.png")
    ds = get_spec("levir_cd").reader(tmp_path, split="test")
    assert ds.layout == "official" and ds.names == ["test_7.png"]
    item = ds[0]
    assert tuple(item["image"].shape) == (2, 3, 1024, 1024)
    crop = np.asarray(Image.open(REAL / "LEVIR-CD" / "label" / "test_7_0256_0512.png")) > 0
    assert np.array_equal(item["change"].numpy()[256:512, 512:768], crop.astype(np.int64))


def test_custom_layout_with_grey_ids_and_check_lists_every_problem(tmp_path, capsys):
    root = tmp_path / "mine"
    names = _crop_layout_from_real(root, "DSIFN-CD")
    (root / "classes.yaml").write_text("classes:\n  - {name: unchanged, id: 0}\n  - {name: changed, id: 255}\n")
    spec = bind_spec("custom", root)
    assert spec.classes == ("unchanged", "changed") and spec.decoding == "binary" and spec.targets == ("change",)
    item = spec.reader(root, split="train")[0]
    ref = np.asarray(Image.open(root / "label" / names[0])) > 0
    assert np.array_equal(item["change"].numpy(), ref.astype(np.int64)) and "captions" not in item
    # three classes by colour + captions: a semantic head and a caption target
    three = tmp_path / "three"
    shutil.copytree(root, three)
    for n in names:
        grey = np.asarray(Image.open(three / "label" / n))
        rgb = np.zeros((*grey.shape, 3), np.uint8)
        rgb[grey > 0] = (255, 0, 0)
        rgb[:2][grey[:2] > 0] = (0, 0, 255)
        Image.fromarray(rgb).save(three / "label" / n)
    (three / "classes.yaml").write_text("classes:\n  - {name: none, colour: [0, 0, 0]}\n"
                                        "  - {name: building, colour: [255, 0, 0]}\n  - {name: water, colour: [0, 0, 255]}\n")
    images = [{"filename": n, "split": "train" if n in names[:-2] else "test",
               "sentences": [{"raw": "a building appears"}] * 5} for n in names]
    (three / "captions.json").write_text(json.dumps({"images": images}))
    spec3 = bind_spec("custom", three)
    assert spec3.head == (1, 3) and set(spec3.targets) == {"change", "mask", "captions"}
    item = spec3.reader(three, split="test")[0]
    assert item["captions"] == ["a building appears"] * 5 and int(item["mask"].max()) <= 2
    # now break it in several ways: check reports all of them, naming files and values
    Image.fromarray(np.full((256, 256, 3), (9, 9, 9), np.uint8)).save(three / "label" / names[0])
    (three / "B" / names[1]).unlink()
    rc = main(["data", "check", str(three), "--format", "custom", "--no-progress"])
    err = capsys.readouterr().out
    assert rc == 1
    assert f"{names[0]} has colour (9, 9, 9), which classes.yaml does not list" in err
    assert names[1] in err
    (three / "classes.yaml").unlink()
    rc = main(["data", "check", str(three), "--format", "custom", "--no-progress"])
    assert rc == 1 and "classes.yaml is missing" in capsys.readouterr().out


def test_registry_ids_match_files():
    for name, module in REGISTRY.items():
        assert module.endswith(f".{name}")


def test_the_worked_example_of_design_md_adds_a_dataset(tmp_path, monkeypatch):
    """docs/design.md's "Adding a dataset": its file plus one registry line make a working dataset."""
    import re
    import sys

    from changeagent.data import registry

    doc = (Path(__file__).resolve().parents[2] / "docs" / "design.md").read_text()
    code = re.search(r"```python\n# changeagent/data/my_cd.py\n(.*?)```", doc, re.S).group(1)
    (tmp_path / "my_cd_example.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.REGISTRY, "my_cd", "my_cd_example")
    for split, n in (("train", 2), ("test", 1)):
        for sub, src in (("t1", "A"), ("t2", "B"), ("gt", "label")):
            (tmp_path / "data" / split / sub).mkdir(parents=True)
            for name in sorted(p.name for p in (REAL / "DSIFN-CD" / "A").glob("*.png"))[:n]:
                shutil.copy(REAL / "DSIFN-CD" / src / name, tmp_path / "data" / split / sub / name)
    spec = get_spec("my_cd")
    ds = spec.reader(tmp_path / "data", split="train")
    assert len(ds) == 2 and ds[0]["dataset"] == "my_cd" and set(ds[0]["change"].unique().tolist()) <= {0, 1}
    report = check_layout(tmp_path / "data", "my_cd", progress=False)
    assert report["splits"]["test"]["pairs"] == 1
    assert len(report["errors"]) == 1 and report["errors"][0].startswith("val:")  # no val/ folder
    sys.modules.pop("my_cd_example", None)
