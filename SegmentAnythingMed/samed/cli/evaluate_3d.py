"""``samed evaluate VOLUME_SET --prompt interactive-3d:N``: the simulated 3D user (see
``evaluation/interactive_3d.py`` and ``evaluation/interactive_3d_job.py``)."""
from __future__ import annotations

from pathlib import Path

from ..core import io


def run_interactive_3d(args, rounds: int) -> int:
    from ..backends import create_backend
    from ..evaluation.interactive_3d import interactive_3d_user
    from ..evaluation.interactive_3d_job import evaluate_interactive_3d, format_table
    from .common import input_options, read_token
    from .outputs import check_output_folder

    if args.all_modes or args.propagate or args.oracle:
        raise ValueError("--prompt interactive-3d:N runs on its own: drop --all-modes, --propagate and --oracle")
    info = io.list_dataset(args.dataset)  # fails early on a folder that is not a dataset
    if info.kind != "3d":
        raise ValueError(f"--prompt interactive-3d:N needs a 3D dataset (image.*, label.*); {info.path} is a 2D set")
    check_output_folder(args.out, "--out", [info.path])
    wheres = args.backend or ["local"]
    backend = create_backend(wheres[0], args.model, args.checkpoint, args.device, read_token(args),
                             engine=args.engine, **input_options(args))
    try:
        summary = evaluate_interactive_3d(
            backend, args.dataset, rounds, args.out, args.intensity, args.tolerance, user=interactive_3d_user(args.prompt),
            seed=args.seed,
            on_done=lambda volume, name, e: print(f"{volume} / {name}: Dice {e['dice'][0]:.3f} -> "
                                                  f"{e['dice'][-1]:.3f} (oracle {e['oracle']['dice']:.3f})",
                                                  flush=True))
    finally:
        backend.close()
    print(format_table(summary))
    out = Path(args.out)
    print(f"wrote {out / 'interactive_3d.csv'}, {out / 'interactive_3d.json'}, {out / 'interactive_3d.html'}")
    return 0
