"""Running a prompt mode against an encoded picture: candidate choice and the united mask of one class.

Candidate masks (SAM returns three for an ambiguous prompt):

- default (``selection="score"``): the model's own choice of how many candidates to return (three for a lone
  point, one otherwise, as segment-anything advises and as LiteMedSAM/MedSAM were trained for boxes), and the
  one with the highest predicted IoU. The study's text says it takes the highest-confidence mask; its public
  code takes the decoder's first output of three (``multimask_output=True``), which is not the same thing.
- ``selection="oracle"``: three candidates are always asked for and the one with the highest IoU with the
  reference is kept (the study's oracle). The reference a prompt is compared with is the whole class mask,
  except in ``box-per-region``, where each box is compared with its own region.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..core import metrics
from ..core.backend import Backend, EmbeddingHandle
from ..core.prompts import Prediction, Prompt
from .prompt_modes import PromptMode

SCORE, ORACLE = "score", "oracle"
SELECTIONS = (SCORE, ORACLE)


@dataclass
class Outcome:
    """What one mode produced for one class: the united mask, its score and the prompts behind it."""

    mode: str  # the row's prompt name (iterative: "iterative:<clicks>")
    mask: np.ndarray
    score: float
    prompts: List[Prompt] = field(default_factory=list)
    clicks: int = 0  # points or boxes given


def multimask_for(selection: str) -> Optional[bool]:
    if selection not in SELECTIONS:
        raise ValueError(f"unknown candidate selection {selection!r}: use one of {', '.join(SELECTIONS)}")
    return True if selection == ORACLE else None


def choose(prediction: Prediction, aim: np.ndarray, selection: str) -> Tuple[np.ndarray, float]:
    """(mask, predicted-IoU score) of the chosen candidate (see the module docstring)."""
    if selection == ORACLE and len(prediction.masks) > 1:
        ious = [metrics.iou(m, aim) for m in prediction.masks]
        k = int(np.argmax(ious))  # ties: the first, i.e. the higher-scoring candidate (masks are sorted)
    else:
        k = int(np.argmax(prediction.scores))
    return prediction.masks[k], float(prediction.scores[k])


def run_single(backend: Backend, handle: EmbeddingHandle, mode: PromptMode, reference: np.ndarray,
               rng: np.random.Generator, selection: str = SCORE) -> Optional[Outcome]:
    """A non-iterative mode on one class: every prompt decoded, chosen candidates united. None if the mode
    makes no prompt (an empty reference)."""
    ref = np.asarray(reference).astype(bool)
    aimed = mode.aimed(ref, rng)
    if not aimed:
        return None
    multimask = multimask_for(selection)
    united = np.zeros(ref.shape, bool)
    scores = []
    for a in aimed:
        mask, score = choose(backend.decode(handle, a.prompt, multimask), a.aim, selection)
        united |= mask
        scores.append(score)
    clicks = sum(len(a.prompt.include_points_xy) + len(a.prompt.exclude_points_xy)
                 + (a.prompt.box_xy is not None) for a in aimed)
    return Outcome(mode.name, united, float(np.mean(scores)), [a.prompt for a in aimed], clicks)
