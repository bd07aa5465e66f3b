"""Iterative prompting, Algorithm 1 of the seed study (Mazurowski et al. 2023), with any point-taking backend.

1. The first click is mode 1's point: the pixel of the largest region farthest from its boundary.
2. After each prediction, the error region is prediction XOR reference. The next click is the pixel of the
   error region farthest from the error region's boundary (``regions.correction_point``: padded, so the
   picture's border counts as boundary; ties at random, seeded): an include point if it lies in the missed
   part, an exclude point if it lies in the false-positive part.
3. Every click so far is sent in one prompt; the result after each click is recorded, for 1..N clicks.

Decisions (documented in docs/evaluation.md):

- The previous prediction is not passed back as a mask prompt, as in the study's code (SAM's own training
  loop does feed back its low-resolution logits; the study did not).
- When a prediction equals the reference there is no error region and nothing left to click: the walk stops
  and the remaining click counts repeat the last result (a user stops clicking at a perfect mask). The
  study's code would click an arbitrary pixel then.
- Candidates are chosen as everywhere (``simulate.choose``): highest score, or the oracle against the
  reference. The study's first click is the distance-transform maximum over the whole class mask; here, as
  the protocol states, over the largest region (the same pixel unless a thinner region is the larger one).
"""
from __future__ import annotations

from typing import List

import numpy as np

from ..core.backend import Backend, EmbeddingHandle
from ..core.prompts import Prompt
from . import regions as rg
from .simulate import SCORE, Outcome, choose, multimask_for


def run_iterative(backend: Backend, handle: EmbeddingHandle, reference: np.ndarray, max_clicks: int,
                  rng: np.random.Generator, selection: str = SCORE) -> List[Outcome]:
    """Outcomes after 1, 2, ..., ``max_clicks`` clicks ([] for an empty reference)."""
    ref = np.asarray(reference).astype(bool)
    regs = rg.regions(ref)
    if not regs or max_clicks < 1:
        return []
    multimask = multimask_for(selection)
    include = [rg.farthest_point(regs[0], rng)]
    exclude = []
    outcomes: List[Outcome] = []
    while True:
        prompt = Prompt(include_points_xy=list(include), exclude_points_xy=list(exclude))
        mask, score = choose(backend.decode(handle, prompt, multimask), ref, selection)
        clicks = len(include) + len(exclude)
        outcomes.append(Outcome(f"iterative:{clicks}", mask, score, [prompt], clicks))
        if clicks >= max_clicks:
            break
        nxt = rg.correction_point(mask, ref, rng)
        if nxt is None:  # perfect mask: nothing left to correct
            break
        x, y, is_include = nxt
        (include if is_include else exclude).append((x, y))
    last = outcomes[-1]
    for n in range(len(outcomes) + 1, max_clicks + 1):  # stopped early: later click counts keep the result
        outcomes.append(Outcome(f"iterative:{n}", last.mask, last.score, last.prompts, last.clicks))
    return outcomes
