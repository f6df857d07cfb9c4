"""Paired augmentation for bi-temporal samples, keeping captions true under flips and rotations.

The callable the datasets call (exact interface)::

    transform({"image_a": uint8 [H, W, C], "image_b": uint8 [H, W, C],
               "masks": {name: int64 [H, W]}, "captions": list[str]}) -> same structure

Geometry (random crop, optional small affine, one of the 8 dihedral transforms) is identical for both
dates and every mask; masks are never interpolated between class ids (nearest neighbour, border
filled with IGNORE_INDEX). A dihedral transform also rewrites the captions' position words ("top
left" -> "top right" under a horizontal flip, "vertical road" -> "horizontal road" under a 90°
turn); a transform that would make some caption of the sample untrue, or that it cannot rewrite
safely, is excluded for that sample.

What differs between two real acquisitions is drawn independently for each date, as reality does:
photometric jitter, tone curve and colour cast (`radiometric`), a haze / illumination gradient
(`haze`), noise and blur, and a small sub-pixel misregistration of one date (`shift`, the masks
stay on the other date's grid). `swap_dates` exchanges the dates of samples without captions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.geometric.functional import d4

from changeagent.data.constants import IGNORE_INDEX
from changeagent.errors import ChangeAgentError
from changeagent.typed import convert, fail, opt, to_plain

# albumentations' names of the dihedral group D4
DIHEDRAL = ("e", "r90", "r180", "r270", "v", "hvt", "h", "t")


def _matrix(element: str) -> np.ndarray:
    """int [2, 2] acting on direction vectors (dx right, dy down), read off albumentations' own d4."""
    grid = np.arange(9).reshape(3, 3)
    moved = d4(grid, element)
    cols = []
    for dx, dy in ((1, 0), (0, 1)):
        y, x = np.argwhere(moved == grid[1 + dy, 1 + dx])[0]
        cols.append((x - 1, y - 1))
    return np.array(cols, dtype=int).T


MATRICES = {g: _matrix(g) for g in DIHEDRAL}
_UNIT = [(x, y) for x in (-1, 0, 1) for y in (-1, 0, 1)]


def _apply(m: np.ndarray, v: tuple[int, int]) -> tuple[int, int]:
    """Direction `v` moved by the int [2, 2] matrix `m`."""
    x, y = (int(c) for c in m @ np.array(v))
    return x, y


# per element: where each unit/diagonal direction goes (a dict lookup per word, no matrix product)
_MOVED = {g: {v: _apply(MATRICES[g], v) for v in _UNIT} for g in DIHEDRAL}

# direction words: vector (dx, dy) and family; a family names the word for each vector it can express
_FAMILIES: dict[str, dict[tuple[int, int], str]] = {
    "lrtb": {(-1, 0): "left", (1, 0): "right", (0, -1): "top", (0, 1): "bottom"},
    "ul": {(0, -1): "upper", (0, 1): "lower", (-1, 0): "left", (1, 0): "right"},
    "ab": {(0, -1): "above", (0, 1): "below"},
    "most": {(-1, 0): "leftmost", (1, 0): "rightmost", (0, -1): "topmost", (0, 1): "bottommost"},
    "ward": {(-1, 0): "leftward", (1, 0): "rightward", (0, -1): "upward", (0, 1): "downward"},
    "wards": {(-1, 0): "leftwards", (1, 0): "rightwards", (0, -1): "upwards", (0, 1): "downwards"},
    "compass": {(0, -1): "north", (0, 1): "south", (-1, 0): "west", (1, 0): "east", (1, -1): "northeast",
                (-1, -1): "northwest", (1, 1): "southeast", (-1, 1): "southwest"},
}
_DIRECTION: dict[str, tuple[tuple[int, int], str]] = {}
for _fam, _words in _FAMILIES.items():
    for _vec, _word in _words.items():
        _DIRECTION.setdefault(_word, (_vec, _fam))
_DIRECTION.update({"uppermost": ((0, -1), "most"), "lowermost": ((0, 1), "most")})
_ORIENT = {"vertical": "horizontal", "horizontal": "vertical", "vertically": "horizontally",
           "horizontally": "vertically"}
# "left" after these is the verb ("nothing is left"), not a side
_LEFT_VERB = {"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "nothing", "only", "still"}
_HANDED = {"clockwise", "counterclockwise", "anticlockwise"}


def _word_for(family: str, vec: tuple[int, int]) -> str | None:
    return _FAMILIES[family].get(vec)


def rewrite_caption(caption: str, element: str) -> str | None:
    """`caption` as it reads after dihedral transform `element`, or None if it cannot be rewritten safely.

    Works on whitespace tokens; hyphenated tokens ("lower-left") are rewritten part by part. Corner
    pairs ("top left", "upper-right") move as one vector and keep their word order and style.
    """
    m = MATRICES[element]
    if element == "e":
        return caption
    swaps_axes = m[0, 0] == 0
    tokens = caption.split()
    parts = [t.split("-") for t in tokens]
    flat = [(i, j) for i, p in enumerate(parts) for j in range(len(p))]
    words = [parts[i][j] for i, j in flat]
    out = list(words)

    def vec_of(k: int) -> tuple[tuple[int, int], str] | None:
        w = words[k]
        if w not in _DIRECTION:
            return None
        prev = words[k - 1] if k > 0 else ""
        nxt = words[k + 1] if k + 1 < len(words) else ""
        if w == "left" and prev in _LEFT_VERB:
            return None
        if w == "right" and nxt in ("angle", "angles"):
            return None
        return _DIRECTION[w]

    moved = _MOVED[element].__getitem__

    k = 0
    while k < len(words):
        w = words[k]
        if w in _HANDED and round(float(np.linalg.det(m))) < 0:
            return None
        if w == "higher" and moved((0, -1)) != (0, -1):
            return None
        if w == "top" and k > 0 and words[k - 1] == "on" and k + 1 < len(words) and words[k + 1] == "of":
            # "on top of" may mean "stacked on"; a flip could only turn it into nonsense
            if moved((0, -1)) != (0, -1):
                return None
        if w in _ORIENT:
            nxt = words[k + 1] if k + 1 < len(words) else ""
            if swaps_axes and nxt != "to":  # "vertical to" means perpendicular, which no turn changes
                out[k] = _ORIENT[w]
            k += 1
            continue
        d = vec_of(k)
        if d is None:
            k += 1
            continue
        d2 = vec_of(k + 1) if k + 1 < len(words) else None
        if d2 is not None and (d[0][0] == 0) != (d2[0][0] == 0) and d[0][0] * d[0][1] == 0 == d2[0][0] * d2[0][1]:
            # a corner: one vertical and one horizontal word, moved together
            tx, ty = moved((d[0][0] + d2[0][0], d[0][1] + d2[0][1]))
            for kk, (vec, fam) in ((k, d), (k + 1, d2)):
                new = _word_for(fam, (tx, 0) if vec[1] == 0 else (0, ty))
                if new is None:
                    return None
                out[kk] = new
            k += 2
            continue
        new = _word_for(d[1], moved(d[0]))
        if new is None:
            return None
        out[k] = new
        k += 1
    rebuilt = [list(p) for p in parts]
    for (i, j), w in zip(flat, out):
        rebuilt[i][j] = w
    return " ".join("-".join(p) for p in rebuilt)


def allowed_rewrites(captions: list[str], elements: tuple[str, ...] = DIHEDRAL) -> dict[str, list[str]]:
    """For each element under which every caption can be rewritten: the rewritten captions."""
    out = {}
    for g in elements:
        new = [rewrite_caption(c, g) for c in captions]
        done = [c for c in new if c is not None]
        if len(done) == len(new):
            out[g] = done
    return out


@dataclass
class AffineCfg:
    """`data.augment.affine`: a small random affine warp (same for both dates and all masks)."""

    scale: list[float] = opt(help="zoom range [lo, hi]", factory=lambda: [1.0, 1.0], gt=0, length=2)
    rotate: list[float] = opt(help="rotation range in degrees [lo, hi]", factory=lambda: [0.0, 0.0], length=2)
    translate: float = opt(0.0, "shift, as a fraction of the size", ge=0, le=1)
    p: float = opt(0.5, "probability", ge=0, le=1)


@dataclass
class ColorJitterCfg:
    """`data.augment.color_jitter`: photometric jitter, drawn independently for each date (RGB only)."""

    brightness: float = opt(0.2, "relative brightness change", ge=0, le=1)
    contrast: float = opt(0.2, "relative contrast change", ge=0, le=1)
    saturation: float = opt(0.2, "relative saturation change", ge=0, le=1)
    hue: float = opt(0.02, "hue shift", ge=0, le=0.5)
    p: float = opt(0.8, "probability", ge=0, le=1)


@dataclass
class RadiometricCfg:
    """`data.augment.radiometric`: a tone curve and a per-channel colour cast, drawn independently for
    each date (sensor, sun and atmosphere differ between acquisitions)."""

    gamma: list[float] = opt(help="gamma range [lo, hi] (1: none)", factory=lambda: [0.8, 1.25], gt=0, length=2)
    channel_gain: float = opt(0.08, "per-channel gain drawn from [1 - x, 1 + x] (a colour cast)", ge=0, lt=1)
    p: float = opt(0.8, "probability, per date", ge=0, le=1)

    def validate(self, key: str) -> None:
        if self.gamma[0] > self.gamma[1]:
            fail(f"{key}.gamma", f"must be [lo, hi] with lo <= hi, got {self.gamma}")


@dataclass
class HazeCfg:
    """`data.augment.haze`: a linear brightness gradient across the tile at a random angle (haze, sun
    glint), drawn independently for each date (albumentations Illumination)."""

    intensity: list[float] = opt(help="gradient strength range [lo, hi] (fraction of the range)",
                                 factory=lambda: [0.05, 0.2], ge=0.01, le=0.2, length=2)
    p: float = opt(0.3, "probability, per date", ge=0, le=1)

    def validate(self, key: str) -> None:
        if self.intensity[0] > self.intensity[1]:
            fail(f"{key}.intensity", f"must be [lo, hi] with lo <= hi, got {self.intensity}")


@dataclass
class ShiftCfg:
    """`data.augment.shift`: misregistration: one date moved by a random sub-pixel translation, the
    other date and the masks untouched."""

    max_px: float = opt(2.0, "largest shift along each axis, in pixels", gt=0, le=16)
    date: str = opt("a", "which date moves: a (the masks follow date B, as LEVIR labels do), b, or either",
                    choices=("a", "b", "either"))
    p: float = opt(0.5, "probability", ge=0, le=1)


@dataclass
class AugmentCfg:
    """`data.augment`: paired training augmentation. An empty section means none (the reference trains
    without); giving any option turns it on unless `enabled: false`."""

    enabled: bool = opt(False, "on/off (implied true when any other option is given)")
    dihedral: float = opt(0.875, "chance of a random non-identity dihedral transform (7/8: uniform D4)",
                          ge=0, le=1)
    dihedral_elements: list[str] = opt(help="allowed dihedral elements, e.g. [e, h, v] for flips only",
                                       factory=lambda: list(DIHEDRAL), choices=DIHEDRAL)
    crop: Any = opt(None, "random crop: an int or [h, w] (null: none)")
    affine: AffineCfg | None = opt(None, "small random affine warp (null: none)")
    color_jitter: ColorJitterCfg | None = opt(help="colour jitter per date (null: none)", factory=ColorJitterCfg)
    radiometric: RadiometricCfg | None = opt(None, "tone curve + colour cast per date (null: none)")
    haze: HazeCfg | None = opt(None, "brightness gradient across the tile per date (null: none)")
    shift: ShiftCfg | None = opt(None, "sub-pixel misregistration of one date (null: none)")
    swap_dates: float = opt(0.0, "chance of exchanging date A and B (and *_a / *_b masks) of a sample "
                            "without captions (a caption says which way the change went)", ge=0, le=1)
    gauss_noise: float = opt(0.2, "probability of mild Gaussian sensor noise, per date", ge=0, le=1)
    blur: float = opt(0.1, "probability of a 3x3 Gaussian blur, per date", ge=0, le=1)
    seed: int | None = opt(None, "base seed; DataLoader workers mix in their own seed")

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        if raw and "enabled" not in raw:
            raw["enabled"] = True
        return raw

    def validate(self, key: str) -> None:
        crop = self.crop
        if crop is not None and not (
            (isinstance(crop, int) and not isinstance(crop, bool) and crop > 0)
            or (isinstance(crop, list) and len(crop) == 2
                and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in crop))
        ):
            fail(f"{key}.crop", f"must be a positive int or [h, w], got {crop!r}")


DEFAULTS: dict[str, Any] = to_plain(AugmentCfg(enabled=True))


class PairedTransform:
    """Identical geometry for both dates and all masks, independent photometry, caption rewriting."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.elements = tuple(cfg["dihedral_elements"])
        geo: list[A.BasicTransform] = []
        crop = cfg["crop"]
        self.crop = None if crop is None else ((crop, crop) if isinstance(crop, int) else tuple(crop))
        if self.crop is not None:
            geo.append(A.RandomCrop(height=self.crop[0], width=self.crop[1]))
        aff = cfg["affine"]
        if aff:
            t = float(aff.get("translate", 0.0))
            geo.append(A.Affine(scale=tuple(aff.get("scale", (1.0, 1.0))), rotate=tuple(aff.get("rotate", (0, 0))),
                                translate_percent=(-t, t), interpolation=cv2.INTER_LINEAR,
                                mask_interpolation=cv2.INTER_NEAREST, fill=0, fill_mask=IGNORE_INDEX,
                                p=float(aff.get("p", 0.5))))
        self.geometric = A.Compose(geo, additional_targets={"image_b": "image"},
                                   mask_interpolation=cv2.INTER_NEAREST) if geo else None
        cj = cfg["color_jitter"]
        self.colour = None
        if cj:
            b, c, s, h = (float(cj.get(k, 0.0)) for k in ("brightness", "contrast", "saturation", "hue"))
            self.colour = A.Compose([A.ColorJitter(brightness=(1 - b, 1 + b), contrast=(1 - c, 1 + c),
                                                   saturation=(1 - s, 1 + s), hue=(-h, h), p=float(cj.get("p", 0.8)))])
        photo: list[A.BasicTransform] = []
        rad = cfg.get("radiometric")
        if rad:
            g = rad.get("gamma", (0.8, 1.25))
            x = float(rad.get("channel_gain", 0.08))
            p = float(rad.get("p", 0.8))
            # RandomGamma takes the exponent in percent; MultiplicativeNoise with one factor per channel
            # and none per pixel is a colour cast
            photo.append(A.RandomGamma(gamma_limit=(100 * float(g[0]), 100 * float(g[1])), p=p))
            photo.append(A.MultiplicativeNoise(multiplier=(1 - x, 1 + x), per_channel=True, elementwise=False, p=p))
        haze = cfg.get("haze")
        if haze:
            lo, hi = (float(v) for v in haze.get("intensity", (0.05, 0.2)))
            photo.append(A.Illumination(mode="linear", intensity_range=(lo, hi), effect_type="brighten",
                                        angle_range=(0, 360), p=float(haze.get("p", 0.3))))
        if cfg["gauss_noise"]:
            photo.append(A.GaussNoise(std_range=(0.01, 0.04), p=float(cfg["gauss_noise"])))
        if cfg["blur"]:
            photo.append(A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.3, 1.0), p=float(cfg["blur"])))
        self.photometric = A.Compose(photo) if photo else None
        self._key: tuple | None = None
        self._rng = np.random.default_rng(cfg["seed"])

    @staticmethod
    def _process_key() -> tuple[int, int | None]:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        return os.getpid(), None if info is None else info.seed

    def _streams(self, rng: np.random.Generator) -> None:
        """Its own draws and those of its albumentations parts, all from `rng`."""
        self._rng = rng
        for k, comp in enumerate((self.geometric, self.colour, self.photometric)):
            if comp is not None:
                comp.set_random_seed(int(rng.integers(2**31)) + k)
        self._key = self._process_key()

    def reseed(self, seed: int) -> None:
        """Make the next sample's augmentation a function of `seed` alone (whatever the process or
        worker): the engine seeds each item from (run seed, epoch, index) for exact resume."""
        self._streams(np.random.default_rng(int(seed)))

    def _reseed(self) -> None:
        """Fresh streams per process and per DataLoader worker, so workers never repeat each other
        (unless `reseed` set them in this process)."""
        key = self._process_key()
        if key == self._key:
            return
        entropy = [] if self.cfg["seed"] is None else [int(self.cfg["seed"])]
        if key[1] is not None:
            entropy.append(int(key[1]) % 2**63)
        self._streams(np.random.default_rng(np.random.SeedSequence(entropy or None)))

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        self._reseed()
        a, b, masks, caps = _unpack(sample)
        names = list(masks)
        if self.geometric is not None:
            h, w = a.shape[:2]
            if self.crop is not None and (self.crop[0] > h or self.crop[1] > w):
                raise ChangeAgentError(f"augmentation crop {self.crop[0]}x{self.crop[1]} is larger than the {h}x{w} image")
            small = [_to_uint8_mask(masks[n], n) for n in names]
            out = self.geometric(image=a, image_b=b, masks=small) if small else self.geometric(image=a, image_b=b)
            a, b = out["image"], out["image_b"]
            masks = {n: np.asarray(m).astype(np.int64) for n, m in zip(names, out.get("masks", []))}
        g = "e"
        if self.cfg["dihedral"] and self._rng.random() < float(self.cfg["dihedral"]):
            # the first element of a random order whose rewrite works: uniform over the allowed ones
            for cand in self._rng.permutation([e for e in self.elements if e != "e"]).tolist():
                new = [rewrite_caption(c, cand) for c in caps]
                done = [c for c in new if c is not None]
                if len(done) == len(new):
                    g, caps = cand, done
                    break
        if g != "e":
            a, b = np.ascontiguousarray(d4(a, g)), np.ascontiguousarray(d4(b, g))
            masks = {n: np.ascontiguousarray(d4(m, g)) for n, m in masks.items()}
        shift = self.cfg.get("shift")
        if shift and self._rng.random() < float(shift.get("p", 0.5)):
            which = shift.get("date", "a")
            if which == "either":
                which = "a" if self._rng.random() < 0.5 else "b"
            dx, dy = self._rng.uniform(-1, 1, 2) * float(shift.get("max_px", 2.0))
            if which == "a":
                a = shift_image(a, float(dx), float(dy))
            else:
                b = shift_image(b, float(dx), float(dy))
        # after the shift, so that `shift.date` names a date of the files (the masks' grid is B's)
        if self.cfg.get("swap_dates") and not caps and self._rng.random() < float(self.cfg["swap_dates"]):
            a, b = b, a
            masks = _swap_date_masks(masks)
        # colour jitter is defined for RGB only; multispectral stacks get noise and blur
        for comp in (self.colour if a.shape[2] == 3 else None, self.photometric):
            if comp is not None:
                a, b = comp(image=a)["image"], comp(image=b)["image"]
        masks = {n: np.asarray(m).astype(np.int64, copy=False) for n, m in masks.items()}
        return {"image_a": a, "image_b": b, "masks": masks, "captions": list(caps)}


def shift_image(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """uint8 [H, W, C] moved by (dx, dy) px (content at x appears at x + dx), bilinear, borders reflected.

    Hand-written because albumentations' Affine rounds translations to whole pixels and real
    misregistration is mostly sub-pixel.
    """
    h, w = img.shape[:2]
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out.reshape(img.shape)  # warpAffine drops a trailing channel axis of 1


def _swap_date_masks(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-date masks (`<x>_a` / `<x>_b`, e.g. SECOND's sem_a / sem_b) follow their dates; the others
    (binary change, LEVIR's changed-object classes) say *where* something changed and stay."""
    out = dict(masks)
    for name in masks:
        if name.endswith("_a") and name[:-2] + "_b" in masks:
            out[name], out[name[:-2] + "_b"] = masks[name[:-2] + "_b"], masks[name]
    return out


def _unpack(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
    try:
        a, b, masks, caps = sample["image_a"], sample["image_b"], sample.get("masks", {}), sample.get("captions", [])
    except (KeyError, TypeError) as e:
        raise ChangeAgentError(f"transform input needs image_a, image_b, masks, captions; missing {e}") from None
    if a.shape != b.shape or a.ndim != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ChangeAgentError(f"transform needs two uint8 [H, W, C] images of one shape, got {a.shape} {a.dtype} "
                               f"and {b.shape} {b.dtype}")
    for n, m in masks.items():
        if m.shape != a.shape[:2]:
            raise ChangeAgentError(f"mask {n!r} has shape {m.shape}; the images are {a.shape[:2]}")
    return a, b, dict(masks), list(caps)


def _to_uint8_mask(m: np.ndarray, name: str) -> np.ndarray:
    """Class-id mask as uint8 for OpenCV (ids and IGNORE_INDEX fit); anything else is an error."""
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ChangeAgentError(f"mask {name!r} holds values outside 0..255; cannot augment it")
    return m.astype(np.uint8)


def build_transforms(cfg: dict[str, Any] | AugmentCfg | None, train: bool) -> PairedTransform | None:
    """The training augmentation described by `cfg` (`AugmentCfg` keys; missing keys take the defaults),
    or None.

    None (no augmentation) for evaluation (`train=False`), for `cfg=None` or `{}` (the reference
    recipe trains without augmentation) and for `{"enabled": False}`; `{"enabled": True}` gives the
    defaults.
    """
    if not train or cfg is None:
        return None
    typed = cfg if isinstance(cfg, AugmentCfg) else convert(AugmentCfg, cfg, "data.augment")
    if not typed.enabled:
        return None
    return PairedTransform(to_plain(typed))
