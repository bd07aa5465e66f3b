"""Simulated prompts: how an evaluation turns a reference mask into the prompts a user would give.

A prompt mode maps one binary reference mask (one class on one image or slice) to a list of prompts; the
predictions for those prompts are united into one mask. Modes are registered by name in ``PROMPT_MODES``.
"""
from __future__ import annotations

from typing import Callable, Dict, FrozenSet, List

import numpy as np

from ..core.prompts import BOX, Prompt, box_from_mask


class PromptMode:
    def __init__(self, name: str, needs: FrozenSet[str], make: Callable[[np.ndarray], List[Prompt]], help: str):
        self.name = name
        self.needs = needs  # prompt kinds a model must take for this mode
        self.make = make
        self.help = help

    def prompts(self, reference: np.ndarray) -> List[Prompt]:
        return self.make(np.asarray(reference).astype(bool))

    def supported_by(self, kinds: FrozenSet[str]) -> bool:
        return self.needs <= kinds


def _box_all(mask: np.ndarray) -> List[Prompt]:
    box = box_from_mask(mask)
    return [] if box is None else [Prompt(box_xy=box)]


PROMPT_MODES: Dict[str, PromptMode] = {
    "box-all": PromptMode("box-all", frozenset({BOX}), _box_all, "one box around the whole class mask"),
}


def get_mode(name: str) -> PromptMode:
    try:
        return PROMPT_MODES[name]
    except KeyError:
        raise ValueError(f"unknown prompt mode {name!r}: choose one of {', '.join(PROMPT_MODES)}") from None
