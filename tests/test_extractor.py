"""Extractor: batched backbone calls give the descriptors of one photo at a time."""
import glob
import os

import numpy as np
import pytest
import torch

from imret.extractor import Extractor
from imret.io.images import load_image

PARIS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "paris6k-sub", "jpg")


@pytest.fixture(scope="module")
def ex():
    return Extractor.from_preset("default", device="cpu")


def one_at_a_time(ex, img):
    """The formula, scale by scale: L2(Σ_s L2(head(backbone(img at s))))."""
    acc = 0
    with torch.inference_mode():
        for s in ex.preset.extraction.scales:
            v = ex.head(ex.feature_map(img, s))[0].float()
            acc = acc + v / v.norm()
    return (acc / acc.norm()).numpy()


@pytest.fixture(scope="module")
def photos(photoset):
    imgs = [load_image(p) for p in photoset.db[:6]]
    # three of one size (batched together), one of another
    same = [i[:240, :320] for i in imgs[:3]]
    return same + [imgs[3][:200, :300]], photoset


def test_describe_batches_equal_one_at_a_time(ex, photos):
    imgs, _ = photos
    batched = ex.describe([ex.prepare(i) for i in imgs])
    assert batched.shape == (4, ex.dim) and batched.dtype == np.float32
    for i, img in enumerate(imgs):
        np.testing.assert_allclose(batched[i], one_at_a_time(ex, img), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-6)


def test_channels_last_gives_the_contiguous_descriptors(ex, photos):
    imgs, _ = photos
    assert ex.channels_last  # the CPU default
    plain = Extractor(ex.preset, device="cpu", channels_last=False)
    np.testing.assert_allclose(ex.describe([ex.prepare(i) for i in imgs]),
                               plain.describe([plain.prepare(i) for i in imgs]), atol=1e-5)
    np.testing.assert_allclose(plain.describe([plain.prepare(imgs[0])])[0], one_at_a_time(plain, imgs[0]), atol=1e-5)


def test_batch_pixels_split_calls_without_changing_results(ex, photos):
    imgs, _ = photos
    small = Extractor(ex.preset, device="cpu", batch=4, batch_pixels=1)  # one photo per call
    a = ex.describe([ex.prepare(i) for i in imgs])
    b = small.describe([small.prepare(i) for i in imgs])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_extract_paths_batched_equals_unbatched(ex, photoset, tmp_path):
    paths = list(photoset.db[:5]) + [str(tmp_path / "missing.jpg")]
    single = Extractor(ex.preset, device="cpu", batch=1).extract_paths(paths)
    batched = ex.extract_paths(paths)
    assert batched.paths == single.paths == paths[:5]
    assert [p for p, _ in batched.failures] == [paths[5]]
    np.testing.assert_allclose(batched.descriptors, single.descriptors, atol=1e-5)


def test_threads_option_runs_with_that_many_threads_and_restores(ex, photoset):
    before = torch.get_num_threads()
    seen = []
    one = Extractor(ex.preset, device="cpu", threads=1)
    hook = one.backbone.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    v = one.extract(photoset.db[0])
    hook.remove()
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(v, ex.extract(photoset.db[0]), atol=1e-5)


def test_bad_batch_is_refused(ex):
    with pytest.raises(ValueError, match="batch and batch_pixels must be positive"):
        Extractor(ex.preset, device="cpu", batch=0)


@pytest.mark.skipif(not os.path.isdir(PARIS), reason="shared photos not present")
def test_bbox_query_of_a_reduced_decode_matches_the_full_crop(ex, tmp_path):
    """A 2048-px copy is decoded at 1/2; the bbox (original pixels) is scaled with it."""
    from PIL import Image

    src = sorted(glob.glob(os.path.join(PARIS, "*.jpg")))[0]
    big = tmp_path / "big.jpg"
    with Image.open(src) as im:
        im.resize((im.width * 2, im.height * 2), Image.BICUBIC).save(big, quality=95)
    bbox = (200, 100, 1800, 1300)
    with Image.open(big) as im:
        assert im.size == (2048, 1536)
    assert ex.load(big, bbox=bbox).shape == (600, 800, 3)  # 1600×1200 crop decoded at 1/2
    a = ex.extract(str(big), bbox=bbox)
    b = ex.extract(load_image(big), bbox=bbox)  # full decode, then crop
    assert float(a @ b) > 0.99


def test_onnx_runtime_gives_torch_descriptors(ex, photos):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    imgs, _ = photos
    onnx = Extractor(ex.preset, device="cpu", runtime="onnx")
    np.testing.assert_allclose(onnx.describe([onnx.prepare(i) for i in imgs]),
                               ex.describe([ex.prepare(i) for i in imgs]), atol=1e-4)
    # one session per input size: 2 photo sizes × 3 scales
    assert len(onnx._forward._sessions) == 6


def test_unknown_runtime_is_refused(ex):
    with pytest.raises(ValueError, match="runtime must be one of torch, onnx, got 'tvm'"):
        Extractor(ex.preset, device="cpu", runtime="tvm")
