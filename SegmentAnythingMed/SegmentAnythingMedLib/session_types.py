"""The effect's working state: options, the prompt being built on one slice, a slice's candidate masks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from samed.core.preprocess import MODES as INTENSITY_MODES
from samed.core.prompts import Prediction, Prompt
from samed.core.propagation import PropagationSettings

from .volume_bridge import ViewSlice

SESSION_INTENSITY_MODES = tuple(INTENSITY_MODES) + ("display",)  # display = the volume's window/level in Slicer
RANGE_MODES = ("roi", "set", "volume")


@dataclass
class SessionOptions:
    intensity_mode: str = "auto"
    window: Optional[float] = None  # for intensity_mode "window"
    level: Optional[float] = None
    apply_mode: str = "add"  # add / replace (see segment_writer)
    range_mode: str = "roi"  # roi / set / volume
    set_range: Optional[Tuple[int, int]] = None  # inclusive slice indices, for range_mode "set"
    multimask: Optional[bool] = None  # None = the model's choice
    propagation: PropagationSettings = field(default_factory=PropagationSettings)


@dataclass
class SlicePrompt:
    view: ViewSlice
    include_xy: List[Tuple[float, float]] = field(default_factory=list)
    exclude_xy: List[Tuple[float, float]] = field(default_factory=list)
    box_xy: Optional[np.ndarray] = None

    def prompt(self) -> Prompt:
        return Prompt(self.include_xy, self.exclude_xy, self.box_xy)


@dataclass
class Candidates:
    index: int
    prediction: Prediction
    chosen: int = 0

    @property
    def mask(self) -> np.ndarray:
        return self.prediction.masks[self.chosen]

    def describe(self) -> str:
        n = len(self.prediction.scores)
        score = float(self.prediction.scores[self.chosen])
        return f"candidate {self.chosen + 1} of {n}, score {score:.2f}"
