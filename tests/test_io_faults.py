"""Fault suite for the readers: random corruptions of real files (the shared sample data and slicerio's
segmentation, copied to a temporary folder) are refused with a message or read correctly (the same voxels), never
read silently wrong. Truncations anywhere; bit flips in headers (and in the compressed streams that hold them)."""
from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from samed.core import io

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                    derandomize=False)


class Original:
    def __init__(self, path: Path, read):
        self.path, self.read = path, read
        self.data = path.read_bytes()
        self.voxels = read(path)


def _volume(p):
    return io.read_volume(p).array


def _picture(p):
    return io.read_image_2d(p)


def _segmentation(p):
    return io.read_segmentation(p).layers


@pytest.fixture(scope="module")
def originals(shared_data, ctchest, tmp_path_factory):
    d = tmp_path_factory.mktemp("originals")
    files = {}
    for name, src in (("label.nii.gz", shared_data / "volumes" / "ct-abdomen" / "label.nii.gz"),
                      ("image.nrrd", shared_data / "volumes" / "mr-breast-tumor" / "image.nrrd"),
                      ("us.png", shared_data / "images" / "us-breast-lesion" / "images" / "malignant_003.png"),
                      ("Segmentation.seg.nrrd", ctchest[1])):
        shutil.copy(src, d / name)
    # the same real voxels uncompressed: a raw .nii and a raw NRRD
    (d / "label.nii").write_bytes(gzip.decompress((d / "label.nii.gz").read_bytes()))
    io.write_volume(io.read_volume(d / "image.nrrd"), d / "raw.nrrd", compress=False)
    io.write_volume(io.read_volume(d / "image.nrrd"), d / "image.mha", compress=True)
    files["nii.gz"] = Original(d / "label.nii.gz", _volume)
    files["nii"] = Original(d / "label.nii", _volume)
    files["nrrd"] = Original(d / "image.nrrd", _volume)
    files["raw.nrrd"] = Original(d / "raw.nrrd", _volume)
    files["mha"] = Original(d / "image.mha", _volume)
    files["png"] = Original(d / "us.png", _picture)
    files["seg.nrrd"] = Original(d / "Segmentation.seg.nrrd", _segmentation)
    return files


def header_size(kind: str, data: bytes) -> int:
    if kind == "nii":
        return 352
    if kind in ("nrrd", "raw.nrrd", "seg.nrrd"):
        return data.index(b"\n\n") + 2
    if kind == "mha":
        return data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    if kind == "png":
        return 8 + 25 + 64  # signature, IHDR, and the start of the next chunks
    return 512  # nii.gz: the gzip header and the start of the deflate stream holding the NIfTI header


def refused_or_equal(original: Original, corrupted: bytes, what: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / original.path.name
        p.write_bytes(corrupted)
        try:
            voxels = original.read(p)
        except (ValueError, OSError) as e:
            message = str(e)
            assert message and str(p.name) in message, f"{what}: a refusal must name the file: {message!r}"
            assert "Traceback" not in message
            return
    assert voxels.shape == original.voxels.shape and np.array_equal(voxels, original.voxels), \
        f"{what}: read without an error but the voxels differ (silent wrong read)"


KINDS = ["nii.gz", "nii", "nrrd", "raw.nrrd", "mha", "png", "seg.nrrd"]


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(cut=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_truncated_file_is_refused_or_read_correctly(originals, kind, cut):
    o = originals[kind]
    n = int(len(o.data) * cut)
    refused_or_equal(o, o.data[:n], f"{kind} cut to {n} of {len(o.data)} bytes")


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_a_header_bit_flip_is_refused_or_read_correctly(originals, kind, data):
    o = originals[kind]
    limit = header_size(kind, o.data)
    if kind == "nii":
        # scl_slope / scl_inter (bytes 112..119) scale the voxels by design, and NIfTI has no checksum: a changed
        # scale is a different, valid file. Everything else that decides which bytes are voxels is checked.
        offsets = st.integers(0, limit - 1).filter(lambda i: not 112 <= i < 120)
    else:
        offsets = st.integers(0, limit - 1)
    offset = data.draw(offsets, label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    corrupted = bytearray(o.data)
    corrupted[offset] ^= 1 << bit
    refused_or_equal(o, bytes(corrupted), f"{kind} byte {offset} bit {bit} flipped")


# ---------------------------------------------------------------------------------------------- the repros
def test_the_first_half_of_a_nii_gz_is_refused(originals):
    o = originals["nii.gz"]
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "half.nii.gz"
        p.write_bytes(o.data[:len(o.data) // 2])
        with pytest.raises(ValueError, match="truncated"):
            io.read_volume(p)


def test_a_nifti_with_a_corrupt_sizeof_hdr_is_refused(originals):
    o = originals["nii"]
    corrupted = bytearray(o.data)
    corrupted[0:4] = (999).to_bytes(4, "little")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bad.nii"
        p.write_bytes(bytes(corrupted))
        with pytest.raises(ValueError, match="sizeof_hdr"):
            io.read_volume(p)


def test_an_nrrd_whose_sizes_exceed_its_data_is_refused(originals):
    o = originals["raw.nrrd"]
    corrupted = o.data.replace(b"sizes: 45 120 21", b"sizes: 45 120 20", 1)  # one slice fewer than the data
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "bad.nrrd"
        p.write_bytes(corrupted)
        with pytest.raises(ValueError, match="more data than its header declares"):
            io.read_volume(p)


def test_a_metaimage_key_ending_in_a_latin1_space_is_refused(originals):
    """Found by test_a_header_bit_flip_is_refused_or_read_correctly[mha] in a CI run (byte 118 bit 7): the space
    after ``CompressedDataSize`` became 0xA0 (no-break space in Latin-1). Python's ``str.strip`` removes it, MetaIO's
    parser does not: the check saw a valid key, SimpleITK read the stream without its size, and the voxels came back
    wrong without an error."""
    o = originals["mha"]
    at = o.data.index(b"CompressedDataSize ") + len(b"CompressedDataSize")
    corrupted = bytearray(o.data)
    corrupted[at] ^= 0x80
    refused_or_equal(o, bytes(corrupted), "mha: the space after CompressedDataSize became 0xA0")
