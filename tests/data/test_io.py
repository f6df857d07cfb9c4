"""Image/label reading and the LEVIR / SECOND label decoders, on real PNG files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import DATA

from changeagent.data.images import check_same_size, image_size, read_image, read_label
from changeagent.data.labels import SECOND_PALETTE, decode_levir_mask, decode_second_sem, levir_mask_encoding
from changeagent.errors import ChangeAgentError

REAL_LABEL = DATA / "real_tiles/LEVIR-CD/label/test_2_0000_0000.png"


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def test_read_image_modes(tmp_path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert np.array_equal(read_image(save(tmp_path / "rgb.png", rgb)), rgb)
    rgba = np.concatenate([rgb, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(read_image(save(tmp_path / "rgba.png", rgba)), rgb)
    grey = read_image(save(tmp_path / "grey.png", rgb[..., 0]))
    assert grey.shape == (4, 5, 3) and np.array_equal(grey[..., 2], rgb[..., 0])
    assert image_size(tmp_path / "rgb.png") == (4, 5)


def test_read_image_rejects_16_bit(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint16) + 300).save(path)
    with pytest.raises(ChangeAgentError, match=r"deep\.png.*mode"):
        read_image(path)
    with pytest.raises(ChangeAgentError, match=r"deep\.png.*mode"):
        read_label(path)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ChangeAgentError, match=r"nowhere\.png does not exist"):
        read_image(tmp_path / "nowhere.png")
    with pytest.raises(ChangeAgentError, match=r"nowhere\.png does not exist"):
        read_label(tmp_path / "nowhere.png")


def test_truncated_png_names_path(tmp_path):
    path = save(tmp_path / "cut.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChangeAgentError, match=r"cut\.png.*truncated"):
        read_image(path)
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(ChangeAgentError, match=r"text\.png"):
        read_label(tmp_path / "text.png")
    with pytest.raises(ChangeAgentError, match=r"text\.png"):
        image_size(tmp_path / "text.png")


@pytest.mark.parametrize("encoding", ["colour", "grey", "grey_rgb", "red_only"])
def test_levir_every_encoding_round_trips(tmp_path, fx, encoding):
    mask = fx.class_map(16, seed=3, num_classes=3)
    path = save(tmp_path / f"{encoding}.png", fx.encode_levir(mask, encoding))
    decoded = decode_levir_mask(read_label(path), path)
    assert decoded.dtype == np.int64
    assert np.array_equal(decoded, mask)


def test_levir_yellow_is_road_not_building():
    yellow = np.zeros((2, 2, 3), np.uint8)
    yellow[0, 0] = (255, 255, 0)
    yellow[1, 1] = (255, 0, 0)
    assert decode_levir_mask(yellow).tolist() == [[1, 0], [0, 2]]
    assert levir_mask_encoding(yellow) == "colour"
    assert levir_mask_encoding(yellow[..., 0]) == "grey"
    assert levir_mask_encoding(np.full((2, 2, 3), 128, np.uint8)) == "grey-rgb"


def test_levir_illegal_values_named(tmp_path):
    grey = np.zeros((4, 4), np.uint8)
    grey[1, 1] = 7
    path = save(tmp_path / "bad_grey.png", grey)
    with pytest.raises(ChangeAgentError, match=r"bad_grey\.png has illegal value 7"):
        decode_levir_mask(read_label(path), path)
    green = np.zeros((4, 4, 3), np.uint8)
    green[0, 0] = (0, 255, 0)
    with pytest.raises(ChangeAgentError, match=r"g\.png has illegal colour \(0, 255, 0\)"):
        decode_levir_mask(green, "g.png")
    mixed = np.zeros((4, 4, 3), np.uint8)
    mixed[0, 0], mixed[1, 1] = (255, 255, 0), (128, 128, 128)
    with pytest.raises(ChangeAgentError, match=r"m\.png mixes"):
        decode_levir_mask(mixed, "m.png")
    with pytest.raises(ChangeAgentError, match="mask_mode"):
        decode_levir_mask(grey, "x.png", mask_mode="colour")


def test_real_levir_cd_label_auto_and_binary():
    """Real LEVIR-CD 0/255 label: building change in both modes; binary refuses road values."""
    raw = read_label(REAL_LABEL)
    assert raw.ndim == 2 and set(np.unique(raw).tolist()) == {0, 255}
    auto = decode_levir_mask(raw, REAL_LABEL)
    binary = decode_levir_mask(raw, REAL_LABEL, mask_mode="binary")
    assert np.array_equal(auto, binary)
    assert set(np.unique(binary).tolist()) == {0, 2}
    assert int((binary == 2).sum()) == int((raw == 255).sum())
    with pytest.raises(ChangeAgentError, match=r"illegal value 128.*binary"):
        decode_levir_mask(np.full((2, 2), 128, np.uint8), "r.png", mask_mode="binary")
    white = np.full((2, 2, 3), 255, np.uint8)
    assert decode_levir_mask(white, mask_mode="binary").tolist() == [[2, 2], [2, 2]]


def test_second_palette_and_black_unchanged(tmp_path, fx):
    sem = fx.class_map(21, seed=1, num_classes=7)
    for unchanged in ((255, 255, 255), (0, 0, 0)):
        path = save(tmp_path / "sem.png", fx.paint_second(sem, unchanged))
        assert np.array_equal(decode_second_sem(read_label(path), path), sem)
    assert set(SECOND_PALETTE.values()) == set(range(7))


def test_second_palette_image_and_errors(tmp_path, fx):
    sem = fx.class_map(14, seed=2, num_classes=7)
    p_mode = Image.fromarray(fx.paint_second(sem, (255, 255, 255))).convert("P", palette=Image.Palette.ADAPTIVE)
    p_mode.save(tmp_path / "pal.png")
    assert np.array_equal(decode_second_sem(read_label(tmp_path / "pal.png"), tmp_path / "pal.png"), sem)
    odd = fx.paint_second(sem, (255, 255, 255))
    odd[3, 4] = (1, 2, 3)
    with pytest.raises(ChangeAgentError, match=r"odd\.png has illegal colour \(1, 2, 3\)"):
        decode_second_sem(odd, "odd.png")
    with pytest.raises(ChangeAgentError, match=r"one\.png is single-channel"):
        decode_second_sem(np.zeros((3, 3), np.uint8), "one.png")


def test_check_same_size_names_files():
    with pytest.raises(ChangeAgentError, match=r"a\.png is 4x3.*b\.png is 5x3"):
        check_same_size({"A": np.zeros((3, 4, 3)), "B": np.zeros((3, 5, 3))}, {"A": "a.png", "B": "b.png"})
    check_same_size({"A": np.zeros((3, 4, 3)), "label": np.zeros((3, 4))}, {"A": "a", "label": "l"})
