"""Grey (1-band) images: one rule for the dataset readers and predict (repeat to every band), and the
band hints work when followed."""

import re

import numpy as np
import rasterio
from infer_helpers import TILES

from changeagent.data.images import read_image
from changeagent.inference.predictor import Predictor

FAST = ("--max-len", "4", "--no-progress", "--no-vis")
STEM = "test_2_0000_0512"


def _grey_pair(tmp_path):
    from PIL import Image

    paths = []
    for d in ("A", "B"):
        p = tmp_path / f"{d}.png"
        Image.open(TILES / f"LEVIR-CD/{d}/{STEM}.png").convert("L").crop((0, 0, 64, 64)).save(p)
        paths.append(p)
    return paths


def test_grey_pair_is_read_as_the_dataset_readers_read_it(ckpt, tmp_path, run_cli):
    a, b = _grey_pair(tmp_path)
    code, _, err = run_cli("predict", "-k", ckpt, a, b, "-o", tmp_path / "out", *FAST)
    assert code == 0, err
    p = Predictor.from_pretrained(ckpt, **{"max_len": 4})
    as_trained = p.prepare_pair(read_image(a), read_image(b))  # the dataset reader's RGB view
    assert np.array_equal(p.prepare_pair(a, b), as_trained)
    assert np.array_equal(p.prepare_pair(np.asarray(read_image(a))[..., 0], np.asarray(read_image(b))[..., 0]),
                          as_trained)  # a 2-D array too
    # one selected band of a colour file follows the same rule
    code, _, err = run_cli("predict", "-k", ckpt, TILES / f"LEVIR-CD/A/{STEM}.png",
                           TILES / f"LEVIR-CD/B/{STEM}.png", "-o", tmp_path / "o1", "--bands", "2", *FAST)
    assert code == 0, err


def test_band_hints_work_when_followed(ckpt, tmp_path, run_cli):
    two = tmp_path / "two.tif"
    data = np.random.default_rng(0).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    with rasterio.open(two, "w", driver="GTiff", width=64, height=64, count=2, dtype="uint8") as dst:
        dst.write(data)
    code, _, err = run_cli("predict", "-k", ckpt, two, two, "-o", tmp_path / "out", *FAST)
    assert code == 2 and "2 band(s) but the model takes 3" in err
    hint = re.search(r"--bands (\S+?)\)", err).group(1)
    code, _, err = run_cli("predict", "-k", ckpt, two, two, "-o", tmp_path / "out", "--bands", hint, *FAST)
    assert code == 0, err
    code, _, err = run_cli("predict", "-k", ckpt, two, two, "-o", tmp_path / "o2", "--bands", "1,2", *FAST)
    assert code == 2
    hint = re.search(r"--bands (\S+?)\)", err).group(1)
    assert run_cli("predict", "-k", ckpt, two, two, "-o", tmp_path / "o2", "--bands", hint, *FAST)[0] == 0
