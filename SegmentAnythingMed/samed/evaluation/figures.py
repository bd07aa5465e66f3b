"""The report's figures as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no display, no global state).

matplotlib is optional (``pip install 'segmentanythingmed[report]'``); :func:`available` says whether it is there.
"""
from __future__ import annotations

import io as _io
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from .analyses import object_size, ok_rows

REF_COLOUR, PRED_COLOUR = "#00d060", "#ff2a6d"
INCLUDE_COLOUR, EXCLUDE_COLOUR, BOX_COLOUR = "#00e5ff", "#ff3b30", "#ffd60a"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(w: float, h: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def to_png(fig) -> bytes:
    buf = _io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def modes_chart(modes: Dict[str, dict], names: Sequence[str]) -> Optional[bytes]:
    """Mean IoU and Dice per supported mode with 95% CI error bars."""
    names = [n for n in names if modes.get(n, {}).get("status") == "ok"]
    if not names:
        return None
    fig, axes = _figure(max(5.0, 0.9 * len(names) + 2), 3.6)
    ax = axes[0, 0]
    x = np.arange(len(names))
    for k, (metric, colour) in enumerate((("iou", "#3a86ff"), ("dice", "#8338ec"))):
        means = np.array([modes[n]["mean"][metric] for n in names], float)
        ci = [modes[n].get("ci", {}).get(metric) or [m, m] for n, m in zip(names, means)]
        err = np.array([[m - c[0] if _finite(c[0]) else 0, c[1] - m if _finite(c[1]) else 0]
                        for m, c in zip(means, ci)]).T
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=err.tolist(), capsize=3, color=colour, label=metric.upper()
               if metric == "iou" else "Dice")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean (95% CI)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


def clicks_chart(curve: List[dict], reference: Optional[Dict[str, float]] = None) -> Optional[bytes]:
    """Mean IoU against the number of clicks of Algorithm 1 (95% CI band), box modes as dashed lines."""
    if not curve:
        return None
    fig, axes = _figure(5.5, 3.6)
    ax = axes[0, 0]
    n = [p["clicks"] for p in curve]
    iou = [p["iou"] for p in curve]
    ax.plot(n, iou, "o-", color="#3a86ff", label="iterative (Algorithm 1)")
    lo = [p["ci_iou"][0] if p.get("ci_iou") and _finite(p["ci_iou"][0]) else m for p, m in zip(curve, iou)]
    hi = [p["ci_iou"][1] if p.get("ci_iou") and _finite(p["ci_iou"][1]) else m for p, m in zip(curve, iou)]
    ax.fill_between(n, lo, hi, color="#3a86ff", alpha=0.2, label="95% CI")
    for (name, value), style in zip((reference or {}).items(), ("--", ":", "-.")):
        if _finite(value):
            ax.axhline(value, linestyle=style, color="grey", label=name)
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mean IoU")
    ax.set_xticks(n)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return to_png(fig)


def size_scatter(rows: List[dict], mode: str, corr: Optional[dict]) -> Optional[bytes]:
    r = ok_rows(rows, mode)
    if not r:
        return None
    fig, axes = _figure(5.5, 3.8)
    ax = axes[0, 0]
    size = np.array([max(object_size(x), 1e-6) for x in r]) * 100
    ax.scatter(size, [x["iou"] for x in r], s=14, alpha=0.7, color="#3a86ff")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = np.log10(size.max() / max(size.min(), 1e-9))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 4 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("object size (% of the picture, log scale)")
    ax.set_ylabel("IoU")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{mode}: {_corr_text(corr)}", fontsize=9)
    return to_png(fig)


def score_scatter(rows: List[dict], mode: str, corr: Optional[dict]) -> Optional[bytes]:
    r = [x for x in ok_rows(rows, mode) if _finite(x.get("score"))]
    if not r:
        return None
    fig, axes = _figure(5.5, 3.8)
    ax = axes[0, 0]
    ax.scatter([x["score"] for x in r], [x["iou"] for x in r], s=14, alpha=0.7, color="#8338ec")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="score = IoU")
    ax.set_xlabel("model's predicted IoU (score)")
    ax.set_ylabel("IoU with the reference")
    ax.set_xlim(-0.02, 1.05)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{mode}: {_corr_text(corr)}", fontsize=9)
    return to_png(fig)


def _corr_text(corr: Optional[dict]) -> str:
    if not corr or not _finite(corr.get("spearman_r")):
        return "correlation not defined"
    return (f"Spearman r={corr['spearman_r']:.2f} (p={corr['spearman_p']:.2g}), "
            f"Pearson r={corr['pearson_r']:.2f} (p={corr['pearson_p']:.2g}), n={corr['n']}")


def placement_chart(placement: Dict[str, List[dict]]) -> Optional[bytes]:
    series = [(k, v) for k, v in placement.items() if v]
    if not series:
        return None
    fig, axes = _figure(4.6 * len(series), 3.6, ncols=len(series))
    labels = {"point": ("point moved towards the edge (fraction of the way)", "point-largest moved"),
              "box": ("box shifted (fraction of its size)", "box-all shifted")}
    for ax, (kind, pts) in zip(axes[0], series):
        lv = [p["level"] for p in pts]
        iou = [p["iou"] for p in pts]
        ax.plot(lv, iou, "o-", color="#3a86ff", label="IoU")
        lo = [p["ci_iou"][0] if p.get("ci_iou") and _finite(p["ci_iou"][0]) else m for p, m in zip(pts, iou)]
        hi = [p["ci_iou"][1] if p.get("ci_iou") and _finite(p["ci_iou"][1]) else m for p, m in zip(pts, iou)]
        ax.fill_between(lv, lo, hi, color="#3a86ff", alpha=0.2)
        ax.plot(lv, [p["dice"] for p in pts], "s--", color="#8338ec", label="Dice")
        ax.set_xlabel(labels[kind][0])
        ax.set_ylabel("mean")
        ax.set_ylim(0, 1)
        ax.set_title(labels[kind][1], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return to_png(fig)


def _crop(shape, masks, prompts, margin: float = 0.35, minimum: int = 96):
    h, w = shape
    ys, xs = [], []
    for m in masks:
        r = np.flatnonzero(m.any(axis=1))
        c = np.flatnonzero(m.any(axis=0))
        if r.size:
            ys += [r[0], r[-1]]
            xs += [c[0], c[-1]]
    for p in prompts:
        pts = np.concatenate([p.include_points_xy, p.exclude_points_xy])
        xs += list(pts[:, 0])
        ys += list(pts[:, 1])
        if p.box_xy is not None:
            xs += [p.box_xy[0], p.box_xy[2]]
            ys += [p.box_xy[1], p.box_xy[3]]
    if not xs:
        return 0, h, 0, w
    y0, y1, x0, x1 = min(ys), max(ys), min(xs), max(xs)
    size = max(y1 - y0, x1 - x0, minimum / (1 + 2 * margin)) * (1 + 2 * margin)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top, left = int(max(0, cy - size / 2)), int(max(0, cx - size / 2))
    return top, int(min(h, cy + size / 2 + 1)), left, int(min(w, cx + size / 2 + 1))


def overlay_examples(examples: List[dict]) -> Optional[bytes]:
    """Panels of picture + reference outline + prediction outline + prompt marks.
    Each example: {title, picture (H, W, 3), reference, prediction, prompts}."""
    if not examples:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    fig, axes = _figure(4.2 * len(examples), 4.6, ncols=len(examples))
    for ax, ex in zip(axes[0], examples):
        ref, pred = ex["reference"], ex["prediction"]
        t, b, l, r = _crop(ref.shape, [ref, pred], ex["prompts"])
        ax.imshow(ex["picture"][t:b, l:r], cmap="gray", interpolation="nearest")
        for m, colour in ((ref, REF_COLOUR), (pred, PRED_COLOUR)):
            sub = m[t:b, l:r].astype(float)
            if sub.any() and not sub.all():
                ax.contour(sub, levels=[0.5], colors=[colour], linewidths=1.6)
        for p in ex["prompts"]:
            if p.box_xy is not None:
                x0, y0, x1, y1 = p.box_xy
                ax.add_patch(Rectangle((x0 - l - 0.5, y0 - t - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                       edgecolor=BOX_COLOUR, linewidth=1.4, linestyle="--"))
            if len(p.include_points_xy):
                ax.plot(p.include_points_xy[:, 0] - l, p.include_points_xy[:, 1] - t, "*", color=INCLUDE_COLOUR,
                        markersize=13, markeredgecolor="black")
            if len(p.exclude_points_xy):
                ax.plot(p.exclude_points_xy[:, 0] - l, p.exclude_points_xy[:, 1] - t, "X", color=EXCLUDE_COLOUR,
                        markersize=10, markeredgecolor="black")
        ax.set_xlim(-0.5, r - l - 0.5)
        ax.set_ylim(b - t - 0.5, -0.5)
        ax.set_title(ex["title"], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], color=REF_COLOUR, label="reference"), Line2D([], [], color=PRED_COLOUR,
               label="prediction"), Line2D([], [], color=BOX_COLOUR, linestyle="--", label="box"),
               Line2D([], [], marker="*", color=INCLUDE_COLOUR, linestyle="", label="include point"),
               Line2D([], [], marker="X", color=EXCLUDE_COLOUR, linestyle="", label="exclude point")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.08, wspace=0.06)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def volume_chart(volumes: Dict[str, dict]) -> Optional[bytes]:
    """Per-class 3D Dice of propagation against a box on every slice."""
    if not volumes:
        return None
    classes = sorted({c for v in volumes.values() for c in v.get("classes", {})})
    if not classes:
        return None
    fig, axes = _figure(max(4.5, 1.2 * len(classes) + 2), 3.4)
    ax = axes[0, 0]
    x = np.arange(len(classes))
    width = 0.8 / len(volumes)
    for k, (method, v) in enumerate(volumes.items()):
        ax.bar(x + (k - (len(volumes) - 1) / 2) * width,
               [v["classes"].get(c, {}).get("dice", np.nan) for c in classes], width, label=method)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("3D Dice")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)
