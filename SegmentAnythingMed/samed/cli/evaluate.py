"""``samed evaluate``: the seed study's protocol on a dataset with reference masks -> results.csv, summary.json,
report.html (see docs/evaluation.md)."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from ..core import io
from ..core.preprocess import MODES
from ..evaluation.everything import DEFAULT_GRID
from ..evaluation.job import BackendSource, evaluate_dataset, finish
from ..evaluation.prompt_modes import MODE_HELP, all_modes, parse_modes
from ..evaluation.simulate import ORACLE, SCORE
from ..evaluation.statistics import DEFAULT_BOOTSTRAP
from ..evaluation.runner import EvaluationSettings
from ..evaluation.tables import choose_primary, format_table, format_volume_table
from ..evaluation.tasks import count_tasks
from ..evaluation.interactive_3d import parse_interactive_3d
from .common import add_backend_options, input_options, progress_bar, read_token
from .evaluate_3d import run_interactive_3d
from .outputs import check_output_folder


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model with simulated prompts on a dataset",
                       conflict_handler="resolve",  # --backend below replaces the shared single-valued one
                       description="Evaluate a model on a dataset folder (2D: images/, masks/, labels.json; "
                                   "3D: image.*, label.*, labels.json) with the simulated prompts of the seed study "
                                   "(Mazurowski et al. 2023). Writes results.csv, summary.json and report.html; "
                                   "a rerun with the same settings resumes where the last one stopped.")
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--prompt", default="box-all",
                   help=f"prompt mode(s), comma-separated: {MODE_HELP} (default box-all)")
    p.add_argument("--all-modes", action="store_true",
                   help="every mode in one pass (each picture encoded once): the five study modes, iterative:9, "
                        "everything, and the placement series point-offset:0.25..0.9 and box-shift:0.05..0.3")
    p.add_argument("--oracle", action="store_true",
                   help="keep the candidate mask closest to the reference (of three) instead of the highest-scoring")
    p.add_argument("--propagate", action="store_true",
                   help="3D sets: also one box on the middle slice of each object, propagated through the volume, "
                        "against a box on every slice (3D Dice, NSD, HD95 per class)")
    p.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    p.add_argument("--intensity", default="auto", choices=[m for m in MODES if m != "window"],
                   help="intensity preprocessing (default auto: 8-bit pictures as they are, CT window or "
                        "percentiles for volumes; minmax is the seed study's rule; see samed segment --help)")
    p.add_argument("--tolerance", type=float, default=2.0, help="NSD tolerance, mm (pixels for 2D sets)")
    p.add_argument("--seed", type=int, default=0, help="seed for ties between equally central pixels and box "
                                                       "shift directions (default 0)")
    p.add_argument("--everything-grid", type=int, default=DEFAULT_GRID,
                   help=f"points per side of the everything-mode grid (default {DEFAULT_GRID}; SAM uses 32)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"bootstrap resamples for the 95%% confidence intervals (default {DEFAULT_BOOTSTRAP}; 0: none)")
    p.add_argument("--workers", type=int, default=None,
                   help="share the pictures among N Dask worker processes on this computer (a LocalCluster, one "
                        "thread each), each with its own backend (default 1: no Dask)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="share the pictures among the workers of this Dask cluster (each needs samed and the model "
                        "installed; each builds its backend once)")
    p.add_argument("--restart", action="store_true", help="discard the results already in --out and start over")
    p.add_argument("--no-report", action="store_true", help="skip report.html and its figures")
    add_backend_options(p)
    p.add_argument("--backend", action="append", default=None, metavar="WHERE",
                   help="'local' (in-process, default) or a model service's URL (several replicas: put them behind a "
                        "consistent-hash proxy, docs/deploy.md, and give its URL)")
    p.set_defaults(func=run)


def settings_from_args(args) -> EvaluationSettings:
    modes = all_modes() if args.all_modes else parse_modes(args.prompt)
    if args.everything_grid < 1:
        raise ValueError("--everything-grid must be at least 1")
    model_input = input_options(args)
    if "mask_threshold" not in model_input and (args.backend or ["local"])[0] == "local":
        from ..engines.models import get_spec  # torch-free

        # the rule masks are cut by when none is given, recorded: a run made under another default (logit 0,
        # before 0.2.0) is not resumed under this one
        model_input["mask_threshold"] = get_spec(args.model).mask_threshold
    return EvaluationSettings(modes, ORACLE if args.oracle else SCORE, args.intensity, args.tolerance, args.seed,
                              args.everything_grid, args.propagate, model_input or None)


def backend_source(args) -> BackendSource:
    from ..backends import create_backend

    from ..evaluation.parallel import Cluster

    token = read_token(args)
    wheres = args.backend or ["local"]
    if len(wheres) > 1:
        raise ValueError(f"--backend was given {len(wheres)} times: give one; to share the work among several model "
                         f"services, put them behind a consistent-hash proxy (docs/deploy.md) and give its URL")
    factory = functools.partial(create_backend, wheres[0], args.model, args.checkpoint, args.device, token,
                                engine=args.engine, **input_options(args))
    if args.scheduler is not None:
        return BackendSource(args.model, [factory], Cluster(scheduler=args.scheduler))
    workers = 1 if args.workers is None else args.workers
    return BackendSource(args.model, [factory], Cluster(workers) if workers > 1 else workers)


def run(args) -> int:
    rounds = parse_interactive_3d(args.prompt)
    if rounds is not None:  # a 3D protocol of its own (cli/evaluate_3d.py)
        return run_interactive_3d(args, rounds)
    settings = settings_from_args(args)
    info = io.list_dataset(args.dataset)  # fails early on a folder that is not a dataset
    check_output_folder(args.out, "--out", [info.path, info.path / "images", info.path / "masks"])
    if args.bootstrap < 0:
        raise ValueError("--bootstrap must be 0 or more")
    source = backend_source(args)
    out = Path(args.out)
    try:
        with progress_bar(count_tasks(info), f"evaluate {info.path.name}") as bar:
            try:
                result = evaluate_dataset(args.dataset, settings, source, out, args.restart, progress=bar.update)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the finished pictures' rows are on disk already
                print(f"samed evaluate: stopped; the rows of the pictures finished so far are kept in {out}: run the "
                      f"same command again to resume", file=sys.stderr)
                raise
        extra = {"dataset": str(info.path), "kind": info.kind, "model": result.model,
                 "prompt": choose_primary(settings.row_names()), "modes_run": [m.name for m in settings.modes],
                 "selection": settings.selection, "intensity": settings.intensity, "tolerance": settings.tolerance,
                 "seed": settings.seed, "propagate": settings.propagate}
        summary = finish(out, info, settings, result, source, extra, report=not args.no_report,
                         n_boot=args.bootstrap)
    finally:
        source.close()
    resumed = f" ({result.resumed} finished before, resumed)" if result.resumed else ""
    print(f"{info.path.name}: model {result.model}, prompt {summary['primary']}, "
          f"candidates by {settings.selection}{resumed}")
    print(format_table(summary))
    if summary.get("volumes"):
        print(format_volume_table(summary["volumes"]))
    written = [out / "results.csv", out / "summary.json"]
    if (out / "report.html").is_file() and not args.no_report:
        written.append(out / "report.html")
    print(f"wrote {', '.join(str(w) for w in written)}")
    return 0
