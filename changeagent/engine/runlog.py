"""Run records: `metrics.jsonl` (every training log and validation), `metrics.csv` (validations),
and the console table that shows mask and caption metrics together per dataset."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from changeagent.data.io import write_text_atomic
from changeagent.engine.checkpoint import json_safe

# (key, header) in table order; a key a dataset does not report shows "-" (binary change: P/R/F1/IoU;
# SECOND: SeK/Fscd; caption-only datasets: no mask columns)
TABLE_COLUMNS = (
    ("miou", "MIoU"), ("oa", "OA"), ("precision", "P"), ("recall", "R"), ("f1", "F1"), ("iou", "IoU"),
    ("sek", "SeK"), ("fscd", "Fscd"), ("score", "Score"),
    ("bleu1", "B1"), ("bleu2", "B2"), ("bleu3", "B3"), ("bleu4", "B4"),
    ("meteor", "METEOR"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"), ("s_m", "S*m"),
    ("no_change_accuracy", "NC-acc"),
)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)):
        return f"{100 * value:.2f}"
    return str(value)


CAPTION_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "s_m", "no_change_accuracy")
LEVELS = {"word": "caption metrics on words", "id": "caption metrics on vocabulary ids, as the reference code"}


def format_table(metrics: dict[str, dict[str, Any]], title: str = "", caption_level: str | None = None) -> str:
    """Plain-text table, one row per dataset, values in percent (CIDEr x100 too, as papers print);
    the header says which caption level (word / id) the caption columns show."""
    cols = [(k, h) for k, h in TABLE_COLUMNS if any(k in m for m in metrics.values())]
    rows = [["dataset", *[h for _, h in cols], "pairs"]]
    for name, m in metrics.items():
        rows.append([name, *[_fmt(m.get(k)) for k, _ in cols], str(m.get("n_pairs", "-"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    captioned = any(k in CAPTION_KEYS for k, _ in cols)  # a mask-only run has no caption columns to qualify
    unit = "percent" + (f"; {LEVELS.get(caption_level, caption_level)}" if caption_level and captioned else "")
    head = f"{title} ({unit})\n" if title else f"({unit})\n"
    return head + "\n".join(lines) + retrieval_table(metrics)


RETRIEVAL_COLUMNS = (("r1", "R@1"), ("r5", "R@5"), ("r10", "R@10"), ("mrr10", "MRR@10"),
                     ("change_r1", "chg R@1"), ("change_r5", "chg R@5"), ("change_r10", "chg R@10"),
                     ("change_mrr10", "chg MRR@10"))


def retrieval_table(metrics: dict[str, dict[str, Any]]) -> str:
    """Text-to-pair retrieval rows (SPEC §2.4): the learned head and the caption-matching baseline."""
    rows = [["dataset", "ranking", *[h for _, h in RETRIEVAL_COLUMNS], "queries"]]
    for name, m in metrics.items():
        for key, label in (("retrieval", "learned"), ("retrieval_baseline", "bm25 captions")):
            r = m.get(key)
            if isinstance(r, dict):
                rows.append([name, label, *[_fmt(r.get(k)) for k, _ in RETRIEVAL_COLUMNS], str(r.get("n_queries", "-"))])
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n\ntext-to-pair retrieval (percent; chg = change queries only)\n" + "\n".join(lines)


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

