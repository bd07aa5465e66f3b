"""Checks that a volume file is whole before SimpleITK reads it.

SimpleITK (ITK 5) reads a ``.nii.gz`` cut in half without an error (the missing voxels come back as garbage) and
accepts a NIfTI header whose ``sizeof_hdr`` is wrong. So before reading:

- every gzip stream (``.nii.gz``, NRRD with ``encoding: gzip``) is inflated to its end with Python's ``gzip``
  module, which checks the stream's CRC-32 and length trailer (a cut stream raises ``EOFError``, a changed byte
  ``BadGzipFile``);
- a NIfTI-1/2 header must have its ``sizeof_hdr`` (348 / 540) and magic, a ``bitpix`` that fits its ``datatype``,
  and declare exactly as many data bytes as the file holds after ``vox_offset``;
- an NRRD must hold exactly ``prod(sizes) * sizeof(type)`` data bytes (raw, gzip or bzip2 encodings);
- a MetaImage (``.mha``, ``.mhd``) likewise ``prod(DimSize) * channels * sizeof(ElementType)`` bytes, its zlib
  stream inflated to its end (ITK refuses a cut file itself, but not a header line that a flipped byte merged
  into the one before, e.g. ``CompressedData`` lost: then it reads the compressed bytes as voxels).

A file that fails raises ``ValueError`` naming the file and what is wrong. Inflating costs about as much time as
SimpleITK's own read; memory stays at one 1 MB chunk.
"""
from __future__ import annotations

import bz2
import gzip
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Tuple

from .files import PathLike, file_extension

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20

# NIfTI datatype code -> bits per voxel (nifti1.h)
NIFTI_BITPIX = {1: 1, 2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32, 1024: 64,
                1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}

# NRRD type names (NRRD0005 spec) -> bytes per value
NRRD_TYPE_BYTES = {}
for _names, _n in ((("signed char", "int8", "int8_t"), 1), (("uchar", "unsigned char", "uint8", "uint8_t"), 1),
                   (("short", "short int", "signed short", "signed short int", "int16", "int16_t"), 2),
                   (("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
                   (("int", "signed int", "int32", "int32_t"), 4), (("uint", "unsigned int", "uint32", "uint32_t"), 4),
                   (("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t"), 8),
                   (("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), 8),
                   (("float",), 4), (("double",), 8)):
    for _name in _names:
        NRRD_TYPE_BYTES[_name] = _n


class DamagedFileError(ValueError):
    """The file is cut short or its header contradicts its data."""


def check_volume_file(path: PathLike) -> None:
    """Raise :class:`DamagedFileError` when ``path`` (NIfTI or NRRD) is visibly damaged; other types pass."""
    p = Path(path)
    ext = file_extension(p)
    if ext in (".nii", ".nii.gz"):
        _check_nifti(p)
    elif ext in (".nrrd", ".nhdr", ".seg.nrrd"):
        _check_nrrd(p)
    elif ext in (".mha", ".mhd"):
        _check_metaimage(p)


# ----------------------------------------------------------------------------------------------- streams

def _inflated_size(f: BinaryIO, p: Path, what: str, opener=gzip.GzipFile, keep: int = 0) -> Tuple[int, bytes]:
    """(size, first ``keep`` bytes) of the compressed stream read from ``f`` to its end, its checksums checked."""
    head = b""
    total = 0
    try:
        with opener(fileobj=f, mode="rb") as z:
            while True:
                chunk = z.read(_CHUNK)
                if not chunk:
                    break
                if len(head) < keep:
                    head += chunk[:keep - len(head)]
                total += len(chunk)
    except EOFError as e:
        raise DamagedFileError(f"{p} is damaged: its {what} stream is cut short (the file is truncated; "
                               f"copy it again)") from e
    except (OSError, zlib.error, ValueError) as e:  # gzip.BadGzipFile is an OSError: CRC or length check failed
        raise DamagedFileError(f"{p} is damaged: its {what} data fail their check ({e}); copy it again") from e
    return total, head


# ----------------------------------------------------------------------------------------------- NIfTI

def _check_nifti(p: Path) -> None:
    with open(p, "rb") as f:
        if f.read(2) == GZIP_MAGIC:
            f.seek(0)
            size, head = _inflated_size(f, p, "gzip", keep=544)
        else:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
            head = f.read(544)
    if len(head) < 348:
        raise DamagedFileError(f"{p} is damaged: {len(head)} bytes is shorter than a NIfTI header (348)")
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise DamagedFileError(f"{p} is not a valid NIfTI file: its header size field (sizeof_hdr) is "
                               f"{struct.unpack('<i', head[:4])[0]}, must be 348 (NIfTI-1) or 540 (NIfTI-2)")
    if sizeof_hdr == 348:
        magic = head[344:348]
        if magic != b"n+1\0":
            raise DamagedFileError(f"{p} is not a valid single-file NIfTI-1: its magic is {magic!r}, not 'n+1'")
        dim = struct.unpack(endian + "8h", head[40:56])
        datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
        vox_offset = struct.unpack(endian + "f", head[108:112])[0]
        min_offset = 352
    else:
        magic = head[4:12]
        if magic != b"n+2\0\r\n\x1a\n":
            raise DamagedFileError(f"{p} is not a valid single-file NIfTI-2: its magic is {magic!r}")
        datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
        dim = struct.unpack(endian + "8q", head[16:80])
        vox_offset = struct.unpack(endian + "q", head[168:176])[0]
        min_offset = 544
    n = dim[0]
    if not 1 <= n <= 7 or any(d < 1 for d in dim[1:n + 1]):
        raise DamagedFileError(f"{p} has a corrupt NIfTI header: dimensions {list(dim)}")
    if NIFTI_BITPIX.get(datatype) != bitpix:
        raise DamagedFileError(f"{p} has a corrupt NIfTI header: datatype {datatype} does not go with {bitpix} bits "
                               f"per voxel")
    if not (vox_offset >= min_offset and float(vox_offset) == int(vox_offset)):
        raise DamagedFileError(f"{p} has a corrupt NIfTI header: data offset (vox_offset) {vox_offset}")
    voxels = 1
    for d in dim[1:n + 1]:
        voxels *= int(d)
    expected = int(vox_offset) + (voxels * bitpix + 7) // 8
    if size != expected:
        shape = "x".join(str(d) for d in dim[1:n + 1])
        state = "is truncated" if size < expected else "has more data than its header declares"
        raise DamagedFileError(f"{p} is damaged: it {state} ({size} bytes; a {shape} image of {bitpix}-bit voxels "
                               f"at offset {int(vox_offset)} needs {expected})")


# ----------------------------------------------------------------------------------------------- NRRD

def _nrrd_header(f: BinaryIO, p: Path) -> Optional[Dict[str, str]]:
    """Fields of an NRRD header (file positioned after it), or None when it is not NRRD (SimpleITK decides)."""
    if not f.read(4) == b"NRRD":
        return None
    f.readline()
    fields: Dict[str, str] = {}
    while True:
        line = f.readline()
        if not line:
            return fields  # header only (detached data) or cut inside the header: SimpleITK says which
        line = line.rstrip(b"\r\n")
        if not line:
            return fields
        if line.startswith(b"#"):
            continue
        m = re.match(rb"([^:]+):(=?)\s?(.*)$", line)
        if m and not m.group(2):
            fields[m.group(1).decode("latin-1").strip().lower()] = m.group(3).decode("latin-1").strip()


def _check_nrrd(p: Path) -> None:
    with open(p, "rb") as f:
        fields = _nrrd_header(f, p)
        if fields is None or not {"sizes", "type"} <= set(fields):
            return
        try:
            sizes = [int(s) for s in fields["sizes"].split()]
        except ValueError:
            raise DamagedFileError(f"{p} has a corrupt NRRD header: sizes {fields['sizes']!r}") from None
        value_bytes = NRRD_TYPE_BYTES.get(fields["type"].lower())
        if value_bytes is None or any(s < 1 for s in sizes):
            return  # unknown type or odd sizes: SimpleITK refuses them itself
        if any(k in fields for k in ("line skip", "lineskip", "byte skip", "byteskip")):
            return  # data placed by skips: not checked here
        expected = value_bytes
        for s in sizes:
            expected *= s
        encoding = fields.get("encoding", "raw").lower()
        data_file = fields.get("data file", fields.get("datafile"))
        if data_file is not None:
            if data_file.startswith("LIST") or "%" in data_file or " " in data_file:
                return
            target = (p.parent / data_file) if not Path(data_file).is_absolute() else Path(data_file)
            if not target.is_file():
                raise DamagedFileError(f"{p}: its data file {target} is missing")
            with open(target, "rb") as d:
                _check_nrrd_data(d, p, encoding, expected, sizes, fields["type"])
        else:
            _check_nrrd_data(f, p, encoding, expected, sizes, fields["type"])


def _check_nrrd_data(f: BinaryIO, p: Path, encoding: str, expected: int, sizes, type_name: str) -> None:
    if encoding == "raw":
        start = f.tell()
        f.seek(0, 2)
        size = f.tell() - start
    elif encoding in ("gzip", "gz"):
        size, _ = _inflated_size(f, p, "gzip")
    elif encoding in ("bzip2", "bz2"):
        size, _ = _inflated_size(f, p, "bzip2", opener=lambda fileobj, mode: bz2.BZ2File(fileobj, mode))
    else:
        return  # text encodings: SimpleITK counts the values itself
    if size != expected:
        state = "is truncated" if size < expected else "has more data than its header declares"
        raise DamagedFileError(f"{p} is damaged: its data {state} ({size} bytes; sizes {' '.join(map(str, sizes))} "
                               f"of {type_name} need {expected})")


# ----------------------------------------------------------------------------------------------- MetaImage

MET_TYPE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                  "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


_ASCII_BLANKS = " \t\r\n"


def _check_metaimage(p: Path) -> None:
    fields: Dict[str, str] = {}
    with open(p, "rb") as f:
        while True:
            line = f.readline(1 << 16)
            if not line:
                return  # no ElementDataFile: SimpleITK refuses it
            key, sep, value = line.decode("latin-1").partition("=")
            if not sep:
                raise DamagedFileError(f"{p} has a corrupt MetaImage header: line {line[:60]!r}")
            # only ASCII blanks, as MetaIO's parser: str.strip() would also drop Latin-1's no-break space (0xA0),
            # making a key MetaIO does not know (so SimpleITK ignores it) look valid here
            key, value = key.strip(_ASCII_BLANKS), value.strip(_ASCII_BLANKS)
            fields[key] = value
            if key == "ElementDataFile":
                break
        try:
            sizes = [int(v) for v in fields.get("DimSize", "").split()]
            channels = int(fields.get("ElementNumberOfChannels", "1"))
        except ValueError:
            raise DamagedFileError(f"{p} has a corrupt MetaImage header: DimSize {fields.get('DimSize')!r}") from None
        value_bytes = MET_TYPE_BYTES.get(fields.get("ElementType", ""))
        if not sizes or value_bytes is None or "HeaderSize" in fields:
            return  # unusual layouts: SimpleITK decides
        expected = value_bytes * channels
        for n in sizes:
            expected *= n
        compressed = fields.get("CompressedData", "False")
        if compressed not in ("True", "False"):
            raise DamagedFileError(f"{p} has a corrupt MetaImage header: CompressedData {compressed!r}")
        if compressed == "True":  # ITK always writes it; a reader without it reads the stream differently
            try:
                fields["CompressedDataSize"] = int(fields["CompressedDataSize"])
            except (KeyError, ValueError):
                raise DamagedFileError(f"{p} has a corrupt MetaImage header: compressed data without a valid "
                                       f"CompressedDataSize") from None
        data_file = fields["ElementDataFile"]
        if data_file == "LOCAL":
            _check_metaimage_data(f, p, fields, expected, sizes)
            return
    if data_file.startswith("LIST") or "%" in data_file or " " in data_file:
        return
    target = p.parent / data_file
    if not target.is_file():
        raise DamagedFileError(f"{p}: its data file {target} is missing")
    with open(target, "rb") as d:
        _check_metaimage_data(d, p, fields, expected, sizes)


def _check_metaimage_data(f: BinaryIO, p: Path, fields: dict, expected: int, sizes) -> None:
    if fields.get("CompressedData") == "True":
        z = zlib.decompressobj(47)  # zlib or gzip header, detected
        size = consumed = 0
        try:
            while not z.eof:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                consumed += len(chunk)
                size += len(z.decompress(chunk))
        except zlib.error as e:
            raise DamagedFileError(f"{p} is damaged: its compressed data fail their check ({e}); copy it again") from e
        if not z.eof:
            raise DamagedFileError(f"{p} is damaged: its compressed data are cut short (the file is truncated)")
        consumed -= len(z.unused_data)
        if consumed != fields["CompressedDataSize"]:
            raise DamagedFileError(f"{p} is damaged: {consumed} bytes of compressed data, its header says "
                                   f"{fields['CompressedDataSize']}")
    else:
        start = f.tell()
        f.seek(0, 2)
        size = f.tell() - start
    if size != expected:
        state = "is truncated" if size < expected else "has more data than its header declares"
        raise DamagedFileError(f"{p} is damaged: its data {state} ({size} bytes; DimSize "
                               f"{' '.join(map(str, sizes))} needs {expected})")
