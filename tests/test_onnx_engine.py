"""The ONNX Runtime engine: same masks as the torch engine on real LiteMedSAM weights and real slices, its
export cache (reuse, corruption), engine selection and the in-process backend on top of it.

The export (about 30-60 s) happens once per test session, into a temporary cache directory."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from samed.core.metrics import dice  # noqa: E402
from samed.core.prompts import Prompt, PromptError, box_from_mask  # noqa: E402


def test_masks_match_torch_on_real_slices(onnx_engine, lite_backend, real_slices):
    torch_engine = lite_backend.engine
    for name, picture, ref in real_slices:
        emb_o, emb_t = onnx_engine.encode(picture), torch_engine.encode(picture)
        assert emb_o.input_size == emb_t.input_size and emb_o.original_size == emb_t.original_size
        assert np.abs(emb_o.features - emb_t.features.cpu().numpy()).max() < 1e-3, name
        box = box_from_mask(ref)
        for b in (box, box + np.array([-4, -3, 5, 2])):
            for multimask in (False, True):
                po = onnx_engine.decode(emb_o, Prompt(box_xy=b), multimask)
                pt = torch_engine.decode(emb_t, Prompt(box_xy=b), multimask)
                assert po.masks.shape == pt.masks.shape == (3 if multimask else 1, *picture.shape[:2])
                for mo, mt in zip(po.masks, pt.masks):
                    assert np.array_equal(mo, mt) or dice(mo, mt) > 0.995, name
                np.testing.assert_allclose(po.scores, pt.scores, atol=2e-3)
                np.testing.assert_allclose(po.low_res_logits, pt.low_res_logits, atol=2e-2)
        assert dice(onnx_engine.decode(emb_o, Prompt(box_xy=box)).best, ref) > 0.5, name  # a real segmentation


def test_refuses_what_the_model_does_not_take(onnx_engine):
    from samed.engines.onnx_engine import ArrayEmbedding

    emb = ArrayEmbedding(np.zeros((1, 256, 64, 64), np.float32), (256, 256), (256, 256))
    with pytest.raises(PromptError, match="box"):
        onnx_engine.decode(emb, Prompt(include_points_xy=[[100, 100]]))


def test_upsampling_equals_segment_anything(lite_backend):
    import torch

    from samed.engines.onnx_engine import upsample_logits

    sam = lite_backend.engine.sam
    logits = torch.randn(1, 2, 256, 256)
    for original in ((256, 256), (122, 101), (512, 380), (90, 300)):
        input_size = lite_backend.engine.input_size_for(original)
        with torch.no_grad():
            ref = sam.postprocess_masks(logits, input_size, original)[0].numpy()
        ours = upsample_logits(logits[0].numpy(), 256, "longest", input_size, original)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() < 1e-4


def test_second_construction_reuses_the_cache(onnx_engine, onnx_cache):
    from samed.engines.onnx_engine import OnnxEngine

    art = onnx_engine.artifacts
    before = {p: os.stat(getattr(art, p)).st_mtime_ns for p in ("encoder", "prepare", "decoder", "manifest")}
    again = OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache))
    assert not again.exported
    assert {p: os.stat(getattr(art, p)).st_mtime_ns for p in before} == before
    assert again.info()["export_check"] == onnx_engine.manifest["check"]


def test_corrupt_cached_graph_is_detected_and_exported_again(onnx_engine, tmp_path, monkeypatch):
    from samed.engines import onnx_engine as mod
    from samed.engines.onnx_export import OnnxArtifacts, read_manifest

    cache = tmp_path / "cache"
    shutil.copytree(onnx_engine.artifacts.encoder.parent, cache)
    art = OnnxArtifacts.for_checkpoint("litemedsam", onnx_engine.checkpoint, cache)
    assert read_manifest(art)[0] is not None
    with open(art.encoder, "r+b") as f:  # flip bytes inside the weights: still a loadable protobuf
        f.seek(os.path.getsize(art.encoder) // 2)
        f.write(b"\x00\x01\x02\x03" * 16)
    manifest, why = read_manifest(art)
    assert manifest is None and "SHA-256" in why

    calls = []
    pristine = onnx_engine.artifacts

    def fake_export(sam, spec, target, checkpoint, session_factory):
        # the real export is exercised by the session fixture; here: that a corrupt file leads to one
        calls.append(target)
        for part in ("encoder", "prepare", "decoder", "manifest"):
            shutil.copy(getattr(pristine, part), getattr(target, part))
        return read_manifest(target)[0]

    monkeypatch.setattr(mod, "export", fake_export)
    monkeypatch.setattr(mod.OnnxEngine, "sam", property(lambda self: None))  # no torch model needed here
    engine = mod.OnnxEngine("litemedsam", device="cpu", cache_dir=str(cache))
    assert engine.exported and calls == [art]
    assert read_manifest(art)[0] is not None

    art.encoder.write_bytes(b"not an onnx file")  # truncated / garbage
    calls.clear()
    engine = mod.OnnxEngine("litemedsam", device="cpu", cache_dir=str(cache))
    assert engine.exported and len(calls) == 1


def test_selection_auto_prefers_onnx_and_falls_back_to_torch(onnx_cache, monkeypatch, caplog):
    from samed.engines import onnx_engine as mod
    from samed.engines.selection import create_engine

    from samed.engines import selection
    from samed.engines.openvino_encoder import bf16_capable

    monkeypatch.setattr(selection, "AUTO_REDUCED", ("openvino",))  # the int8 encoder: tests/test_int8_engine.py
    monkeypatch.setattr(selection, "AUTO_FLOAT32", ())  # openvino-f32: test_openvino_engine.py
    engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert not engine.exported
    # auto: the OpenVINO bfloat16 encoder where it can run and holds the accuracy bound on this CPU
    # (test_openvino_engine.py), else ONNX Runtime float32, saying why
    if engine.engine == "openvino":
        assert bf16_capable() and engine.info()["bf16_check"]["passed"]
    else:
        assert engine.precision == "fp32" and engine.fallback_reason
        assert not bf16_capable() or "accuracy bound" in engine.fallback_reason

    def broken(self, *args, **kwargs):
        raise mod.OnnxUnavailable("onnxruntime is not installed (simulated)")

    monkeypatch.setattr(mod.OnnxEngine, "__init__", broken)
    with caplog.at_level(logging.WARNING, logger="samed.engines.selection"):
        engine = create_engine("litemedsam", None, "cpu", "auto", cache_dir=str(onnx_cache))
    assert getattr(engine, "engine", "torch") == "torch" and hasattr(engine, "sam")
    assert "simulated" in engine.fallback_reason and "using the torch engine" in caplog.text
    with pytest.raises(mod.OnnxUnavailable):
        create_engine("litemedsam", None, "cpu", "onnx")


def test_selection_rules_without_loading_models(monkeypatch, tmp_path):
    from samed.engines.checkpoints import CheckpointError
    from samed.engines.onnx_engine import OnnxEngine, OnnxUnavailable
    from samed.engines.selection import create_engine, default_engine

    with pytest.raises(OnnxUnavailable, match="runs on torch"):
        OnnxEngine("sam_vit_b", device="cpu", cache_dir=str(tmp_path))
    with pytest.raises(CheckpointError):  # auto sends SAM ViT-B to torch, which wants its checkpoint
        create_engine("sam_vit_b", None, "cpu", "auto")
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("litemedsam", None, "cpu", "tensorrt")
    monkeypatch.setenv("SAMED_ENGINE", "torch")
    assert default_engine() == "torch"
    monkeypatch.setenv("SAMED_ENGINE", "fast")
    with pytest.raises(ValueError, match="SAMED_ENGINE"):
        default_engine()


def test_local_backend_on_onnx_engine(onnx_engine, real_slices):
    from samed.engines.local import LocalBackend

    backend = LocalBackend(onnx_engine)
    (_, mr, mr_ref), (_, ct, ct_ref) = real_slices
    assert not backend.wants_prefetch  # CPU: propagation does not encode ahead
    backend.prefetch([ct])
    handle = backend.encode(ct)  # waits for the encode ahead instead of repeating it
    assert backend.encoder_runs == 1
    pred = backend.decode(handle, Prompt(box_xy=box_from_mask(ct_ref)))
    assert pred.masks.shape == (1, *ct.shape[:2])
    backend.segment(mr, Prompt(box_xy=box_from_mask(mr_ref)))
    backend.segment(mr, Prompt(box_xy=box_from_mask(mr_ref) + 2))
    assert backend.encoder_runs == 2
    stats = backend.cache.stats()
    assert stats["entries"] == 2 and stats["bytes"] == 2 * 256 * 64 * 64 * 4
    assert backend.info()["models"]["litemedsam"]["engine"] == "onnxruntime"
    backend.close()


def test_float16_embeddings_keep_the_masks(onnx_engine, onnx_cache, real_slices):
    from samed.engines.onnx_engine import OnnxEngine

    half = OnnxEngine("litemedsam", device="cpu", cache_dir=str(onnx_cache), embedding_dtype="float16")
    for name, picture, ref in real_slices[1:]:
        e16, e32 = half.encode(picture), onnx_engine.encode(picture)
        assert e16.nbytes() * 2 == e32.nbytes()
        box = Prompt(box_xy=box_from_mask(ref))
        assert dice(half.decode(e16, box).best, onnx_engine.decode(e32, box).best) > 0.995, name


def test_int8_engine_is_opt_in_and_cached(onnx_engine, onnx_cache, real_slices):
    pytest.importorskip("onnx")
    from samed.engines.selection import create_engine

    int8 = create_engine("litemedsam", None, "cpu", "onnx-int8", cache_dir=str(onnx_cache))
    assert int8.precision == "int8" and onnx_engine.precision == "fp32"
    path = Path(int8.artifacts.encoder.parent) / int8.artifacts.encoder.name.replace(".encoder.", ".encoder-int8.")
    mtime = path.stat().st_mtime_ns
    assert create_engine("litemedsam", None, "cpu", "onnx-int8", cache_dir=str(onnx_cache))
    assert path.stat().st_mtime_ns == mtime  # made once, then reused
    name, picture, ref = real_slices[1]
    box = Prompt(box_xy=box_from_mask(ref))
    m8 = int8.decode(int8.encode(picture), box).best
    m32 = onnx_engine.decode(onnx_engine.encode(picture), box).best
    assert dice(m8, m32) > 0.9  # close, not equal: that is why "auto" never picks it
