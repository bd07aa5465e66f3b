"""Masks on a DICOM series' grid -> a DICOM Segmentation (SEG) object, written with highdicom.

One segment per structure: its label (the name the user gave), colour, coded category and type (SNOMED CT, from
a small table of structure names; "Tissue" otherwise), segmentation type BINARY, algorithm type SEMIAUTOMATIC and
the algorithm's identification ("SegmentAnythingMed", samed's version, the model and engine as parameters). The SEG
references every source image (same patient, study and frame of reference), one frame per source slice that has
voxels of a segment.

The file is written whole or not at all (:func:`samed.core.files.atomic_output`).

Dependencies: highdicom (``pip install 'segmentanythingmed[dicom]'``) and pydicom, imported inside the functions.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .dicom_series import volume_is_dicom
from .files import DEFAULT_SEGMENT_COLORS, atomic_output
from .geometry import Volume

DICOM_SEG_EXTENSIONS = (".dcm",)
ALGORITHM_NAME = "SegmentAnythingMed"

# structure name (lower case, words) -> (category, type): keywords of pydicom's SCT code dictionary
_ORGAN = "AnatomicalStructure"
_ABNORMAL = "MorphologicallyAbnormalStructure"
STRUCTURE_CODES: Dict[str, Tuple[str, str]] = {
    "liver": (_ORGAN, "Liver"), "spleen": (_ORGAN, "Spleen"), "kidney": (_ORGAN, "Kidney"),
    "lung": (_ORGAN, "Lung"), "heart": (_ORGAN, "Heart"), "brain": (_ORGAN, "Brain"),
    "pancreas": (_ORGAN, "Pancreas"), "gallbladder": (_ORGAN, "Gallbladder"), "stomach": (_ORGAN, "Stomach"),
    "aorta": (_ORGAN, "Aorta"), "prostate": (_ORGAN, "Prostate"), "bladder": (_ORGAN, "Bladder"),
    "colon": (_ORGAN, "Colon"), "esophagus": (_ORGAN, "Esophagus"), "breast": (_ORGAN, "Breast"),
    "adrenal gland": (_ORGAN, "AdrenalGland"), "duodenum": (_ORGAN, "Duodenum"),
    "small bowel": (_ORGAN, "SmallIntestine"), "inferior vena cava": (_ORGAN, "InferiorVenaCava"),
    "spinal cord": (_ORGAN, "SpinalCord"), "vertebra": (_ORGAN, "Vertebra"), "rib": (_ORGAN, "Rib"),
    "bone": ("Tissue", "Bone"), "muscle": ("Tissue", "Muscle"), "fat": ("Tissue", "AdiposeTissue"),
    "tumour": (_ABNORMAL, "Neoplasm"), "tumor": (_ABNORMAL, "Neoplasm"), "neoplasm": (_ABNORMAL, "Neoplasm"),
    "lesion": (_ABNORMAL, "Lesion"), "mass": (_ABNORMAL, "Mass"), "nodule": (_ABNORMAL, "Nodule"),
    "cyst": (_ABNORMAL, "Cyst"), "edema": (_ABNORMAL, "Edema"), "oedema": (_ABNORMAL, "Edema"),
    "necrosis": (_ABNORMAL, "Necrosis"),
}
GENERIC_CODES = ("Tissue", "Tissue")
# words that qualify a structure without changing what it is: "kidney_left", "Right lung upper lobe", "liver 2"
_QUALIFIERS = {"left", "right", "upper", "lower", "middle", "lobe", "of", "the", "l", "r"}


class DicomSegError(ValueError):
    """A DICOM SEG that cannot be written as asked; the message says what to do."""


def is_dicom_seg_path(path) -> bool:
    return str(path).lower().endswith(DICOM_SEG_EXTENSIONS)


def structure_codes(name: str):
    """(category, type) pydicom Codes (SNOMED CT) for a structure name; ("Tissue", "Tissue") when not in the table.

    The table is looked up with the name's words in order, longest match first, ignoring left/right, lobes and
    numbers: "kidney_left" -> Kidney, "Liver tumour" -> Neoplasm (the last structure word wins)."""
    from pydicom.sr.codedict import codes

    words = [w for w in re.split(r"[\s_\-.,/()]+", name.lower()) if w and not w.isdigit() and w not in _QUALIFIERS]
    words = [w[:-1] if w.endswith("s") and w[:-1] in STRUCTURE_CODES else w for w in words]  # "kidneys", "ribs"
    found = None
    for start in range(len(words)):
        for end in range(len(words), start, -1):
            key = " ".join(words[start:end])
            if key in STRUCTURE_CODES:
                found = STRUCTURE_CODES[key]  # a later match wins: "liver tumour" is a tumour
                break
    category, kind = found or GENERIC_CODES
    return getattr(codes.SCT, category), getattr(codes.SCT, kind)


def check_dicom_seg_source(volume: Volume, option: str = "--out") -> None:
    """DicomSegError unless ``volume`` was read from a DICOM series (a SEG must reference its source images)."""
    if not volume_is_dicom(volume):
        raise DicomSegError(f"{option}: a DICOM SEG references its source DICOM series, but the input "
                            f"{volume.metadata.get('path', '(an array)')} is not DICOM; give the DICOM folder as the "
                            f"input, or write a .seg.nrrd (Slicer) or .nii.gz labelmap instead")


def write_dicom_seg(path, masks: Mapping[str, np.ndarray], volume: Volume, *, model: str = "", engine: str = "",
                    colors: Optional[Sequence[Tuple[float, float, float]]] = None, overwrite: bool = True,
                    parameters: Optional[Mapping[str, str]] = None, series_description: str = "SegmentAnythingMed"
                    ) -> Path:
    """Write ``masks`` ({segment name: bool array [k, j, i] on ``volume``'s grid}) as a DICOM SEG at ``path``.

    ``volume`` must come from :func:`samed.core.dicom_series.read_dicom_series`: its k-th slice is the k-th of
    ``volume.metadata['dicom']['files']`` (or, for one enhanced multi-frame file, its k-th frame). ``parameters``: more algorithm parameters (text) recorded with the
    model and engine."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from .. import __version__

    check_dicom_seg_source(volume)
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} already exists; pass overwrite=True to replace it")
    if not masks:
        raise DicomSegError("no segment to write")
    files = volume.metadata["dicom"]["files"]
    sources = [pydicom.dcmread(f) for f in files]
    shape = volume.shape_kji
    stack = np.zeros(shape + (len(masks),), dtype=bool)
    for n, (name, mask) in enumerate(masks.items()):
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise DicomSegError(f"segment {name!r} has shape {mask.shape}; the DICOM series' grid is {shape}")
        stack[..., n] = mask > 0
    if not stack.any():
        raise DicomSegError("every segment is empty: a DICOM SEG needs at least one segmented voxel; nothing written")
    algorithm_parameters = {"model": model or "unknown", "engine": engine or "unknown"}
    algorithm_parameters.update({str(k): str(v) for k, v in (parameters or {}).items()})
    algorithm = hd.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence,
                                                   version=__version__, parameters=algorithm_parameters)
    palette = list(colors or []) + list(DEFAULT_SEGMENT_COLORS)
    descriptions = []
    for n, name in enumerate(masks):
        category, kind = structure_codes(name)
        rgb = tuple(int(round(255 * c)) for c in palette[n % len(palette)])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n + 1, segment_label=str(name)[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=_series_number(sources),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=ALGORITHM_NAME,
        manufacturer_model_name=f"{model or 'unknown'} ({engine or 'unknown'} engine)"[:64],
        software_versions=f"samed {__version__}", device_serial_number="none",
        content_label="SEGMENTATION", content_description=series_description[:64],
        series_description=series_description[:64])
    with atomic_output(p) as tmp:
        seg.save_as(str(tmp))
    return p


def _series_number(sources) -> int:
    numbers = [int(ds.SeriesNumber) for ds in sources if str(ds.get("SeriesNumber", "")).strip().lstrip("-").isdigit()]
    return (max(numbers) if numbers else 0) + 1000


def read_dicom_seg(path, volume: Volume) -> Dict[str, np.ndarray]:
    """{segment label: bool array [k, j, i] on ``volume``'s grid} of a DICOM SEG made on ``volume``'s series."""
    import highdicom as hd

    check_dicom_seg_source(volume, "reading a DICOM SEG")
    import pydicom

    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in volume.metadata["dicom"]["files"]]
    seg = hd.seg.segread(str(path))
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    if volume.metadata["dicom"].get("multiframe"):  # one enhanced source: its frames are the volume's k slices
        pixels = seg.get_pixels_by_source_frame(source_sop_instance_uid=uids[0], segment_numbers=numbers,
                                                source_frame_numbers=list(range(1, volume.shape_kji[0] + 1)))
    else:
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=numbers)
    return {str(d.SegmentLabel): pixels[..., n].astype(bool) for n, d in enumerate(seg.SegmentSequence)}
