"""The effect's parameters (kept on the segment editor node as text, as every Segment Editor effect does) <->
session options, and the choices the options widgets offer."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List, Tuple

from samed.core.propagation import PropagationSettings

from .session_types import SessionOptions

DEFAULTS: Dict[str, str] = {
    "IntensityMode": "auto",
    "Window": "400",
    "Level": "40",
    "ApplyMode": "add",
    "RangeMode": "roi",
    "RangeFirst": "0",
    "RangeLast": "0",
    "BoxMarginPx": "3",
    "MarkupsAllSlices": "0",
}

INTENSITY_CHOICES: List[Tuple[str, str]] = [
    ("auto", "Automatic (CT window for CT, percentiles otherwise)"),
    ("display", "As displayed (the volume's window/level)"),
    ("ct", "CT window [-500, 1000] HU"),
    ("percentile", "Percentiles 0.5-99.5 (MR, US, ...)"),
    ("minmax", "Minimum-maximum"),
    ("window", "Window/level below"),
    ("none", "8-bit values as they are"),
]
APPLY_CHOICES: List[Tuple[str, str]] = [
    ("add", "Add to the segment"),
    ("replace", "Replace the segment on previewed slices"),
]
RANGE_CHOICES: List[Tuple[str, str]] = [
    ("roi", "Within the ROI's extent"),
    ("set", "Within the slice range below"),
    ("volume", "Whole volume"),
]


def _number(params: Dict[str, str], name: str, cast: Callable = float):
    text = params.get(name) or DEFAULTS[name]
    try:
        return cast(float(text))
    except ValueError as exc:
        raise ValueError(f"effect parameter {name} is {text!r}, not a number") from exc


def options_from_parameters(params: Dict[str, str], base: SessionOptions = None) -> SessionOptions:
    """Session options from the effect's text parameters (missing ones take their defaults)."""
    base = base or SessionOptions()

    def choice(name, allowed):
        value = params.get(name) or DEFAULTS[name]
        if value not in allowed:
            raise ValueError(f"effect parameter {name} is {value!r}: use one of {', '.join(allowed)}")
        return value

    first, last = _number(params, "RangeFirst", int), _number(params, "RangeLast", int)
    propagation = replace(base.propagation or PropagationSettings(), box_margin_px=_number(params, "BoxMarginPx"))
    return replace(base,
                   intensity_mode=choice("IntensityMode", [k for k, _ in INTENSITY_CHOICES]),
                   window=_number(params, "Window"), level=_number(params, "Level"),
                   apply_mode=choice("ApplyMode", [k for k, _ in APPLY_CHOICES]),
                   range_mode=choice("RangeMode", [k for k, _ in RANGE_CHOICES]),
                   set_range=(min(first, last), max(first, last)),
                   propagation=propagation)


def read_parameters(get: Callable[[str], str]) -> Dict[str, str]:
    """All parameters through ``get(name)`` (e.g. ``scriptedEffect.parameter``); empty text means the default."""
    return {name: (get(name) or default) for name, default in DEFAULTS.items()}
