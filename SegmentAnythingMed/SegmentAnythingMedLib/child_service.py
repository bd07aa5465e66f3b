"""The "this computer" backend in Slicer: ``samed serve`` as a child process on 127.0.0.1, run with Slicer's own
Python, reached through the torch-free HTTP client.

Why a process: Slicer's main thread holds the GIL while idle (a model in a Python thread there crawls), and a
crash of the model (out of memory, a native library) must not take Slicer down. So torch, ONNX Runtime and
OpenVINO are imported only in the child.

- Started when first needed (from the worker thread: loading takes seconds), on a random free port with a random
  token (passed in the child's environment, never on its command line or on disk), its output in a log file in a
  private temporary folder.
- Reused while the settings stay the same; stopped when they change (``BackendProvider.update`` closes the
  backend), when Slicer quits (``slicer.app.aboutToQuit`` and ``atexit``), and by itself when Slicer is gone: it
  watches its stdin, a pipe whose other end only Slicer holds.
- When it dies, requests fail with an error that names it, says how it ended and shows the end of its log; the
  provider notices (``alive()``) and the next use starts a new one.

Python: ``PythonSlicer`` as SlicerTotalSegmentator finds it (``shutil.which("PythonSlicer")``, Slicer puts it on
PATH; ``slicer.util._executePythonModule`` does the same), else the one beside ``sys.executable``, else
``sys.executable`` itself (outside Slicer, e.g. in tests).

Run as a script (``python child_service.py --parent-stdin -- serve ...``) this file is the child's entry point:
it starts the stdin watch, then runs the ``samed`` command line. Nothing from Slicer is imported at module level.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional

if __name__ == "__main__":  # the child: this folder's modules must not shadow anything on sys.path
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from samed.client.http import HttpBackend  # noqa: E402 (torch-free)
from samed.core.backend import BackendError  # noqa: E402

SERVICE_NAME = "the model service on this computer ('samed serve' child process of Slicer)"
STARTUP_TIMEOUT = 600.0  # first start: Python packages imported, weights loaded (a minute on slow disks)
_EXIT_CODE_PARENT_GONE = 3


def python_executable() -> str:
    """Slicer's Python launcher (PythonSlicer), else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return beside if os.path.isfile(beside) else sys.executable


def _library_folder() -> str:
    """The folder that holds the ``samed`` package (PythonSlicer's sys.path does not include module folders)."""
    import samed

    return os.path.dirname(os.path.dirname(os.path.abspath(samed.__file__)))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"was killed by signal {-code} ({name})"
    if code == _EXIT_CODE_PARENT_GONE:
        return "stopped because it lost contact with Slicer"
    return f"exited with code {code}"


class ChildService:
    """One ``samed serve`` child process serving one model."""

    def __init__(self, model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
                 engine: Optional[str] = None, python: Optional[str] = None,
                 startup_timeout: float = STARTUP_TIMEOUT, options: Optional[List[str]] = None):
        """``options``: more ``samed serve`` options (the input settings: --input-resize, --resize-filter,
        --mask-threshold), checked by ``BackendSettings.validate``."""
        self.model = model
        self.options = list(options or [])
        self.checkpoint = checkpoint or None
        self.device = device or None
        self.engine = engine or None
        self.python = python or python_executable()
        self.startup_timeout = float(startup_timeout)
        self.token = secrets.token_urlsafe(32)
        self.url: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._folder: Optional[str] = None
        self._log = None
        self._lock = threading.Lock()

    # ---- start ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Optional[str]:
        return os.path.join(self._folder, "samed-serve.log") if self._folder else None

    def command(self, port: int) -> List[str]:
        cmd = [self.python, os.path.abspath(__file__), "--parent-stdin", "--", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--model", self.model]
        if self.checkpoint:
            cmd += ["--checkpoint", self.checkpoint]
        if self.device:
            cmd += ["--device", self.device]
        if self.engine:
            cmd += ["--engine", self.engine]
        return cmd + self.options + ["--no-access-log", "--log-level", "warning"]

    def _environment(self) -> Dict[str, str]:
        env = None
        if os.path.basename(self.python).startswith("PythonSlicer"):
            try:  # the environment Slicer started with (as slicer.util.launchConsoleProcess uses): PythonSlicer
                import slicer.util  # sets up the rest itself

                env = dict(slicer.util.startupEnvironment())
            except (ImportError, AttributeError, RuntimeError):
                env = None
        env = dict(os.environ) if env is None else env
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_library_folder(), env.get("PYTHONPATH", "")) if p)
        env["SAMED_TOKEN"] = self.token
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> str:
        """Start the process and wait until it answers; its URL. Raises :class:`ChildServiceError`."""
        with self._lock:
            if self.alive():
                return self.url
            self._cleanup()
            self._folder = tempfile.mkdtemp(prefix="samed-child-")  # mode 0700: this user only
            self._log = open(self.log_path, "wb")
            for _ in range(3):  # a port taken between choosing and binding it: choose another
                port = _free_loopback_port()
                self.url = f"http://127.0.0.1:{port}"
                self._log.seek(0)
                self._log.truncate()
                kwargs = {}
                if os.name == "nt":  # no console window (as slicer.util.launchConsoleProcess does)
                    kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
                self.proc = subprocess.Popen(self.command(port), stdin=subprocess.PIPE, stdout=self._log,
                                             stderr=subprocess.STDOUT, env=self._environment(), cwd=self._folder,
                                             **kwargs)
                _register(self)
                if self._wait_until_ready():
                    return self.url
            raise ChildServiceError(f"{SERVICE_NAME} found no free port on 127.0.0.1: {self.log_tail()}")

    def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through $HTTP_PROXY
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = self.log_tail()
                if "is in use" in tail:
                    return False
                raise ChildServiceError(f"{SERVICE_NAME} {_describe_exit(code)} while starting (Python: "
                                        f"{self.python}): {tail}")
            try:
                with direct.open(f"{self.url}/v1/health", timeout=2) as reply:
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ChildServiceError(f"{SERVICE_NAME} did not answer within {self.startup_timeout:.0f} s of "
                                        f"starting: {self.log_tail()}")
            time.sleep(0.2)

    # ---- state ---------------------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        path = self.log_path
        if not path or not os.path.isfile(path):
            return "(no log)"
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            text = f.read().decode("utf-8", "replace").strip().splitlines()[-lines:]
        return ("its last output:\n" + "\n".join(text)) if text else "(it wrote nothing)"

    def explain_failure(self) -> Optional[str]:
        """Why requests fail, when it is because the process ended (None while it runs)."""
        if self.proc is None:
            return f"{SERVICE_NAME} is not running: choose 'Use these settings' or try again to start it"
        try:
            code = self.proc.wait(1.0)  # a killed process closes its sockets a moment before it can be reaped
        except subprocess.TimeoutExpired:
            return None
        return (f"{SERVICE_NAME}, pid {self.proc.pid}, {_describe_exit(code)}; the next request starts it again "
                f"(the model is loaded again, which takes a few seconds). Log {self.log_path}: {self.log_tail(6)}")

    # ---- stop ----------------------------------------------------------------------------------------------
    def stop(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Terminate the process (killed after ``timeout``); with ``wait=False`` a thread waits for it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.stdin.close()  # the child's watch ends it even if the signal is lost
            except OSError:
                pass
            proc.terminate()
        if wait:
            self._reap(proc, timeout)
        else:
            threading.Thread(target=self._reap, args=(proc, timeout), daemon=True,
                             name="samed serve child stop").start()

    def _reap(self, proc, timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        _unregister(self)
        if proc is self.proc:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._folder is not None and (self.proc is None or self.proc.poll() is not None):
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    # ---- the backend ---------------------------------------------------------------------------------------
    def backend(self, timeout: float = 600.0):
        """Start (if needed) and connect: a :class:`ChildServiceBackend`."""
        self.start()
        return ChildServiceBackend(self, timeout)


class ChildServiceError(BackendError):
    """The child service could not start (the message says why and shows its output)."""


class ChildServiceBackend(HttpBackend):
    """The client of a :class:`ChildService`; ``close()`` stops the process, ``alive()`` says whether it runs."""

    def __init__(self, service: ChildService, timeout: float = 600.0):
        self.service = service
        try:
            super().__init__(service.url, model=service.model, token=service.token, timeout=timeout,
                             compress=False, explain_failure=service.explain_failure)
        except Exception:
            service.stop(wait=False)
            raise

    def alive(self) -> bool:
        return self.service.alive()

    def info(self) -> Dict[str, object]:
        info = super().info()
        info["where"] = f"this computer (child process {self.service.pid}, {self.service.python})"
        return info

    def close(self) -> None:
        super().close()
        self.service.stop(wait=False)


def start_backend(model: str = "litemedsam", checkpoint: Optional[str] = None, device: Optional[str] = None,
                  timeout: float = 600.0, options: Optional[List[str]] = None) -> ChildServiceBackend:
    """The "this computer" backend: a new child service for the model, connected (``options``: more ``samed
    serve`` options, as :class:`ChildService`)."""
    return ChildService(model, checkpoint, device, options=options).backend(timeout)

# ---- every running child, stopped when Slicer quits ----------------------------------------------------------
_running: "set[ChildService]" = set()
_running_lock = threading.Lock()
_atexit_installed = False
_hooked_apps: list = []  # the slicer.app objects whose aboutToQuit() stops the children (one in Slicer)


def _register(service: ChildService) -> None:
    global _atexit_installed
    with _running_lock:
        _running.add(service)
        install_atexit = not _atexit_installed
        _atexit_installed = True
    if install_atexit:
        atexit.register(stop_all)
    try:  # in Slicer: stop the children before the application goes (atexit may come too late there)
        import slicer

        app = slicer.app
    except (ImportError, AttributeError):
        return
    if app is not None and not any(a is app for a in _hooked_apps):
        app.connect("aboutToQuit()", stop_all)
        _hooked_apps.append(app)


def _unregister(service: ChildService) -> None:
    with _running_lock:
        _running.discard(service)


def running() -> List[ChildService]:
    with _running_lock:
        return [s for s in _running if s.alive()]


def stop_all() -> None:
    with _running_lock:
        services = list(_running)
    for service in services:
        service.stop(wait=True, timeout=5.0)


# ---- the child's side ----------------------------------------------------------------------------------------
def _watch_parent_stdin() -> None:
    """End this process when stdin reaches its end: Slicer closed the pipe or is gone."""
    fd = sys.stdin.fileno()

    def watch():  # os.read, not sys.stdin: a daemon thread in a buffered read aborts the interpreter's exit
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        os._exit(_EXIT_CODE_PARENT_GONE)

    threading.Thread(target=watch, daemon=True, name="parent watch").start()


def _child_main(argv: List[str]) -> int:
    if argv[:1] == ["--parent-stdin"]:
        _watch_parent_stdin()
        argv = argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    from samed.cli.main import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
