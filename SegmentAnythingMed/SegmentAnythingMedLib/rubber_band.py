"""The box being dragged, drawn in the slice view (a 2D actor in display coordinates; VTK only, no Qt)."""
from __future__ import annotations

from typing import Sequence

import vtk


class RubberBand:
    """A dashed-looking cyan rectangle from the press point to the mouse. Add ``actor`` to a view's renderer."""

    def __init__(self, color=(0.2, 0.9, 1.0)):
        self.points = vtk.vtkPoints()
        self.points.SetNumberOfPoints(4)
        lines = vtk.vtkCellArray()
        lines.InsertNextCell(5)
        for n in (0, 1, 2, 3, 0):
            lines.InsertCellPoint(n)
        self.polydata = vtk.vtkPolyData()
        self.polydata.SetPoints(self.points)
        self.polydata.SetLines(lines)
        mapper = vtk.vtkPolyDataMapper2D()
        mapper.SetInputData(self.polydata)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetColor(*color)
        self.actor.GetProperty().SetLineWidth(1.5)
        self.actor.VisibilityOff()
        self._start = (0.0, 0.0)

    def start(self, xy: Sequence[float]) -> None:
        self._start = (float(xy[0]), float(xy[1]))
        self.update(xy)

    def update(self, xy: Sequence[float]) -> None:
        (x0, y0), (x1, y1) = self._start, (float(xy[0]), float(xy[1]))
        for n, (x, y) in enumerate(((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            self.points.SetPoint(n, x, y, 0.0)
        self.points.Modified()
        self.actor.SetVisibility(x0 != x1 or y0 != y1)

    def hide(self) -> None:
        self.actor.VisibilityOff()

    def corners(self):
        return [self.points.GetPoint(n)[:2] for n in range(4)]
