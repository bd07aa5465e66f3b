"""Slicer markups files: point lists (include / exclude prompts) and ROIs (box prompts), in RAS.

Reads ``.mrk.json`` (Slicer >= 4.11, markups schema v1.0.x; LPS or RAS) and legacy ``.fcsv`` point lists; writes
``.mrk.json`` as Slicer does (LPS). Pure json + numpy.

A point list is an *exclude* (negative) prompt when its name contains "exclude" or "negative". The name is the
markup's ``name`` field when present (Slicer reads it; this module writes it), else the file name without
``.mrk.json`` (Slicer writes no ``name`` and saves a node as ``<node name>.mrk.json``).

Slicer loads markup number ``n`` of a file with a storage node of that markup's type, e.g.
``vtkMRMLMarkupsROIJsonStorageNode().AddNewMarkupsNodeFromFile(path, "", n)`` (the generic
``vtkMRMLMarkupsJsonStorageNode`` loads an ROI's control point but not its size and orientation).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, os.PathLike]

MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
                  "Schema/markups-schema-v1.0.3.json#")
LPS_FLIP = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS for points and for directions (its own inverse)
EXCLUDE_WORDS = ("exclude", "negative")
POINT_LIST_TYPES = ("Fiducial",)
ROI_TYPES = ("ROI",)
# Slicer markups types that are not prompts here: read as "skipped", not an error
OTHER_SLICER_TYPES = ("Line", "Angle", "Curve", "ClosedCurve", "Plane")
MARKUPS_EXTENSIONS = (".mrk.json", ".json", ".fcsv")


def is_exclude_name(name: str) -> bool:
    """True when a point list's name marks it as an exclude (negative) prompt."""
    lowered = str(name).lower()
    return any(word in lowered for word in EXCLUDE_WORDS)


@dataclass
class PointList:
    """Points in RAS mm, shape (N, 3). ``exclude`` defaults to what the name says (see :func:`is_exclude_name`)."""

    name: str
    points_ras: np.ndarray
    exclude: Optional[bool] = None
    labels: List[str] = field(default_factory=list)

    def __post_init__(self):
        self.points_ras = np.asarray(self.points_ras, dtype=float).reshape(-1, 3)
        if self.exclude is None:
            self.exclude = is_exclude_name(self.name)
        self.exclude = bool(self.exclude)


@dataclass
class Roi:
    """A box: centre in RAS mm, full edge lengths in mm along its axes, axes as the columns of ``orientation``."""

    name: str
    center_ras: np.ndarray
    size_mm: np.ndarray
    orientation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        self.center_ras = np.asarray(self.center_ras, dtype=float).reshape(3)
        self.size_mm = np.abs(np.asarray(self.size_mm, dtype=float).reshape(3))
        self.orientation = np.asarray(self.orientation, dtype=float).reshape(3, 3)

    def corners_ras(self) -> np.ndarray:
        """The 8 corners (8, 3) in RAS; corner ``n`` has bit 0/1/2 of ``n`` set for +x/+y/+z along the box axes."""
        signs = np.array([[(n >> b) & 1 for b in range(3)] for n in range(8)], dtype=float) * 2 - 1
        return self.center_ras + (signs * (self.size_mm / 2)) @ self.orientation.T

    def bounds_ras(self) -> Tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min, max) RAS corners enclosing the box."""
        corners = self.corners_ras()
        return corners.min(axis=0), corners.max(axis=0)


@dataclass
class MarkupsFile:
    path: Optional[Path]
    point_lists: List[PointList] = field(default_factory=list)
    rois: List[Roi] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (type, name) of other markups in the file

    def include_points_ras(self) -> np.ndarray:
        lists = [p.points_ras for p in self.point_lists if not p.exclude]
        return np.concatenate(lists) if lists else np.zeros((0, 3))

    def exclude_points_ras(self) -> np.ndarray:
        lists = [p.points_ras for p in self.point_lists if p.exclude]
        return np.concatenate(lists) if lists else np.zeros((0, 3))


def _markups_extension(p: Path) -> str:
    name = p.name.lower()
    return next((e for e in MARKUPS_EXTENSIONS if name.endswith(e)), p.suffix.lower())


def _name_from_path(p: Path) -> str:
    ext = _markups_extension(p)
    return p.name[: -len(ext)] if ext and p.name.lower().endswith(ext) else p.stem


def read_markups(path: PathLike) -> MarkupsFile:
    """Read a ``.mrk.json`` (point lists, ROIs) or legacy ``.fcsv`` (one point list); positions come back in RAS."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"markups file not found: {p}")
    ext = _markups_extension(p)
    if ext not in MARKUPS_EXTENSIONS:
        raise ValueError(f"unsupported markups file type {ext or '(no extension)'!r} for {p}: "
                         f"supported are {', '.join(MARKUPS_EXTENSIONS)}")
    if ext == ".fcsv":
        return _read_fcsv(p)
    try:
        document = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not a valid markups JSON file: {e}") from e
    if not isinstance(document, dict) or not isinstance(document.get("markups"), list):
        raise ValueError(f"{p} is not a Slicer markups file: no \"markups\" list")
    result = MarkupsFile(p)
    markups = document["markups"]
    for n, markup in enumerate(markups):
        try:
            _read_markup(markup, result, default_name=_name_from_path(p) if len(markups) == 1
                         else f"{_name_from_path(p)}_{n + 1}")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"{p}: markup {n + 1} is invalid: {e}") from e
    return result


def _to_ras(points, coordinate_system: str) -> np.ndarray:
    pts = np.asarray(points, dtype=float)
    return pts @ LPS_FLIP if coordinate_system == "LPS" else pts


def _read_markup(markup: dict, result: MarkupsFile, default_name: str) -> None:
    if not isinstance(markup, dict):
        raise ValueError("expected an object")
    kind = markup.get("type")
    name = str(markup.get("name") or default_name)
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise ValueError(f"unknown coordinateSystem {system!r} (expected LPS or RAS)")
    points = [cp for cp in markup.get("controlPoints", [])
              if cp.get("positionStatus", "defined") == "defined" and "position" in cp]
    if kind in POINT_LIST_TYPES:
        positions = [cp["position"] for cp in points]
        result.point_lists.append(PointList(name, _to_ras(np.reshape(positions, (-1, 3)), system),
                                            labels=[str(cp.get("label", "")) for cp in points]))
    elif kind in ROI_TYPES:
        orientation = np.asarray(markup.get("orientation", LPS_FLIP.ravel() if system == "LPS" else np.eye(3)),
                                 dtype=float).reshape(3, 3)
        if "center" in markup:
            center = markup["center"]
        elif points:
            center = points[0]["position"]
        else:
            raise ValueError("ROI without center")
        if "size" not in markup:
            raise ValueError("ROI without size")
        orientation_ras = LPS_FLIP @ orientation if system == "LPS" else orientation
        result.rois.append(Roi(name, _to_ras(center, system), markup["size"], orientation_ras))
    elif kind in OTHER_SLICER_TYPES:
        result.skipped.append((str(kind), name))
    else:
        raise ValueError(f"unknown markups type {kind!r}: expected one of "
                         f"{', '.join(POINT_LIST_TYPES + ROI_TYPES + OTHER_SLICER_TYPES)}")


FCSV_DEFAULT_COLUMNS = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc",
                        "associatedNodeID"]


def _read_fcsv(p: Path) -> MarkupsFile:
    system, columns, positions, labels = "RAS", FCSV_DEFAULT_COLUMNS, [], []  # very old files: RAS, no header
    try:
        with open(p, "r", encoding="utf-8", newline="") as f:
            for row in csv.reader(f):
                if not row or not "".join(row).strip():
                    continue
                first = row[0].strip()
                if first.startswith("#"):
                    line = ",".join(row)
                    key, _, value = line.lstrip("# ").partition("=")
                    key, value = key.strip().lower(), value.strip()
                    if key == "coordinatesystem":
                        system = {"0": "RAS", "1": "LPS"}.get(value, value.upper())
                    elif key == "columns":
                        columns = [c.strip() for c in value.split(",")]
                    continue
                values = dict(zip(columns, row))
                positions.append([float(values["x"]), float(values["y"]), float(values["z"])])
                labels.append(values.get("label", "").strip())
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not a valid .fcsv point list: {e}") from e
    if system not in ("LPS", "RAS"):
        raise ValueError(f"{p}: unknown CoordinateSystem {system!r} (expected LPS or RAS)")
    points = _to_ras(np.reshape(positions, (-1, 3)), system)
    return MarkupsFile(p, [PointList(_name_from_path(p), points, labels=labels)])


# ----------------------------------------------------------------------------------------------- writing

def _fmt(values) -> List[float]:
    return [float(v) + 0.0 for v in np.asarray(values, dtype=float).ravel()]  # + 0.0: no "-0.0"


def _control_point(n: int, label: str, position_lps, orientation_lps=None) -> dict:
    return {"id": str(n), "label": label, "description": "", "associatedNodeID": "",
            "position": _fmt(position_lps),
            "orientation": _fmt(LPS_FLIP if orientation_lps is None else orientation_lps),
            "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}


def _point_list_json(point_list: PointList) -> dict:
    name = point_list.name
    if point_list.exclude and not is_exclude_name(name):
        name = f"{name} (exclude)"  # the file carries the role only in the name
    elif not point_list.exclude and is_exclude_name(name):
        raise ValueError(f"point list {name!r} is marked include but its name says exclude; rename it")
    pts_lps = point_list.points_ras @ LPS_FLIP
    labels = point_list.labels if len(point_list.labels) == len(pts_lps) else \
        [f"{name}-{n}" for n in range(1, len(pts_lps) + 1)]
    return {"type": "Fiducial", "name": name, "coordinateSystem": "LPS", "coordinateUnits": "mm",
            "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(pts_lps),
            "controlPoints": [_control_point(n, lab, pos) for n, (lab, pos) in enumerate(zip(labels, pts_lps), 1)],
            "measurements": []}


def _roi_json(roi: Roi) -> dict:
    center_lps = roi.center_ras @ LPS_FLIP
    orientation_lps = LPS_FLIP @ roi.orientation
    return {"type": "ROI", "name": roi.name, "coordinateSystem": "LPS", "coordinateUnits": "mm",
            "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": 1, "roiType": "Box", "center": _fmt(center_lps),
            "orientation": _fmt(orientation_lps), "size": _fmt(roi.size_mm), "insideOut": False,
            "controlPoints": [_control_point(1, f"{roi.name}-1", center_lps)], "measurements": []}


def write_markups_json(path: PathLike, point_lists: Sequence[PointList] = (), rois: Sequence[Roi] = (), *,
                       overwrite: bool = True) -> Path:
    """Write point lists and ROIs to one ``.mrk.json`` in LPS, as Slicer writes it.

    Slicer loads one node per markup in the file; each keeps its ``name``.
    """
    p = Path(path)
    if not p.name.lower().endswith(".json"):
        raise ValueError(f"a markups file name must end with .mrk.json: {p}")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass overwrite=True to replace it")
    if not point_lists and not rois:
        raise ValueError(f"nothing to write to {p}: no point lists and no ROIs")
    document = {"@schema": MARKUPS_SCHEMA,
                "markups": [_point_list_json(pl) for pl in point_lists] + [_roi_json(r) for r in rois]}
    p.write_text(json.dumps(document, indent=4), encoding="utf-8")
    return p
