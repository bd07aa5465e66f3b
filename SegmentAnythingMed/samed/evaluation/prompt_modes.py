"""Simulated prompts: how an evaluation turns a reference mask into the prompts a user would give.

The seed study's modes (Mazurowski et al. 2023), for one class on one picture:

=====================  =======================================================================================
``point-largest``      mode 1: one include point in the largest region
``point-per-region``   mode 2: one include point in each of the (up to 3) largest regions, in one prompt
``box-largest``        mode 3: one box around the largest region
``box-per-region``     mode 4: one box around each of the (up to 3) largest regions, one prompt each, masks united
``box-all``            mode 5: one box around the whole class mask
``iterative:N``        Algorithm 1: the mode-1 point, then up to N - 1 correction points (see ``iterative.py``);
                       reported after every click as ``iterative:1`` ... ``iterative:N``
``everything``         a grid of points over the picture, the best-matching mask (see ``everything.py``)
=====================  =======================================================================================

Placement analysis (a prompt moved away from where the modes above put it):

- ``point-offset:D`` (D in [0, 1)): the mode-1 point moved towards the region's edge, to where the distance to
  the boundary is (1 - D) times its maximum (``regions.offset_point``).
- ``box-shift:S``: the mode-5 box translated by S times its width and height in a random direction (seeded),
  clipped to the picture; the placement analysis for box-only models, which take no points.

Regions and points follow ``regions.py``. A mode that needs a prompt kind the model does not take (points for
LiteMedSAM and MedSAM, which were trained with boxes only) is reported as "not supported", never as zeros.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence

import numpy as np

from ..core.prompts import BOX, POINT, Prompt, box_from_mask
from . import regions as rg

MAX_REGIONS = 3  # modes 2 and 4: the (up to) three largest regions
SINGLE, ITERATIVE, EVERYTHING = "single", "iterative", "everything"

STUDY_MODES = ("point-largest", "point-per-region", "box-largest", "box-per-region", "box-all")
DEFAULT_ITERATIVE_POINTS = 9
MAX_ITERATIVE_POINTS = 50
POINT_OFFSETS = (0.25, 0.5, 0.75, 0.9)
BOX_SHIFTS = (0.05, 0.1, 0.2, 0.3)


@dataclass
class Aimed:
    """One prompt and the reference pixels it aims at (what the oracle compares its candidates with)."""

    prompt: Prompt
    aim: np.ndarray


class PromptMode:
    """A named way to prompt. ``family``: "single" (``make`` gives prompts whose masks are united),
    "iterative" (Algorithm 1 with ``points`` clicks) or "everything" (a point grid, one run per picture)."""

    def __init__(self, name: str, needs: FrozenSet[str], make: Optional[Callable], help: str,
                 family: str = SINGLE, points: int = 0, analysis: Optional[str] = None,
                 level: Optional[float] = None):
        self.name = name
        self.needs = needs  # prompt kinds a model must take for this mode
        self.make = make  # (reference, rng) -> List[Aimed], for family "single"
        self.help = help
        self.family = family
        self.points = points  # iterative: the most clicks
        self.analysis = analysis  # "placement" for the placement series, else None
        self.level = level  # the offset / shift of a placement mode

    def __repr__(self) -> str:
        return f"PromptMode({self.name!r})"

    def __reduce__(self):
        return get_mode, (self.name,)  # pickled by name (worker processes): the makers may be closures

    def aimed(self, reference: np.ndarray, rng: Optional[np.random.Generator] = None) -> List[Aimed]:
        if self.make is None:
            raise ValueError(f"prompt mode {self.name} does not make prompts from a reference mask alone")
        return self.make(np.asarray(reference).astype(bool), rng if rng is not None else np.random.default_rng(0))

    def prompts(self, reference: np.ndarray, rng: Optional[np.random.Generator] = None) -> List[Prompt]:
        """The prompts for one class's reference mask ([] for an empty mask)."""
        return [a.prompt for a in self.aimed(reference, rng)]

    def supported_by(self, kinds: FrozenSet[str]) -> bool:
        return self.needs <= kinds

    def unsupported_reason(self, model: str, kinds: FrozenSet[str]) -> str:
        missing = ", ".join(sorted(self.needs - kinds))
        return (f"{model} takes only {', '.join(sorted(kinds)) or 'no'} prompts; "
                f"{self.name} needs {missing} prompts")

    def row_names(self) -> List[str]:
        """The ``prompt`` values this mode writes into result rows."""
        if self.family == ITERATIVE:
            return [f"iterative:{n}" for n in range(1, self.points + 1)]
        return [self.name]


# ---------------------------------------------------------------------------------------------- makers

def _point_largest(ref: np.ndarray, rng) -> List[Aimed]:
    regs = rg.regions(ref)
    if not regs:
        return []
    return [Aimed(Prompt(include_points_xy=[rg.farthest_point(regs[0], rng)]), ref)]


def _point_per_region(ref: np.ndarray, rng) -> List[Aimed]:
    regs = rg.regions(ref)[:MAX_REGIONS]
    if not regs:
        return []
    return [Aimed(Prompt(include_points_xy=[rg.farthest_point(r, rng) for r in regs]), ref)]


def _box_largest(ref: np.ndarray, rng) -> List[Aimed]:
    regs = rg.regions(ref)
    return [Aimed(Prompt(box_xy=box_from_mask(regs[0])), ref)] if regs else []


def _box_per_region(ref: np.ndarray, rng) -> List[Aimed]:
    # each box aims at its own region: a box around a small region can never match the whole class
    return [Aimed(Prompt(box_xy=box_from_mask(r)), r) for r in rg.regions(ref)[:MAX_REGIONS]]


def _box_all(ref: np.ndarray, rng) -> List[Aimed]:
    box = box_from_mask(ref)
    return [] if box is None else [Aimed(Prompt(box_xy=box), ref)]


def _point_offset(offset: float):
    def make(ref: np.ndarray, rng) -> List[Aimed]:
        regs = rg.regions(ref)
        if not regs:
            return []
        return [Aimed(Prompt(include_points_xy=[rg.offset_point(regs[0], offset, rng)]), ref)]
    return make


def shifted_box(box: np.ndarray, shift: float, angle: float, shape_hw: Sequence[int]) -> np.ndarray:
    """``box`` (x0, y0, x1, y1) translated by ``shift`` x (width, height) towards ``angle`` (radians), clipped."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx = shift * (x1 - x0 + 1) * math.cos(angle)
    dy = shift * (y1 - y0 + 1) * math.sin(angle)
    h, w = int(shape_hw[0]), int(shape_hw[1])
    moved = np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy])
    return np.clip(np.rint(moved), 0, [w - 1, h - 1, w - 1, h - 1])


def _box_shift(shift: float):
    def make(ref: np.ndarray, rng) -> List[Aimed]:
        box = box_from_mask(ref)
        if box is None:
            return []
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        return [Aimed(Prompt(box_xy=shifted_box(box, shift, angle, ref.shape)), ref)]
    return make


_P, _B = frozenset({POINT}), frozenset({BOX})

PROMPT_MODES: Dict[str, PromptMode] = {
    "point-largest": PromptMode("point-largest", _P, _point_largest, "one point in the largest region"),
    "point-per-region": PromptMode("point-per-region", _P, _point_per_region,
                                   "one point in each of the 3 largest regions (one prompt)"),
    "box-largest": PromptMode("box-largest", _B, _box_largest, "one box around the largest region"),
    "box-per-region": PromptMode("box-per-region", _B, _box_per_region,
                                 "one box around each of the 3 largest regions, masks united"),
    "box-all": PromptMode("box-all", _B, _box_all, "one box around the whole class mask"),
    "everything": PromptMode("everything", _P, None, "a grid of points; the best-matching mask", family=EVERYTHING),
}

MODE_HELP = ("point-largest, point-per-region, box-largest, box-per-region, box-all, iterative:N (N clicks, "
             f"1..{MAX_ITERATIVE_POINTS}), everything, point-offset:D (0 <= D < 1), box-shift:S (0 <= S <= 2); "
             "3D sets: interactive-3d:N alone (a simulated user adds up to N key-slice boxes; "
             "interactive-3d-points:N: clicks, for models that take points)")


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"prompt mode {name!r}: {text!r} is not a number") from None


def get_mode(name: str) -> PromptMode:
    """A mode by name: a fixed one, or ``iterative:N``, ``point-offset:D``, ``box-shift:S``."""
    name = name.strip()
    if name in PROMPT_MODES:
        return PROMPT_MODES[name]
    base, _, arg = name.partition(":")
    if base == "iterative":
        n = _number(arg, name) if arg else DEFAULT_ITERATIVE_POINTS
        if n != int(n) or not 1 <= n <= MAX_ITERATIVE_POINTS:
            raise ValueError(f"prompt mode {name!r}: N must be a whole number of clicks, 1..{MAX_ITERATIVE_POINTS}")
        n = int(n)
        return PromptMode(f"iterative:{n}", _P, None, f"Algorithm 1 with up to {n} clicks", ITERATIVE, points=n)
    if base == "point-offset" and arg:
        d = _number(arg, name)
        if not 0 <= d < 1:
            raise ValueError(f"prompt mode {name!r}: the offset must be within [0, 1)")
        return PromptMode(f"point-offset:{d:g}", _P, _point_offset(d), "the mode-1 point moved towards the edge",
                          analysis="placement", level=d)
    if base == "box-shift" and arg:
        s = _number(arg, name)
        if not 0 <= s <= 2:
            raise ValueError(f"prompt mode {name!r}: the shift must be within 0..2 box sizes")
        return PromptMode(f"box-shift:{s:g}", _B, _box_shift(s), "the mode-5 box moved in a random direction",
                          analysis="placement", level=s)
    if base == "interactive-3d":  # evaluation/interactive_3d.py: a 3D protocol, run by itself
        raise ValueError(f"prompt mode {name!r} runs on its own (a 3D protocol, not a per-slice mode): give "
                         f"--prompt {name} alone")
    raise ValueError(f"unknown prompt mode {name!r}: choose among {MODE_HELP}")


def parse_modes(spec: str) -> List[PromptMode]:
    """Comma-separated mode names -> modes (duplicates dropped, order kept)."""
    out: List[PromptMode] = []
    for part in spec.split(","):
        if part.strip():
            mode = get_mode(part)
            if mode.name not in {m.name for m in out}:
                out.append(mode)
    if not out:
        raise ValueError("no prompt mode given")
    return out


def all_modes(iterative_points: int = DEFAULT_ITERATIVE_POINTS) -> List[PromptMode]:
    """``--all-modes``: the study's five modes, Algorithm 1, everything mode and the placement series."""
    names = list(STUDY_MODES) + [f"iterative:{iterative_points}", "everything"]
    names += [f"point-offset:{d:g}" for d in POINT_OFFSETS] + [f"box-shift:{s:g}" for s in BOX_SHIFTS]
    return [get_mode(n) for n in names]


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``parts`` (picture, class, mode): the same prompts whatever
    the order of work, the number of workers or a resumed run."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest, "little")])
