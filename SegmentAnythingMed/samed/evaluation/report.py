"""``report.html``: a self-contained page (inline CSS, figures as inline base64 PNGs) with the per-mode table,
the click curve, size and confidence scatter plots, the placement analysis, percentile overlay examples and,
for ``--propagate``, the 3D table. The same figures are written as PNG files under ``figures/``.
"""
from __future__ import annotations

import base64
import datetime
import html
import math
from pathlib import Path
from typing import Dict, List, Optional

from . import figures
from .prompt_modes import get_mode

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;
background:#fff;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px}table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #d0d0d0;padding:4px 8px;text-align:right}th{background:#f2f4f7}
td.l,th.l{text-align:left}tr.ns td{color:#888;font-style:italic}.note{font-size:13px;color:#444;max-width:960px}
img{max-width:100%;border:1px solid #eee;margin:6px 0}.fig{display:inline-block;vertical-align:top;margin-right:12px}
code{background:#f4f4f4;padding:0 3px}
"""
PLACEMENT_PREFIXES = ("point-offset:", "box-shift:")


def _esc(value) -> str:
    return html.escape(str(value))


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v))):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{digits}f}"


def _with_ci(mean, ci) -> str:
    if not ci or ci[0] is None or (isinstance(ci[0], float) and math.isnan(ci[0])):
        return _num(mean)
    return f"{_num(mean)} <span class=meta>[{_num(ci[0])}, {_num(ci[1])}]</span>"


def describe(name: str) -> str:
    if name.startswith("iterative:"):
        n = int(name.split(":")[1])
        return f"Algorithm 1 after {n} click{'s' if n > 1 else ''}"
    try:
        return get_mode(name).help
    except ValueError:
        return ""


def _collapse(modes: Dict[str, dict], names: List[str]) -> List[str]:
    """Names with the not-supported iterative click counts folded into one entry ("iterative:1..9")."""
    ns_iter = [n for n in names if n.startswith("iterative:") and modes[n].get("status") == "not supported"]
    if len(ns_iter) < 2:
        return names
    out = []
    for n in names:
        if n == ns_iter[0]:
            out.append(f"iterative:1..{ns_iter[-1].split(':')[1]}")
        elif n not in ns_iter:
            out.append(n)
    return out


def _mode_rows(modes: Dict[str, dict], names: List[str]) -> str:
    out = []
    for name in _collapse(modes, names):
        if ".." in name:
            m = modes[name.replace("1..", "")]
            out.append(f"<tr class=ns><td class=l>{html.escape(name)}</td><td class=l>Algorithm 1, 1 to "
                       f"{name.split('..')[1]} clicks</td><td colspan=5 class=l>not supported: "
                       f"{html.escape(m.get('reason', ''))}</td></tr>")
            continue
        m = modes[name]
        if m.get("status") == "not supported":
            out.append(f"<tr class=ns><td class=l>{html.escape(name)}</td><td class=l>{html.escape(describe(name))}"
                       f"</td><td colspan=5 class=l>not supported: {html.escape(m.get('reason', ''))}</td></tr>")
            continue
        ci, mean = m.get("ci", {}), m["mean"]
        out.append(f"<tr><td class=l>{html.escape(name)}</td><td class=l>{html.escape(describe(name))}</td>"
                   f"<td>{m['n']}</td><td>{_with_ci(mean['iou'], ci.get('iou'))}</td>"
                   f"<td>{_with_ci(mean['dice'], ci.get('dice'))}</td><td>{_with_ci(mean['nsd'], ci.get('nsd'))}</td>"
                   f"<td>{_num(mean['hd95'], 2)}</td></tr>")
    head = ("<tr><th class=l>mode</th><th class=l>prompt</th><th>n</th><th>IoU [95% CI]</th>"
            "<th>Dice [95% CI]</th><th>NSD [95% CI]</th><th>HD95</th></tr>")
    return f"<table>{head}{''.join(out)}</table>"


def _class_table(classes: Dict[str, dict]) -> str:
    head = ("<tr><th class=l>class</th><th>n</th><th>IoU [95% CI]</th><th>Dice [95% CI]</th><th>NSD</th>"
            "<th>HD95</th></tr>")
    body = []
    for name, c in classes.items():
        if c.get("status") == "not supported":
            body.append(f"<tr class=ns><td class=l>{_esc(name)}</td><td colspan=5 class=l>not supported</td></tr>")
            continue
        ci = c.get("ci", {})
        body.append(f"<tr><td class=l>{html.escape(name)}</td><td>{c['n']}</td><td>{_with_ci(c['iou'], ci.get('iou'))}"
                    f"</td><td>{_with_ci(c['dice'], ci.get('dice'))}</td><td>{_num(c['nsd'])}</td>"
                    f"<td>{_num(c['hd95'], 2)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _corr_table(corrs: Dict[str, dict], what: str) -> str:
    if not corrs:
        return ""
    head = (f"<tr><th class=l>mode</th><th>n</th><th>Spearman r</th><th>p</th><th>Pearson r</th><th>p</th></tr>")
    body = "".join(f"<tr><td class=l>{html.escape(k)}</td><td>{c['n']}</td><td>{_num(c['spearman_r'])}</td>"
                   f"<td>{_num(c['spearman_p'], 4)}</td><td>{_num(c['pearson_r'])}</td><td>{_num(c['pearson_p'], 4)}"
                   f"</td></tr>" for k, c in corrs.items())
    return f"<p class=note>{what}</p><table>{head}{body}</table>"


def _volume_details(volume_rows: List[dict]) -> str:
    if not volume_rows:
        return ""
    head = ("<tr><th class=l>volume</th><th class=l>class</th><th class=l>method</th><th>boxes</th><th>seed slice</th>"
            "<th>slices (pred / ref)</th><th>3D Dice</th><th class=l>where the walk stopped</th></tr>")
    body = "".join(
        f"<tr><td class=l>{html.escape(str(r.get('volume')))}</td><td class=l>{html.escape(str(r.get('class_name')))}"
        f"</td><td class=l>{html.escape(str(r.get('method')))}</td><td>{r.get('boxes') or ''}</td>"
        f"<td>{'' if r.get('seed_slice') is None else r.get('seed_slice')}</td>"
        f"<td>{r.get('pred_slices')} / {r.get('ref_slices')}</td><td>{_num(r.get('dice'))}</td>"
        f"<td class=l>{html.escape(str(r.get('stopped') or ''))}</td></tr>" for r in volume_rows)
    return f"<table>{head}{body}</table>"


def _volume_table(volumes: Dict[str, dict]) -> str:
    head = ("<tr><th class=l>method</th><th class=l>class</th><th>n</th><th>3D Dice</th><th>3D IoU</th><th>3D NSD</th>"
            "<th>HD95 (mm)</th></tr>")
    body = []
    for method, v in volumes.items():
        mean = [("mean", dict(v["mean"], n=v["n"]))] if len(v["classes"]) > 1 else []
        for name, c in list(v["classes"].items()) + mean:
            body.append(f"<tr><td class=l>{_esc(method)}</td><td class=l>{_esc(name)}</td><td>{c['n']}</td>"
                        f"<td>{_num(c['dice'])}</td><td>{_num(c['iou'])}</td><td>{_num(c['nsd'])}</td>"
                        f"<td>{_num(c['hd95'], 2)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


class _Figures:
    def __init__(self, out_dir: Path):
        self.dir = out_dir / "figures"
        self.written: List[Path] = []

    def html(self, name: str, png: Optional[bytes], caption: str = "") -> str:
        if png is None:
            return ""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{name}.png"
        path.write_bytes(png)
        self.written.append(path)
        data = base64.b64encode(png).decode("ascii")
        cap = f"<div class=meta>{html.escape(caption)}</div>" if caption else ""
        return f"<div class=fig><img alt=\"{html.escape(name)}\" src=\"data:image/png;base64,{data}\">{cap}</div>"


def write_report(out_dir, summary: dict, rows: List[dict], examples: List[dict], title: str,
                 notes: Optional[List[str]] = None, volume_rows: Optional[List[dict]] = None) -> Path:
    """Write ``report.html`` and ``figures/*.png``; returns the report's path."""
    out_dir = Path(out_dir)
    figs = _Figures(out_dir)
    modes = summary.get("modes", {})
    names = list(modes)
    main = [n for n in names if not n.startswith(PLACEMENT_PREFIXES)]
    placement = [n for n in names if n.startswith(PLACEMENT_PREFIXES)]
    primary = summary.get("primary")
    an = summary.get("analyses", {})
    unsupported = {n: m.get("reason", "") for n, m in modes.items() if m.get("status") == "not supported"}
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=meta>model <b>{_esc(summary.get('model', ''))}</b> · dataset "
             f"<code>{_esc(summary.get('dataset', ''))}</code> ({_esc(summary.get('kind', ''))})"
             f" · candidate choice: {_esc(summary.get('selection', 'score'))} · seed {_esc(summary.get('seed', 0))}"
             f" · intensity {_esc(summary.get('intensity', ''))} · NSD tolerance {_esc(summary.get('tolerance'))}"
             f" · {summary.get('pictures', 0)} pictures, {_num(summary.get('seconds_per_image'), 2)} s per picture"
             f" · {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"]

    parts.append("<h2>Prompt modes</h2>")
    parts.append(_mode_rows(modes, main))
    iterative = [n for n in main if n.startswith("iterative:")]
    chart_names = [n for n in main if n not in iterative] + iterative[-1:]
    parts.append(figs.html("modes", figures.modes_chart(modes, chart_names), "mean IoU and Dice per mode, 95% CI"))

    parts.append("<h2>Iterative prompting: IoU against the number of clicks</h2>")
    curve = an.get("clicks") or []
    iterative_ns = [n for n in unsupported if n.startswith("iterative:")]
    if curve:
        ref = {n: modes[n]["mean"]["iou"] for n in ("point-largest", "box-all")
               if modes.get(n, {}).get("status") == "ok"}
        parts.append(figs.html("clicks", figures.clicks_chart(curve, ref), "Algorithm 1, mean IoU with 95% CI"))
    elif iterative_ns:
        parts.append(f"<p class=note>Not supported: {html.escape(unsupported[iterative_ns[0]])}.</p>")
    else:
        parts.append("<p class=note>Not run (add <code>--prompt iterative:9</code> or <code>--all-modes</code>).</p>")

    scatter_mode = primary if modes.get(primary, {}).get("status") == "ok" else next(
        (n for n in main if modes[n].get("status") == "ok"), None)
    parts.append("<h2>Object size</h2>")
    if scatter_mode:
        parts.append(figs.html("size", figures.size_scatter(rows, scatter_mode, an.get("size", {}).get(scatter_mode))))
    parts.append(_corr_table({k: v for k, v in an.get("size", {}).items() if k in main},
                             "Correlation of IoU with the object's size (fraction of the picture)."))

    parts.append("<h2>Confidence: the model's score against the true IoU</h2>")
    if scatter_mode:
        parts.append(figs.html("score", figures.score_scatter(rows, scatter_mode,
                                                              an.get("score_vs_iou", {}).get(scatter_mode))))
    parts.append(_corr_table({k: v for k, v in an.get("score_vs_iou", {}).items() if k in main},
                             "Correlation of the predicted IoU (score of the chosen mask) with the true IoU."))

    parts.append("<h2>Prompt placement</h2>")
    place = an.get("placement", {})
    if placement:
        parts.append(figs.html("placement", figures.placement_chart(place)))
        parts.append(_mode_rows(modes, placement))
        if not place.get("point") and any(n.startswith("point-offset:") for n in unsupported):
            parts.append("<p class=note>The model takes no points, so the placement analysis moves the box instead "
                         "(<code>box-shift:S</code>: the box-all box translated by S times its size in a random "
                         "direction).</p>")
    else:
        parts.append("<p class=note>Not run (add <code>--all-modes</code>, or <code>--prompt box-shift:0.1,"
                     "point-offset:0.5</code>).</p>")

    parts.append(f"<h2>Examples: 25th, 50th and 75th percentile of IoU ({html.escape(str(scatter_mode))})</h2>")
    parts.append(figs.html("examples", figures.overlay_examples(examples),
                           "green: reference outline; pink: prediction outline; yellow dashes: box; "
                           "cyan star: include point; red cross: exclude point") or "<p class=note>No example.</p>")

    parts.append(f"<h2>Per class ({html.escape(str(primary))})</h2>")
    parts.append(_class_table(summary.get("classes", {})))

    if summary.get("volumes"):
        parts.append("<h2>3D: one box propagated vs a box on every slice</h2>")
        parts.append(_volume_table(summary["volumes"]))
        parts.append(_volume_details(volume_rows or []))
        parts.append(figs.html("volumes", figures.volume_chart(summary["volumes"])))

    if notes:
        parts.append("<h2>Protocol notes</h2><ul class=note>" +
                     "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts.append("<p class=meta>Data: <code>results.csv</code> (one row per picture, class and prompt), "
                 "<code>summary.json</code>, <code>figures/</code>.</p>")
    doc = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = out_dir / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path


PROTOCOL_NOTES = [
    "Regions: connected components with 8-connectivity, largest first; a point is the maximum of the distance "
    "transform of its region, the picture's border counting as boundary; ties are broken at random with a fixed seed.",
    "Candidate masks: the model's own number of candidates and the highest predicted IoU (the study's text); "
    "--oracle asks for three candidates and keeps the one closest to the reference.",
    "Iterative prompting (Algorithm 1): the next click is the error-region pixel farthest from the error region's "
    "boundary, include if missed, exclude if false positive; all clicks are sent together, without the previous mask.",
    "Confidence intervals: percentile bootstrap over the tasks being averaged (--bootstrap resamples, fixed seed).",
]
