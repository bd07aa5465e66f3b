"""LiteMedSAM's exported encoder quantized to int8 by OpenVINO NNCF (post-training, calibrated on medical slices),
used only where it passes the same accuracy check as the bfloat16 encoder (engine ``openvino-int8``).

int8 products (VNNI on AMD Zen 4 / Intel Cascade Lake and later, AMX on Sapphire Rapids) are up to 4x float32's
throughput, but quantization moves features; propagation compounds the change slice by slice. So, as for
bfloat16 (:mod:`samed.engines.openvino_encoder`), the quantized encoder is refused unless
:mod:`samed.engines.precision_check` (propagation walks and box prompts on CTChest4, every Dice within 0.005 of
float32's) passes on this CPU; the verdict is cached per CPU, graph, OpenVINO/NNCF version and layout.

- **Calibration** (:func:`calibration_pictures`): the CTChest4 slices *outside* the check's reach (the check
  judges slices 14-26; calibrating on them would tune the quantizer to its own exam), each with the two windows
  users give it (CT window and min-max), plus pydicom's shipped CT and MR test images when present. Data that
  ships with the packages, so every install quantizes the same way.
- **Layouts** (:data:`LAYOUTS`): ``all`` quantizes every product and convolution NNCF's transformer preset
  picks; ``tail`` keeps the patch embedding and stages 0-1 (256x256 and 128x128 token grids, where bfloat16
  already moved masks by up to 5 %) in float32 (NNCF ignored scopes), quantizing stages 2-3 and the neck;
  ``tail-matmul`` also keeps the convolutions and the neck float32 (only stages 2-3's products by weights in
  int8). On an AMD EPYC (Zen 4, VNNI, no AMX) none of them held the bound (docs/speed.md has the numbers).
- The quantized model is saved beside the float32 graph (``.encoder-int8-<layout>.xml/.bin``, never in the
  repository), with a JSON sidecar naming its source graph and versions; a later start loads it (~1 s).

Needs ``pip install 'segmentanythingmed[int8]'`` (nncf, openvino); nothing here imports them at import time.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

log = logging.getLogger(__name__)

INT8_CHECK_VERSION = 1
CALIBRATION_VERSION = 1  # bump when the calibration pictures or NNCF options change: cached models are remade
LAYOUTS: Dict[str, List[str]] = {
    "all": [],
    "tail": [r"/patch_embed/.*", r"/layers\.0/.*", r"/layers\.1/.*"],  # ignored scopes (stay float32)
}
LAYOUT_TYPES: Dict[str, List[str]] = {  # operation types a layout also keeps float32
    "tail-matmul": ["Convolution", "GroupConvolution"],
}
LAYOUTS["tail-matmul"] = LAYOUTS["tail"] + [r"/neck/.*"]  # only stages 2-3's products by weights in int8
DEFAULT_LAYOUT = "tail"


class Int8Unavailable(RuntimeError):
    """NNCF or OpenVINO is missing, the quantization failed, or the int8 encoder failed its accuracy check."""


def _versions() -> Dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("openvino", "nncf"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "none"
    return out


def calibration_pictures(check_slices=None) -> List[np.ndarray]:
    """(H, W, 3) uint8 pictures of medical slices shipped with the packages (not the check's slices)."""
    import slicerio

    from ..core import io
    from ..core.geometry import extract_slice, numpy_axis
    from ..core.preprocess import compute_window, slice_to_rgb
    from . import precision_check as pc

    ct = io.read_volume(Path(slicerio.get_testdata_file("CTChest4.nrrd")))
    reach = set(range(pc.SEED_SLICE - pc.WALK_STEPS, pc.SEED_SLICE + pc.WALK_STEPS + 1)) | set(pc.BOX_SLICES)
    if check_slices is not None:
        reach |= set(check_slices)
    windows = [compute_window(ct.array, "auto", "CT"), compute_window(ct.array, pc.INTENSITY)]
    axis = numpy_axis("axial", ct.ijk_to_ras)  # the check's slices (VolumeSession's default axis)
    pictures = []
    for k in range(ct.array.shape[axis]):
        if k not in reach:
            pictures.append(slice_to_rgb(extract_slice(ct.array, axis, k), windows[k % 2]))
    pictures.extend(_pydicom_pictures())
    return pictures


def _pydicom_pictures() -> List[np.ndarray]:
    from ..core.preprocess import compute_window, slice_to_rgb

    try:
        from pydicom.data import get_testdata_file
        import pydicom
    except ImportError:
        return []
    out = []
    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        try:
            ds = pydicom.dcmread(get_testdata_file(name))
            values = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) \
                + float(getattr(ds, "RescaleIntercept", 0) or 0)
        except (OSError, ValueError, AttributeError, TypeError, RuntimeError) as exc:
            log.debug("calibration: %s not used (%s)", name, exc)
            continue
        out.append(slice_to_rgb(values, compute_window(values, "auto", modality)))
    return out


def quantized_paths(encoder_onnx: Path, layout: str):
    xml = encoder_onnx.with_name(encoder_onnx.name.replace(".encoder.onnx", f".encoder-int8-{layout}.xml"))
    return xml, xml.with_suffix(".bin"), xml.with_suffix(".json")


def quantize(encoder_onnx: Path, source_sha256: str, preprocess, layout: str = DEFAULT_LAYOUT,
             subset_size: Optional[int] = None) -> Path:
    """The int8 model (``.xml``) of ``encoder_onnx`` in ``layout``, made with ``nncf.quantize`` on first use
    (``preprocess``: picture -> the encoder's input, as the engine does) and cached beside the graph."""
    if layout not in LAYOUTS:
        raise ValueError(f"int8 layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    xml, binf, sidecar = quantized_paths(Path(encoder_onnx), layout)
    types = LAYOUT_TYPES.get(layout, [])
    meta_key = {"source_sha256": source_sha256, "layout": layout, "ignored": LAYOUTS[layout],
                **({"ignored_types": types} if types else {}), "calibration": CALIBRATION_VERSION, **_versions()}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta.get("key") == meta_key and xml.is_file() and binf.stat().st_size == meta.get("bin_bytes"):
            return xml
    except (OSError, ValueError):
        pass
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise Int8Unavailable(f"int8 quantization needs nncf and openvino ({exc}): "
                              f"pip install 'segmentanythingmed[int8]'") from exc
    t0 = time.perf_counter()
    inputs = [preprocess(p)[0] for p in calibration_pictures()]
    model = ov.Core().read_model(str(encoder_onnx))
    options = dict(model_type=nncf.ModelType.TRANSFORMER, subset_size=subset_size or len(inputs))
    if LAYOUTS[layout] or types:
        options["ignored_scope"] = nncf.IgnoredScope(patterns=LAYOUTS[layout], types=types)
    log.warning("quantizing the encoder to int8 (%s, %d calibration slices; once per graph and NNCF version) ...",
                layout, len(inputs))
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF lists every node it leaves alone at INFO
    nncf_errors = tuple(c for c in vars(getattr(nncf, "errors", object)).values()
                        if isinstance(c, type) and issubclass(c, Exception))  # NNCF's own errors are Exceptions
    try:
        quantized = nncf.quantize(model, nncf.Dataset(inputs), **options)
    except (RuntimeError, ValueError, *nncf_errors) as exc:
        raise Int8Unavailable(f"NNCF could not quantize {encoder_onnx.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        nncf_log.setLevel(level)
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp_xml = xml.with_name(xml.stem + tag + ".xml")
    ov.save_model(quantized, str(tmp_xml), compress_to_fp16=False)
    os.replace(tmp_xml.with_suffix(".bin"), binf)
    os.replace(tmp_xml, xml)
    meta = {"key": meta_key, "bin_bytes": binf.stat().st_size, "calibration_slices": len(inputs),
            "seconds": round(time.perf_counter() - t0, 1)}
    tmp = sidecar.with_name(sidecar.name + tag)
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, sidecar)
    log.info("int8 encoder (%s) quantized in %.1f s", layout, meta["seconds"])
    return xml


class Int8Encoder:
    """``run(None, {"image": x}) -> [features]`` (as an ONNX Runtime session) for an NNCF int8 model."""

    def __init__(self, xml: Path, layout: str, threads: Optional[int] = None):
        try:
            import openvino as ov
        except ImportError as exc:
            raise Int8Unavailable(f"openvino is not installed ({exc}): pip install openvino") from exc
        core = ov.Core()
        self.layout = layout
        self.version = ov.__version__
        try:
            self.device_name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        except RuntimeError:
            self.device_name = "CPU"
        self._config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._core, self._xml = core, str(xml)
        self._request = None  # compiled on first use: a refusal read from the cache compiles nothing
        self._lock = threading.Lock()

    def compile(self) -> "Int8Encoder":
        with self._lock:
            if self._request is None:
                self._request = self._core.compile_model(self._xml, "CPU", self._config).create_infer_request()
        return self

    def run(self, output_names, feeds):
        x = np.ascontiguousarray(feeds["image"], dtype=np.float32)
        if self._request is None:
            self.compile()
        with self._lock:
            return [np.array(self._request.infer({0: x})[0], dtype=np.float32, copy=True)]

    def get_providers(self):
        return [f"OpenVINO {self.version} CPU, int8 (NNCF, layout {self.layout})"]


def check_key(source_sha256: str, layout: str, device_name: str) -> dict:
    """What the int8 verdict depends on: graph, layout, calibration, OpenVINO/NNCF versions, CPU, check, bound."""
    from . import precision_check as pc
    from .openvino_encoder import cpu_identity

    return {"source_sha256": source_sha256, "layout": layout, "calibration": CALIBRATION_VERSION, **_versions(),
            "cpu": device_name, "cpu_identity": cpu_identity(), "version": INT8_CHECK_VERSION,
            "check": pc.CHECK_VERSION, "dice_bound": pc.DICE_BOUND}


def check_path(encoder_onnx: Path, layout: str) -> Path:
    return Path(encoder_onnx).with_name(Path(encoder_onnx).name.replace(".encoder.onnx",
                                                                         f".encoder-int8-{layout}-check.json"))


def open_checked(engine, float32_factory, layout: str = DEFAULT_LAYOUT):
    """(verdict, compiled :class:`Int8Encoder`) for ``engine`` (an ONNX engine; its preprocessing and decoder),
    or :class:`Int8Unavailable` with the measures that failed. A cached refusal quantizes and compiles nothing."""
    from . import precision_check as pc

    threads = getattr(engine, "_threads", None)
    source = Path(engine.artifacts.encoder)
    sha = engine.manifest["files"]["encoder"]["sha256"]
    try:
        import openvino as ov
        device_name = str(ov.Core().get_property("CPU", "FULL_DEVICE_NAME"))
    except ImportError as exc:
        raise Int8Unavailable(f"openvino is not installed ({exc}): pip install 'segmentanythingmed[int8]'") from exc
    except RuntimeError:
        device_name = "CPU"
    holder = {}

    def candidate():
        holder["encoder"] = Int8Encoder(quantize(source, sha, engine.preprocess, layout), layout, threads)
        return holder["encoder"]

    verdict = pc.cached_verdict(check_path(source, layout), check_key(sha, layout, device_name),
                                lambda: pc.check_reduced_precision(engine, candidate(), float32_factory),
                                f"int8 encoder ({layout})", Int8Unavailable)
    encoder = holder.get("encoder") or Int8Encoder(quantize(source, sha, engine.preprocess, layout), layout, threads)
    return verdict, encoder.compile()
