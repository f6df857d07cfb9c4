"""`changeagent data ground`: the QAG-360K-like export (layout, masks = cut(parse(expression)) of the
written maps, determinism, --images copy) and its bad input (nothing partial written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changeagent.cli import main
from changeagent.data.grounding import EXPRESSION_TYPES, cut, parse


def _read_export(out: Path, split: str) -> list[dict]:
    doc = json.loads((out / split / "json" / f"{split.capitalize()}.json").read_text())
    assert doc["format"] == "changeagent-grounding/1" and doc["split"] == split
    return doc["expression"]


def _mask(out: Path, split: str, entry: dict) -> np.ndarray:
    m = np.asarray(Image.open(out / split / "mask" / f"{entry['id']}.png"))
    assert m.ndim == 2 and set(np.unique(m).tolist()) <= {0, 255}
    return m == 255


def test_export_levir_mci(levir_root: Path, tmp_path: Path, fx, capsys) -> None:
    out = tmp_path / "ground"
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(out), "--per-pair", "4",
                 "--no-progress", "--json", str(tmp_path / "s.json")]) == 0
    assert "referring expressions (levir_mci)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "s.json").read_text())
    assert set(summary["splits"]) == {"train", "val", "test"}
    ids = []
    for split, items in fx.LEVIR_PAIRS.items():
        entries = _read_export(out, split)
        assert summary["splits"][split]["expressions"] == len(entries)
        assert summary["splits"][split]["pairs"] == len(items)
        for e in entries:
            ids.append(e["id"])
            assert e["type"] in EXPRESSION_TYPES
            assert e["image_a"] == f"images/{split}/A/{e['img_id']}"
            _, flag, _ = items[e["img_id"]]
            truth = fx.levir_mask_for(e["img_id"], 32, flag)  # the class map the fixture wrote
            mask = _mask(out, split, e)
            assert (mask == cut(parse(e["expression"], "levir_mci"), truth)).all(), e
            assert e["area"] == mask.sum() and (e["type"] == "empty") == (e["area"] == 0)
        empty_pairs = {n for n, (_, flag, _) in items.items() if not fx.levir_mask_for(n, 32, flag).any()}
        assert {e["type"] for e in entries if e["img_id"] in empty_pairs} <= {"empty"}
    assert sorted(ids) == list(range(len(ids)))  # unique ids, one mask file each
    assert not (out / "train" / "image").exists()  # --images none: only named


def test_export_second_cc_is_deterministic_and_copies_images(second_root: Path, tmp_path: Path, fx) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["data", "ground", str(second_root), "--format", "second_cc", "-o", str(out), "--seed", "3",
                     "--splits", "train", "test", "--images", "copy", "--no-progress"]) == 0
    assert _read_export(a, "train") == _read_export(b, "train")
    assert not (a / "val").exists()
    entries = _read_export(a, "train")
    assert {e["img_id"] for e in entries} == {"00001.png", "00002.png", "00003.png"}  # restval is train
    for e in entries:
        sem = np.stack(fx.second_sems_for(e["img_id"], 32))
        assert (_mask(a, "train", e) == cut(parse(e["expression"], "second_cc"), sem)).all()
        copied = np.asarray(Image.open(a / "train" / "image" / "im2" / e["img_id"]))
        assert (copied == np.asarray(Image.open(second_root / e["image_b"]))).all()


def test_export_second(tmp_path: Path) -> None:
    from changeagent.data.registry import get_spec
    from changeagent.data.second import Second

    root = tmp_path / "second"
    get_spec("second").synth(root, 2, 0, 1, size=64, seed=0, progress=False)
    out = tmp_path / "g"
    assert main(["data", "ground", str(root), "--format", "second", "-o", str(out), "--no-progress"]) == 0
    ds = Second(root, "train")
    maps = {ds.names[i]: np.stack(ds.load_raw(i)[2:]) for i in range(len(ds))}
    entries = _read_export(out, "train")
    assert entries and {e["img_id"] for e in entries} == set(maps)
    for e in entries:
        assert e["image_a"] == f"train/im1/{e['img_id']}"
        assert (_mask(out, "train", e) == cut(parse(e["expression"], "second"), maps[e["img_id"]])).all()


def test_bad_input_writes_nothing(levir_root: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    assert main(["data", "ground", str(tmp_path / "missing"), "--format", "levir-mci", "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(out), "--splits",
                 "dev"]) == 2
    assert "has splits" in capsys.readouterr().err
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(out), "--per-pair",
                 "0"]) == 2
    assert "--per-pair" in capsys.readouterr().err
    assert main(["data", "ground", str(levir_root), "--format", "second-cc", "-o", str(out)]) == 2
    assert "error:" in capsys.readouterr().err  # the LEVIR folder is no SECOND-CC layout
    with pytest.raises(SystemExit) as e:
        main(["data", "ground", str(levir_root), "--format", "levir-cd", "-o", str(out)])
    assert e.value.code == 2
    # a folder that is not an earlier export is never replaced
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(other)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(other), "--overwrite"]) == 2
    assert "refusing" in capsys.readouterr().err and (other / "keep.txt").exists()
    # a failure half-way leaves neither the output nor a temporary folder
    import changeagent.data.grounding.export as export

    calls, real = [], export.derive

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "derive", failing)
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(out), "--no-progress"]) == 2
    assert "No space left" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["levir", "precious"])


def test_overwrite_replaces_an_earlier_export(levir_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(out), "--per-pair", "2",
                 "--no-progress"]) == 0
    assert main(["data", "ground", str(levir_root), "--format", "levir-mci", "-o", str(out), "--per-pair", "3",
                 "--overwrite", "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["per_pair"] == 3
