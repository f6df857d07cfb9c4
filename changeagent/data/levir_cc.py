"""LEVIR-CC: captions only (SPEC §1.6) — the LEVIR-MCI layout without `label/`::

    <root>/LevirCCcaptions.json
    <root>/images/{train,val,test}/{A,B}/<filename>

Samples: `image`, `captions` (+ `caption_ids`), `dataset`, `name`, `changeflag` (from the JSON, else
0 when every caption is a no-change sentence). No mask targets: only the caption loss learns from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from changeagent.data.constants import LEVIR_MEAN, LEVIR_STD, NO_CHANGE_SENTENCES
from changeagent.data.images import check_same_size, read_image
from changeagent.data.levir_mci import CaptionPairDataset, Transform
from changeagent.data.spec import DatasetSpec
from changeagent.data.synth.layouts import Pair, karpathy_json, relayout, save_png
from changeagent.data.vocab import PairInfo, Vocabulary


class LevirCC(CaptionPairDataset):
    dataset_id = "levir_cc"
    default_captions_file = "LevirCCcaptions.json"
    mask_keys: tuple[str, ...] = ()

    def __init__(self, root: str | Path, split: str = "train", vocab: Vocabulary | str | Path | None = None,
                 max_len: int = 41, mean: Sequence[float] = LEVIR_MEAN, std: Sequence[float] = LEVIR_STD,
                 transforms: Transform | None = None, canonical_no_change: bool = False,
                 captions_file: str | Path | None = None) -> None:
        super().__init__(root, split, vocab, max_len, mean, std, transforms, canonical_no_change, captions_file)

    @staticmethod
    def split_folders(root: Path, split: str) -> list[Path]:
        return [root / "images" / split / sub for sub in ("A", "B")]

    @staticmethod
    def pair_files(root: Path, info: PairInfo) -> dict[str, Path]:
        base = root / "images" / info.split
        return {k: base / k / info.name for k in ("A", "B")}

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.pairs[index]
        f = self.files(index)
        a, b = read_image(f["A"]), read_image(f["B"])
        check_same_size({"A": a, "B": b}, f)
        flag = info.changeflag
        if flag is None:
            flag = int(not all(c in NO_CHANGE_SENTENCES for c in info.captions))
        a, b, _, captions = self._apply_transforms(a, b, {}, self.target_captions(info), info.name)
        sample = {"image": self._image_tensor(a, b), "dataset": self.dataset_id, "name": info.name,
                  "changeflag": flag}
        return self._finish(sample, captions)


def _write(root: Path, pairs: list[Pair]) -> None:
    for p in pairs:
        base = root / "images" / p["split"]
        save_png(base / "A" / p["name"], p["a"])
        save_png(base / "B" / p["name"], p["b"])
    (root / "LevirCCcaptions.json").write_text(karpathy_json(pairs), encoding="utf-8")


def _synth(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
           progress: bool = True, difficulty: str = "default", **_: Any) -> dict[str, Any]:
    return relayout("levir-mci", out, _write, n_train, n_val, n_test, size, seed, overwrite, progress, difficulty=difficulty)


SPEC = DatasetSpec(
    id="levir_cc",
    title="LEVIR-CC",
    reader=LevirCC,
    targets=("captions",),
    dates=0,
    mean=LEVIR_MEAN,
    std=LEVIR_STD,
    metrics=(),
    captions_file="LevirCCcaptions.json",
    layout="LevirCCcaptions.json + images/{train,val,test}/{A,B}/*.png",
    synth=_synth,
)
