"""What the effect's buttons, labels and progress bar show for a session's state (decided here, without Qt; the
effect's ``_refresh`` only copies it onto the widgets)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Controls:
    candidate_text: str = ""
    next_candidate: bool = False
    propagate: bool = False
    refine: bool = False  # "Refine selected segment": nothing running, no preview waiting for Apply or Cancel
    stop: bool = False
    apply: bool = False
    cancel: bool = False
    progress: Optional[Tuple[int, int]] = None  # (done, total) or None: no progress bar
    status: Optional[str] = None  # None: leave the status text as it is


def controls(session, message: Optional[str] = None) -> Controls:
    """The controls for ``session`` (None before the effect made one); ``message`` replaces the session's status."""
    if session is None:
        return Controls(status=message or None)
    busy, preview, candidates = session.busy, session.has_preview, session.candidates
    progress = session.progress
    return Controls(candidate_text=candidates.describe() if candidates is not None else "",
                    next_candidate=candidates is not None and len(candidates.prediction.scores) > 1,
                    propagate=candidates is not None and not busy, refine=not busy and not preview,
                    stop=busy, apply=preview and not busy, cancel=preview or busy,
                    progress=(progress[0], max(progress[1], 1)) if progress is not None else None,
                    status=message or session.status or None)
