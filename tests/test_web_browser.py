"""`samed web` end to end in a real browser: Playwright (PyPI) driving Debian's chromium against a real `samed web`
process on 127.0.0.1, with the real LiteMedSAM model in-process, on slicerio's CTChest4.

The scenario of issue 13 and the README demo (scripts/demo.sh: box 55,36,106,98 around the right lung on axial
slice 20, --intensity minmax, --propagate): drag the box in the slice view, the preview appears (the view's pixels
change inside the box), Apply, Undo, Redo, the same box again, Propagate, Apply, Save; the saved .seg.nrrd holds the
same voxels as `samed segment` writes for the box the app used and the same settings.

Frames reach the browser asynchronously over a websocket: every check waits for the view's image to change (or
for the app's state), never a fixed sleep. Mouse moves during a drag are coalesced by the browser: the box is
defined by the press and release positions only.

Needs: chromium (Debian: apt-get install chromium libegl1 libegl-mesa0) and the `playwright` and `web` extras;
scripts/setup.sh --test installs them. Set SAMED_WEB_SCREENSHOT=path to also copy the screenshot there (that is how
docs/images/web.png was made).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, ServiceProcess, free_loopback_port

DEMO_BOX_IJK = (55, 36, 106, 98)  # scripts/demo.sh
DEMO_SLICE = 20
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
WAIT_MS = 240_000  # the model on a shared 2-core CPU
APP_STATE = ("status", "busy", "has_preview", "can_undo", "can_redo", "box_xy", "slice_index", "progress",
             "view_geometry")  # shown when a wait fails


class WebProcess(ServiceProcess):
    """`samed web` in a subprocess on 127.0.0.1 (a free port); ``url``, ``log()``, ``rss_mb()``, ``stop()`` (the
    log and stop of conftest's ServiceProcess)."""

    def __init__(self, data_dir: Path, out_dir: Path, *args: str, startup_timeout: float = 180.0):
        import urllib.request

        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="samed-web-", suffix=".log", delete=False)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "SegmentAnythingMed"), env.get("PYTHONPATH", "")])
        env.pop("SAMED_WEB_TOKEN", None)
        cmd = [sys.executable, "-m", "samed.cli.main", "web", "--port", str(self.port), "--data", str(data_dir),
               "--out", str(out_dir), "--device", "cpu", *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + startup_timeout
        while "samed web: ready" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"samed web exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"samed web did not start within {startup_timeout:.0f} s:\n{self.log()}")
            time.sleep(0.25)
        self.start_s = time.monotonic() - self.started
        with urllib.request.urlopen(self.url, timeout=10) as r:
            assert r.status == 200

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/setup.sh --test (apt-get install chromium libegl1 "
                    "libegl-mesa0)")
    return path


def view_image(page) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.locator("#views img").screenshot())).convert("RGB")).astype(int)


def wait_for_frame(page, before: np.ndarray, region, changed: bool, what: str,
                   timeout_s: float = 120.0) -> np.ndarray:
    """Wait until the view's image inside ``region`` (y0, y1, x0, x1 in image pixels) differs from ``before``
    (``changed``) or matches it again (not ``changed``); the image."""
    y0, y1, x0, x1 = region
    deadline = time.monotonic() + timeout_s
    fraction = None
    while True:
        now = view_image(page)
        assert now.shape == before.shape, f"{what}: the view changed size ({before.shape} -> {now.shape})"
        diff = np.abs(now[y0:y1, x0:x1] - before[y0:y1, x0:x1]).max(axis=-1)
        fraction = float(np.mean(diff > 12))
        if (fraction > 0.2) if changed else (fraction < 0.01):
            print(f"{what}: {fraction:.3f} of the pixels inside the box changed")
            return now
        if time.monotonic() > deadline:
            keep_frames(what, before, now)
            whole = float(np.mean(np.abs(now - before).max(axis=-1) > 12))
            app_state = {name: state(page, name) for name in APP_STATE}
            raise AssertionError(f"{what}: the view did not {'change' if changed else 'return'} inside the box "
                                 f"within {timeout_s:.0f} s (changed pixels: {fraction:.3f} inside the box, "
                                 f"{whole:.3f} in the whole view; the app's state: {app_state})")
        page.wait_for_timeout(100)


def keep_frames(what: str, before: np.ndarray, now: np.ndarray) -> None:
    """On a failed wait, the two frames as PNGs under $SAMED_WEB_FAILED_FRAMES (if set) for a look afterwards."""
    from PIL import Image

    folder = os.environ.get("SAMED_WEB_FAILED_FRAMES")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name, image in (("before", before), ("now", now)):
            Image.fromarray(image.astype(np.uint8)).save(os.path.join(folder, f"{what}-{name}.png"))


def stable_layout(page, timeout_s: float = 60.0) -> dict:
    """The app's published view geometry once it, the view image's box on the page and the screenshot's size have
    not changed for 1.5 s."""
    deadline, last, same = time.monotonic() + timeout_s, None, 0
    while True:
        geometry = state(page, "view_geometry")
        box = page.locator("#views img").bounding_box()
        now = (json.dumps(geometry, sort_keys=True), json.dumps(box, sort_keys=True), view_image(page).shape)
        same = same + 1 if now == last else 0
        if same >= 3 or time.monotonic() > deadline:
            return geometry
        last = now
        page.wait_for_timeout(500)


def settled_image(page, timeout_s: float = 30.0, quiet_s: float = 1.8) -> np.ndarray:
    """The view's image once it has not changed for ``quiet_s`` (screenshots 300 ms apart). After a change the
    stream sends a quick frame (JPEG quality 50), a finer one 5 frame periods later (quality 90; 0.5 s at the
    10 fps of a page without focus), and the app renders once more 0.6 s after the change (samed/web/app.py): two
    frames that differ only in quality differ by a few grey levels everywhere."""
    deadline = time.monotonic() + timeout_s
    last, since = view_image(page), time.monotonic()
    while True:
        page.wait_for_timeout(300)
        now = view_image(page)
        if not (now.shape == last.shape and np.array_equal(now, last)):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s or time.monotonic() > deadline:
            return now


def state(page, name):
    return page.evaluate(f"() => window.trame.state.get('{name}')")


def wait_state(page, expression: str, timeout_ms: int = WAIT_MS) -> None:
    """Wait for a JavaScript expression over the app's state (``s``), e.g. "s.get('has_preview')"."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"() => {{ const s = window.trame && window.trame.state; return !!s && ({expression}); }}",
                               timeout=timeout_ms)
    except PlaywrightTimeout:
        app_state = {name: state(page, name) for name in APP_STATE}
        raise AssertionError(f"not true within {timeout_ms / 1000:.0f} s: {expression}; the app's state: "
                             f"{app_state}") from None


def mask_on_grid(path: Path, segment: str, grid_ijk_to_ras: np.ndarray, shape) -> np.ndarray:
    """A .seg.nrrd segment placed on the CT's voxel grid (both files lie on that lattice, possibly cropped)."""
    from samed.core.segmentation_file import read_segmentation

    seg = read_segmentation(path)
    mask = seg.segment_mask(segment)
    to_grid = np.linalg.inv(grid_ijk_to_ras) @ seg.ijk_to_ras
    assert np.allclose(to_grid[:3, :3], np.eye(3), atol=1e-4), f"{path.name} is not on the CT's voxel axes"
    offset_ijk = to_grid[:3, 3]
    assert np.allclose(offset_ijk, np.round(offset_ijk), atol=1e-3), f"{path.name} is off the CT's voxel lattice"
    i0, j0, k0 = (int(round(v)) for v in offset_ijk)
    out = np.zeros(shape, dtype=bool)
    k, j, i = mask.shape
    out[k0:k0 + k, j0:j0 + j, i0:i0 + i] = mask
    return out


@pytest.fixture(scope="module")
def web_app(ctchest, tmp_path_factory):
    pytest.importorskip("trame_slicer", reason="the web extra is not installed (scripts/setup.sh --test)")
    out = tmp_path_factory.mktemp("samed-web-out")
    app = WebProcess(ctchest[0].parent, out, "--intensity", "minmax")
    yield app, out
    print("the end of samed web's log:\n" + "\n".join(app.log().splitlines()[-40:]))  # shown if a test failed
    app.stop()


@pytest.fixture(scope="module")
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                                                 "(scripts/setup.sh --test)")
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory(prefix="samed-web-chromium-") as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=chromium_path(), headless=True,
                                                       args=CHROMIUM_FLAGS, viewport={"width": 1200, "height": 800})
        try:
            yield context.new_page()
        finally:
            context.close()


def test_segment_anything_in_the_browser(web_app, browser_page, ctchest, tmp_path):
    from samed.core.io import read_volume

    app, out_dir = web_app
    page = browser_page
    page.goto(app.url)
    page.wait_for_selector("#open-volume", timeout=60_000)
    assert state(page, "volumes") == ["data/CTChest4.nrrd"], "the --data folder's volumes are offered, no other"
    page.click("#open-volume")
    wait_state(page, "s.get('opened') === 'data/CTChest4.nrrd'", 120_000)
    page.fill("#slice-index", str(DEMO_SLICE))
    page.press("#slice-index", "Enter")
    wait_state(page, f"s.get('view_geometry') && s.get('view_geometry').xy_to_ijk[11] === {DEMO_SLICE}", 60_000)

    # where the demo's box lies on the page: the view's XY -> voxel map that the app publishes, inverted, once the
    # page's layout has settled (the view may still be resized right after the volume opens)
    geometry = stable_layout(page)
    xy_to_ijk = np.array(geometry["xy_to_ijk"], dtype=float).reshape(4, 4)
    width, height = geometry["size"]
    img = page.locator("#views img").bounding_box()
    ijk_to_xy = np.linalg.inv(xy_to_ijk)

    def on_page(i, j):
        x, y = (ijk_to_xy @ [i, j, DEMO_SLICE, 1.0])[:2]
        return img["x"] + x * img["width"] / width, img["y"] + (height - y) * img["height"] / height

    corner_a, corner_b = on_page(*DEMO_BOX_IJK[:2]), on_page(*DEMO_BOX_IJK[2:])
    xs = sorted(c - img["x"] for c in (corner_a[0], corner_b[0]))
    ys = sorted(c - img["y"] for c in (corner_a[1], corner_b[1]))
    inside = (int(ys[0]) + 3, int(ys[1]) - 3, int(xs[0]) + 3, int(xs[1]) - 3)  # image pixels inside the box
    wait_for_frame(page, np.zeros_like(view_image(page)), inside, changed=True, what="open")  # the CT is shown

    def drag_box():
        page.mouse.move(*corner_a)
        page.mouse.down()
        page.mouse.move(*corner_b, steps=4)
        page.mouse.up()

    # 0. a click is an include point (the Slicer effect's gesture rules), which LiteMedSAM does not take
    page.mouse.click(*on_page(80, 67))
    wait_state(page, "s.get('status').includes('does not take point prompts')", 60_000)
    assert not state(page, "has_preview")
    assert page.locator("#views img").bounding_box() == img, "the page layout moved the view"
    before = settled_image(page)

    # 1. the box -> the preview: pixels inside the box change, hardly any outside it
    drag_box()
    wait_state(page, "s.get('has_preview') && !s.get('busy')")
    preview = wait_for_frame(page, before, inside, changed=True, what="preview")
    outside = np.ones(before.shape[:2], bool)
    outside[int(ys[0]) - 2:int(ys[1]) + 3, int(xs[0]) - 2:int(xs[1]) + 3] = False
    changed_outside = np.abs(preview - before).max(axis=-1)[outside] > 12
    assert changed_outside.mean() < 0.005, "the preview changed the view outside the box"
    box_xy = state(page, "box_xy")
    assert np.allclose(box_xy, DEMO_BOX_IJK, atol=1.0), f"the app used box {box_xy}, not the dragged one"
    page.screenshot(path=str(tmp_path / "web.png"))
    if os.environ.get("SAMED_WEB_SCREENSHOT"):
        shutil.copy(tmp_path / "web.png", os.environ["SAMED_WEB_SCREENSHOT"])

    # 2. Apply (the preview becomes the segment), Undo (the view as before), Redo (the segment again)
    page.click("#apply")
    wait_state(page, "!s.get('has_preview') && s.get('can_undo')")
    assert state(page, "status").startswith("applied"), state(page, "status")
    wait_for_frame(page, before, inside, changed=True, what="Apply")
    applied = settled_image(page)
    page.click("#undo")
    wait_state(page, "s.get('can_redo') && !s.get('can_undo')")
    wait_for_frame(page, before, inside, changed=False, what="Undo")
    page.click("#redo")
    wait_state(page, "s.get('can_undo') && !s.get('can_redo')")
    wait_for_frame(page, before, inside, changed=True, what="Redo")
    y0, y1, x0, x1 = inside
    redone = settled_image(page)
    assert redone.shape == applied.shape, "the view changed size"
    assert np.abs(redone[y0:y1, x0:x1] - applied[y0:y1, x0:x1]).max(axis=-1).mean() < 2, \
        "Redo did not bring the applied segment back"

    # 3. the same box again, Propagate, Apply, Save
    drag_box()
    wait_state(page, "s.get('has_preview') && !s.get('busy')")
    assert state(page, "box_xy") == box_xy, "the same drag gave another box"
    page.click("#propagate")
    wait_state(page, "!s.get('busy') && s.get('status').startsWith('preview on')")
    status = state(page, "status")
    page.click("#apply")
    wait_state(page, "!s.get('has_preview') && s.get('status').startsWith('applied')")
    page.click("#save")
    wait_state(page, "s.get('saved') !== ''", 60_000)
    saved = Path(state(page, "saved"))
    assert saved == out_dir / "CTChest4.seg.nrrd" and saved.is_file()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".samed-web-")], "a temporary file was left"
    with page.expect_download(timeout=60_000) as download:  # the same file, to the browser
        page.click("#download")
    assert download.value.suggested_filename == "CTChest4.seg.nrrd"
    download.value.save_as(tmp_path / "downloaded.seg.nrrd")
    assert (tmp_path / "downloaded.seg.nrrd").read_bytes() == saved.read_bytes()
    page.click("#compare")  # against the reference 'right lung' (preselected); the demo prints 3D Dice 0.86
    wait_state(page, "s.get('evaluation').includes('Dice')", 120_000)
    dice = float(re.search(r"Dice ([0-9.]+)", state(page, "evaluation")).group(1))
    assert 0.8 < dice < 0.95, state(page, "evaluation")

    # 4. the same voxels as `samed segment` for that box and settings
    cli_out = tmp_path / "cli.seg.nrrd"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "SegmentAnythingMed"))
    box_arg = ",".join(repr(float(v)) for v in box_xy)
    run = subprocess.run([sys.executable, "-m", "samed.cli.main", "segment", str(ctchest[0]), "--slice",
                          str(DEMO_SLICE), f"--box={box_arg}", "--propagate", "--intensity", "minmax",
                          "--device", "cpu", "--out", str(cli_out)], env=env, cwd=str(ROOT),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    ct = read_volume(ctchest[0])
    web_mask = mask_on_grid(saved, "Segment_1", ct.ijk_to_ras, ct.array.shape)
    cli_mask = mask_on_grid(cli_out, "Segment_1", ct.ijk_to_ras, ct.array.shape)
    slices = np.flatnonzero(web_mask.any(axis=(1, 2)))
    assert len(slices) > 5, f"propagation reached only slices {slices.tolist()} ({status})"
    assert web_mask.sum() > 0 and np.array_equal(web_mask, cli_mask), \
        f"web {int(web_mask.sum())} voxels vs samed segment {int(cli_mask.sum())}, differing " \
        f"{int((web_mask ^ cli_mask).sum())}"
    print(f"\nsamed web: started in {app.start_s:.1f} s, {app.rss_mb():.0f} MB resident after the scenario; "
          f"{int(web_mask.sum())} voxels on slices {slices[0]}..{slices[-1]}")


def test_a_token_keeps_other_browsers_out(ctchest, browser_page, tmp_path):
    """With a token, the page's websocket answers only a browser that passes it (?secret=TOKEN): without it no
    state (and so no data) reaches the page."""
    pytest.importorskip("trame_slicer", reason="the web extra is not installed (scripts/setup.sh --test)")
    token_file = tmp_path / "token.txt"
    token_file.write_text("k3y-" + os.urandom(16).hex() + "\n")
    token = token_file.read_text().strip()
    app = WebProcess(ctchest[0].parent, tmp_path / "out", "--access-token-file", str(token_file))
    try:
        page = browser_page
        page.goto(app.url + "?secret=" + token)
        wait_state(page, "Array.isArray(s.get('volumes'))", 60_000)
        assert state(page, "volumes") == ["data/CTChest4.nrrd"]
        page.locator("input[type=file]").set_input_files(str(ctchest[0]))  # an upload through the real client
        wait_state(page, "s.get('opened') === 'uploads/CTChest4.nrrd'", 120_000)
        second = page.context.new_page()  # another user, with the token: one browser per process
        try:
            second.goto(app.url + "?secret=" + token)
            second.wait_for_timeout(8_000)  # what must not happen: the first user's state arriving
            assert second.evaluate("() => window.trame && window.trame.state ? "
                                   "window.trame.state.get('opened') : undefined") is None
        finally:
            second.close()
        for url in (app.url, app.url + "?secret=wrong-" + token):
            page.goto(url)
            page.wait_for_timeout(8_000)  # what must not happen: the state arriving (the right token: ~1 s)
            assert page.evaluate("() => window.trame && window.trame.state ? "
                                 "window.trame.state.get('volumes') : undefined") is None, url
        page.goto(app.url + "?secret=" + token)  # the first user's seat was freed when its page went away
        wait_state(page, "Array.isArray(s.get('volumes'))", 60_000)
    finally:
        app.stop()
