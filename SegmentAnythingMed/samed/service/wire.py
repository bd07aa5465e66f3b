"""The wire format of the model service: how pictures, masks and scores travel between client and server.

Torch-free and FastAPI-free: the client (inside 3D Slicer's Python) imports this module too.

Pixel data never travels as JSON lists. A request or response that carries arrays is a **bundle**
(media type ``application/x-samed-bundle``)::

    b"SAMEDB" 0x01 0x00        8 bytes: magic, format version 1, reserved
    uint32 little-endian       length L of the JSON header
    L bytes                    JSON header (UTF-8): {"meta": {...}, "arrays": [{"name", "dtype", "shape",
                               "encoding", "nbytes"}, ...]}
    payloads                   the arrays' bytes, in the order listed, nothing after the last one

``dtype`` is one of uint8, bool, float16, float32, int32 (little-endian, C order). ``encoding`` is "raw" or, for
bool arrays only, "bits" (``np.packbits`` of the flattened array: 1 bit per pixel). A picture without a channel
axis ((H, W) or (N, H, W) instead of (..., 3)) means R = G = B: grey slices travel at a third of the size.
Whole bodies may be compressed with the standard ``Content-Encoding: gzip`` (requests) and
``Accept-Encoding: gzip`` (responses). An encode request may also be a plain ``.npy`` file
(``application/x-npy``), e.g. ``curl --data-binary @slice.npy``.

A mask inside a JSON body (a mask prompt) is ``{"shape": [H, W], "bits_b64": base64(np.packbits(mask))}``.
"""
from __future__ import annotations

import base64
import io
import json
import re
import struct
import tokenize
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

API_VERSION = 1  # bump on any incompatible change of routes or formats
API_PREFIX = f"/v{API_VERSION}"

BUNDLE_TYPE = "application/x-samed-bundle"
NPY_TYPE = "application/x-npy"
JSON_TYPE = "application/json"
KEY_HEADER = "X-Samed-Key"  # the client's image_key of an uploaded picture; the server checks it

MAGIC = b"SAMEDB\x01\x00"
_PREFIX = struct.Struct("<8sI")
MAX_HEADER_BYTES = 1 << 20
MAX_NDIM = 4
DTYPES = ("uint8", "bool", "float16", "float32", "int32")
KEY_PATTERN = re.compile(r"^[0-9a-f]{40}$")  # core.backend.image_key: blake2b, 20 bytes, hex


class WireError(ValueError):
    """A body that does not follow the wire format. ``status`` is the HTTP status a server answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Bundle:
    meta: Dict[str, object] = field(default_factory=dict)
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)

    def array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise WireError(f"the body has no array named {name!r} (it has: {', '.join(self.arrays) or 'none'})", 422)
        return self.arrays[name]


# ---- bundles ---------------------------------------------------------------------------------------------------
def encode_bundle(meta: Optional[dict] = None, arrays: Optional[Dict[str, np.ndarray]] = None) -> bytes:
    """Serialize ``meta`` (JSON-able) and named arrays; bool arrays are bit-packed."""
    specs, payloads = [], []
    for name, arr in (arrays or {}).items():
        arr = np.asarray(arr)
        dtype = "bool" if arr.dtype == bool else arr.dtype.newbyteorder("<").name
        if dtype not in DTYPES:
            raise WireError(f"array {name!r} has dtype {arr.dtype}; the wire carries {', '.join(DTYPES)}")
        if dtype == "bool":
            data, encoding = np.packbits(arr.reshape(-1)).tobytes(), "bits"
        else:
            data, encoding = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes(), "raw"
        specs.append({"name": name, "dtype": dtype, "shape": [int(s) for s in arr.shape], "encoding": encoding,
                      "nbytes": len(data)})
        payloads.append(data)
    header = json.dumps({"meta": meta or {}, "arrays": specs}, separators=(",", ":"), allow_nan=False).encode()
    return b"".join([_PREFIX.pack(MAGIC, len(header)), header] + payloads)


def _int_list(value, what: str) -> List[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise WireError(f"{what} must be a list of integers, got {value!r:.80}")
    return value


@dataclass
class ArraySpec:
    name: str
    dtype: str
    shape: List[int]
    encoding: str
    count: int  # elements
    nbytes: int  # bytes on the wire


@dataclass
class BundleLayout:
    meta: Dict[str, object]
    arrays: List[ArraySpec]
    data_offset: int  # where the first array's bytes start
    total: int  # the whole bundle's length in bytes


def bundle_layout(head, max_array_bytes: int) -> Optional[BundleLayout]:
    """The layout a bundle declares, from its first bytes: None while ``head`` is too short to tell (the prefix
    and the JSON header are needed), :class:`WireError` as soon as it is malformed. Nothing is allocated for the
    arrays, so an upload can be refused by its declared shapes before its body is read."""
    head = memoryview(head)
    if len(head) < _PREFIX.size:
        if bytes(head[:6]) != MAGIC[:6][:len(head)]:
            raise WireError(f"the body is not a samed bundle (it does not start with {MAGIC[:6]!r})")
        return None
    magic, header_len = _PREFIX.unpack_from(head, 0)
    if magic[:6] != MAGIC[:6]:
        raise WireError(f"the body is not a samed bundle (it does not start with {MAGIC[:6]!r})")
    if magic[6:7] != MAGIC[6:7]:
        raise WireError(f"bundle format version {magic[6]} is not supported (this service reads version "
                        f"{MAGIC[6]}): update the client or the service")
    if header_len > MAX_HEADER_BYTES:
        raise WireError(f"the bundle header length {header_len} is more than {MAX_HEADER_BYTES} bytes")
    if len(head) < _PREFIX.size + header_len:
        return None
    try:
        header = json.loads(bytes(head[_PREFIX.size:_PREFIX.size + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WireError(f"the bundle header is not JSON: {str(exc)[:200]}") from None
    if not isinstance(header, dict) or not isinstance(header.get("meta", {}), dict) \
            or not isinstance(header.get("arrays", []), list):
        raise WireError('the bundle header must be {"meta": {...}, "arrays": [...]}')
    offset = _PREFIX.size + header_len
    specs: List[ArraySpec] = []
    total = offset
    for spec in header.get("arrays", []):
        if not isinstance(spec, dict):
            raise WireError("each entry of the bundle's arrays must be an object")
        name, dtype, encoding = spec.get("name"), spec.get("dtype"), spec.get("encoding", "raw")
        if not isinstance(name, str) or not name or any(s.name == name for s in specs):
            raise WireError(f"array name {name!r:.40} is missing or repeated")
        if dtype not in DTYPES:
            raise WireError(f"array {name!r}: dtype {dtype!r:.40} is not one of {', '.join(DTYPES)}", 422)
        shape = _int_list(spec.get("shape"), f"array {name!r}: shape")
        if len(shape) > MAX_NDIM or any(s < 0 for s in shape):
            raise WireError(f"array {name!r}: shape {shape} is not a shape of at most {MAX_NDIM} dimensions", 422)
        count = int(np.prod(shape, dtype=object)) if shape else 1
        itemsize = 1 if dtype == "bool" else np.dtype(dtype).itemsize
        if count * itemsize > max_array_bytes:
            raise WireError(f"array {name!r} of shape {shape} would take {count * itemsize} bytes, more than this "
                            f"service's limit of {max_array_bytes} bytes", 413)
        if encoding == "bits" and dtype == "bool":
            expected = (count + 7) // 8
        elif encoding == "raw":
            expected = count * itemsize
        else:
            raise WireError(f"array {name!r}: encoding {encoding!r:.40} does not go with dtype {dtype}")
        nbytes = spec.get("nbytes", expected)
        if nbytes != expected:
            raise WireError(f"array {name!r}: nbytes {nbytes!r:.40} does not match its shape {shape} "
                            f"({expected} bytes expected)")
        specs.append(ArraySpec(name, dtype, shape, encoding, count, expected))
        total += expected
    return BundleLayout(dict(header.get("meta", {})), specs, offset, total)


def decode_bundle(body: bytes, max_array_bytes: int) -> Bundle:
    """Parse a bundle, checking every length before allocating anything; :class:`WireError` if malformed.
    Raw arrays are read-only views of ``body`` (no copy)."""
    body = memoryview(body)
    layout = bundle_layout(body, max_array_bytes)
    if layout is None:
        if len(body) < _PREFIX.size:
            raise WireError(f"the body is {len(body)} bytes: too short for a samed bundle ({BUNDLE_TYPE})")
        raise WireError(f"the bundle header length does not fit the {len(body)}-byte body")
    offset = layout.data_offset
    out = Bundle(layout.meta)
    for spec in layout.arrays:
        if offset + spec.nbytes > len(body):
            raise WireError(f"the body ends inside array {spec.name!r} (truncated upload?)")
        data = body[offset:offset + spec.nbytes]
        offset += spec.nbytes
        if spec.encoding == "bits":
            arr = np.unpackbits(np.frombuffer(data, np.uint8), count=spec.count).view(bool)
        elif spec.dtype == "bool":
            arr = np.frombuffer(data, np.uint8) != 0
        else:
            arr = np.frombuffer(data, np.dtype(spec.dtype).newbyteorder("<")).astype(spec.dtype, copy=False)
        out.arrays[spec.name] = arr.reshape(spec.shape)
    if offset != len(body):
        raise WireError(f"{len(body) - offset} unexpected bytes after the last array of the bundle")
    return out


# ---- plain .npy ------------------------------------------------------------------------------------------------
MAX_NPY_HEADER_BYTES = 1 << 16


@dataclass
class NpyLayout:
    shape: tuple
    dtype: np.dtype
    fortran: bool
    data_offset: int
    total: int


def npy_layout(head, max_array_bytes: int) -> Optional[NpyLayout]:
    """The array a ``.npy`` file declares, from its first bytes (None while too short to tell; never unpickles;
    :class:`WireError` for a cut, garbled or too large header)."""
    head = memoryview(head)
    magic = b"\x93NUMPY"
    if bytes(head[:6]) != magic[:min(6, len(head))]:
        raise WireError("the body is not a .npy file (it does not start with \\x93NUMPY)")
    if len(head) < 10:
        return None
    major = head[6]
    if major == 1:
        prefix, header_len = 10, struct.unpack_from("<H", head, 8)[0]
    elif major in (2, 3):
        if len(head) < 12:
            return None
        prefix, header_len = 12, struct.unpack_from("<I", head, 8)[0]
    else:
        raise WireError(f"the body is a .npy file of format version {major}, which is not supported (1, 2 or 3)")
    if header_len > MAX_NPY_HEADER_BYTES:
        raise WireError(f"the .npy header is {header_len} bytes long, more than {MAX_NPY_HEADER_BYTES}")
    if len(head) < prefix + header_len:
        return None
    f = io.BytesIO(bytes(head[:prefix + header_len]))
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except (ValueError, SyntaxError, TypeError, OverflowError, EOFError, tokenize.TokenError) as exc:
        # a cut or garbled header: numpy's header parser tokenizes it (TokenError: EOF in multi-line statement)
        raise WireError(f"the body is not a valid .npy file (its header is cut or garbled: {str(exc)[:200]})") from None
    if dtype.hasobject or dtype.name not in DTYPES:
        raise WireError(f"the .npy array has dtype {dtype}; the wire carries {', '.join(DTYPES)}", 422)
    if len(shape) > MAX_NDIM:
        raise WireError(f"the .npy array has {len(shape)} dimensions; at most {MAX_NDIM} are accepted", 422)
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count * dtype.itemsize > max_array_bytes:
        raise WireError(f"the .npy array of shape {shape} would take {count * dtype.itemsize} bytes, more than "
                        f"this service's limit of {max_array_bytes} bytes", 413)
    return NpyLayout(tuple(shape), dtype, bool(fortran), prefix + header_len,
                     prefix + header_len + count * dtype.itemsize)


def decode_npy(body: bytes, max_array_bytes: int) -> np.ndarray:
    """A ``.npy`` file's array (never unpickles; checks the size before allocating)."""
    body = memoryview(body)
    layout = npy_layout(body, max_array_bytes)
    if layout is None:
        raise WireError(f"the body is not a valid .npy file (it ends inside its header after {len(body)} bytes)")
    data = body[layout.data_offset:]
    needed = layout.total - layout.data_offset
    if len(data) != needed:
        raise WireError(f"the .npy data is {len(data)} bytes; shape {layout.shape} {layout.dtype} needs "
                        f"{needed} (truncated upload?)")
    arr = np.frombuffer(data, layout.dtype).reshape(layout.shape, order="F" if layout.fortran else "C")
    return np.ascontiguousarray(arr)


def encode_npy(arr: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
    return f.getvalue()


# ---- content encoding ------------------------------------------------------------------------------------------
def decompress_body(body: bytes, content_encoding: Optional[str], max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, deflate) without inflating past ``max_bytes``."""
    enc = (content_encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in ("gzip", "deflate"):
        raise WireError(f"Content-Encoding {enc!r:.40} is not supported: send gzip, deflate or none", 415)
    d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise WireError(f"the {enc} body does not decompress: {exc}") from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise WireError(f"the body decompresses to more than this service's limit of {max_bytes} bytes", 413)
    if not d.eof:
        raise WireError(f"the {enc} body is truncated")
    return out


def gzip_bytes(data: bytes, level: int = 1) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


# ---- pictures and masks ----------------------------------------------------------------------------------------
def pack_pictures(pictures: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 -> the same, or (..., H, W) when R = G = B everywhere (a third of the bytes)."""
    arr = np.ascontiguousarray(pictures)
    if arr.ndim >= 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8 \
            and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return np.ascontiguousarray(arr[..., 0])
    return arr


def unpack_pictures(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Inverse of :func:`pack_pictures` for pictures of ``ndim`` dimensions with channels (3 or 4)."""
    if arr.ndim == ndim - 1:
        return np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr)


def mask_to_json(mask: np.ndarray) -> dict:
    m = np.asarray(mask).astype(bool)
    return {"shape": [int(s) for s in m.shape], "bits_b64": base64.b64encode(np.packbits(m.reshape(-1))).decode()}


def mask_from_json(shape: Sequence[int], bits_b64: str, max_pixels: int) -> np.ndarray:
    shape = [int(s) for s in shape]
    if len(shape) != 2 or min(shape) < 1:
        raise WireError(f"a mask prompt's shape must be [rows, cols], got {shape}", 422)
    count = shape[0] * shape[1]
    if count > max_pixels:
        raise WireError(f"a mask prompt of shape {shape} is larger than this service accepts", 413)
    try:
        data = base64.b64decode(bits_b64.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise WireError(f"the mask prompt's bits_b64 is not base64: {exc}", 422) from None
    if len(data) != (count + 7) // 8:
        raise WireError(f"the mask prompt has {len(data)} bytes of bits; shape {shape} needs {(count + 7) // 8}", 422)
    return np.unpackbits(np.frombuffer(data, np.uint8), count=count).astype(bool).reshape(shape)
