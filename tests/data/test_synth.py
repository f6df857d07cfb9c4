"""The synthetic benchmark: exact release layouts, determinism, gaps, real loaders, captions vs masks."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from changeagent.cli import main
from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.levir_mci import LevirMCI
from changeagent.data.second_cc import SecondCC
from changeagent.data.synth import MARKER, generate, scenes
from changeagent.data.synth.captions import POSITIONS, captions
from changeagent.data.vocab import tokenize
from changeagent.errors import ChangeAgentError

COUNTS = {"train": 12, "val": 3, "test": 3}
SECOND_PALETTE = {(255, 255, 255), (0, 0, 255), (128, 128, 128), (0, 128, 0), (0, 255, 0), (128, 0, 0), (255, 0, 0)}



def published(root):
    """The folder's files besides the `.synth.json` mark every generated folder carries (checked here)."""
    assert (root / MARKER).is_file(), f"{root} lacks its synthetic mark {MARKER}"
    return sorted(p.name for p in root.iterdir() if p.name != MARKER)

def _synth(fmt: str, out: Path, seed: int = 5, size: int = 32, extra: tuple[str, ...] = ()) -> int:
    return main(["data", "synth", "--format", fmt, "--out", str(out), "--n-train", str(COUNTS["train"]),
                 "--n-val", str(COUNTS["val"]), "--n-test", str(COUNTS["test"]), "--size", str(size),
                 "--seed", str(seed), "--no-progress", *extra])


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    for fmt in ("levir-mci", "second-cc"):
        assert _synth(fmt, base / fmt, extra=("--json", str(base / f"{fmt}.json"))) == 0
    return base


def _records(root: Path, fmt: str) -> list[dict]:
    name = "LevirCCcaptions.json" if fmt == "levir-mci" else "SECOND-CC-AUG.json"
    return json.loads((root / name).read_text())["images"]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_json_summary(roots):
    s = json.loads((roots / "levir-mci.json").read_text())
    assert s["pairs"] == COUNTS and s["total_pairs"] == 18
    assert s["change_pairs"] == {k: round(n / 2) for k, n in COUNTS.items()}  # half of every split
    assert 0 < s["seconds"] and s["format"] == "levir-mci"


def test_levir_layout_exact(roots):
    root = roots / "levir-mci"
    assert published(root) == ["LevirCCcaptions.json", "images"]
    recs = _records(root, "levir-mci")
    assert [r["imgid"] for r in recs] == list(range(len(recs)))
    sentid = 0
    for r in recs:
        assert set(r) == {"filename", "filepath", "split", "imgid", "sentences", "sentids", "changeflag"}
        assert r["filepath"] == r["split"] and re.fullmatch(rf"{r['split']}_\d{{6}}\.png", r["filename"])
        assert len(r["sentences"]) == 5 and r["sentids"] == list(range(sentid, sentid + 5))
        for k, s in enumerate(r["sentences"]):
            assert set(s) == {"raw", "tokens", "imgid", "sentid"}
            assert s["imgid"] == r["imgid"] and s["sentid"] == sentid + k
            assert s["tokens"] == tokenize(s["raw"])  # raw and tokens tell the same caption
        sentid += 5
    for split, n in COUNTS.items():
        names = [r["filename"] for r in recs if r["split"] == split]
        assert len(names) == n
        for sub in ("A", "B", "label"):
            assert sorted(p.name for p in (root / "images" / split / sub).iterdir()) == sorted(names)
        ids = [int(x[-10:-4]) for x in names]
        assert ids == sorted(ids) and ids[-1] > len(ids)  # numbering gaps: loaders must follow the JSON
    r = recs[1]
    with Image.open(root / "images" / r["split"] / "label" / r["filename"]) as im:
        assert im.mode == "RGB" and im.size == (32, 32)
    for p in (root / "images" / "train" / "label").iterdir():
        lab = np.asarray(Image.open(p))
        assert (lab[..., 0] == lab[..., 1]).all() and (lab[..., 0] == lab[..., 2]).all()
        assert set(np.unique(lab).tolist()) <= {0, 128, 255}


def test_second_layout_exact(roots):
    root = roots / "second-cc"
    assert published(root) == ["SECOND-CC-AUG.json", "test", "train", "val"]
    recs = _records(root, "second-cc")
    assert {r["split"] for r in recs} == {"train", "restval", "val", "test"}
    assert any("changeflag" not in r for r in recs) and any("changeflag" in r for r in recs)
    names = [r["filename"] for r in recs]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"\d{5}\.png", n) for n in names)
    for r in recs:
        folder = "train" if r["split"] == "restval" else r["split"]
        assert r["filepath"] == folder
        files = [root / folder / k / d / r["filename"] for k in ("rgb", "sem") for d in ("A", "B")]
        assert all(f.is_file() for f in files)
        sem_a, sem_b = (np.asarray(Image.open(f).convert("RGB")) for f in files[2:])
        colours = {tuple(c) for c in np.unique(np.concatenate([sem_a, sem_b]).reshape(-1, 3), axis=0)}
        assert colours <= SECOND_PALETTE
        white_a, white_b = (sem_a == 255).all(-1), (sem_b == 255).all(-1)
        assert (white_a == white_b).all()  # land cover on changed pixels only, on both dates


def test_deterministic_and_seed_sensitive(tmp_path, roots):
    assert _synth("levir-mci", tmp_path / "again") == 0
    assert _digest(tmp_path / "again") == _digest(roots / "levir-mci")
    assert _synth("levir-mci", tmp_path / "other", seed=6) == 0
    assert _digest(tmp_path / "other") != _digest(roots / "levir-mci")


def test_colour_variant_same_content(tmp_path, roots):
    assert _synth("levir-mci", tmp_path / "colour", extra=("--mask-variant", "colour")) == 0
    grey, colour = LevirMCI(roots / "levir-mci", "train"), LevirMCI(tmp_path / "colour", "train")
    seen = set()
    for i in range(len(grey)):
        a1, b1, m1 = grey.load_raw(i)
        a2, b2, m2 = colour.load_raw(i)
        assert (a1 == a2).all() and (b1 == b2).all() and (m1 == m2).all()
        path = colour.files(i)["label"]
        seen |= {tuple(c) for c in np.asarray(Image.open(path)).reshape(-1, 3)}
    assert seen <= {(0, 0, 0), (255, 255, 0), (255, 0, 0)} and (255, 0, 0) in seen


def test_real_loaders_read_it(roots):
    for split, n in COUNTS.items():
        ds = LevirMCI(roots / "levir-mci", split)
        assert len(ds) == n
        s = ds[0]
        assert s["image"].shape == (2, 3, 32, 32) and s["mask"].shape == (32, 32)
        sc = SecondCC(roots / "second-cc", split)
        assert len(sc) == n  # restval entries count as train
        s = sc[len(sc) - 1]
        assert s["sem"].shape == (2, 32, 32) and s["dataset"] == "second_cc"


@pytest.mark.parametrize("fmt", ["levir-mci", "second-cc"])
def test_data_check_cli_accepts_output(roots, fmt, tmp_path):
    out = tmp_path / "check.json"
    assert main(["data", "check", str(roots / fmt), "--format", fmt, "--no-progress", "--json", str(out)]) == 0


def _levir_facts(rng_seed: int, n: int, size: int = 48):
    """(pair, captions) of `n` in-memory LEVIR pairs, half with change."""
    for i in range(n):
        rng = np.random.default_rng([rng_seed, i])
        pair = scenes.levir_pair(rng, size, change=i % 2 == 0)
        yield pair, captions(rng, pair.events)


def test_levir_captions_match_masks():
    checked_counts = 0
    for pair, caps in _levir_facts(11, 120):
        label = pair.label
        assert len(caps) == 5
        if not label.any():
            assert caps == list(NO_CHANGE_SENTENCES)
            continue
        assert not set(caps) & set(NO_CHANGE_SENTENCES)
        toks = [set(c.split()) for c in caps]
        if (label == 1).any():
            assert all("road" in t for t in toks)
        buildings, n = ndimage.label(label == 2)
        if n:
            assert all(t & {"house", "houses", "building", "buildings", "villa", "villas"} for t in toks)
        if n and not (label == 1).any():
            # houses only: count word and position must be those of the drawn footprints
            word = {1: None, 2: "two", 3: "three"}.get(n)
            for c, t in zip(caps, toks):
                if word:
                    assert word in t, c
                elif n == 1:
                    assert not t & {"two", "three", "four", "several", "some", "many"}, c
            ys, xs = np.nonzero(label == 2)
            cell = (min(2, int(ys.mean() * 3 / label.shape[0])), min(2, int(xs.mean() * 3 / label.shape[1])))
            for c in caps:
                if "along the road" in c and not any(p in c for p in POSITIONS[cell]):
                    continue  # "houses are built along the road" names no position
                assert any(p in c for p in POSITIONS[cell]), (c, cell)
            checked_counts += 1
    assert checked_counts >= 10


def test_second_captions_match_maps():
    for i in range(80):
        rng = np.random.default_rng([3, i])
        pair = scenes.second_pair(rng, 48, change=i % 2 == 0)
        caps = captions(rng, pair.events)
        changed = pair.sem_a > 0
        assert ((pair.sem_b > 0) == changed).all()
        assert (caps == list(NO_CHANGE_SENTENCES)) == (not changed.any())
        if (pair.sem_b == 1).any():  # water appeared somewhere
            assert all({"water", "pond"} & set(c.split()) for c in caps)


def test_vocabulary_is_modest():
    words = {w for _, caps in _levir_facts(2, 150, size=32) for c in caps for w in c.split()}
    for i in range(150):
        rng = np.random.default_rng([4, i])
        words |= {w for c in captions(rng, scenes.second_pair(rng, 32, True).events) for w in c.split()}
    assert 40 < len(words) < 160


def test_refuses_non_empty_and_overwrites_only_datasets(tmp_path, capsys):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert _synth("levir-mci", other) == 2
    assert "not empty" in capsys.readouterr().err
    assert _synth("levir-mci", other, extra=("--overwrite",)) == 2
    assert (other / "notes.txt").read_text() == "keep me"
    ds = tmp_path / "ds"
    assert _synth("second-cc", ds) == 0
    assert _synth("levir-mci", ds, extra=("--overwrite",)) == 0
    assert published(ds) == ["LevirCCcaptions.json", "images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "mine"]  # no temp folders left


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    import changeagent.data.synth.writer as writer

    calls = {"n": 0}
    real = writer._save_png

    def flaky(path, arr):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk full")
        real(path, arr)

    monkeypatch.setattr(writer, "_save_png", flaky)
    # an OSError mid-way is the one `error:` line (exit 2) naming the output, and leaves nothing
    with pytest.raises(ChangeAgentError, match=r"cannot write .*out: disk full"):
        generate("levir-mci", tmp_path / "out", 4, 1, 1, size=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["--size", "16"], ["--n-train", "0", "--n-val", "0", "--n-test", "0"],
                                  ["--n-val", "-1"], ["--seed", "-3"]])
def test_bad_arguments_exit_2(tmp_path, argv, capsys):
    base = ["data", "synth", "--format", "levir-mci", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(base + argv) == 2
    assert capsys.readouterr().err.startswith("error:")
    assert not (tmp_path / "x").exists()


def test_api_rejects_unknown_format(tmp_path):
    with pytest.raises(ChangeAgentError, match="unknown synthetic format"):
        generate("levir", tmp_path / "x", 1, 1, 1)
