"""Pre-encoding (issue 16): when the user stops on a slice, ``Backend.stopped_on(picture)`` encodes it in the
background so that the box that follows needs only a decode; encodes ahead for slices scrolled past are dropped;
a running propagation is never slowed by them. In-process: the real ONNX Runtime engine (conftest.onnx_engine) on
real CTChest4 slices; through the real service (conftest.samed_service, ``samed serve`` on 127.0.0.1) with the
torch-free HTTP client."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from samed.core.backend import image_key
from samed.core.prompts import Prompt, box_from_mask


def wait_until(condition, timeout: float = 120.0, what: str = "the condition"):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def chest(ctchest):
    """CTChest4's pictures (minmax, as the README demo) and the right lung's reference, slice first."""
    from samed.core import io
    from samed.core.volume_session import VolumeSession

    ct, seg = ctchest
    session = VolumeSession(io.read_volume(ct), backend=None, intensity_mode="minmax")
    lung = np.moveaxis(io.reference_mask(seg, "right lung")[0], session.np_axis, 0)
    return {k: session.picture(k) for k in range(session.n_slices)}, lung, session


class RecordingEngine:
    """The real engine, with a log of its encodes: (picture key, thread name, start, end)."""

    def __init__(self, engine):
        self._engine = engine
        self.encodes = []
        self.on_encode = None

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def encode(self, image_rgb):
        if self.on_encode is not None:
            self.on_encode()
        t0 = time.monotonic()
        emb = self._engine.encode(image_rgb)
        self.encodes.append((image_key(self._engine.name, image_rgb), threading.current_thread().name, t0,
                             time.monotonic()))
        return emb


def test_stopped_on_encodes_in_the_background_so_the_box_needs_only_a_decode(onnx_engine, chest):
    from samed.engines.local import LocalBackend

    pictures, lung, _ = chest
    backend = LocalBackend(onnx_engine)
    try:
        t0 = time.perf_counter()
        backend.stopped_on(pictures[20])
        assert time.perf_counter() - t0 < 0.2  # returns at once; the encode runs in the background
        key = image_key(backend.model, pictures[20])
        wait_until(lambda: key in backend.cache, what="the background encode")
        assert (backend.encoder_runs, backend.prefetch_runs) == (1, 1)
        pred = backend.segment(pictures[20], Prompt(box_xy=box_from_mask(lung[20])), multimask=False)
        assert backend.encoder_runs == 1  # the box needed only a decode
        assert pred.best.sum() > 0.5 * lung[20].sum()
        backend.stopped_on(pictures[20])  # cached already: nothing more to encode
        time.sleep(backend.PREFETCH_YIELD_S + 0.2)
        assert backend.encoder_runs == 1
    finally:
        backend.close()


def test_encodes_for_slices_scrolled_past_are_dropped(onnx_engine, chest):
    from samed.engines.local import LocalBackend

    pictures, _, _ = chest
    backend = LocalBackend(onnx_engine)
    try:
        for k in range(14, 21):  # scrolling: the view shows slices 14..20, the user stops on 20
            backend.stopped_on(pictures[k])
        last = image_key(backend.model, pictures[20])
        wait_until(lambda: last in backend.cache and not backend._pending, what="the encode of slice 20")
        encoded = [k for k in range(14, 21) if image_key(backend.model, pictures[k]) in backend.cache]
        # the first one may have started before the user moved on (an encoder pass runs to its end); none between
        assert encoded in ([20], [14, 20]), encoded
        assert backend.encoder_runs == len(encoded)
    finally:
        backend.close()


def test_encodes_ahead_never_slow_a_running_propagation(onnx_engine, chest):
    """The user stops on another slice while a propagation runs: that encode waits until the walk has ended
    (an encode ahead between two of the walk's slices would delay the next one by a whole encoder pass)."""
    from samed.engines.local import LocalBackend
    from samed.core.propagation import PropagationSettings

    pictures, lung, session = chest
    engine = RecordingEngine(onnx_engine)
    backend = LocalBackend(engine, prefetch_in_propagation=False)
    session.backend = backend
    elsewhere = pictures[5]

    def user_looks_elsewhere():
        if len(engine.encodes) == 1:  # during the walk's second encode
            backend.stopped_on(elsewhere)

    engine.on_encode = user_looks_elsewhere
    try:
        seed = session.segment_slice(20, Prompt(box_xy=box_from_mask(lung[20])), multimask=False).best
        result = session.propagate(20, seed, PropagationSettings(max_slices=2))
        walk_end = time.monotonic()
        assert len(result.masks) >= 3
        key = image_key(backend.model, elsewhere)
        wait_until(lambda: key in backend.cache, what="the encode ahead after the walk")
        ahead = [e for e in engine.encodes if e[0] == key]
        walk = [e for e in engine.encodes if e[0] != key]
        assert len(ahead) == 1 and ahead[0][1].startswith("samed-prefetch")
        assert len(walk) == len(result.masks) + sum(1 for s in result.stopped.values() if not s.startswith("range"))
        assert ahead[0][2] >= max(e[3] for e in walk) and ahead[0][2] >= walk_end  # after the walk, not within it
    finally:
        session.backend = None
        backend.close()


def test_the_http_client_pre_encodes_on_the_service(samed_service, chest):
    from samed.client.http import HttpBackend

    pictures, lung, _ = chest
    client = HttpBackend(samed_service.url, model="litemedsam")
    try:
        # pictures this service has not seen (other tests use the same CT): one grey level up
        shifted = {k: np.clip(pictures[k].astype(np.int16) + 3, 0, 255).astype(np.uint8) for k in (8, 9, 10, 11)}
        keys = {k: image_key("litemedsam", p) for k, p in shifted.items()}
        assert not any(client.is_cached(key) for key in keys.values())
        for k in (8, 9, 10, 11):  # scroll 8 -> 11, stop on 11
            client.stopped_on(shifted[k])
        wait_until(lambda: client.is_cached(keys[11]) and not client._prefetching, what="the service's encode")
        cached = [k for k in (8, 9, 10, 11) if client.is_cached(keys[k])]
        assert cached in ([11], [8, 11]), cached  # the slices scrolled past were not sent
        sent = client.bytes_sent
        pred = client.segment(shifted[11], Prompt(box_xy=box_from_mask(lung[11])), multimask=False)
        assert client.bytes_sent - sent < 10_000  # only the prompt went out: the slice was encoded ahead
        assert pred.best.any()
    finally:
        client.close()
