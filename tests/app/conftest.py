"""Fixtures for the app tests: a tiny real model (the inference tests' helper) with a retrieval head, a root
folder of real LEVIR-CD crops (plus a corrupt image, an oversized one and a GeoTIFF scene pair), a
search index over the crops, and a trap outside the root that tells whether anything opened it."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import LEVIR, OPTIONS, PAIRS, RETR, Trap
from infer_helpers import GEOTIFF, crop_tif, save_tiny
from PIL import Image
from rasterio.windows import Window

from changeagent.cli import main


@pytest.fixture(scope="session")
def app_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("app_ckpt"), encoder="tu-mobilenetv3_small_050", retrieval=RETR)


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/A/p00.png.. root/B/p00.png (64 px crops of real LEVIR-CD pairs), root/bad.png (corrupt),
    root/big/{A,B}.png (a whole 256 px tile: over SMALL_MP), root/geo/{a,b}.tif (a GeoTIFF pair)."""
    base = tmp_path_factory.mktemp("app_data")
    r = base / "root"
    names = sorted(p.name for p in (LEVIR / "A").iterdir())
    for d in ("A", "B"):
        (r / d).mkdir(parents=True)
        for i in range(PAIRS):
            im = Image.open(LEVIR / d / names[i % len(names)]).convert("RGB")
            x, y = 64 * ((i // len(names)) % 4), 64 * ((i // len(names)) // 4)
            im.crop((x, y, x + 64, y + 64)).save(r / d / f"p{i:02d}.png")
    good = (r / "A" / "p00.png").read_bytes()
    (r / "bad.png").write_bytes(good[: len(good) // 3])  # a PNG cut short: header fine, pixels missing
    (r / "big").mkdir()
    Image.open(LEVIR / "A" / names[0]).save(r / "big" / "A.png")
    Image.open(LEVIR / "B" / names[0]).save(r / "big" / "B.png")
    (r / "geo").mkdir()
    win = Window(256, 256, 96, 96)
    crop_tif(GEOTIFF / "cogeo.tif", r / "geo" / "a.tif", win)
    crop_tif(GEOTIFF / "cogeo.tif", r / "geo" / "b.tif", win, paint=(20, 50, 30, 70, (200, 60, 40)))
    return r


@pytest.fixture(scope="session")
def index(app_ckpt: Path, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from changeagent.inference import index as ix
    from changeagent.inference.predictor import Predictor

    out = tmp_path_factory.mktemp("app_index") / "crops"
    pred = Predictor.from_pretrained(app_ckpt, **OPTIONS)
    ix.index_pairs(pred, root / "A", root / "B", out, progress=False)
    return out


@pytest.fixture
def trap(root: Path):
    """root/../outside/secret.png (a FIFO trap) and a symlink root/link.png pointing at it."""
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    t = Trap(outside / "secret.png")
    link = root / "link.png"
    link.symlink_to(t.path)
    yield t
    link.unlink()
    t.close()
    t.path.unlink()


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run `changeagent ...` in process; returns (exit code, stdout, stderr)."""
    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run
