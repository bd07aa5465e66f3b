"""The study's analyses on the result rows: clicks vs IoU, object size vs IoU, score vs IoU, prompt placement.

- Object size is the reference's pixel count as a fraction of its picture (pictures differ in size); its
  relation to IoU is given as Spearman's and Pearson's correlations with p-values, per mode.
- Score vs IoU: the model's predicted IoU (the chosen candidate's, averaged over a mode's prompts) against the
  true IoU, per mode.
- Placement: IoU against how far the prompt was moved: ``point-offset:D`` (0 = ``point-largest``) for
  point-taking models, ``box-shift:S`` (0 = ``box-all``) for every model.
- Clicks: mean IoU (and its 95% CI) after 1..N clicks of Algorithm 1.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .statistics import correlation

POINT_PLACEMENT = ("point-largest", "point-offset:")
BOX_PLACEMENT = ("box-all", "box-shift:")


def ok_rows(rows: List[dict], prompt: Optional[str] = None) -> List[dict]:
    return [r for r in rows if r.get("status") == "ok" and (prompt is None or r.get("prompt") == prompt)]


def object_size(row: dict) -> float:
    return (row.get("ref_pixels") or 0) / max(row.get("image_pixels") or 1, 1)


def size_correlations(rows: List[dict], modes: List[str]) -> Dict[str, dict]:
    out = {}
    for name in modes:
        r = ok_rows(rows, name)
        if r:
            out[name] = correlation([object_size(x) for x in r], [x.get("iou") for x in r])
    return out


def score_correlations(rows: List[dict], modes: List[str]) -> Dict[str, dict]:
    out = {}
    for name in modes:
        r = ok_rows(rows, name)
        if r:
            out[name] = correlation([x.get("score") for x in r], [x.get("iou") for x in r])
    return out


def _level(name: str, series: Tuple[str, str]) -> Optional[float]:
    if name == series[0]:
        return 0.0
    if name.startswith(series[1]):
        return float(name[len(series[1]):])
    return None


def placement_series(modes: Dict[str, dict], series: Tuple[str, str]) -> List[dict]:
    """[{level, mode, iou, dice, ci_iou, n}] sorted by level, for the modes of the run that belong to ``series``
    (empty unless the run has a moved prompt)."""
    points = []
    for name, m in modes.items():
        level = _level(name, series)
        if level is None or m.get("status") != "ok":
            continue
        points.append({"level": level, "mode": name, "iou": m["mean"]["iou"], "dice": m["mean"]["dice"],
                       "ci_iou": m.get("ci", {}).get("iou"), "n": m["n"]})
    points.sort(key=lambda p: p["level"])
    return points if any(p["level"] > 0 for p in points) else []


def click_curve(modes: Dict[str, dict]) -> List[dict]:
    """[{clicks, iou, dice, ci_iou, n}] for the iterative modes of the run, by number of clicks."""
    out = []
    for name, m in modes.items():
        if name.startswith("iterative:") and m.get("status") == "ok":
            out.append({"clicks": int(name.split(":")[1]), "iou": m["mean"]["iou"], "dice": m["mean"]["dice"],
                        "ci_iou": m.get("ci", {}).get("iou"), "n": m["n"]})
    return sorted(out, key=lambda p: p["clicks"])


def analyse(rows: List[dict], summary: dict) -> dict:
    """The ``analyses`` section of summary.json."""
    modes = summary.get("modes", {})
    supported = [n for n, m in modes.items() if m.get("status") == "ok"]
    return {
        "clicks": click_curve(modes),
        "size": size_correlations(rows, supported),
        "score_vs_iou": score_correlations(rows, supported),
        "placement": {"point": placement_series(modes, POINT_PLACEMENT),
                      "box": placement_series(modes, BOX_PLACEMENT)},
    }


def percentile_rows(rows: List[dict], percentiles=(25, 50, 75), metric: str = "iou") -> List[Tuple[int, dict]]:
    """The rows at the given percentiles of ``metric`` (nearest rank; ties by dataset order)."""
    ranked = sorted((r for r in rows if r.get(metric) is not None and np.isfinite(r.get(metric))),
                    key=lambda r: r[metric])
    if not ranked:
        return []
    out = []
    for p in percentiles:
        k = int(round(p / 100.0 * (len(ranked) - 1)))
        out.append((p, ranked[k]))
    return out
