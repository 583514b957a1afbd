"""imret.io.images: odd files load as H×W×3 uint8 RGB, bad ones raise ImageLoadError."""
from __future__ import annotations

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from imret.errors import ImageLoadError
from imret.io.images import DEFAULT_MAX_PIXELS, crop, list_images, load_image


# ----------------------------------------------------------------------------- helpers

def _noise(h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return path


def _jpeg_bytes(h=48, w=64) -> bytes:
    return _encode(Image.fromarray(_noise(h, w)), "JPEG", quality=90)


def _png_with_size(png: bytes, w: int, h: int) -> bytes:
    """``png`` with its IHDR width/height patched and the chunk CRC recomputed."""
    assert png[12:16] == b"IHDR"
    ihdr = bytearray(png[8:33])  # length(4) type(4) data(13) crc(4)
    ihdr[8:16] = struct.pack(">II", w, h)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])) & 0xFFFFFFFF)
    return png[:8] + bytes(ihdr) + png[33:]


def _assert_rgb(a: np.ndarray, shape=None):
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.uint8
    assert a.ndim == 3 and a.shape[2] == 3
    if shape is not None:
        assert a.shape == (*shape, 3)


def _raises_load_error(path, *words, **kw) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(path, **kw)
    err = info.value
    assert err.path == os.fspath(path)
    assert os.fspath(path) in str(err)
    for w in words:
        assert w.lower() in err.reason.lower(), (w, err.reason)
    return err


@pytest.fixture
def no_decode(monkeypatch):
    """Fails the test if any pixel data gets decoded."""
    calls = []

    def load(self, *a, **k):
        calls.append(self)
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


# ----------------------------------------------------------------------------- bad files

def test_good_jpeg_loads(tmp_path):
    p = _write(tmp_path / "ok.jpg", _jpeg_bytes(48, 64))
    _assert_rgb(load_image(p), (48, 64))


def _jpeg_header() -> bytes:
    """SOI … SOS of a real JPEG: everything before the entropy-coded data."""
    jpg = _jpeg_bytes()
    sos = jpg.find(b"\xff\xda")
    assert sos > 0
    (seg_len,) = struct.unpack(">H", jpg[sos + 2:sos + 4])
    return jpg[:sos + 2 + seg_len]


@pytest.mark.parametrize("marker", [b"\xff\xd8", b"\xff\xc0\x00\x11", b"\xff\xc4\x00\x03\x55",
                                    b"\xff\xda\x00\x0c"], ids=["SOI", "SOF", "bad-DHT", "SOS"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupt_jpeg_body(tmp_path, marker, seed):
    # Valid header, then a garbage body that breaks the stream's structure
    # (a stray marker where entropy-coded data should be).
    garbage = bytearray(np.random.default_rng(seed).integers(0, 255, 3000, dtype=np.uint8).tobytes())
    garbage[700:700] = marker
    p = _write(tmp_path / "corrupt.jpg", _jpeg_header() + bytes(garbage) + b"\xff\xd9")
    _raises_load_error(p, "corrupt")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("seed", range(8))
def test_random_jpeg_body_never_escapes(tmp_path, seed):
    # Random bytes after a valid header: libjpeg only *warns* about bad Huffman
    # codes (Pillow does not surface those), so some of these decode as noise.
    # Either way the caller gets an RGB array or an ImageLoadError.
    body = np.random.default_rng(seed).bytes(3000)
    p = _write(tmp_path / "garbage.jpg", _jpeg_header() + body)
    _check_load(p)


def test_truncated_jpeg(tmp_path):
    jpg = _jpeg_bytes()
    p = _write(tmp_path / "truncated.jpg", jpg[:int(len(jpg) * 0.4)])
    _raises_load_error(p, "truncated")


def test_zero_byte_file(tmp_path):
    p = _write(tmp_path / "empty.jpg", b"")
    _raises_load_error(p, "empty", "0 bytes")


def test_text_file_named_jpg(tmp_path):
    p = _write(tmp_path / "notes.jpg", b"this is not a photo\n" * 20)
    _raises_load_error(p, "not an image")


def test_directory_named_jpg(tmp_path):
    p = tmp_path / "x.jpg"
    p.mkdir()
    _raises_load_error(p, "directory")


def test_missing_file(tmp_path):
    _raises_load_error(tmp_path / "nope.jpg", "no such file")


def test_str_path_accepted_and_reported(tmp_path):
    p = str(tmp_path / "nope.png")
    err = _raises_load_error(p)
    assert err.path == p


# ----------------------------------------------------------------------------- pixel limits

def test_decompression_bomb_refused_before_decoding(tmp_path, no_decode):
    png = _encode(Image.fromarray(_noise(16, 16)), "PNG")
    p = _write(tmp_path / "bomb.png", _png_with_size(png, 60000, 60000))
    with open(p, "rb") as f:  # the patch took and the CRC is right
        head = f.read(33)
    assert struct.unpack(">II", head[16:24]) == (60000, 60000)
    assert struct.unpack(">I", head[29:33])[0] == zlib.crc32(head[12:29]) & 0xFFFFFFFF
    t0 = time.perf_counter()
    err = _raises_load_error(p, "pixels", "limit")
    assert time.perf_counter() - t0 < 1.0
    assert "max_pixels" in err.reason
    assert no_decode == []


def test_max_pixels_below_image_size_refuses_it(tmp_path, no_decode):
    p = _write(tmp_path / "normal.png", _encode(Image.fromarray(_noise(48, 64)), "PNG"))
    err = _raises_load_error(p, "limit", max_pixels=1000)
    assert "3,072" in err.reason and "1,000" in err.reason
    assert no_decode == []


def test_max_pixels_equal_to_image_size_allows_it(tmp_path):
    p = _write(tmp_path / "normal.png", _encode(Image.fromarray(_noise(48, 64)), "PNG"))
    _assert_rgb(load_image(p, max_pixels=48 * 64), (48, 64))


def test_size_under_default_limit_is_not_refused_by_pil_threshold(tmp_path):
    # 10000×9500 = 95 Mpx: under imret's 100 Mpx default but over PIL's ~89 Mpx
    # warning threshold. It must not be refused for its size (it then fails
    # as the truncated file it really is).
    assert 10000 * 9500 < DEFAULT_MAX_PIXELS
    assert Image.MAX_IMAGE_PIXELS is None or 10000 * 9500 > Image.MAX_IMAGE_PIXELS
    png = _encode(Image.fromarray(_noise(8, 8)), "PNG")
    p = _write(tmp_path / "tall.png", _png_with_size(png, 10000, 9500))
    err = _raises_load_error(p, "truncated")
    assert "limit" not in err.reason and "bomb" not in err.reason


def test_raising_max_pixels_allows_sizes_beyond_pil_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    png = _encode(Image.fromarray(_noise(8, 8)), "PNG")
    p = _write(tmp_path / "huge.png", _png_with_size(png, 20000, 10000))  # 200 Mpx > PIL's 179 Mpx cap
    _raises_load_error(p, "limit")  # default max_pixels refuses it
    err = _raises_load_error(p, "truncated", max_pixels=250_000_000)
    assert "limit" not in err.reason and "bomb" not in err.reason


# ----------------------------------------------------------------------------- odd but good files

def test_grayscale(tmp_path):
    g = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))  # 10×64
    p = _write(tmp_path / "gray.png", _encode(Image.fromarray(g, "L"), "PNG"))
    a = load_image(p)
    _assert_rgb(a, (10, 64))
    for c in range(3):
        np.testing.assert_array_equal(a[..., c], g)


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    p = _write(tmp_path / "cmyk.jpg", _encode(im, "JPEG", quality=95))
    with Image.open(p) as check:
        assert check.mode == "CMYK"
    a = load_image(p)
    _assert_rgb(a, (30, 40))
    r, g, b = a.reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_16bit_png(tmp_path):
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    a16 = np.tile(ramp, (4, 1))  # 4×256 spanning 0..65535
    im = Image.fromarray(a16)
    p = _write(tmp_path / "deep.png", _encode(im, "PNG"))
    with Image.open(p) as check:
        assert check.mode.startswith("I")
        assert np.asarray(check).max() > 60000
    a = load_image(p)
    _assert_rgb(a, (4, 256))
    assert a.min() <= 2 and a.max() >= 253
    row = a[0, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0)  # order of intensities kept
    assert len(np.unique(row)) > 200  # not collapsed to a few levels (e.g. clipping at 255)


def test_palette_png(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
    im = Image.new("P", (8, 2))
    im.putpalette([v for c in colours for v in c] + [0] * (256 - len(colours)) * 3)
    idx = np.array([[0, 1, 2, 3] * 2, [3, 2, 1, 0] * 2], np.uint8)
    im.putdata(idx.ravel().tolist())
    p = _write(tmp_path / "pal.png", _encode(im, "PNG"))
    a = load_image(p)
    _assert_rgb(a, (2, 8))
    np.testing.assert_array_equal(a, np.array(colours, np.uint8)[idx])


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 1))
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 254 * 3)
    im.putdata([0, 1, 0, 1])
    p = _write(tmp_path / "paltrans.png", _encode(im, "PNG", transparency=0))
    with Image.open(p) as check:
        assert check.mode == "P" and "transparency" in check.info
    a = load_image(p)
    _assert_rgb(a, (1, 4))
    np.testing.assert_array_equal(a[0, 0], (255, 255, 255))  # transparent black → white
    np.testing.assert_array_equal(a[0, 1], (200, 10, 10))


def test_rgba_composites_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black
    rgba[0, 1] = (10, 200, 30, 255)  # opaque
    rgba[0, 2] = (255, 0, 0, 128)  # half-transparent red
    rgba[1] = (0, 0, 255, 0)  # transparent blue
    p = _write(tmp_path / "rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    a = load_image(p)
    _assert_rgb(a, (2, 3))
    np.testing.assert_array_equal(a[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(a[0, 1], (10, 200, 30))
    assert a[0, 2, 0] == 255 and 120 <= a[0, 2, 1] <= 135 and 120 <= a[0, 2, 2] <= 135
    np.testing.assert_array_equal(a[1], np.full((3, 3), 255))


def test_la_composites_on_white(tmp_path):
    la = np.array([[[0, 0], [50, 255]]], np.uint8)
    p = _write(tmp_path / "la.png", _encode(Image.fromarray(la, "LA"), "PNG"))
    a = load_image(p)
    _assert_rgb(a, (1, 2))
    np.testing.assert_array_equal(a[0], [[255, 255, 255], [50, 50, 50]])


def test_animated_gif_gives_first_frame(tmp_path):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (20, 10), c) for c in colours]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(p) as check:
        assert check.n_frames == 3
    a = load_image(p)
    _assert_rgb(a, (10, 20))
    assert np.all(a == np.array(colours[0], np.uint8))


def test_animated_gif_first_frame_even_if_last_seeked_differs(tmp_path):
    # Frames whose first is a different colour from the others catch a loader
    # that returns the last decoded frame.
    frames = [Image.new("RGB", (6, 6), c) for c in [(0, 0, 255), (255, 255, 0), (255, 255, 0)]]
    p = tmp_path / "anim2.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    a = load_image(p)
    assert np.all(a == (0, 0, 255))


def _exif_rotated_jpeg(path, orientation=6):
    """40 wide × 20 high: left half red, right half blue; EXIF says rotate."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif)
    return path


def test_exif_orientation_applied(tmp_path):
    p = _exif_rotated_jpeg(tmp_path / "rot.jpg")
    with Image.open(p) as check:
        assert check.size == (40, 20) and check.getexif()[0x0112] == 6
    a = load_image(p)
    _assert_rgb(a, (40, 20))  # height and width swapped
    # Orientation 6 = rotate 90° clockwise: the left (red) half is now on top.
    top, bottom = a[2:18].reshape(-1, 3).mean(0), a[22:38].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_bbox_is_in_upright_coordinates(tmp_path):
    p = _exif_rotated_jpeg(tmp_path / "rot.jpg")
    a = load_image(p, bbox=(0, 0, 20, 15))  # top of the upright image
    _assert_rgb(a, (15, 20))
    r, g, b = a[:12, 2:18].reshape(-1, 3).mean(0)
    assert r > 200 and b < 60


def test_bbox_crop_shape_and_content(tmp_path):
    arr = _noise(48, 64)
    p = _write(tmp_path / "n.png", _encode(Image.fromarray(arr), "PNG"))
    a = load_image(p, bbox=(10, 5, 30, 25))
    _assert_rgb(a, (20, 20))
    np.testing.assert_array_equal(a, arr[5:25, 10:30])
    # Float coordinates round; a box spilling over the edges is clipped.
    b = load_image(p, bbox=(-5.2, 40.4, 100, 99))
    np.testing.assert_array_equal(b, arr[40:, :])


@pytest.mark.parametrize("bbox", [(10, 10, 10, 30), (10, 30, 20, 30), (30, 10, 20, 20), (100, 100, 200, 200)])
def test_empty_bbox_raises(tmp_path, bbox):
    p = _write(tmp_path / "n.png", _encode(Image.fromarray(_noise(48, 64)), "PNG"))
    err = _raises_load_error(p, "empty", bbox=bbox)
    assert "64×48" in err.reason


def test_crop_function_directly():
    arr = _noise(10, 12)
    np.testing.assert_array_equal(crop(arr, (1, 2, 5, 9)), arr[2:9, 1:5])
    with pytest.raises(ImageLoadError) as info:
        crop(arr, (5, 5, 5.2, 9), "some/photo.jpg")
    assert info.value.path == "some/photo.jpg" and "empty" in info.value.reason


# ----------------------------------------------------------------------------- list_images

def _touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write(path, data)
    return str(path)


def test_list_images_recursive_case_insensitive_sorted(tmp_path):
    root = tmp_path / "photos"
    names = ["a.jpg", "B.JPG", "c.PnG", "d.jpeg", "e.webp", "f.Tif", "g.tiff", "h.bmp", "i.gif",
             "sub/j.jpg", "sub/deeper/k.JPEG", "zz/l.png"]
    others = ["notes.txt", "a.jpg.bak", "sub/m.heic", "jpg", "sub/deeper/.DS_Store", "x.jpgx"]
    for n in names + others:
        _touch(root / n)
    (root / "empty").mkdir()
    (root / "folder.jpg").mkdir()  # a folder with an image-like name is walked, not listed
    _touch(root / "folder.jpg" / "n.png")
    found = list(list_images(root))
    expected = ["B.JPG", "a.jpg", "c.PnG", "d.jpeg", "e.webp", "f.Tif", "folder.jpg/n.png", "g.tiff",
                "h.bmp", "i.gif", "sub/deeper/k.JPEG", "sub/j.jpg", "zz/l.png"]
    assert found == [os.path.join(str(root), *e.split("/")) for e in expected]
    assert found == sorted(found)
    assert list(list_images(root)) == found  # deterministic


def test_list_images_custom_extensions(tmp_path):
    _touch(tmp_path / "a.jpg")
    _touch(tmp_path / "b.png")
    assert list(list_images(tmp_path, extensions=(".png",))) == [str(tmp_path / "b.png")]


def test_list_images_single_file_and_missing_root(tmp_path):
    f = _touch(tmp_path / "one.jpg")
    assert list(list_images(f)) == [f]
    with pytest.raises(FileNotFoundError):
        list(list_images(tmp_path / "missing"))


def test_list_images_survives_symlink_loop(tmp_path):
    root = tmp_path / "r"
    a = _touch(root / "a.jpg")
    b = _touch(root / "sub" / "b.png")
    try:
        os.symlink(root, root / "sub" / "loop")  # r/sub/loop -> r
    except (OSError, NotImplementedError) as exc:
        pytest.skip(f"cannot make symlinks here: {exc}")
    errors = []
    t0 = time.perf_counter()
    found = list(list_images(root, on_error=lambda p, why: errors.append((p, why))))
    assert time.perf_counter() - t0 < 5
    assert found == [a, b]  # each image once
    assert len(errors) == 1
    path, why = errors[0]
    assert path == str(root / "sub" / "loop")
    assert "loop" in why


def test_list_images_loop_without_on_error_is_silent(tmp_path):
    root = tmp_path / "r"
    a = _touch(root / "a.jpg")
    try:
        os.symlink(root, root / "loop")
    except (OSError, NotImplementedError) as exc:
        pytest.skip(f"cannot make symlinks here: {exc}")
    assert list(list_images(root)) == [a]


def test_list_images_non_utf8_name(tmp_path):
    broot = os.fsencode(str(tmp_path))
    bname = os.path.join(broot, b"caf\xe9.jpg")
    try:
        fd = os.open(bname, os.O_CREAT | os.O_WRONLY, 0o644)
    except (OSError, UnicodeError) as exc:
        pytest.skip(f"filesystem refuses non-UTF-8 names: {exc}")
    try:
        os.write(fd, _jpeg_bytes(12, 16))
    finally:
        os.close(fd)
    if b"caf\xe9.jpg" not in os.listdir(broot):
        pytest.skip("filesystem re-encoded the name")
    _touch(tmp_path / "plain.png", _encode(Image.fromarray(_noise(4, 4)), "PNG"))
    found = list(list_images(tmp_path))
    assert len(found) == 2
    weird = [p for p in found if p.endswith(".jpg")]
    assert len(weird) == 1 and isinstance(weird[0], str)
    assert os.fsencode(weird[0]) == bname  # survives the str round trip byte for byte
    _assert_rgb(load_image(weird[0]), (12, 16))
    # Errors on such a name carry it too.
    os.unlink(bname)
    err = _raises_load_error(weird[0], "no such file")
    assert os.fsencode(err.path) == bname


# ----------------------------------------------------------------------------- fuzzing

@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_SEEDS = {
    ".jpg": _jpeg_bytes(12, 16),
    ".png": _encode(Image.fromarray(_noise(12, 16)), "PNG"),
}


def _check_load(path):
    try:
        a = load_image(path)
    except ImageLoadError as err:
        assert err.path == os.fspath(path)
        assert err.reason
        return
    _assert_rgb(a)
    assert a.shape[0] >= 1 and a.shape[1] >= 1


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from([".jpg", ".png"]),
       prefix=st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00"]),
       body=st.binary(max_size=2048))
def test_random_bytes_load_or_raise_image_load_error(fuzz_dir, ext, prefix, body):
    p = _write(fuzz_dir / f"random{ext}", prefix + body)
    _check_load(p)


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ext=st.sampled_from([".jpg", ".png"]), data=st.data())
def test_mutated_images_load_or_raise_image_load_error(fuzz_dir, ext, data):
    buf = bytearray(_SEEDS[ext])
    n = data.draw(st.integers(1, 8), label="edits")
    for _ in range(n):
        pos = data.draw(st.integers(0, len(buf) - 1), label="pos")
        kind = data.draw(st.sampled_from(["set", "cut", "insert", "truncate"]), label="kind")
        if kind == "set":
            buf[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[pos:pos + data.draw(st.integers(1, 64))]
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=32))
        else:
            del buf[pos:]
        if not buf:
            buf = bytearray(b"\0")
    p = _write(fuzz_dir / f"mutated{ext}", bytes(buf))
    _check_load(p)


# ----------------------------------------------------------------------------- DCT-domain reduction

from imret.io.images import draft_factor  # noqa: E402


@pytest.mark.parametrize("w,h,long_side,min_side,k", [
    (4032, 3024, 768, 32, 4),   # 1008 ≥ 768, 504 < 768
    (4032, 3024, 512, 32, 4),   # 504 < 512: never below what the largest scale needs
    (4096, 3072, 512, 32, 8),   # 512 exactly
    (3024, 4032, 768, 32, 4),   # portrait: the longer side counts
    (2048, 1536, 768, 32, 2),
    (1024, 768, 768, 32, 1),
    (300, 200, 768, 32, 1),     # smaller than needed: upscaled later, decoded whole
    (4000, 100, 100, 32, 2),    # the short side stays ≥ 32: 50 at 1/2, 25 at 1/4
    (4000, 20, 100, 32, 1),     # a short side already under 32 is never reduced
])
def test_draft_factor(w, h, long_side, min_side, k):
    assert draft_factor(w, h, long_side, min_side) == k


def _smooth_jpeg(path, w, h, orientation=None):
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) * 127 // (w + h)], 2).astype(np.uint8)
    im = Image.fromarray(arr)
    kw = {}
    if orientation:
        exif = im.getexif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    im.save(path, "JPEG", quality=95, **kw)
    return path, arr


def test_reduce_to_decodes_a_jpeg_reduced_and_close_to_a_resize(tmp_path):
    p, _ = _smooth_jpeg(tmp_path / "big.jpg", 800, 600)
    a = load_image(p, reduce_to=(200, 32))  # 800/4 = 200 ≥ 200; 800/8 < 200
    _assert_rgb(a, (150, 200))
    full = load_image(p)
    _assert_rgb(full, (600, 800))
    ref = np.asarray(Image.fromarray(full).resize((200, 150), Image.BILINEAR), np.float64)
    assert np.abs(a.astype(np.float64) - ref).mean() < 3.0
    _assert_rgb(load_image(p, reduce_to=(201, 32)), (300, 400))  # 1/4 would give 200 < 201


def test_reduce_to_leaves_other_formats_whole(tmp_path):
    arr = _noise(600, 800)
    p = _write(tmp_path / "big.png", _encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(load_image(p, reduce_to=(100, 32)), arr)


def test_reduce_to_keeps_exif_orientation(tmp_path):
    p = tmp_path / "rot.jpg"
    arr = np.zeros((80, 160, 3), np.uint8)  # 160 wide × 80 high: left half red, right half blue
    arr[:, :80] = (255, 0, 0)
    arr[:, 80:] = (0, 0, 255)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(p, "JPEG", quality=95, exif=exif)
    a = load_image(p, reduce_to=(40, 8))  # upright 80 × 160, reduced by 4
    _assert_rgb(a, (40, 20))
    top, bottom = a[2:18].reshape(-1, 3).mean(0), a[22:38].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    # bbox in original upright pixels: the top 60 rows (red), scaled with the image
    b = load_image(p, bbox=(0, 0, 80, 60), reduce_to=(15, 8))  # region 80 × 60: reduced by 4
    _assert_rgb(b, (15, 20))
    r, _, bl = b[1:13, 2:18].reshape(-1, 3).mean(0)
    assert r > 200 and bl < 60


def test_reduce_to_crop_matches_the_full_crop(tmp_path):
    p, _ = _smooth_jpeg(tmp_path / "big.jpg", 800, 600)
    bbox = (200, 100, 600, 500)  # 400 × 400 original pixels
    a = load_image(p, bbox=bbox, reduce_to=(100, 32))  # reduced by 4: 100 × 100
    _assert_rgb(a, (100, 100))
    full = load_image(p, bbox=bbox)
    ref = np.asarray(Image.fromarray(full).resize((100, 100), Image.BILINEAR), np.float64)
    assert np.abs(a.astype(np.float64) - ref).mean() < 3.0


# ----------------------------------------------------------------------------- issue 16: decode limits, odd files, boxes

def test_a_fifo_is_not_an_empty_file_and_is_never_opened(tmp_path):
    from imret.errors import ImageLoadError
    from imret.io.images import load_image

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)  # opening it would wait for a writer forever


def test_decode_budget_reduces_a_jpeg_and_refuses_a_png(tmp_path):
    from imret.errors import ImageLoadError
    from imret.io.images import decode_bytes, load_image

    rgb = np.random.default_rng(0).integers(0, 255, (600, 800, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=90)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert decode_bytes((800, 600), "RGB") == 800 * 600 * 6
    assert decode_bytes((800, 600), "I;16") == 800 * 600 * 17
    full = load_image(tmp_path / "a.jpg", max_decode_bytes=800 * 600 * 6)
    assert full.shape == (600, 800, 3)
    half = load_image(tmp_path / "a.jpg", max_decode_bytes=800 * 600 * 6 - 1)  # JPEG decodes at 1/2
    assert half.shape == (300, 400, 3)
    boxed = load_image(tmp_path / "a.jpg", bbox=(0, 0, 400, 300), max_decode_bytes=800 * 600 * 2)
    assert boxed.shape == (150, 200, 3)  # the box follows the reduction: the same quarter of the photo
    with pytest.raises(ImageLoadError, match="over the decode limit of 2 MiB"):
        load_image(tmp_path / "a.png", max_decode_bytes=2 * 2**20)


@pytest.mark.parametrize("text", ["nan,nan,nan,nan", "0,0,inf,inf", "0,0,1e309,1e309"])
def test_non_finite_boxes_are_one_clear_error(text, tmp_path):
    import argparse

    from imret.cli import _bbox
    from imret.errors import ImageLoadError
    from imret.core.bbox import parse_bbox
    from imret.io.images import crop

    with pytest.raises(ValueError, match="four finite numbers"):
        parse_bbox(text)
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        _bbox(text)
    with pytest.raises(ImageLoadError, match="not four finite numbers"):
        crop(np.zeros((4, 4, 3), np.uint8), tuple(float(v) for v in text.split(",")))
    assert parse_bbox("1,2,3.5,4") == (1.0, 2.0, 3.5, 4.0)
