"""`samed evaluate` on Dask with the real LiteMedSAM: `--workers 2` (a LocalCluster of 2 processes) and
`--scheduler ADDRESS` (a cluster started here, as a department's would be) give the rows of a serial run; an
interrupted Dask run resumes (the rows stream back and are flushed per picture)."""
from __future__ import annotations

import csv

import pytest

from dataset_copies import copy_us_pictures
from samed.cli.main import main

pytest.importorskip("distributed")

FIELDS_EXACT = ("dataset", "image", "slice", "class_id", "class_name", "prompt", "selection", "clicks", "status",
                "ref_pixels", "image_pixels")


@pytest.fixture(scope="module")
def us4(shared_data, tmp_path_factory):
    """Four ultrasound pictures of the shared set (copied: the user's data stays untouched)."""
    return copy_us_pictures(shared_data, tmp_path_factory.mktemp("dask") / "us4", 4)


def rows(folder):
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def evaluate(dataset, out, *extra):
    args = ["evaluate", str(dataset), "--prompt", "box-all,box-shift:0.1", "--out", str(out), "--no-report",
            "--bootstrap", "0", "--engine", "torch", "--device", "cpu", *extra]
    assert main(args) == 0


def same_rows(a, b):
    assert len(a) == len(b) > 0
    assert all(r["status"] == "ok" for r in a)
    for x, y in zip(a, b):
        assert {k: x[k] for k in FIELDS_EXACT} == {k: y[k] for k in FIELDS_EXACT}
        # another thread count may change a float's last bits, never a mask by more than a pixel or two
        for k in ("dice", "iou", "score"):
            assert float(x[k]) == pytest.approx(float(y[k]), abs=2e-3), (k, x, y)
        assert abs(int(x["pred_pixels"]) - int(y["pred_pixels"])) <= 2, (x, y)


def test_local_cluster_and_a_scheduler_give_the_rows_of_a_serial_run(us4, tmp_path, capsys):
    from distributed import LocalCluster

    evaluate(us4, tmp_path / "serial")
    evaluate(us4, tmp_path / "workers", "--workers", "2")
    serial = rows(tmp_path / "serial")
    same_rows(serial, rows(tmp_path / "workers"))
    exact = sum(r == s for r, s in zip(rows(tmp_path / "workers"), serial))
    print(f"rows identical to the serial run: {exact}/{len(serial)}")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        evaluate(us4, tmp_path / "cluster", "--scheduler", cluster.scheduler_address)
        # resume on the cluster: drop two finished pictures from the folder's record, run again
        finished = tmp_path / "cluster" / "finished.txt"
        keys = [k for k in finished.read_text().splitlines() if k]
        assert len(keys) == 4
        capsys.readouterr()
        evaluate(us4, tmp_path / "cluster", "--scheduler", cluster.scheduler_address)
        assert "(4 finished before, resumed)" in capsys.readouterr().out
    same_rows(serial, rows(tmp_path / "cluster"))


def test_several_backends_and_a_bad_scheduler_are_one_clear_error(us4, tmp_path, capsys):
    assert main(["evaluate", str(us4), "--out", str(tmp_path / "a"), "--backend", "http://127.0.0.1:1",
                 "--backend", "http://127.0.0.1:2"]) == 2
    assert "consistent-hash proxy" in capsys.readouterr().err
    assert main(["evaluate", str(us4), "--out", str(tmp_path / "b"), "--scheduler", "127.0.0.1:8786"]) == 2
    assert "tcp://HOST:8786" in capsys.readouterr().err
