"""``samed segment --box ... --slice K`` repeated: one structure from boxes on several key slices.

The pairs are taken in order (the first ``--box`` goes to the first ``--slice``). A ``--markups`` file with several
ROIs, each on one slice, gives the same key slices (``core.markup_prompts``: one box per ROI on its slice). Each key slice's mask is the
model's for its box; the slices between two key slices are filled by ``core.key_slices`` (always: that is what
several key slices ask for), and with ``--propagate`` the walk continues beyond the outermost ones
(``--max-slices`` limits it; the walk's rules are ``core.key_slices.WALK_RULES_MORE_KEYS`` unless an option changes
one). Prints each slice's kind (key, interpolated, walked) and why each end stopped.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ..core.geometry import check_slice_index
from ..core.key_slices import WALK_RULES_MORE_KEYS, KeySliceSettings, segment_from_key_slices
from ..core.markup_prompts import SlicePrompts
from ..core.prompts import Prompt, PromptError
from ..core.propagation import PropagationSettings


def key_slice_prompts(boxes, slices, points, volume, np_axis: int) -> SlicePrompts:
    """SlicePrompts for repeated ``--box``/``--slice`` pairs (a clear error for anything else)."""
    if len(boxes) != len(slices):
        raise PromptError(f"give one --slice K per --box (key slice): got {len(boxes)} --box and "
                          f"{len(slices)} --slice")
    if points:
        raise PromptError("--point/--exclude-point go with a single --box/--slice; with several key slices give "
                          "boxes only")
    if len(set(slices)) != len(slices):
        raise PromptError(f"each key slice takes one box: slice(s) "
                          f"{sorted({s for s in slices if slices.count(s) > 1})} given twice")
    for index in slices:
        check_slice_index(volume.array.shape[:3], np_axis, index)
    return SlicePrompts({int(k): Prompt(box_xy=b) for k, b in zip(slices, boxes)})


def fill_from_key_slices(session, key_masks: Dict[int, np.ndarray], args, stopped: Optional[Dict[str, str]] = None,
                         key_boxes: Optional[Dict[int, np.ndarray]] = None) -> Dict[int, np.ndarray]:
    """All slices' masks from the key slices' masks (see the module docstring); why each end stopped goes into
    ``stopped`` ("down"/"up" -> reason) when given. ``key_boxes``: the user's box on each key slice that has one
    (a walk leaving a key slice starts from it)."""
    empty = [i for i, m in key_masks.items() if not m.any()]
    if empty:
        raise PromptError(f"the box on slice(s) {empty} gave an empty mask: check the box (x = column, y = row)")
    rules = dict(WALK_RULES_MORE_KEYS)  # the measured rules for two or more key slices, unless an option changes one
    for option in ("box_margin_px", "box_margin_frac", "min_area_ratio", "max_area_ratio", "min_score"):
        value = getattr(args, "box_margin" if option == "box_margin_px" else option)
        if value != getattr(PropagationSettings, option):
            rules[option] = value
    walk = PropagationSettings(**rules, max_slices=args.max_slices if args.propagate else 0)
    result = segment_from_key_slices(session.backend, session.picture, session.n_slices, key_masks,
                                     KeySliceSettings(walk_more_keys=walk), key_boxes=key_boxes)
    kinds = {}
    for i in result.indices:
        kinds.setdefault(result.kinds[i].split()[0], []).append(i)
    for kind, idx in kinds.items():
        print(f"{kind} slices: {', '.join(str(i) for i in idx)}")
    for end, why in sorted(result.stopped.items()):
        print(f"key slices, {end}: stopped ({why})")
    if stopped is not None:
        stopped.update(result.stopped)
    return dict(result.masks)
