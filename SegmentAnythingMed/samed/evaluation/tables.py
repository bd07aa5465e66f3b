"""Evaluation outputs: ``results.csv`` (one row per image, class and prompt), ``summary.json``, a printed table."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

from ..core.metrics import json_safe

METRICS = ("dice", "iou", "nsd", "hd95")


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan")
    if any(math.isinf(v) for v in vals):
        return float("inf")
    return sum(vals) / len(vals)


def summarize(rows: List[dict], seconds: float, pictures: int, extra: Dict[str, object]) -> dict:
    ok = [r for r in rows if r.get("status") == "ok"]
    classes: Dict[str, dict] = {}
    for name in sorted({r["class_name"] for r in rows}):
        cr = [r for r in ok if r["class_name"] == name]
        entry = {m: _mean([r[m] for r in cr]) for m in METRICS}
        entry["n"] = len(cr)
        if not cr:
            entry["status"] = "not supported"
        classes[name] = entry
    summary = {
        "mean": {m: _mean([r[m] for r in ok]) for m in METRICS},
        "classes": classes,
        "n": len(ok),
        "not_supported": len(rows) - len(ok),
        "seconds_per_image": seconds / pictures if pictures else float("nan"),
        "pictures": pictures,
        "seconds": seconds,
    }
    summary.update(extra)
    return summary


def write_results(out_dir: Path, rows: List[dict], summary: dict, fields: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    (out_dir / "summary.json").write_text(json.dumps(json_safe(summary), indent=2), encoding="utf-8")


def format_table(summary: dict) -> str:
    lines = [f"{'class':28s} {'n':>5s} {'Dice':>7s} {'IoU':>7s} {'NSD':>7s} {'HD95':>8s}"]
    for name, c in summary["classes"].items():
        if c.get("status") == "not supported":
            lines.append(f"{name[:28]:28s} {'':>5s} not supported by this model")
            continue
        lines.append(f"{name[:28]:28s} {c['n']:5d} {c['dice']:7.4f} {c['iou']:7.4f} {c['nsd']:7.4f} {c['hd95']:8.2f}")
    m = summary["mean"]
    lines.append(f"{'mean (all tasks)':28s} {summary['n']:5d} {m['dice']:7.4f} {m['iou']:7.4f} {m['nsd']:7.4f} "
                 f"{m['hd95']:8.2f}")
    lines.append(f"{summary['seconds_per_image']:.2f} s per picture, {summary['pictures']} pictures")
    return "\n".join(lines)
