"""Evaluation outputs: ``results.csv`` (one row per picture, class and prompt), ``summary.json``, printed tables.

``summary.json`` keeps the contract of the first version: ``mean`` (dice, iou, nsd, hd95), ``classes``
(name -> dice, iou, nsd, hd95, n) and ``seconds_per_image`` describe the *primary* mode (``box-all`` when the
run has it, else the first mode; iterative modes: after the last click). Every mode has the same under
``modes[NAME]`` (``status`` "not supported" and a reason when the model cannot take its prompts), each mean with
a 95% bootstrap confidence interval under ``ci``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..core.metrics import json_safe
from .statistics import DEFAULT_BOOTSTRAP, bootstrap_ci
from .store import write_csv

METRICS = ("dice", "iou", "nsd", "hd95")
CI_METRICS = ("dice", "iou", "nsd")


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan")
    if any(math.isinf(v) for v in vals):
        return float("inf")
    return sum(vals) / len(vals)


def _stats(rows: List[dict], n_boot: int) -> dict:
    entry = {m: _mean([r.get(m) for r in rows]) for m in METRICS}
    entry["n"] = len(rows)
    if n_boot:
        entry["ci"] = {m: list(bootstrap_ci([r.get(m) for r in rows], n_boot)) for m in CI_METRICS}
    return entry


def prompt_names(rows: List[dict]) -> List[str]:
    seen: Dict[str, None] = {}
    for r in rows:
        seen.setdefault(r.get("prompt"), None)
    return list(seen)


def choose_primary(names: Sequence[str]) -> Optional[str]:
    """``box-all`` if present; else the first mode (an iterative mode after its last click)."""
    if not names:
        return None
    if "box-all" in names:
        return "box-all"
    first = names[0]
    if first.startswith("iterative:"):
        return [n for n in names if n.startswith("iterative:")][-1]
    return first


def summarize_mode(rows: List[dict], n_boot: int = DEFAULT_BOOTSTRAP, reason: str = "") -> dict:
    """Mean, CI and per-class figures of one mode's rows."""
    ok = [r for r in rows if r.get("status") == "ok"]
    classes: Dict[str, dict] = {}
    for name in sorted({r["class_name"] for r in rows}):
        cr = [r for r in ok if r["class_name"] == name]
        entry = _stats(cr, n_boot if cr else 0)
        if not cr:
            entry["status"] = "not supported"
        classes[name] = entry
    out = _stats(ok, n_boot if ok else 0)
    out["mean"] = {m: out.pop(m) for m in METRICS}
    out["classes"] = classes
    out["not_supported"] = len(rows) - len(ok)
    out["status"] = "ok" if ok or not rows else "not supported"
    if out["status"] == "not supported" and reason:
        out["reason"] = reason
    return out


def summarize(rows: List[dict], seconds: float, pictures: int, extra: Dict[str, object],
              primary: Optional[str] = None, n_boot: int = DEFAULT_BOOTSTRAP,
              reasons: Optional[Dict[str, str]] = None) -> dict:
    names = prompt_names(rows)
    primary = primary or choose_primary(names)
    modes = {n: summarize_mode([r for r in rows if r.get("prompt") == n], n_boot, (reasons or {}).get(n, ""))
             for n in names}
    main = modes.get(primary) or summarize_mode([], 0)
    summary = {
        "mean": main["mean"],
        "ci": main.get("ci", {}),
        "classes": main["classes"],
        "n": main["n"],
        "not_supported": main["not_supported"],
        "seconds_per_image": seconds / pictures if pictures else float("nan"),
        "pictures": pictures,
        "seconds": seconds,
        "primary": primary,
        "modes": modes,
    }
    summary.update(extra)
    return summary


def write_results(out_dir: Path, rows: List[dict], summary: dict, fields: Sequence[str]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "results.csv", rows, fields)
    write_summary(out_dir, summary)


def write_summary(out_dir: Path, summary: dict) -> None:
    (Path(out_dir) / "summary.json").write_text(json.dumps(json_safe(summary), indent=2), encoding="utf-8")


def _fmt(v, width: int = 7, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'-':>{width}s}"
    return f"{v:{width}.{digits}f}"


def format_mode_table(summary: dict) -> str:
    """One line per mode: n, mean IoU and Dice with their 95% CIs, NSD, or "not supported"."""
    lines = [f"{'prompt mode':20s} {'n':>5s} {'IoU':>7s} {'95% CI':>15s} {'Dice':>7s} {'95% CI':>15s} {'NSD':>7s}"]
    modes = summary.get("modes", {})
    folded = [n for n, m in modes.items() if n.startswith("iterative:") and m.get("status") == "not supported"]
    for name, m in modes.items():
        if m.get("status") == "not supported":
            if name in folded[1:]:
                continue  # one line for all the click counts
            label = f"iterative:1..{len(folded)}" if len(folded) > 1 and name == folded[0] else name
            lines.append(f"{label[:20]:20s} {'':>5s} not supported: {m.get('reason', 'the model cannot take it')}")
            continue
        ci = m.get("ci", {})

        def band(metric):
            lo, hi = (ci.get(metric) or [None, None])
            return f"[{_fmt(lo, 6, 3)}, {_fmt(hi, 6, 3)}]" if lo is not None else f"{'':15s}"
        mean = m["mean"]
        lines.append(f"{name[:20]:20s} {m['n']:5d} {_fmt(mean['iou'])} {band('iou'):>15s} {_fmt(mean['dice'])} "
                     f"{band('dice'):>15s} {_fmt(mean['nsd'])}")
    return "\n".join(lines)


def format_table(summary: dict) -> str:
    """Per-class table of the primary mode (and the per-mode table when the run had several modes)."""
    lines = []
    if len(summary.get("modes", {})) > 1:
        lines += [format_mode_table(summary), "", f"per class, {summary.get('primary')}:"]
    lines.append(f"{'class':28s} {'n':>5s} {'Dice':>7s} {'IoU':>7s} {'NSD':>7s} {'HD95':>8s}")
    for name, c in summary["classes"].items():
        if c.get("status") == "not supported":
            lines.append(f"{name[:28]:28s} {'':>5s} not supported by this model")
            continue
        lines.append(f"{name[:28]:28s} {c['n']:5d} {_fmt(c['dice'])} {_fmt(c['iou'])} {_fmt(c['nsd'])} "
                     f"{_fmt(c['hd95'], 8, 2)}")
    m = summary["mean"]
    lines.append(f"{'mean (all tasks)':28s} {summary['n']:5d} {_fmt(m['dice'])} {_fmt(m['iou'])} {_fmt(m['nsd'])} "
                 f"{_fmt(m['hd95'], 8, 2)}")
    lines.append(f"{summary['seconds_per_image']:.2f} s per picture, {summary['pictures']} pictures")
    return "\n".join(lines)


def summarize_volumes(rows: List[dict], n_boot: int = DEFAULT_BOOTSTRAP) -> dict:
    """3D results (``--propagate``) per method: mean and per-class Dice, IoU, NSD, HD95."""
    out = {}
    for method in prompt_names([dict(r, prompt=r.get("method")) for r in rows]):
        mr = [r for r in rows if r.get("method") == method and r.get("status") == "ok"]
        entry = _stats(mr, n_boot)
        entry["mean"] = {m: entry.pop(m) for m in METRICS}
        entry["classes"] = {name: _stats([r for r in mr if r["class_name"] == name], 0)
                            for name in sorted({r["class_name"] for r in mr})}
        out[method] = entry
    return out


def format_volume_table(volumes: dict) -> str:
    lines = [f"{'3D (per volume and class)':26s} {'n':>4s} {'Dice':>7s} {'IoU':>7s} {'NSD':>7s} {'HD95 mm':>8s}"]
    for method, v in volumes.items():
        m = v["mean"]
        lines.append(f"{method:26s} {v['n']:4d} {_fmt(m['dice'])} {_fmt(m['iou'])} {_fmt(m['nsd'])} "
                     f"{_fmt(m['hd95'], 8, 2)}")
    return "\n".join(lines)
