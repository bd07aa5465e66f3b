"""SegmentAnythingMed's Slicer side.

- ``SegmentEditorEffect.py``: the "Segment Anything" Segment Editor effect (the thin Qt layer; Slicer loads it with
  ``qSlicerSegmentEditorScriptedEffect.setPythonSource``).
- Every other module here is the MRML bridge: plain Python on ``slicer``/``vtk`` nodes and numpy arrays, no Qt, so
  that pytest reaches it on a real MRML scene from ``slicer-core``.

Nothing is imported here on purpose: importing the package must not pull in Qt or torch.
"""
