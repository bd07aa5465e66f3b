"""``samed evaluate``: simulated prompts on a dataset with reference masks -> results.csv, summary.json, a table."""
from __future__ import annotations

from pathlib import Path

from ..core import io
from ..evaluation.prompt_modes import PROMPT_MODES, get_mode
from ..evaluation.runner import ROW_FIELDS, count_tasks, run_evaluation
from ..evaluation.tables import format_table, summarize, write_results
from .common import add_backend_options, backend_from_args, progress_bar


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model with simulated prompts on a dataset",
                       description="Evaluate a model on a dataset folder (2D: images/, masks/, labels.json; "
                                   "3D: image.*, label.*, labels.json) with simulated prompts.")
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--prompt", default="box-all", help=f"prompt mode: {', '.join(PROMPT_MODES)} (default box-all)")
    p.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    p.add_argument("--intensity", default="auto", help="intensity preprocessing (see samed segment --help)")
    p.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance, mm (pixels for 2D sets)")
    add_backend_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    mode = get_mode(args.prompt)
    info = io.list_dataset(args.dataset)  # fails early on a folder that is not a dataset
    backend = backend_from_args(args)
    with progress_bar(count_tasks(info), f"evaluate {info.path.name}") as bar:
        result = run_evaluation(backend, args.dataset, mode, args.intensity, args.tolerance, progress=bar.update)
    summary = summarize(result.rows, result.seconds, result.pictures,
                        {"dataset": str(info.path), "kind": info.kind, "model": backend.model, "prompt": mode.name,
                         "intensity": args.intensity, "tolerance": args.tolerance})
    out = Path(args.out)
    write_results(out, result.rows, summary, ROW_FIELDS)
    print(f"{info.path.name}: model {backend.model}, prompt {mode.name}")
    print(format_table(summary))
    print(f"wrote {out / 'results.csv'} and {out / 'summary.json'}")
    backend.close()
    return 0
