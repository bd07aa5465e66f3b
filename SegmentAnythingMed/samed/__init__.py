"""SegmentAnythingMed: Segment Anything (SAM, MedSAM, LiteMedSAM) for medical images.

Layers (dependencies point downward only; see DESIGN.md):
``samed.core`` (numpy/scipy only) <- ``samed.engines`` (torch) <- ``samed.service`` / ``samed.client`` <- Slicer.
"""

__version__ = "0.2.0"
