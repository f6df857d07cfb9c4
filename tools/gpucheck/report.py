"""Check records, the JSON document and the human-readable table of `tools/gpu_check.py`.

A check's `status` is "pass", "fail", "info" (a measurement without a verdict) or "skipped: <reason>".
Only failed checks of the `equivalence` and `training` sections make the script exit non-zero.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

GATING = ("equivalence", "training")  # sections whose failures fail the run


@dataclass
class Check:
    section: str
    name: str
    status: str = "info"
    figures: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    headline: tuple[str, ...] = ()  # figures shown in the table (all scalar figures when empty)

    def verdict(self, ok: bool) -> None:
        self.status = "pass" if ok else "fail"

    def skip(self, reason: str) -> None:
        self.status = f"skipped: {reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"section": self.section, "name": self.name, "status": self.status, "figures": self.figures,
                "note": self.note, "seconds": round(self.seconds, 2), "headline": list(self.headline)}


class Report:
    """Collects checks; `check(section, name)` is a context manager that records time and crashes."""

    def __init__(self, verbose: bool = True, skip: tuple[str, ...] = ()) -> None:
        self.checks: list[Check] = []
        self.verbose = verbose
        self.skip = skip  # check names (or section/name) the user asked to leave out

    @contextmanager
    def check(self, section: str, name: str) -> Iterator[Check]:
        c = Check(section, name)
        self.checks.append(c)
        if self.verbose:
            print(f"[{section}] {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            yield c
        except Exception as e:  # a crash is a failed check with its reason, the next check still runs
            c.status = "fail"
            c.figures["error"] = f"{type(e).__name__}: {e}"
            c.figures["traceback"] = traceback.format_exc(limit=6)
        finally:
            c.seconds = time.perf_counter() - t0
            if self.verbose:
                print(f"[{c.section}] {c.name}: {c.status} ({c.seconds:.1f} s) {_short(c.figures, 6, c.headline)}",
                      flush=True)

    def run(self, section: str, name: str, fn: Callable[[Check], None]) -> Check:
        with self.check(section, name) as c:
            if name in self.skip or f"{section}/{name}" in self.skip:
                c.skip("--skip")
            else:
                fn(c)
        return c

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.section in GATING and c.status == "fail"]

    def document(self, meta: dict[str, Any]) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for c in self.checks:
            key = c.status.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        return {**meta, "summary": {**counts, "failed_gating": [f"{c.section}/{c.name}" for c in self.failed()],
                                    "ok": not self.failed()},
                "checks": [c.as_dict() for c in self.checks]}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _short(figures: dict[str, Any], keys: int = 6, headline: list[str] | tuple[str, ...] = ()) -> str:
    if headline and "error" not in figures:
        figures = {k: figures[k] for k in headline if k in figures}
    items = [(k, v) for k, v in figures.items() if k != "traceback" and not isinstance(v, (dict, list))]
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in items[:keys])
    return text + (", ..." if len(items) > keys else "")


def table(doc: dict[str, Any]) -> str:
    """Markdown table: one row per check with its status and headline figures."""
    lines = [f"gpu check on {doc['device']} ({doc['mode']}), torch {doc['env']['torch']}, "
             f"mamba-ssm: {doc['env']['mamba_ssm']}", "",
             "| section | check | status | s | figures |", "|---|---|---|---|---|"]
    for c in doc["checks"]:
        figs = _short(c["figures"], 8, c.get("headline", ())).replace("|", "/")
        status = c["status"] + (" (dry-run stand-in)" if c["note"].startswith("dry run") else "")
        lines.append(f"| {c['section']} | {c['name']} | {status} | {c['seconds']:.1f} | {figs} |")
    s = doc["summary"]
    counts = ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("failed_gating", "ok"))
    lines += ["", f"{counts}; {'OK' if s['ok'] else 'FAILED: ' + ', '.join(s['failed_gating'])}"]
    return "\n".join(lines)
