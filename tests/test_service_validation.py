"""Bad content that used to reach the model or the job queue (issue 12, defects 4 and 9), against the real
``samed serve`` process of the session: a slice too thin for the model's resize, a ``.npy`` body with a cut header,
propagation settings out of range. Each is a 4xx whose message says what to change; the CLI with the in-process
engine refuses the same thin slice with the same message."""
from __future__ import annotations

import io

import json

import numpy as np
import pytest
from test_service_input import BUNDLE_TYPE, MODEL, assert_4xx, call

from samed.client import HttpBackend
from samed.core.prompts import PromptError
from samed.service.wire import NPY_TYPE, encode_bundle, encode_npy

ENCODE = f"/v1/models/{MODEL}/embeddings"
THIN = "too thin for"


@pytest.fixture(scope="module")
def cached_key(samed_service):
    rng = np.random.default_rng(3)
    client = HttpBackend(samed_service.url)
    key = client.encode(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).key
    client.close()
    return key


def _decode_box_ok(service, key):
    import json

    status, body, _ = call(service.url, "POST", f"/v1/models/{MODEL}/embeddings/{key}/decode",
                           json.dumps({"box_xy": [10, 10, 40, 40]}), {"Content-Type": "application/json"})
    assert status == 200, body


@pytest.mark.parametrize("shape", [(1, 600), (600, 1), (2, 1100), (1, 8192)])
def test_slices_too_thin_for_the_models_resize_are_422(samed_service, cached_key, shape):
    """LiteMedSAM resizes the long side to 256 px: beyond 512:1 the short side rounds to 0 (PIL used to raise
    "height and width must be > 0" -> 500)."""
    picture = np.full(shape + (3,), 90, np.uint8)
    for body, ctype in ((encode_npy(picture), NPY_TYPE), (encode_bundle({}, {"image": picture}), BUNDLE_TYPE)):
        status, answer, _ = call(samed_service.url, "POST", ENCODE, body, {"Content-Type": ctype})
        assert_4xx(status, answer, 422)
        assert THIN in answer["detail"] and "512:1" in answer["detail"], answer
    # in a propagation slab too: refused at upload, not as a failed job
    pics = np.full((2,) + shape + (3,), 90, np.uint8)
    seed = np.zeros(shape, bool)
    seed[0, 0] = True
    status, answer, _ = call(samed_service.url, "POST", f"/v1/models/{MODEL}/propagations",
                             encode_bundle({"seed_index": 0}, {"pictures": pics, "seed_mask": seed}),
                             {"Content-Type": BUNDLE_TYPE})
    assert_4xx(status, answer, 422)
    assert THIN in answer["detail"], answer
    _decode_box_ok(samed_service, cached_key)
    assert "Traceback" not in samed_service.log(), samed_service.log()[-3000:]


def test_widest_accepted_slice_is_encoded(samed_service):
    client = HttpBackend(samed_service.url)
    handle = client.encode(np.full((1, 512, 3), 90, np.uint8))  # 512:1 -> 1 x 256 after the resize
    assert handle.shape_hw == (1, 512)
    client.close()


def test_in_process_engine_gives_the_same_message(lite_backend):
    """The CLI's path (LocalBackend -> engine) refuses with the PromptError the CLI prints (exit 2)."""
    with pytest.raises(PromptError, match=r"too thin for litemedsam.*512:1"):
        lite_backend.encode(np.zeros((1, 600, 3), np.uint8))
    with pytest.raises(PromptError, match=THIN):
        lite_backend.encode_many([np.zeros((600, 1, 3), np.uint8)])


def _npy_cut(picture, cut):
    data = encode_npy(picture)
    return data[:cut]


@pytest.mark.parametrize("cut", [8, 10, 12, 20, 40, 60, 90, 127])
def test_npy_with_a_cut_header_is_400(samed_service, cached_key, cut):
    body = _npy_cut(np.zeros((64, 80, 3), np.uint8), cut)
    status, answer, _ = call(samed_service.url, "POST", ENCODE, body, {"Content-Type": NPY_TYPE})
    assert_4xx(status, answer, 400)
    assert ".npy" in answer["detail"]


def test_npy_header_with_unbalanced_brackets_is_400(samed_service, cached_key):
    f = io.BytesIO()
    np.save(f, np.zeros((4, 4, 3), np.uint8))
    data = bytearray(f.getvalue())
    header_end = data.index(b"}")
    data[header_end] = ord("(")  # "{'descr': ..., 'shape': (4, 4, 3), (" : tokenize.TokenError (EOF in statement)
    status, answer, _ = call(samed_service.url, "POST", ENCODE, bytes(data), {"Content-Type": NPY_TYPE})
    assert_4xx(status, answer, 400)
    still_serving_ok(samed_service, cached_key)


def still_serving_ok(service, key):
    _decode_box_ok(service, key)
    assert service.alive()


# ---- propagation settings (defect 9) ------------------------------------------------------------------------
BAD_SETTINGS = [("box_margin_frac", -10), ("min_area_px", -5), ("max_intensity_shift", -1),
                ("box_margin_px", -1), ("min_score", 1.5), ("min_score", -1.5), ("min_intensity_shift", -3),
                ("max_area_ratio", 0.5), ("min_area_ratio", -0.2), ("max_slices", -1), ("index_range", [9, 5]),
                ("index_range", [-3, 5]), ("box_margin_frac", 1e9)]


@pytest.mark.parametrize("name,value", BAD_SETTINGS)
def test_out_of_range_propagation_settings_are_422_naming_the_setting(samed_service, cached_key, name, value):
    pics = np.zeros((3, 64, 80, 3), np.uint8)
    seed = np.zeros((64, 80), bool)
    seed[20:40, 20:50] = True
    meta = {"seed_index": 1, "settings": {name: value}}
    status, answer, _ = call(samed_service.url, "POST", f"/v1/models/{MODEL}/propagations",
                             encode_bundle(meta, {"pictures": pics, "seed_mask": seed}), {"Content-Type": BUNDLE_TYPE})
    assert_4xx(status, answer, 422)
    assert name in answer["detail"], answer


def test_in_range_settings_still_start_a_job(samed_service, cached_key):
    pics = np.zeros((3, 64, 80, 3), np.uint8)
    seed = np.zeros((64, 80), bool)
    seed[20:40, 20:50] = True
    meta = {"seed_index": 1, "settings": {"box_margin_frac": 0.0, "min_area_px": 0, "max_intensity_shift": 0,
                                          "max_slices": 0, "index_range": [1, 1]}}
    status, answer, _ = call(samed_service.url, "POST", f"/v1/models/{MODEL}/propagations",
                             encode_bundle(meta, {"pictures": pics, "seed_mask": seed}), {"Content-Type": BUNDLE_TYPE})
    assert status == 202, answer
    still_serving_ok(samed_service, cached_key)


@pytest.mark.parametrize("box", [[10, 5, 30], [30, 5, 10, 20], [10, 20, 30, 5], [111, 5, 30, 20],
                                 [10, 5, 1111111, 20], "10,5,30,20"])
def test_a_bad_seed_box_is_422_naming_it(samed_service, cached_key, box):
    """The user's box on the seed slice (``seed_box_xy``: x0, y0, x1, y1, finite, x0 <= x1, y0 <= y1). The client
    never sends NaN or infinity (strict JSON); a hand-made body may: 111 becomes NaN and 1111111 becomes 1e+9999
    (infinity to Python's json) in the bytes sent."""
    pics = np.zeros((3, 64, 80, 3), np.uint8)
    seed = np.zeros((64, 80), bool)
    seed[20:40, 20:50] = True
    meta = {"seed_index": 1, "seed_box_xy": box}
    body = encode_bundle(meta, {"pictures": pics, "seed_mask": seed})
    body = body.replace(b"[111,", b"[NaN,").replace(b",1111111,", b",1e+9999,")
    status, answer, _ = call(samed_service.url, "POST", f"/v1/models/{MODEL}/propagations", body,
                             {"Content-Type": BUNDLE_TYPE})
    assert_4xx(status, answer, 422)
    assert "seed_box_xy" in json.dumps(answer["detail"]), answer
    still_serving_ok(samed_service, cached_key)
