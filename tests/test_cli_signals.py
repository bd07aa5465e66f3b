"""Ctrl-C (SIGINT) and SIGTERM of a running `samed` (a real process in its own process group, signalled as a shell
signals a job): it stops promptly with 130 / 143, the inputs are intact, an output is absent or whole, and an
interrupted `samed evaluate` keeps its rows and resumes."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataset_copies import copy_us_pictures
from samed.core import io


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(*args, cwd=None, sigint_ignored=False):
    """``sigint_ignored``: started as a non-interactive shell starts `samed ... &` (SIGINT ignored, inherited)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "samed.cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, start_new_session=True,
                            preexec_fn=_ignore_sigint if sigint_ignored else None)


def wait_for(condition, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"samed ended ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def stop_within(proc, seconds: float):
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"samed still running {seconds} s after the signal: {err[-2000:]}")
    return proc.returncode, out, err


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def small_dataset(shared_data, tmp_path):
    """Eight ultrasound pictures of the shared set, copied (the user's data: must stay untouched)."""
    return copy_us_pictures(shared_data, tmp_path / "us8", 8)


@pytest.mark.parametrize("sig, code, workers, sigint_ignored", [
    (signal.SIGINT, 130, 1, False), (signal.SIGINT, 130, 1, True), (signal.SIGINT, 130, 2, False),
    (signal.SIGTERM, 143, 2, False)])
def test_evaluate_stops_on_a_signal_keeps_its_rows_and_resumes(small_dataset, tmp_path, sig, code, workers,
                                                               sigint_ignored):
    before = tree_digest(small_dataset)
    out = tmp_path / "ev"
    args = ["evaluate", small_dataset, "--prompt", "box-all", "--out", out, "--no-report", "--bootstrap", "0"]
    proc = start(*args, "--workers", workers, sigint_ignored=sigint_ignored)
    finished = out / "finished.txt"
    wait_for(lambda: finished.is_file() and finished.read_text().count("\n") >= 1, 300, "the first picture", proc)
    os.killpg(proc.pid, sig)  # the whole job, as a terminal's Ctrl-C or `kill -TERM -PGID` does
    rc, _, err = stop_within(proc, 20)
    assert rc == code, err
    assert "Traceback" not in err, err
    done = [k for k in finished.read_text().splitlines() if k]
    assert 1 <= len(done) < 8
    rows = (out / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == len(done)  # one class per picture: a row per finished picture, none half-written
    assert tree_digest(small_dataset) == before
    # the same command again resumes and finishes the rest
    r = subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr
    assert f"({len(done)} finished before, resumed)" in r.stdout
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 8


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_segment_stops_on_a_signal_mid_propagation_inputs_intact_no_partial_output(ctchest, tmp_path, sig, code):
    ct, _ = ctchest
    image = tmp_path / "ct.nrrd"
    shutil.copy(ct, image)
    before = digest(image)
    out = tmp_path / "res" / "lung.seg.nrrd"
    proc = start("segment", image, "--slice", "20", "--box", "55,36,106,98", "--propagate", "--out", out)
    line = proc.stdout.readline()  # "slice 20: ... px": the model ran, propagation starts
    assert line.startswith("slice 20"), (line, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(1.0)
    os.killpg(proc.pid, sig)
    rc, _, err = stop_within(proc, 20)
    assert rc == code, err
    assert "Traceback" not in err, err
    assert digest(image) == before
    if out.exists():  # finished just before the signal: then it is whole
        assert io.read_segmentation(out).segment_mask("Segment_1").any()
    leftovers = [p.name for p in out.parent.iterdir() if p != out] if out.parent.exists() else []
    assert leftovers == []
