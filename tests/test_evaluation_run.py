"""Whole runs with model-free backends: output folder contract, resume, workers, 3D propagation, report, CLI."""
from __future__ import annotations

import csv
import functools
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_evaluation_fakes import ShapeBackend, make_fake, two_class_label, write_2d_set

from samed.cli.main import main
from samed.core import io
from samed.core.geometry import Volume
from samed.evaluation.job import BackendSource, evaluate_dataset, finish
from samed.evaluation.prompt_modes import all_modes, parse_modes
from samed.evaluation.runner import EvaluationSettings
from samed.evaluation.store import SettingsChanged

NAMES = {1: "rectangles", 2: "disk"}


@pytest.fixture(scope="module")
def set_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("set2d")
    return write_2d_set(root, {f"img{i}": two_class_label(shift=i) for i in range(3)}, NAMES)


@pytest.fixture(scope="module")
def set_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("set3d")
    lab = np.zeros((12, 40, 48), np.int16)
    zz, yy, xx = np.mgrid[:12, :40, :48]
    lab[((xx - 24) / 12.0) ** 2 + ((yy - 20) / 10.0) ** 2 + ((zz - 6) / 4.0) ** 2 <= 1] = 1
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    io.write_volume(Volume((lab * 1000).astype(np.int16), affine), root / "image.nrrd")
    io.write_volume(Volume(lab, affine), root / "label.nrrd")
    (root / "labels.json").write_text(json.dumps({"1": "blob"}), encoding="utf-8")
    return root


def run(dataset, out, modes="box-all", backend=None, source=None, restart=False, report=False, **kw):
    settings = EvaluationSettings(parse_modes(modes) if isinstance(modes, str) else modes, **kw)
    source = source or BackendSource("fake", backend=backend or ShapeBackend())
    result = evaluate_dataset(dataset, settings, source, out, restart=restart)
    summary = finish(out, io.list_dataset(dataset), settings, result, source, {"model": result.model},
                     report=report, n_boot=100)
    return result, summary


def read_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.imgs = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))


def parse_html(path: Path) -> _Tags:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_a_run_writes_rows_with_the_mode_summary_and_a_self_contained_report(set_2d, tmp_path):
    out = tmp_path / "out"
    result, summary = run(set_2d, out, all_modes(iterative_points=3), report=True, everything_grid=4)
    rows = read_rows(out / "results.csv")
    assert len(rows) == len(result.rows) == 3 * 2 * len(EvaluationSettings(all_modes(3)).row_names())
    assert all(r["prompt"] and r["selection"] == "score" and r["status"] == "ok" for r in rows)
    s = json.loads((out / "summary.json").read_text())
    assert set(s["mean"]) >= {"dice", "iou", "nsd"} and s["primary"] == "box-all"
    assert set(s["classes"]) == {"rectangles", "disk"}
    assert all(set(c) >= {"dice", "iou", "nsd", "n"} for c in s["classes"].values())
    assert s["seconds_per_image"] > 0 and s["pictures"] == 3
    assert s["mean"]["dice"] == 1.0  # the fake's box gives the bright pixels: exactly the reference
    lo, hi = s["modes"]["box-shift:0.3"]["ci"]["iou"]
    assert lo <= s["modes"]["box-shift:0.3"]["mean"]["iou"] <= hi
    assert [p["clicks"] for p in s["analyses"]["clicks"]] == [1, 2, 3]
    assert set(s["analyses"]["size"]) >= {"box-all", "point-largest"}
    assert [p["level"] for p in s["analyses"]["placement"]["box"]] == [0, 0.05, 0.1, 0.2, 0.3]
    page = parse_html(out / "report.html")
    assert page.tags.count("table") >= 4
    assert len(page.imgs) >= 5 and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert {p.name for p in (out / "figures").glob("*.png")} >= {"modes.png", "clicks.png", "size.png",
                                                                 "score.png", "placement.png", "examples.png"}


class FailingBackend(ShapeBackend):
    """Fails on its ``fail_at``-th encode, as a run cut off by a crash or Ctrl-C."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at = fail_at

    def encode(self, image_rgb):
        if self.encodes + 1 == self.fail_at:
            raise KeyboardInterrupt
        return super().encode(image_rgb)


def test_an_interrupted_run_resumes_without_redoing_finished_pictures(set_2d, tmp_path):
    full, _ = run(set_2d, tmp_path / "full", "box-all,box-shift:0.2")
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run(set_2d, out, "box-all,box-shift:0.2", backend=FailingBackend(fail_at=3))
    assert (out / "finished.txt").read_text().count("\n") == 2
    with open(out / "results.csv", "a", encoding="utf-8") as f:  # a row cut off mid-write
        f.write("set2d,img2,,1,rectangles,box-all,sc")
    again = ShapeBackend()
    settings = EvaluationSettings(parse_modes("box-all,box-shift:0.2"))
    result = evaluate_dataset(set_2d, settings, BackendSource("fake", backend=again), out)
    assert again.encodes == 1 and result.resumed == 2 and result.pictures == 3
    assert read_rows(out / "results.csv") == read_rows(tmp_path / "full" / "results.csv")


def test_other_settings_in_the_same_folder_need_restart(set_2d, tmp_path):
    run(set_2d, tmp_path, "box-all")
    with pytest.raises(SettingsChanged, match="modes"):
        run(set_2d, tmp_path, "box-largest")
    result, _ = run(set_2d, tmp_path, "box-largest", restart=True)
    assert {r["prompt"] for r in result.rows} == {"box-largest"} and result.resumed == 0


def test_worker_processes_give_the_same_rows(set_2d, tmp_path):
    """Two Dask workers (a LocalCluster), each building its backend once, give the serial run's rows."""
    modes = "box-all,point-largest,iterative:2,box-shift:0.2,point-offset:0.5"  # modes pickle by name
    one, _ = run(set_2d, tmp_path / "one", modes)
    factories = [functools.partial(make_fake, "shape")]  # one backend kind; a service replica set is one URL
    source = BackendSource("fake", factories, workers=2)
    try:
        two, _ = run(set_2d, tmp_path / "two", modes, source=source)
    finally:
        source.close()
    assert read_rows(tmp_path / "one" / "results.csv") == read_rows(tmp_path / "two" / "results.csv")
    assert two.model == "fake" and two.prompt_kinds == frozenset({"point", "box"})


def test_propagation_on_a_volume_reports_3d_metrics(set_3d, tmp_path):
    result, summary = run(set_3d, tmp_path, "box-all", report=True, propagate=True)
    methods = {r["method"]: r for r in result.volume_rows}
    assert set(methods) == {"propagate", "box-every-slice"}
    assert methods["box-every-slice"]["dice"] == 1.0 and methods["box-every-slice"]["boxes"] == 9
    assert methods["propagate"]["dice"] > 0.9 and methods["propagate"]["seed_slice"] == 6
    assert summary["volumes"]["propagate"]["classes"]["blob"]["n"] == 1
    assert {r["slice"] for r in result.rows} == {str(s) for s in range(2, 11)}
    assert "3D" in (tmp_path / "report.html").read_text()


def test_propagate_needs_a_3d_set(set_2d, tmp_path):
    with pytest.raises(ValueError, match="3D dataset"):
        run(set_2d, tmp_path, "box-all", propagate=True)


def test_cli_user_errors_end_in_one_message(set_2d, tmp_path, capsys):
    assert main(["evaluate", str(set_2d), "--prompt", "box-sideways", "--out", str(tmp_path)]) == 2
    assert "unknown prompt mode 'box-sideways'" in capsys.readouterr().err
    assert main(["evaluate", str(set_2d), "--propagate", "--out", str(tmp_path), "--backend", "nowhere"]) == 2


def test_the_first_version_api_still_works(set_2d):
    from samed.evaluation.prompt_modes import get_mode
    from samed.evaluation.runner import run_evaluation
    from samed.evaluation.tables import format_table, summarize

    result = run_evaluation(ShapeBackend(), str(set_2d), get_mode("box-all"))
    assert result.pictures == 3 and len(result.rows) == 6
    summary = summarize(result.rows, result.seconds, result.pictures, {"prompt": "box-all"})
    assert summary["mean"]["dice"] == 1.0 and summary["classes"]["disk"]["n"] == 3
    assert "mean (all tasks)" in format_table(summary)
