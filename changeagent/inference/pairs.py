"""Pair mode and folder mode: predict, then write mask, visualisation and the JSON record.

Per pair `<stem>` (stem of A) in OUT: `<stem>_mask.png` (`.tif` for GeoTIFF input, with its CRS and
transform), `<stem>_from/_to` for the second_cc head, `<stem>_vis.png`, and `<stem>.json` written
last — its presence marks the pair done, so folder mode resumes by skipping pairs that have it, once
`OUT/.predict.json` (provenance.py) shows that the earlier records come from the same model and options.
Every path in a record is absolute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from changeagent.errors import ChangeAgentError
from changeagent.fileio import clean_stale_temps
from changeagent.inference import outputs as out
from changeagent.inference import postprocess as post
from changeagent.inference import provenance
from changeagent.inference.predictor import Predictor
from changeagent.inference.raster import PLAIN_SUFFIXES, RASTER_SUFFIXES, Picture, read_pair

NO_CAPTION_HEAD = ("(no caption head: the model was trained without captions, or --head names a dataset "
                   "it has no caption token for)")


def pair_paths(out_dir: Path, stem: str, head: str, geo: bool) -> dict[str, Path]:
    ext = ".tif" if geo else ".png"
    paths = {k: out_dir / f"{stem}_{k}{ext}" for k in post.palettes(head) if k != "change"}
    paths["visualisation"] = out_dir / f"{stem}_vis.png"
    paths["record"] = out_dir / f"{stem}.json"
    return paths


def write_pair(predictor: Predictor, pred: post.Prediction, pa: Picture, pb: Picture,
               out_dir: Path, stem: str, vis: bool = True) -> dict[str, Any]:
    """Write one pair's files; returns its record (also in `<stem>.json`)."""
    geo = pa.georeferenced
    paths = pair_paths(out_dir, stem, pred.head, geo)
    pals = post.palettes(pred.head)
    for key, path in paths.items():
        if key in pred.maps:
            if geo:
                out.write_geotiff(path, pred.maps[key], pa.crs, pa.transform, pals[key])
            else:
                out.write_png(path, pred.maps[key], pals[key])
    if vis:
        shown = [out.to_display(x) for x in predictor.scale_pair(pa, pb)]
        key = post.map_key(pred.head)
        panels = [*shown, out.overlay(shown[1], pred.maps[key], pals[key])] if key in pred.maps else shown
        out.write_image(paths["visualisation"], out.visualisation(panels, pred.text))
    rec = {"name": stem, "a": _absolute(pa.path), "b": _absolute(pb.path), **pred.record()}
    rec.update({k: str(p) for k, p in paths.items() if k != "record" and (k in pred.maps or vis)})
    if geo:
        rec["crs"] = pa.crs.to_string()
        rec["transform"] = list(pa.transform)[:6]
    out.write_json(paths["record"], rec)
    return rec


def predict_pair(predictor: Predictor, a: str, b: str, out_dir: str | Path, *, align: bool = False,
                 vis: bool = True) -> dict[str, Any]:
    """Pair mode: one pair of any size (tiled when larger than the model's tile)."""
    out_dir = Path(out_dir).absolute()
    t0 = time.perf_counter()
    pa, pb = read_pair(a, b, predictor.bands, predictor.in_channels, align)
    pred = predictor.predict_pictures([(pa, pb)], t_read=time.perf_counter() - t0)[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    return write_pair(predictor, pred, pa, pb, out_dir, Path(a).stem, vis)


def list_pairs(a_dir: str | Path, b_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, A path, B path) of every image in A/ that has a file of the same name in B/."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    for d, flag in ((a_dir, "--a-dir"), (b_dir, "--b-dir")):
        if not d.is_dir():
            raise ChangeAgentError(f"{flag} {d} is not a folder")
    suffixes = PLAIN_SUFFIXES + RASTER_SUFFIXES
    files = sorted(p for p in a_dir.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise ChangeAgentError(f"{a_dir} holds no images ({', '.join(suffixes)})")
    missing = [p.name for p in files if not (b_dir / p.name).is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ChangeAgentError(f"no file of the same name in {b_dir} for {', '.join(missing[:5])}{more}")
    stems: dict[str, str] = {}
    for p in files:
        if p.stem in stems:
            raise ChangeAgentError(f"{a_dir}: {stems[p.stem]} and {p.name} would write the same outputs")
        stems[p.stem] = p.name
    return [(p.stem, p, b_dir / p.name) for p in files]


def _read_chunks(chunks: list[list[tuple[str, Path, Path]]], predictor: Predictor,
                 align: bool) -> Iterator[tuple[list[tuple[str, Path, Path]], list[tuple[Picture, Picture]], float]]:
    """Read chunk i+1 in a thread while chunk i is predicted (decoding overlaps the model)."""
    def read(chunk: list[tuple[str, Path, Path]]) -> tuple[list[tuple[Picture, Picture]], float]:
        t0 = time.perf_counter()
        pics = [read_pair(str(a), str(b), predictor.bands, predictor.in_channels, align) for _, a, b in chunk]
        return pics, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(read, chunks[0]) if chunks else None
        for i, chunk in enumerate(chunks):
            assert fut is not None
            pics, dt = fut.result()
            fut = pool.submit(read, chunks[i + 1]) if i + 1 < len(chunks) else None
            yield chunk, pics, dt


def predict_folder(predictor: Predictor, a_dir: str | Path, b_dir: str | Path, out_dir: str | Path, *,
                   align: bool = False, vis: bool = True, progress: bool = True,
                   overwrite: bool = False) -> dict[str, Any]:
    """Folder mode: every pair by name, batched; writes `summary.json` and `summary.csv`.

    Resumable: pairs with a record are skipped when the records were made by the same model weights and
    result-changing options (else an error naming the differences); `overwrite` redoes every pair.
    """
    pairs = list_pairs(a_dir, b_dir)
    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    settings = {"model": provenance.model_fingerprint(predictor.source, predictor.model),
                "options": provenance.prediction_options(predictor, align)}
    check_resume(out_dir, [p[0] for p in pairs], settings, overwrite)
    todo = [p for p in pairs if not (out_dir / f"{p[0]}.json").is_file()]
    bs = predictor.batch_size
    chunks = [todo[i : i + bs] for i in range(0, len(todo), bs)]
    records: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="pairs", unit="pair",
              disable=not progress) as bar:
        for chunk, pics, t_read in _read_chunks(chunks, predictor, align):
            for (stem, _, _), (pa, pb), pred in zip(chunk, pics, predictor.predict_pictures(pics, t_read)):
                records[stem] = write_pair(predictor, pred, pa, pb, out_dir, stem, vis)
            bar.update(len(chunk))
    elapsed = time.perf_counter() - t0
    rows = []
    for stem, _, _ in pairs:
        rec = records.get(stem) or _load_record(out_dir / f"{stem}.json")
        rows.append({"name": stem, "record": str(out_dir / f"{stem}.json"), "mask": rec.get("mask"),
                     "caption": rec.get("caption"), "change_fraction": rec.get("change_fraction"),
                     "changed_fraction": rec.get("changed_fraction"), "object_counts": rec.get("object_counts")})
    summary = {
        "pairs": len(pairs), "predicted": len(todo), "skipped": len(pairs) - len(todo),
        "head": predictor.head, **settings, "elapsed_s": round(elapsed, 3),
        "pairs_per_s": round(len(todo) / elapsed, 3) if todo and elapsed > 0 else None,
        "records": rows,
    }
    out.write_json(out_dir / "summary.json", summary)
    out.write_csv(out_dir / "summary.csv", [_flat(r) for r in rows])
    return summary


def check_resume(out_dir: Path, stems: list[str], settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume over records made with other settings (or unknown ones); then record `settings`.

    With `overwrite` the records of these pairs are deleted first, so an interrupted redo never
    leaves an old result that a later resume would take for done.
    """
    stamp = out_dir / provenance.SETTINGS
    done = [s for s in stems if (out_dir / f"{s}.json").is_file()]
    if overwrite:
        for s in done:
            (out_dir / f"{s}.json").unlink()
        done = []
    if done:
        redo = "rerun with --overwrite to redo them, or write to another -o folder"
        if not stamp.is_file():
            raise ChangeAgentError(f"{out_dir} already holds {len(done)} record(s) (e.g. {done[0]}.json) whose "
                                   f"model and options were not recorded; {redo}")
        diffs = provenance.differences(_load_record(stamp), settings)
        if diffs:
            raise ChangeAgentError(f"{out_dir} already holds {len(done)} result(s) made with other settings: "
                                   f"{'; '.join(diffs)}. To resume, run with the same model and options; "
                                   f"otherwise {redo}")
    out.write_json(stamp, settings)


def _absolute(path: str) -> str:
    """A file's absolute path (in-memory inputs such as "array A" stay as named)."""
    p = Path(path)
    return str(p.absolute()) if p.exists() else path


def _load_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ChangeAgentError(f"cannot read the earlier record {path}: {e}; delete it (or use --overwrite) "
                               "to redo it") from None


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """CSV row: nested dicts become `fraction_<class>` / `count_<class>` columns."""
    flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
    for k, v in (row.get("changed_fraction") or {}).items():
        flat[f"fraction_{k}"] = v
    for k, v in (row.get("object_counts") or {}).items():
        flat[f"count_{k}"] = v
    return flat
