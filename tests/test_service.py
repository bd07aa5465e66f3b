"""The model service end to end: a real ``samed serve`` process on 127.0.0.1 with the real LiteMedSAM weights,
reached through the torch-free client, compared with the in-process backend on the same input.

CPU budget: every distinct slice costs one LiteMedSAM encode (~2 s) on each side; the tests share the slices of
one small MR volume and the session's service, so most encodes are cache hits."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from samed.client import (HttpBackend, JobProgress, ServiceRequestError, ThreadPropagationJob, needed_slab,
                          start_propagation)
from samed.core.backend import UnsupportedPromptError, image_key
from samed.core.prompts import Prompt
from samed.core.propagation import PropagationSettings

SEED = 14  # the tumour in mr-brain-tumor covers axial slices 11..17


@pytest.fixture(scope="module")
def client(samed_service):
    backend = HttpBackend(samed_service.url)
    yield backend
    backend.close()


def tumour_box(mask2d, margin=4):
    rows, cols = np.nonzero(mask2d)
    return [cols.min() - margin, rows.min() - margin, cols.max() + margin, rows.max() + margin]


def encoder_runs(backend) -> int:
    return backend.info()["models"]["litemedsam"]["encoder_runs"]


def test_info_reports_service_models_device_and_cache(client):
    info = client.info()
    assert info["service"] == "samed" and info["api_version"] == 1
    assert info["models"]["litemedsam"]["prompt_kinds"] == ["box"]
    assert info["device"] == "cpu"
    assert {"entries", "bytes", "max_bytes", "hits", "misses"} <= set(info["cache"])
    assert info["auth"] == "none"
    assert client.prompt_kinds() == frozenset({"box"})
    with urllib.request.urlopen(client.url + "/openapi.json", timeout=30) as r:
        paths = json.load(r)["paths"]
    for route in ("/v1/health", "/v1/info", "/v1/models/{model}/embeddings/{key}", "/v1/models/{model}/embeddings",
                  "/v1/models/{model}/embeddings/{key}/decode", "/v1/models/{model}/propagations",
                  "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/result"):
        assert route in paths, route


def test_encode_decode_identical_to_in_process(client, lite_backend, brain):
    pictures, label = brain
    picture, box = pictures[SEED], tumour_box(label[SEED])
    remote = client.decode(client.encode(picture), Prompt(box_xy=box), logits=True)
    local = lite_backend.segment(picture, Prompt(box_xy=box))
    assert remote.masks.shape == (1, 256, 256) and remote.masks.dtype == bool
    np.testing.assert_array_equal(remote.masks, local.masks)
    np.testing.assert_allclose(remote.scores, local.scores, atol=1e-6)
    np.testing.assert_allclose(remote.low_res_logits, local.low_res_logits, atol=1e-5)
    dice = 2 * (remote.best & label[SEED]).sum() / (remote.best.sum() + label[SEED].sum())
    assert dice > 0.7, f"the service's mask is not the tumour (Dice {dice:.2f})"
    # three candidates when asked, still identical
    remote3 = client.decode(client.encode(picture), Prompt(box_xy=box), multimask=True)
    local3 = lite_backend.segment(picture, Prompt(box_xy=box), multimask=True)
    assert len(remote3.masks) == 3
    np.testing.assert_array_equal(remote3.masks, local3.masks)
    # the same prompt errors as in-process, raised before any request
    with pytest.raises(UnsupportedPromptError):
        client.decode(client.encode(picture), Prompt(include_points_xy=[[100, 100]]))


def test_second_encode_is_a_cache_hit_without_upload_or_encoder(samed_service, client, brain):
    pictures, _ = brain
    client.encode(pictures[SEED])
    runs = encoder_runs(client)
    other = HttpBackend(samed_service.url)  # another workstation with the same slice
    sent = other.bytes_sent
    started = time.perf_counter()
    handle = other.encode(pictures[SEED])
    elapsed = time.perf_counter() - started
    assert encoder_runs(client) == runs, "a cached slice ran the encoder again"
    assert other.bytes_sent == sent, "a cached slice was uploaded again"
    assert other.is_cached(handle.key) and elapsed < 1.0
    other.close()


def test_samed_segment_cli_uses_the_service(samed_service, shared_data, tmp_path, capsys):
    from samed.cli.main import main

    out = tmp_path / "tumour.seg.nrrd"
    code = main(["segment", str(shared_data / "volumes" / "mr-brain-tumor" / "image.nrrd"), "--slice", str(SEED),
                 "--box", "95,95,165,165", "--out", str(out), "--backend", samed_service.url])
    assert code == 0 and out.exists()
    assert f"slice {SEED}:" in capsys.readouterr().out


def test_propagation_job_progress_and_masks_identical_to_in_process(client, lite_backend, brain):
    pictures, label = brain
    settings = PropagationSettings(max_slices=2)
    assert needed_slab(len(pictures), SEED, settings) == (SEED - 2, SEED + 2)
    job = client.start_propagation(pictures, SEED, label[SEED], settings)
    seen = []
    while True:
        p = job.progress()
        seen.append(p)
        if p.finished:
            break
        time.sleep(0.2)
    assert p.state == "done" and p.done == p.total == 4
    assert any(s.state == "running" and 0 < s.done < s.total for s in seen[:-1]) or len(seen) == 1
    remote = job.result(timeout=5)
    assert client.bytes_sent > 0
    # in-process, the same walk, through the job helper that Slicer uses for both kinds of backend
    local_job = start_propagation(lite_backend, pictures, SEED, label[SEED], settings)
    assert isinstance(local_job, ThreadPropagationJob)
    local = local_job.result(timeout=120)
    assert local_job.progress() == JobProgress("done", 4, 4)
    assert remote.indices == local.indices
    assert remote.stopped == local.stopped
    for i in remote.indices:
        np.testing.assert_array_equal(remote.masks[i], local.masks[i], err_msg=f"slice {i}")
        assert remote.scores[i] == pytest.approx(local.scores[i], abs=1e-6)
    assert len(remote.indices) >= 3


def test_the_users_seed_box_travels_with_a_propagation_job(client, lite_backend, shared_data):
    """Issue 11, mr-abdomen right kidney: inside the user's box on slice 7 LiteMedSAM keeps far less than the box
    holds; the walk leaves the seed slice from the box (core.propagation.first_step). Through the service the
    job gets the box too: the same masks as in-process, and a longer walk than without the box."""
    from samed.core import io
    from samed.core.prompts import Prompt, box_from_mask
    from samed.core.volume_session import VolumeSession

    d = shared_data / "volumes" / "mr-abdomen"
    volume = io.read_volume(d / "image.nii.gz")
    ref = np.asarray(io.resample_to(io.read_volume(d / "label.nii.gz"), volume).array) == 2
    session = VolumeSession(volume, lite_backend)
    pictures = np.stack([session.picture(i) for i in range(session.n_slices)])
    box = box_from_mask(ref[7])
    seed = lite_backend.segment(pictures[7], Prompt(box_xy=box), multimask=False).best
    remote = client.start_propagation(pictures, 7, seed, seed_box=box).result(timeout=120)
    local = start_propagation(lite_backend, pictures, 7, seed, seed_box=box).result(timeout=120)
    without = client.start_propagation(pictures, 7, seed).result(timeout=120)
    assert remote.indices == local.indices and remote.stopped == local.stopped
    for i in remote.indices:
        np.testing.assert_array_equal(remote.masks[i], local.masks[i], err_msg=f"slice {i}")
    assert len(remote.indices) > len(without.indices) + 2


def test_propagation_job_cancel_keeps_the_slices_reached(client, brain):
    pictures, label = brain
    # rules that never stop the walk by themselves: only the cancel can end it before slice 0
    patient = PropagationSettings(min_area_px=1, min_area_ratio=0.0, max_area_ratio=1e9, min_overlap=0.0,
                                  min_score=-1.0)
    if hasattr(patient, "max_intensity_shift"):
        patient.max_intensity_shift = 0.0  # 0 turns that rule off
    job = client.start_propagation(pictures, 11, label[11], patient, directions=("down",))
    job.cancel()
    result = job.result(timeout=60)
    p = job.progress()
    assert p.state == "cancelled", p
    assert result.stopped["down"].startswith("cancelled at slice"), result.stopped
    assert result.indices[-1] == 11 and len(result.indices) <= 3
    assert result.indices == list(range(result.indices[0], 12))
    job.delete()
    with pytest.raises(ServiceRequestError) as err:
        job.progress()
    assert err.value.status == 404


def test_eight_concurrent_clients_each_encode_and_decode_20_times(samed_service, client, lite_backend, brain):
    pictures, _ = brain
    slices = [SEED, 16, 5, 20]  # some cached already, some new: each new one sent by two clients at once
    boxes = [[90, 90, 170, 170], [100, 95, 160, 165], [60, 60, 200, 200], [110, 110, 150, 150], [80, 120, 180, 170]]
    runs_before = encoder_runs(client)
    new = sum(not client.is_cached(image_key("litemedsam", pictures[s])) for s in slices)
    assert new >= 1
    got, errors = {}, []
    barrier = threading.Barrier(8)

    def one_client(n):
        try:
            backend = HttpBackend(samed_service.url)
            s = slices[n % len(slices)]
            barrier.wait(timeout=60)
            handle = backend.encode(pictures[s])
            for k in range(20):
                b = (n + k) % len(boxes)
                got[(n, k)] = (s, b, backend.decode(handle, Prompt(box_xy=boxes[b])).masks)
            backend.close()
        except Exception as exc:  # collected and reported by the main thread
            errors.append(f"client {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, "\n".join(errors[:10])
    assert len(got) == 8 * 20
    assert encoder_runs(client) - runs_before == new, "a slice was encoded twice under concurrency"
    # correct: every copy of a (slice, box) decode is the same mask, and on slice SEED the in-process one
    first = {}
    for (n, k), (s, b, masks) in sorted(got.items()):
        ref = first.setdefault((s, b), masks)
        np.testing.assert_array_equal(masks, ref, err_msg=f"client {n}, decode {k}: slice {s} box {b}")
    assert len(first) == len(slices) * len(boxes)
    for b, box in enumerate(boxes):
        np.testing.assert_array_equal(first[(SEED, b)], lite_backend.segment(pictures[SEED], Prompt(box_xy=box)).masks)
    assert samed_service.alive()
