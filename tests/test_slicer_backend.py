"""The module panel's backend section and what sits under it: installing dependencies (defect 7), settings
changes while a model loads (defect 8), "Test connection" after rejected settings (defect 9), the service token
kept out of Slicer's settings file, the worker's event queue (orphaned events), and what Slicer imports at start-up.

Real things: Slicer's own ``slicer.util.pip_install`` (from slicer-core) running a real pip that fails, the real
``samed serve`` child process loading the real LiteMedSAM weights, a fresh interpreter for the import checks.
"""
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import slicer_fakes
from slicer_scenes import ThresholdBackend, provider, slicer_env  # noqa: F401

from SegmentAnythingMedLib import backend_settings
from SegmentAnythingMedLib.backend_settings import SETTINGS_PREFIX, BackendProvider, BackendSettings
from SegmentAnythingMedLib.worker import DONE, PROGRESS, InferenceWorker

ROOT = Path(__file__).resolve().parents[1]


def _widget():
    import SegmentAnythingMed as module

    qt = slicer_fakes.install()
    qt.QSettings.store.clear()
    widget = module.SegmentAnythingMedWidget()
    widget.setup()
    return qt, widget


# ---- defect 7: pip / PyTorchUtils raise CalledProcessError -----------------------------------------------------

def test_a_failing_pip_install_is_reported_not_raised(slicer_env, provider, tmp_path, monkeypatch):
    """slicer.util.pip_install (the real one, slicer-core) runs ``PythonSlicer -m pip`` and raises
    subprocess.CalledProcessError when pip fails (Slicer Base/Python/slicer/util.py, logProcessOutput)."""
    qt, widget = _widget()
    shim = tmp_path / "PythonSlicer"  # what Slicer puts on PATH: a launcher of Slicer's Python
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip then fails at once, offline, without asking any index
    monkeypatch.setitem(backend_settings.ENGINE_PACKAGES, "samed_absent_module", "samed-absent-package")
    widget.logic.missingPackages = lambda: ["samed_absent_module"]
    qt.QMessageBox.answer = qt.QMessageBox.Yes
    widget.onInstall()  # today: CalledProcessError escapes into Slicer's event loop
    text = widget.backendLabel.text
    assert text.startswith("Installation failed") and "pip" in text and "samed-absent-package" in text, text
    assert "exit code 1" in text and "Python console" in text


def test_a_failing_pytorch_install_is_reported(slicer_env, provider, monkeypatch):
    """PyTorchUtils.PyTorchUtilsLogic.installTorch calls slicer.util.pip_install too (SlicerPyTorch
    PyTorchUtils/PyTorchUtils.py): its CalledProcessError must become a message as well."""
    import types

    qt, widget = _widget()

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, **kwargs):
            raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install", "torch"])

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    widget.logic.missingPackages = lambda: ["torch"]
    qt.QMessageBox.answer = qt.QMessageBox.Yes
    widget.onInstall()
    assert widget.backendLabel.text.startswith("Installation failed") and "PyTorch" in widget.backendLabel.text


# ---- defect 9: Test connection after rejected settings ---------------------------------------------------------

def test_test_connection_stops_when_the_settings_are_rejected(slicer_env, provider):
    qt, widget = _widget()
    before = provider.settings
    widget.whereCombo.currentIndex = 1
    widget.urlEdit.setText("gpu-server:8000")  # no scheme: rejected
    widget.testButton.click()
    assert "neither 'local' nor a service URL" in widget.backendLabel.text
    assert widget.connectionJob is None and not widget.pollTimer.isActive()
    assert not widget.logic.worker.busy()  # nothing tested: today the previous backend is tested instead
    assert provider.settings == before


# ---- the token stays out of Slicer's settings file ------------------------------------------------------------

def test_the_service_token_is_never_written_to_slicer_settings(slicer_env, provider, tmp_path):
    qt, widget = _widget()
    qt.QSettings.store[SETTINGS_PREFIX + "token"] = "old-plain-text-token"  # written by an earlier version
    widget.logic.restoreSettings(qt.QSettings().value, qt.QSettings().remove)
    assert SETTINGS_PREFIX + "token" not in qt.QSettings.store  # the old plain-text copy is removed
    widget.whereCombo.currentIndex = 1
    widget.urlEdit.setText("http://gpu-server:8000")
    widget.tokenEdit.setText("typed-secret-0123456789")
    widget.useButton.click()
    assert provider.settings.token == "typed-secret-0123456789"  # used in this session
    assert not any("typed-secret" in str(v) for v in qt.QSettings.store.values()), qt.QSettings.store
    token_file = tmp_path / "token.txt"
    token_file.write_text("file-secret-0123456789\n")
    widget.tokenEdit.setText("")
    widget.tokenFileEdit.setText(str(token_file))
    widget.useButton.click()
    assert qt.QSettings.store[SETTINGS_PREFIX + "token_file"] == str(token_file)  # the path, not the secret
    assert not any("file-secret" in str(v) for v in qt.QSettings.store.values())
    assert provider.settings.resolved_token() == "file-secret-0123456789"
    restored = widget.logic.restoreSettings(qt.QSettings().value)
    assert restored.token == "" and restored.resolved_token() == "file-secret-0123456789"
    widget.tokenFileEdit.setText(str(tmp_path / "missing.txt"))
    widget.useButton.click()
    assert "token file" in widget.backendLabel.text and "missing.txt" in widget.backendLabel.text


# ---- defect 8: no GUI freeze while a model loads --------------------------------------------------------------

def test_settings_change_and_test_connection_return_while_a_model_loads(slicer_env, monkeypatch):
    """The worker thread loads the "this computer" backend (seconds); the GUI thread changes the settings and
    presses Test connection meanwhile: both return at once, and the load ends with the new settings."""
    import SegmentAnythingMed as module

    monkeypatch.setenv("SAMED_ENGINE", "torch")
    slicer_fakes.install()
    p = BackendProvider(BackendSettings(device="cpu"))
    worker = InferenceWorker()
    logic = module.SegmentAnythingMedLogic(provider=p, worker=worker)
    try:
        loading = worker.submit(lambda ctx: p.get(), label="load")
        time.sleep(1.0)  # the load is under way (a model load takes seconds)
        assert worker.busy()
        t0 = time.monotonic()
        logic.useSettings(BackendSettings(device=""))  # "Use these settings" (today: waits for the whole load)
        job = logic.startConnectionTest()  # "Test connection"
        elapsed = time.monotonic() - t0
        assert elapsed < 0.5, f"the GUI thread waited {elapsed:.1f} s for a model load"
        events = worker.wait(loading, 300) + worker.wait(job, 300)
        done = [e for e in events if e.kind == DONE]
        assert len(done) == 2, [(e.kind, e.error) for e in events]
        assert p.settings == BackendSettings(device="")
        assert "litemedsam" in module.SegmentAnythingMedLogic.connectionText(done[-1])
    finally:
        p.close()
        worker.shutdown()


# ---- orphaned worker events ------------------------------------------------------------------------------------

def test_events_nobody_collects_do_not_pile_up():
    clock = [0.0]
    worker = InferenceWorker(clock=lambda: clock[0])
    try:
        def chatty(ctx):
            for i in range(1000):
                ctx.progress(i, 1000)
            return "result"

        orphan = worker.submit(chatty, label="orphan")  # e.g. a session that was cancelled and dropped
        mine = worker.submit(lambda ctx: 42, label="mine")
        events = worker.wait(mine, 30)
        assert [e.value for e in events if e.kind == DONE] == [42]
        worker.poll([mine])
        # only the newest progress of a job is kept
        assert sum(1 for e in worker._undelivered if e.job_id == orphan and e.kind == PROGRESS) <= 1
        clock[0] += worker.keep_seconds + 1
        worker.poll([mine])  # another caller polls its own jobs: the stale events of others go
        assert worker._undelivered == []
    finally:
        worker.shutdown()


def test_events_are_kept_for_their_owner_until_then():
    clock = [0.0]
    worker = InferenceWorker(clock=lambda: clock[0])
    try:
        job = worker.submit(lambda ctx: "late", label="slow owner")
        other = worker.submit(lambda ctx: 1)
        worker.wait(other, 30)
        clock[0] += worker.keep_seconds / 2
        assert [e.value for e in worker.poll([job]) if e.kind == DONE] == ["late"]
    finally:
        worker.shutdown()


# ---- what Slicer imports at start-up ---------------------------------------------------------------------------

def test_the_backend_layer_imports_neither_scipy_nor_a_model_runtime():
    """Slicer imports the module logic at every start (registerEditorEffect): scipy (~250 ms) must wait until an
    evaluation needs it, and torch / ONNX Runtime / OpenVINO never come into Slicer's process."""
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT / 'SegmentAnythingMed')!r}]
        import slicer_fakes
        slicer_fakes.install()
        slicer_fakes.SlicerTestEnvironment().publish()
        import SegmentAnythingMedLib.module_logic, SegmentAnythingMedLib.backend_settings
        import SegmentAnythingMedLib.child_service, SegmentAnythingMedLib.worker, SegmentAnythingMedLib.session
        import SegmentAnythingMed  # the module file Slicer imports at every start (self-test scenario included)
        from SegmentAnythingMedLib.module_logic import ModuleLogic
        ModuleLogic().restoreSettings(lambda key, default: default)
        print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'scipy', 'torch', 'onnxruntime', 'openvino'}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
