"""SegmentAnythingMed's Slicer side.

- ``segment_editor_effect.py``: the "Segment Anything" Segment Editor effect (the thin Qt layer; Slicer loads it
  through ``../SegmentEditorSegmentAnythingMedLib/SegmentEditorEffect.py``, see there why).
- Every other module here is the MRML bridge: plain Python on ``slicer``/``vtk`` nodes and numpy arrays, no Qt, so
  that pytest reaches it on a real MRML scene from ``slicer-core``.

Nothing is imported here on purpose: importing the package must not pull in Qt or torch.
"""
