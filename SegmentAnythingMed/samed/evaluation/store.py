"""The output folder of an evaluation run, written as the run goes so that an interrupted run resumes.

- ``run.json``: the settings that decide the results (dataset, model, modes, selection, seed, ...) and the
  time spent so far. A rerun with the same settings resumes; with other settings it stops with a message
  (``restart=True`` starts over).
- ``results.csv``: rows are appended (and flushed to disk) as each picture finishes.
- ``volumes.csv``: the 3D rows (``--propagate``), appended per volume and class.
- ``finished.txt``: one key per finished picture (or volume and class), written after its rows. On resume,
  rows of pictures that are not listed (cut off mid-write) are dropped and those pictures are done again.
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set

from ..core.metrics import json_safe
from .tasks import picture_key

RUN_FILE, FINISHED_FILE = "run.json", "finished.txt"
RESULTS_FILE, VOLUMES_FILE = "results.csv", "volumes.csv"

INT_FIELDS = {"class_id", "ref_pixels", "pred_pixels", "image_pixels", "clicks", "ref_slices", "pred_slices",
              "boxes", "seed_slice"}
FLOAT_FIELDS = {"dice", "iou", "nsd", "hd95", "score", "level"}


def volume_key(volume: str, class_id) -> str:
    return f"volume:{volume}#{int(class_id)}"


def row_key(row: dict) -> str:
    return picture_key(row.get("image", ""), row.get("slice"))


def volume_row_key(row: dict) -> str:
    return volume_key(row.get("volume", ""), row.get("class_id") or 0)


class SettingsChanged(ValueError):
    """The output folder holds a run with other settings."""


def parse_row(raw: Dict[str, str]) -> dict:
    """A CSV row with numbers as numbers ('' -> None)."""
    row: dict = {}
    for k, v in raw.items():
        if v == "" or v is None:
            row[k] = None if k in INT_FIELDS | FLOAT_FIELDS else ""
        elif k in INT_FIELDS:
            row[k] = int(float(v))
        elif k in FLOAT_FIELDS:
            row[k] = float(v)
        else:
            row[k] = v
    return row


def _csv_text(rows: Iterable[dict], fields: Sequence[str], header: bool) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in fields})
    return buf.getvalue()


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def write_csv(path: Path, rows: Iterable[dict], fields: Sequence[str]) -> None:
    """Write a whole CSV atomically (a temporary file renamed over the old one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_csv_text(rows, fields, True), encoding="utf-8")
    os.replace(tmp, path)


def read_csv(path: Path) -> List[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [parse_row(r) for r in csv.DictReader(f)]


class RunStore:
    def __init__(self, out_dir, settings: dict, row_fields: Sequence[str], volume_fields: Sequence[str],
                 restart: bool = False):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = json.loads(json.dumps(json_safe(settings)))
        self.row_fields, self.volume_fields = list(row_fields), list(volume_fields)
        self.seconds, self.timed_pictures = 0.0, 0
        self.facts: dict = {}
        self.finished: Set[str] = set()
        run_file = self.dir / RUN_FILE
        state = json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else None
        if state is not None and state.get("settings") != self.settings and not restart:
            old, new = state.get("settings", {}), self.settings
            diff = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                             if old.get(k) != new.get(k))
            raise SettingsChanged(f"{self.dir} holds an evaluation run with other settings ({diff}); "
                                  f"choose another --out folder, or pass --restart to replace it")
        if state is None or restart:
            self._start_over()
        else:
            self.seconds = float(state.get("seconds", 0.0))
            self.timed_pictures = int(state.get("timed_pictures", 0))
            self.facts = dict(state.get("facts", {}))
            self._load_finished()
        self._save_state()

    @property
    def resumed(self) -> int:
        return len(self.finished)

    def _start_over(self) -> None:
        for name in (RESULTS_FILE, VOLUMES_FILE, FINISHED_FILE):
            if (self.dir / name).is_file():
                (self.dir / name).unlink()
        write_csv(self.dir / RESULTS_FILE, [], self.row_fields)
        (self.dir / FINISHED_FILE).write_text("", encoding="utf-8")

    def _load_finished(self) -> None:
        path = self.dir / FINISHED_FILE
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        lines = text.split("\n")
        listed = {line for line in lines[:-1] if line}  # the last piece lacks its newline if cut off
        # keep rows of listed pictures only (a picture cut off mid-write is not listed) and list only pictures
        # that have rows (a results file removed by hand), then rewrite both files
        self.finished = set()
        for name, fields, key in ((RESULTS_FILE, self.row_fields, row_key),
                                  (VOLUMES_FILE, self.volume_fields, volume_row_key)):
            rows = [r for r in read_csv(self.dir / name) if key(r) in listed]
            self.finished |= {key(r) for r in rows}
            if name == RESULTS_FILE or rows:
                write_csv(self.dir / name, rows, fields)
        path.write_text("".join(k + "\n" for k in sorted(self.finished)), encoding="utf-8")

    def _save_state(self) -> None:
        state = {"settings": self.settings, "seconds": self.seconds, "timed_pictures": self.timed_pictures,
                 "facts": self.facts}
        tmp = self.dir / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        os.replace(tmp, self.dir / RUN_FILE)

    def _append(self, name: str, fields: Sequence[str], key: str, rows: List[dict]) -> None:
        path = self.dir / name
        header = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="", encoding="utf-8") as f:
            f.write(_csv_text(rows, fields, header))
            f.flush()
            os.fsync(f.fileno())
        with open(self.dir / FINISHED_FILE, "a", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.finished.add(key)

    def add_picture(self, key: str, rows: List[dict], seconds: float) -> None:
        self._append(RESULTS_FILE, self.row_fields, key, rows)
        self.seconds += seconds
        self.timed_pictures += 1
        self._save_state()

    def add_volume(self, key: str, rows: List[dict], seconds: float) -> None:
        self._append(VOLUMES_FILE, self.volume_fields, key, rows)
        self.seconds += seconds
        self._save_state()

    def remember(self, **facts) -> None:
        """Keep facts learnt during the run (the model's prompt kinds) for a later resumed run."""
        self.facts.update(json_safe(facts))
        self._save_state()

    def remembered(self) -> dict:
        return dict(self.facts)

    def rows(self) -> List[dict]:
        return read_csv(self.dir / RESULTS_FILE)

    def volume_rows(self) -> List[dict]:
        return read_csv(self.dir / VOLUMES_FILE)
