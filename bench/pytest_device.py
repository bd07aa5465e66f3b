"""pytest plugin for bench/gpu_check.sh: ``pytest -p pytest_device --device cuda`` sets ``SAMED_TEST_DEVICE``,
which the engine tests read (tests/test_engine.py: the engines on that device against the CPU reference).
Load it with ``PYTHONPATH=bench``."""
from __future__ import annotations

import os


def pytest_addoption(parser):
    parser.addoption("--device", default=None, help="device for the engine tests: cpu (default), cuda or cuda:N")


def pytest_configure(config):
    device = config.getoption("--device")
    if device:
        os.environ["SAMED_TEST_DEVICE"] = device
