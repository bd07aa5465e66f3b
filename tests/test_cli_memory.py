"""Propagation memory does not grow with the slices walked beyond the masks themselves (one byte per pixel of each
slice reached): `samed segment --propagate` on a synthetic 512 x 512 int16 volume, walks of 21 and 81 slices, peak
RSS of the real process (the real model) from wait4. Before: +1.35 MB per slice (cached pictures, kept masks)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from samed.core import io
from samed.core.geometry import Volume

H = W = 512
MASK_MB_PER_SLICE = H * W / 2 ** 20  # one byte per pixel of each slice reached


@pytest.fixture(scope="module")
def cylinder(tmp_path_factory):
    """A bright tissue-like cylinder through 100 slices of noise: a walk follows it as far as it is allowed."""
    n = 100
    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[:n, :H, :W]
    vol = rng.normal(-1000, 20, (n, H, W)).astype(np.int16)
    r = 80 + 10 * np.sin(k / 40.0)
    vol[((j - 256) ** 2 + (i - 256) ** 2) < r ** 2] += 400
    path = tmp_path_factory.mktemp("memory") / "cylinder.nrrd"
    io.write_volume(Volume(vol, np.diag([0.8, 0.8, 1.0, 1.0]), {}), path)
    return path


def run_measured(args):
    pid = os.fork()
    if pid == 0:  # child: exec samed, so that wait4 gives exactly this process's peak RSS
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execv(sys.executable, [sys.executable, "-m", "samed.cli.main", *map(str, args)])
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024.0


def test_propagation_memory_grows_only_by_the_masks(cylinder, tmp_path):
    common = ["segment", cylinder, "--slice", "50", "--box", "166,166,346,346", "--propagate", "--engine", "onnx"]
    peaks = {}
    for steps in (10, 40):  # 21 and 81 slices
        out = tmp_path / f"o{steps}.seg.nrrd"
        rc, peaks[steps] = run_measured(common + ["--max-slices", steps, "--out", out])
        assert rc == 0
        per_slice = io.read_segmentation(out).segment_mask("Segment_1").any(axis=(1, 2))  # axial = numpy axis 0
        assert per_slice.sum() == 2 * steps + 1  # the walk did go the whole way
    growth = peaks[40] - peaks[10]
    print(f"peak RSS: 21 slices {peaks[10]:.0f} MB, 81 slices {peaks[40]:.0f} MB, +{growth / 60:.2f} MB per slice")
    # the 60 more masks (0.25 MB each, kept as the result and once in the output volume) and a little slack
    assert growth <= 2 * 60 * MASK_MB_PER_SLICE + 15, f"peak RSS grew {growth:.0f} MB for 60 more slices"
