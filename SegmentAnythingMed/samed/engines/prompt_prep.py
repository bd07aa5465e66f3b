"""What every SAM-family engine does to a prompt before its decoder runs (torch-free)."""
from __future__ import annotations

from typing import FrozenSet, Optional, Tuple

import numpy as np

from ..core.backend import check_prompt_kinds
from ..core.prompts import Prompt


def prepare_prompt(model: str, kinds: FrozenSet[str], prompt: Prompt, original_size,
                   multimask: Optional[bool]) -> Tuple[Prompt, Optional[np.ndarray], Optional[np.ndarray], bool]:
    """Validate ``prompt`` for a slice of ``original_size`` and a model taking ``kinds``; clip its box to the slice.

    Returns (prompt, point coords, point labels, multimask). ``multimask`` None follows SAM's advice: three
    candidates for one lone (ambiguous) point, one mask otherwise.
    """
    prompt.validate(original_size)
    check_prompt_kinds(model, kinds, prompt)
    prompt = prompt.clipped(original_size)
    coords, labels = prompt.sam_points()
    if multimask is None:
        multimask = prompt.box_xy is None and coords is not None and len(coords) == 1
    return prompt, coords, labels, bool(multimask)
