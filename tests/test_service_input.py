"""Bad input never kills the service: property-based tests (hypothesis) against the real ``samed serve`` process.

Every malformed body, wrong dtype or shape, NaN, huge dimension, prompt outside the slice, unknown model, unknown
embedding key or oversized body gets a 4xx with a JSON message, and the service serves correct requests
afterwards. Only requests that are valid reach the model (one encode for the whole module, cheap decodes)."""
from __future__ import annotations

import http.client
import io
import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from samed.client import HttpBackend
from samed.core.backend import image_key
from samed.core.prompts import Prompt, PromptError
from samed.service.wire import BUNDLE_TYPE, MAGIC, encode_bundle, encode_npy, mask_to_json

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MODEL = "litemedsam"
H, W = 64, 80


def call(url: str, method: str, path: str, body=None, headers=None, chunked: bool = False):
    """One raw request: (status, parsed JSON or raw bytes, headers)."""
    host, port = url.replace("http://", "").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        data = resp.read()
        ctype = resp.getheader("Content-Type") or ""
        return resp.status, (json.loads(data) if data and ctype.startswith("application/json") else data), resp
    finally:
        conn.close()


def assert_4xx(status, body, *allowed):
    assert 400 <= status < 500, f"HTTP {status}: {body!r:.300}"
    if allowed:
        assert status in allowed, f"HTTP {status} not in {allowed}: {body!r:.300}"
    assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], body


@pytest.fixture(scope="module")
def service(samed_service):
    return samed_service


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(7)
    pic = np.zeros((H, W, 3), np.uint8)
    pic[16:48, 20:60] = 200
    return (pic + rng.integers(0, 30, pic.shape, dtype=np.uint8)).astype(np.uint8)


@pytest.fixture(scope="module")
def cached_key(service, picture):
    client = HttpBackend(service.url)
    handle = client.encode(picture)
    client.close()
    return handle.key


def still_serving(service, key):
    status, body, _ = call(service.url, "GET", "/v1/health")
    assert status == 200 and body["status"] == "ok"
    status, body, _ = call(service.url, "POST", f"/v1/models/{MODEL}/embeddings/{key}/decode",
                           json.dumps({"box_xy": [20, 16, 60, 48]}), {"Content-Type": "application/json"})
    assert status == 200 and body[:6] == MAGIC[:6]
    assert service.alive()


def post_bundle(service, path, body: bytes, extra=None):
    return call(service.url, "POST", path, body, {"Content-Type": BUNDLE_TYPE, **(extra or {})})


ENCODE = f"/v1/models/{MODEL}/embeddings"


# ---- encode: malformed bodies, dtypes, shapes, dimensions ------------------------------------------------------
@FAST
@given(st.binary(max_size=300))
def test_random_bytes_as_a_picture_are_refused(service, cached_key, data):
    for ctype in (BUNDLE_TYPE, "application/x-npy"):
        status, body, _ = call(service.url, "POST", ENCODE, data, {"Content-Type": ctype})
        assert_4xx(status, body, 400, 413, 422)


@FAST
@given(header=st.one_of(
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none(), max_size=4),
    st.fixed_dictionaries({"meta": st.just({}), "arrays": st.lists(st.fixed_dictionaries({
        "name": st.sampled_from(["image", "x", ""]),
        "dtype": st.sampled_from(["uint8", "bool", "float32", "object", "<U4", "int64"]),
        "shape": st.lists(st.integers(-5, 10 ** 12), max_size=6),
        "encoding": st.sampled_from(["raw", "bits", "zip"]),
        "nbytes": st.integers(-1, 10 ** 6)}), max_size=3)})),
    payload=st.binary(max_size=200), version=st.sampled_from([1, 2]),
    header_len_delta=st.sampled_from([0, 0, 0, 1, -1, 10 ** 6]))
def test_malformed_bundles_are_refused(service, cached_key, header, payload, version, header_len_delta):
    head = json.dumps(header).encode()
    prefix = MAGIC[:6] + bytes([version, 0]) + struct.pack("<I", max(0, len(head) + header_len_delta))
    status, body, _ = post_bundle(service, ENCODE, prefix + head + payload)
    assert_4xx(status, body, 400, 413, 422)


@FAST
@given(dtype=st.sampled_from(["float32", "float16", "int32", "bool"]),
       shape=st.sampled_from([(H, W, 3), (H, W), (H, W, 4), (H, W, 1), (3, H, W), (2, H, W, 3), (H,), ()]))
def test_wrong_dtype_or_shape_is_422(service, cached_key, dtype, shape):
    arr = np.ones(shape, dtype=dtype)
    for body, ctype in ((encode_bundle({}, {"image": arr}), BUNDLE_TYPE), (encode_npy(arr), "application/x-npy")):
        status, reply, _ = call(service.url, "POST", ENCODE, body, {"Content-Type": ctype})
        assert_4xx(status, reply, 422)


@FAST
@given(shape=st.sampled_from([(H, W, 3, 1), (H, 0, 3), (0, 0, 3), (1, 9000, 3), (9000, 1, 3), (2, 2, 2, 2, 3)]))
def test_bad_uint8_shapes_are_422(service, cached_key, shape):
    arr = np.zeros(shape, np.uint8)
    status, body, _ = post_bundle(service, ENCODE, encode_bundle({}, {"image": arr}))
    assert_4xx(status, body, 400, 422)


@FAST
@given(dims=st.lists(st.integers(10 ** 4, 10 ** 9), min_size=2, max_size=2))
def test_huge_declared_dimensions_are_refused_before_allocating(service, cached_key, dims):
    shape = [dims[0], dims[1], 3]
    head = json.dumps({"meta": {}, "arrays": [{"name": "image", "dtype": "uint8", "shape": shape,
                                               "encoding": "raw", "nbytes": dims[0] * dims[1] * 3}]}).encode()
    status, body, _ = post_bundle(service, ENCODE, MAGIC + struct.pack("<I", len(head)) + head + b"\0" * 64)
    assert_4xx(status, body, 413)
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
    npy = f.getvalue() + b"\0" * 64
    status, body, _ = call(service.url, "POST", ENCODE, npy, {"Content-Type": "application/x-npy"})
    assert_4xx(status, body, 413)


def test_wrong_key_header_media_type_and_encoding(service, cached_key, picture):
    body = encode_bundle({}, {"image": picture})
    status, reply, _ = post_bundle(service, ENCODE, body, {"X-Samed-Key": "0" * 40})
    assert_4xx(status, reply, 422)
    assert "key" in reply["detail"]
    status, reply, _ = call(service.url, "POST", ENCODE, body, {"Content-Type": "image/png"})
    assert_4xx(status, reply, 415)
    status, reply, _ = post_bundle(service, ENCODE, body, {"Content-Encoding": "br"})
    assert_4xx(status, reply, 415)
    status, reply, _ = post_bundle(service, ENCODE, body[:-10])
    assert_4xx(status, reply, 400)
    assert "truncated" in reply["detail"]


# ---- oversized bodies ------------------------------------------------------------------------------------------
def test_oversized_bodies_are_413_by_length_by_stream_and_by_decompression(service, cached_key):
    limit = HttpBackend(service.url).info()["limits"]["max_body_bytes"]
    big = b"\0" * (limit + 1)
    status, body, _ = post_bundle(service, ENCODE, big)  # refused by its Content-Length
    assert_4xx(status, body, 413)
    assert "--max-body-mb" in body["detail"]
    # no Content-Length: a bundle whose head declares more than the limit is refused by its head
    side = int(np.sqrt(limit)) + 1
    head = encode_bundle({}, {"image": np.zeros((side, side), np.uint8)})[:-side * side]
    chunks = iter([head] + [b"\0" * (1 << 20)] * (limit // (1 << 20) + 2))
    status, body, _ = call(service.url, "POST", ENCODE, chunks, {"Content-Type": BUNDLE_TYPE}, chunked=True)
    assert_4xx(status, body, 413)
    # a JSON body without Content-Length is counted as it comes
    chunks = iter([b'{"box_xy": [1, 1, 9, 9], "x": "'] + [b"a" * (1 << 20)] * (limit // (1 << 20) + 2) + [b'"}'])
    status, body, _ = call(service.url, "POST", f"/v1/models/{MODEL}/embeddings/{cached_key}/decode", chunks,
                           {"Content-Type": "application/json"}, chunked=True)
    assert_4xx(status, body, 413)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = c.compress(head) + c.compress(b"\0" * (limit + (1 << 20))) + c.flush()  # inflates past the limit
    status, body, _ = post_bundle(service, ENCODE, bomb, {"Content-Encoding": "gzip"})
    assert_4xx(status, body, 413)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = c.compress(b"\0" * (limit + (1 << 20))) + c.flush()  # no bundle at all: refused at its first bytes
    status, body, _ = post_bundle(service, ENCODE, zeros, {"Content-Encoding": "gzip"})
    assert_4xx(status, body, 400)
    still_serving(service, cached_key)
    assert "Traceback" not in service.log(), "the service logged an internal error:\n" + service.log()[-3000:]


# ---- decode: prompts, keys, models -----------------------------------------------------------------------------
finite = st.floats(-200, 200, allow_nan=False)
coordinate = st.one_of(finite, st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1e308]))


@FAST
@given(box=st.lists(coordinate, min_size=4, max_size=4))
def test_box_prompts_inside_are_decoded_and_outside_or_nan_are_422(service, cached_key, box):
    expect_ok = True
    try:
        Prompt(box_xy=box).validate((H, W))
    except PromptError:
        expect_ok = False
    status, body, _ = call(service.url, "POST", f"/v1/models/{MODEL}/embeddings/{cached_key}/decode",
                           json.dumps({"box_xy": box}), {"Content-Type": "application/json"})
    if expect_ok:
        assert status == 200, body
    else:
        assert_4xx(status, body, 422)


@FAST
@given(request=st.one_of(
    st.fixed_dictionaries({"include_points_xy": st.lists(st.lists(coordinate, min_size=2, max_size=2), max_size=3)}),
    st.fixed_dictionaries({"box_xy": st.lists(finite, max_size=6).filter(lambda b: len(b) != 4)}),
    st.fixed_dictionaries({"box_xy": st.just([1, 1, 20, 20]), "mask": st.fixed_dictionaries(
        {"shape": st.lists(st.integers(-3, 10 ** 6), min_size=2, max_size=3), "bits_b64": st.text(max_size=20)})}),
    st.fixed_dictionaries({"box_xy": st.just([1, 1, 20, 20]), "nonsense": st.integers()}),
    st.fixed_dictionaries({"box_xy": st.text(max_size=5)}),
    st.just({}), st.just([]), st.just("box"), st.just(None)))
def test_malformed_or_unsupported_prompts_are_4xx(service, cached_key, request):
    status, body, _ = call(service.url, "POST", f"/v1/models/{MODEL}/embeddings/{cached_key}/decode",
                           json.dumps(request), {"Content-Type": "application/json"})
    assert_4xx(status, body, 413, 422)


def test_mask_prompt_on_a_box_only_model_and_nan_literals(service, cached_key):
    path = f"/v1/models/{MODEL}/embeddings/{cached_key}/decode"
    mask = np.zeros((H, W), bool)
    mask[10:20, 10:30] = True
    status, body, _ = call(service.url, "POST", path, json.dumps({"box_xy": [5, 5, 30, 30],
                                                                  "mask": mask_to_json(mask)}),
                           {"Content-Type": "application/json"})
    assert_4xx(status, body, 422)
    assert "does not take mask" in body["detail"]
    for raw in (b'{"box_xy": [NaN, 1, 2, 3]}', b'{"box_xy": [1, 1, Infinity, 3]}', b'{"box_xy": [1, 1,', b"\xff\xfe"):
        status, body, _ = call(service.url, "POST", path, raw, {"Content-Type": "application/json"})
        assert_4xx(status, body, 400, 422)


@FAST
@given(key=st.one_of(st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
                     st.text(alphabet="0123456789abcdefXYZ-_.", min_size=1, max_size=60)))
def test_unknown_or_malformed_keys(service, cached_key, key):
    assume(key != cached_key)
    valid = len(key) == 40 and all(c in "0123456789abcdef" for c in key)
    status, body, _ = call(service.url, "POST", f"/v1/models/{MODEL}/embeddings/{key}/decode",
                           json.dumps({"box_xy": [1, 1, 20, 20]}), {"Content-Type": "application/json"})
    assert_4xx(status, body, 404 if valid else 422)
    if valid:
        assert "encode the slice again" in body["detail"]
    status, body, _ = call(service.url, "GET", f"/v1/models/{MODEL}/embeddings/{key}")
    assert_4xx(status, body, 404 if valid else 422)


@FAST
@given(model=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=30))
def test_unknown_models_are_404(service, cached_key, picture, model):
    assume(model != MODEL)
    status, body, _ = post_bundle(service, f"/v1/models/{model}/embeddings", encode_bundle({}, {"image": picture}))
    assert_4xx(status, body, 404)
    assert "not served here" in body["detail"]
    status, body, _ = call(service.url, "POST", f"/v1/models/{model}/embeddings/{cached_key}/decode",
                           json.dumps({"box_xy": [1, 1, 20, 20]}), {"Content-Type": "application/json"})
    assert_4xx(status, body, 404)


def test_the_key_is_the_clients_image_key(service, cached_key, picture):
    assert cached_key == image_key(MODEL, picture)
    status, body, resp = call(service.url, "HEAD", f"/v1/models/{MODEL}/embeddings/{cached_key}")
    assert status == 200 and body == b""


# ---- propagation uploads ---------------------------------------------------------------------------------------
def _slab(n=3):
    pics = np.zeros((n, H, W, 3), np.uint8)
    seed = np.zeros((H, W), bool)
    seed[20:40, 20:50] = True
    return pics, seed


@FAST
@given(case=st.sampled_from([
    ("seed_index", 7), ("seed_index", -1), ("first_index", -2), ("n_slices", 2), ("directions", ["left"]),
    ("directions", []), ("settings", {"box_margin_px": -1}), ("settings", {"min_overlap": 2.0}),
    ("settings", {"min_area_ratio": 3}), ("settings", {"unknown_rule": 1}), ("settings", {"max_slices": -3}),
    ("settings", {"index_range": [5, 9]}), ("settings", "fast"), ("extra", 1), ("seed_mask", "empty"),
    ("seed_mask", "shape"), ("seed_mask", "uint8"), ("pictures", "float"), ("pictures", "channels"),
    ("pictures", "missing"), ("pictures", "none")]))
def test_bad_propagation_uploads_are_4xx(service, cached_key, case):
    pics, seed = _slab()
    meta = {"seed_index": 1, "first_index": 0, "n_slices": 3}
    field, value = case
    arrays = {"pictures": pics, "seed_mask": seed}
    if field == "seed_mask":
        arrays["seed_mask"] = {"empty": np.zeros_like(seed), "shape": seed[:, :10],
                               "uint8": seed.astype(np.uint8)}[value]
    elif field == "pictures":
        if value == "missing":
            del arrays["pictures"]
        elif value == "none":
            arrays["pictures"] = pics[:0]
        else:
            arrays["pictures"] = pics.astype(np.float32) if value == "float" else np.zeros((3, H, W, 4), np.uint8)
    else:
        meta[field] = value
    status, body, _ = post_bundle(service, f"/v1/models/{MODEL}/propagations", encode_bundle(meta, arrays))
    assert_4xx(status, body, 404, 413, 422)


def test_unknown_jobs_are_404_and_service_still_serves(service, cached_key):
    for method, tail in (("GET", ""), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", "")):
        status, body, _ = call(service.url, method, f"/v1/jobs/{'f' * 32}{tail}")
        assert_4xx(status, body, 404)
    status, body, _ = call(service.url, "GET", "/v1/nowhere")
    assert_4xx(status, body, 404)
    status, body, _ = call(service.url, "PUT", "/v1/info")
    assert_4xx(status, body, 405)
    still_serving(service, cached_key)
    assert "Traceback" not in service.log(), "the service logged an internal error:\n" + service.log()[-3000:]
