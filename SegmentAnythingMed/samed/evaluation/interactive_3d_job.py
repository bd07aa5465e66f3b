"""``samed evaluate VOLUME_SET --prompt interactive-3d:N``: the simulated 3D user on every class of every volume.

Writes into the output folder (each file whole: a temporary file renamed):

- ``interactive_3d.csv``: one row per volume, class and interaction count (1..N: the slice and what the user
  did there, 3D Dice, NSD, HD95, where each end of the structure stopped), plus a ``method=oracle`` row (a
  reference box on every slice of the object);
- ``interactive_3d.json``: per structure the oracle, the Dice/NSD/HD95 curve over 1..N interactions, the
  interactions needed to reach 0.9 and 0.95 x the oracle's Dice and those saved against the oracle's boxes;
- ``interactive_3d.html``: the table and, with matplotlib, the Dice curve per structure against its oracle.

It runs on its own (no per-slice modes in the same run) and does not resume: a structure takes seconds to a
few minutes. See ``interactive_3d.py`` for the protocol.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ..core import io, metrics
from ..core.files import atomic_output
from ..core.volume_session import VolumeSession
from .interactive_3d import INTERACTIVE_3D, INTERACTIVE_3D_POINTS, run_interactive_3d
from .store import write_csv
from .volumes import iter_volumes

FIELDS = ["dataset", "volume", "class_id", "class_name", "method", "interactions", "slice", "action", "dice", "nsd",
          "hd95", "ref_slices", "stopped"]
FRACTIONS = (0.9, 0.95)


def evaluate_interactive_3d(backend, dataset, rounds: int, out_dir, intensity: str = "auto", tolerance: float = 2.0,
                            on_done: Optional[Callable[[str, str, dict], None]] = None, user: str = "box",
                            seed: int = 0) -> dict:
    """Run the simulated user (``user``: "box" or "points") on every class of every volume of a 3D dataset;
    write the files; the summary."""
    info = io.list_dataset(dataset)
    if info.kind != "3d":
        raise ValueError(f"--prompt {INTERACTIVE_3D}:N needs a 3D dataset (image.nrrd|nii.gz, label.*); "
                         f"{info.path} is a 2D set")
    names: Dict[int, str] = info.class_names
    spec = INTERACTIVE_3D if user == "box" else INTERACTIVE_3D_POINTS
    rows: List[dict] = []
    structures: Dict[str, dict] = {}
    for name, volume, label in iter_volumes(info):
        session = VolumeSession(volume, backend, intensity_mode=intensity)
        for class_id in (int(c) for c in np.unique(label) if c != 0):
            cname = names.get(class_id, str(class_id))
            res = run_interactive_3d(session, label == class_id, rounds, tolerance=tolerance, user=user, seed=seed)
            base = dict(dataset=info.path.name, volume=name, class_id=class_id, class_name=cname,
                        ref_slices=res.oracle_boxes)
            rows.append(dict(base, method="oracle", interactions=res.oracle_boxes, action="box on every slice",
                             **res.oracle))
            for r in res.rounds:
                rows.append(dict(base, method=f"{spec}:{r.interactions}", interactions=r.interactions,
                                 slice=r.slice, action=r.action, dice=r.dice, nsd=r.nsd, hd95=r.hd95,
                                 stopped=r.stopped))
            entry = {"volume": name, "class_id": class_id, "slices": res.oracle_boxes, "oracle": res.oracle,
                     "dice": [r.dice for r in res.rounds], "nsd": [r.nsd for r in res.rounds],
                     "hd95": [r.hd95 for r in res.rounds],
                     "actions": [f"{r.action} {r.slice}" for r in res.rounds], "user": user}
            for f in FRACTIONS:
                n = res.boxes_to(f)
                entry[f"boxes_to_{f:g}"] = n
                entry[f"saved_at_{f:g}"] = None if n is None else res.oracle_boxes - n
            key = f"{name} / {cname}"
            structures[key] = entry
            if on_done is not None:
                on_done(name, cname, entry)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"dataset": str(info.path), "prompt": f"{spec}:{rounds}", "user": user, "seed": seed,
               "model": backend.model,
               "intensity": intensity, "tolerance": tolerance, "structures": structures}
    write_csv(out / "interactive_3d.csv", rows, FIELDS)
    with atomic_output(out / "interactive_3d.json") as tmp:
        tmp.write_text(json.dumps(metrics.json_safe(summary), indent=2))
    with atomic_output(out / "interactive_3d.html") as tmp:
        tmp.write_text(report_html(summary))
    return summary


def format_table(summary: dict) -> str:
    structures = summary["structures"]
    n = max((len(s["dice"]) for s in structures.values()), default=0)
    head = f"{'structure':34s} {'slices':>6s} {'oracle':>7s} " + " ".join(f"{k:>6d}" for k in range(1, n + 1))
    what = "clicks" if summary.get("user") == "points" else "boxes"
    lines = [f"3D Dice after 1..{n} simulated {what} ({summary['prompt'].partition(':')[0]})",
             head + f" {'->0.9':>6s} {'->0.95':>6s}"]
    for key, s in structures.items():
        curve = " ".join(f"{d:6.3f}" for d in s["dice"])
        reach = [str(s[f"boxes_to_{f:g}"] or ">") for f in FRACTIONS]
        lines.append(f"{key[:34]:34s} {s['slices']:6d} {s['oracle']['dice']:7.3f} {curve} {reach[0]:>6s} "
                     f"{reach[1]:>6s}")
    return "\n".join(lines)


def _curve_png(entry: dict) -> Optional[bytes]:
    from .figures import _figure, available, to_png

    if not available():
        return None
    fig, axes = _figure(4.2, 2.6)
    ax = axes[0][0]
    x = list(range(1, len(entry["dice"]) + 1))
    ax.plot(x, entry["dice"], marker="o", label="key-slice " + ("clicks" if entry.get("user") == "points" else "boxes"))
    ax.axhline(entry["oracle"]["dice"], color="grey", linestyle="--",
               label=f"oracle ({entry['slices']} boxes)")
    ax.axhline(0.9 * entry["oracle"]["dice"], color="grey", linestyle=":", label="0.9 x oracle")
    ax.set_xlabel("interactions")
    ax.set_ylabel("3D Dice")
    ax.set_ylim(0, 1)
    ax.set_xticks(x)
    ax.legend(fontsize=7, loc="lower right")
    return to_png(fig)


def report_html(summary: dict) -> str:
    esc = html.escape
    parts = [f"<html><head><meta charset='utf-8'><title>interactive-3d: {esc(summary['dataset'])}</title></head>"
             f"<body><h1>Simulated 3D user: {esc(Path(summary['dataset']).name)}</h1>",
             f"<p>Model {esc(summary['model'])}; each next {'click' if summary.get('user') == 'points' else 'box'} "
             f"on the slice with the largest error volume (a slice "
             f"past the object's end is marked absent); oracle: a reference box on every slice.</p>",
             f"<pre>{esc(format_table(summary))}</pre>"]
    for key, entry in summary["structures"].items():
        png = _curve_png(entry)
        parts.append(f"<h2>{esc(key)}</h2><p>{esc(', '.join(entry['actions']))}</p>")
        if png is not None:
            parts.append(f"<img alt='Dice curve' src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
