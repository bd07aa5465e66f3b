"""The service dies under a client (kill -9 of the real ``samed serve`` process): mid-propagation job and
mid-encode the torch-free client raises an error that says the service stopped and what was lost, and
``samed segment --backend URL`` exits with that message and writes nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from conftest import ROOT, ServiceProcess

from samed.client import HttpBackend
from samed.core.backend import BackendError
from samed.core.propagation import PropagationSettings

# rules that never stop the walk by themselves: the job runs through the whole volume (tens of encodes)
PATIENT = PropagationSettings(min_area_px=1, min_area_ratio=0.0, max_area_ratio=1e9, min_overlap=0.0,
                              min_score=-1.0, max_intensity_shift=0.0)


@pytest.fixture
def doomed():
    env = {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}
    service = ServiceProcess("--log-level", "warning", "--no-access-log", env=env)
    yield service
    service.stop()


def kill_9(service) -> None:
    os.kill(service.proc.pid, signal.SIGKILL)
    service.proc.wait(30)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def active_jobs(service) -> int:
    try:
        with urllib.request.urlopen(service.url + "/v1/info", timeout=5) as r:
            return json.load(r)["jobs"]["active"]
    except OSError:
        return -1


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_kill_9_mid_propagation_job(doomed, brain):
    pictures, label = brain
    client = HttpBackend(doomed.url)
    job = client.start_propagation(pictures, 11, label[11], PATIENT)
    wait_for(lambda: job.progress().done >= 1, 120, "the job to start walking")
    kill_9(doomed)
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        job.result(timeout=60)
    message = str(err.value)
    assert time.monotonic() - started < 30
    assert doomed.url in message and job.id in message, message
    assert "stopped" in message and "lost" in message, message
    assert "are the host and port right" not in message  # it answered a moment ago: the address is right
    client.close()


def test_kill_9_mid_encode(doomed, brain):
    """An 8192 x 8192 RGB picture (200 MB up, then a resize): killed while the request is in flight."""
    client = HttpBackend(doomed.url, timeout=120)
    client.info()  # a kept-alive connection, as a client that has been working has
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (8192, 8192, 3), dtype=np.uint8)
    errors = []

    def encode():
        try:
            client.encode(picture)
        except BackendError as exc:
            errors.append(exc)

    pid = doomed.proc.pid
    before = rss_mb(pid)
    worker = threading.Thread(target=encode)
    worker.start()
    wait_for(lambda: rss_mb(pid) > before + 100 or not worker.is_alive(), 120, "the upload to arrive")
    kill_9(doomed)  # while the server holds the picture: mid-upload or mid-encode
    worker.join(60)
    assert not worker.is_alive()
    assert len(errors) == 1, "the encode did not fail although the service was killed during it"
    message = str(errors[0])
    assert doomed.url in message and "stopped" in message, message
    assert "POST /v1/models/litemedsam/embeddings" in message, message


def test_kill_9_under_samed_segment_writes_nothing(doomed, shared_data, tmp_path):
    out = tmp_path / "tumour.seg.nrrd"
    env = {k: v for k, v in os.environ.items() if k != "SAMED_TOKEN"}
    env["PYTHONPATH"] = str(ROOT / "SegmentAnythingMed")
    cli = subprocess.Popen(
        [sys.executable, "-m", "samed.cli.main", "segment", str(shared_data / "volumes" / "mr-brain-tumor" /
                                                                 "image.nrrd"),
         "--slice", "14", "--box", "95,95,165,165", "--propagate", "--min-area-ratio", "0", "--max-area-ratio",
         "1e9", "--min-score", "-1", "--out", str(out), "--backend", doomed.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        wait_for(lambda: active_jobs(doomed) >= 1 or cli.poll() is not None, 120, "the CLI's propagation job")
        assert cli.poll() is None, cli.communicate()
        kill_9(doomed)
        stdout, stderr = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode not in (0, None), (cli.returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert doomed.url in stderr and "stopped" in stderr, stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "the CLI left files behind"
