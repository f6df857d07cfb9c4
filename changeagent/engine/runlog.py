"""Run records: `metrics.jsonl` (every training log and validation), `metrics.csv` (validations),
and the console table that shows every task's metrics together per dataset (columns from the task
registry, `TaskSpec.columns` / `tables`)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from changeagent.fileio import json_safe, write_text_atomic
from changeagent.tasks.registry import get_task, task_ids
from changeagent.tasks.spec import TaskTable


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)):
        return f"{100 * value:.2f}"
    return str(value)


def table_columns() -> list[tuple[str, str]]:
    """(key, header) of the main table, in registry order: each task's `TaskSpec.columns` (a key a
    dataset does not report shows "-": binary change has P/R/F1/IoU, SECOND SeK/Fscd, ...)."""
    return [c for name in task_ids() for c in get_task(name).columns]


def table_notes(options: Any, metrics: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """The tasks' remarks on how their numbers were computed (`TaskSpec.note`), for the header; with
    `metrics`, only of the tasks that have a column there (a mask-only run says nothing of captions)."""
    def shown(name: str) -> bool:
        return metrics is None or any(k in m for k, _ in get_task(name).columns for m in metrics.values())

    return [n for name in task_ids() if shown(name) and (n := get_task(name).note(options))]


def format_table(metrics: dict[str, dict[str, Any]], title: str = "", notes: Sequence[str] = ()) -> str:
    """Plain-text table, one row per dataset, values in percent (CIDEr x100 too, as papers print);
    the header carries the tasks' notes (e.g. which caption level the caption columns show); then
    the tasks' extra tables (`TaskSpec.tables`)."""
    cols = [(k, h) for k, h in table_columns() if any(k in m for m in metrics.values())]
    rows = [["dataset", *[h for _, h in cols], "pairs"]]
    for name, m in metrics.items():
        rows.append([name, *[_fmt(m.get(k)) for k, _ in cols], str(m.get("n_pairs", "-"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    unit = "; ".join(["percent", *notes])
    head = f"{title} ({unit})\n" if title else f"({unit})\n"
    return head + "\n".join(lines) + "".join(_extra_table(t, metrics) for t in extra_tables())


def extra_tables() -> list[TaskTable]:
    """The tasks' extra tables, those with the same title merged (rows in registry order)."""
    merged: dict[str, TaskTable] = {}
    for name in task_ids():
        for t in get_task(name).tables:
            old = merged.get(t.title)
            merged[t.title] = t if old is None else TaskTable(t.title, old.columns, (*old.rows, *t.rows),
                                                              old.count or t.count)
    return list(merged.values())


def _extra_table(table: TaskTable, metrics: dict[str, dict[str, Any]]) -> str:
    """One row per (dataset, row key) whose value is a dict of the table's columns."""
    rows = [["dataset", "ranking", *[h for _, h in table.columns], *([table.count[1]] if table.count else [])]]
    order = {k: i for i, (k, _) in enumerate(table.rows)}
    for name, m in metrics.items():
        for key, label in sorted(table.rows, key=lambda r: order[r[0]]):
            r: Any = m
            for k in key.split("."):  # a row key "a.b" reads m["a"]["b"]
                r = r.get(k) if isinstance(r, dict) else None
            if isinstance(r, dict):  # a row key "a.b" reads m["a"]["b"]
                count = [str(r.get(table.count[0], "-"))] if table.count else []
                rows.append([name, label, *[_fmt(r.get(k)) for k, _ in table.columns], *count])
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return f"\n\n{table.title}\n" + "\n".join(lines)


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'levir_mci': {'miou': .8}} -> {'levir_mci/miou': .8}; lists become one column per element."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                if isinstance(x, (int, float)) or x is None:
                    out[f"{key}/{i}"] = x
        else:
            out[key] = v
    return out


class RunLog:
    """Appends JSON lines and keeps a CSV of the validations (rewritten whole, so columns may grow)."""

    def __init__(self, out_dir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.jsonl = Path(out_dir) / "metrics.jsonl"
        self.csv = Path(out_dir) / "metrics.csv"
        self._val_rows: list[dict[str, Any]] = []

    def truncate_after(self, step: int) -> None:
        """On resume: drop records written after the checkpoint's step by the interrupted run."""
        if not self.enabled or not self.jsonl.is_file():
            return
        kept = []
        for line in self.jsonl.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= step:
                kept.append(line)
                if rec.get("kind") == "val":
                    self._val_rows.append(flatten(rec))
        write_text_atomic(self.jsonl, "".join(x + "\n" for x in kept))
        self._write_csv()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
        if record.get("kind") == "val":
            self._val_rows.append(flatten(record))
            self._write_csv()

    def _write_csv(self) -> None:
        if not self._val_rows:
            return
        fields: list[str] = []
        for row in self._val_rows:
            fields.extend(k for k in row if k not in fields)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self._val_rows)
        write_text_atomic(self.csv, buf.getvalue())

