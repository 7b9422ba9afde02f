"""Write real odd and hostile image files into a folder, each with the outcome decoding must give.

Used by the decode tests and by anything that must survive a real photo folder (pack, sources).
Every file is written by Pillow (or, where Pillow cannot write the format, by a few lines of PNG
chunk code below), so the bytes are what a camera, an editor or an attacker could hand us.

    cases = make_hostile_images(tmp_path)          # {name: Case(path, expect)}
    for name, (path, expect) in cases.items():
        ...  expect.ok -> decode_image(path) must match expect (see assert_decoded)
             not expect.ok -> DecodeError whose reason contains expect.error
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

RGB = tuple[int, int, int]
RED, GREEN, BLUE, WHITE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (90, 90, 90)


@dataclass(frozen=True)
class Expect:
    """What decoding one file must give: an HxW RGB array with these pixels, or a DecodeError."""

    shape: tuple[int, int] | None = None                     # (H, W); None when decoding must fail
    pixels: dict[tuple[int, int], RGB] = field(default_factory=dict)  # (y, x) -> RGB
    tol: int = 0                                             # allowed |difference| per channel (lossy codecs)
    error: str = ""                                          # a word the DecodeError reason must contain

    @property
    def ok(self) -> bool:
        return not self.error


class Case(NamedTuple):
    path: Path
    expect: Expect


def fails(error: str) -> Expect:
    return Expect(error=error)


def assert_decoded(rgb: np.ndarray, expect: Expect, name: str = "") -> None:
    """Check a decoded array against ``expect`` with a message that names the case and the pixel."""
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, f"{name}: {rgb.dtype} {rgb.shape}"
    assert rgb.shape[:2] == expect.shape, f"{name}: shape {rgb.shape[:2]} != {expect.shape}"
    for (y, x), want in expect.pixels.items():
        got = rgb[y, x].astype(int)
        assert np.abs(got - want).max() <= expect.tol, f"{name}: pixel ({y},{x}) = {tuple(got)}, want {want} ±{expect.tol}"


# -- PNG by hand: Pillow writes neither 16-bit RGB PNGs nor headers without pixel data. -------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None) -> bytes:
    """A PNG file; ``rows`` is raw scanlines without filter bytes, None for a header with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if rows is not None:
        stride = len(rows) // height
        raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(height))
        out += _chunk(b"IDAT", zlib.compress(raw))
    return out + _chunk(b"IEND", b"")


def write_huge_png_header(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid PNG signature and IHDR declaring ``width x height``, with no pixel data (a few bytes)."""
    path.write_bytes(png_bytes(width, height, 8, 2, None))
    return path


# -- the cases ------------------------------------------------------------------------------------

def _solid(mode: str, size: tuple[int, int], colour) -> Image.Image:
    return Image.new(mode, size, colour)


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def _good_rgb(d: Path) -> dict[str, Case]:
    """Plain RGB in every container; one red and one blue pixel on grey, at known places."""
    im = _solid("RGB", (12, 8), GREY)
    im.putpixel((0, 0), RED)
    im.putpixel((11, 7), BLUE)
    exact = Expect((8, 12), {(0, 0): RED, (7, 11): BLUE, (4, 5): GREY})
    # JPEG is lossy and blurs single pixels: a solid 16x16 block checks the colour, not the layout.
    jpeg = _solid("RGB", (16, 8), (200, 30, 60))
    return {
        "rgb.png": Case(_save(im, d / "rgb.png"), exact),
        "rgb.bmp": Case(_save(im, d / "rgb.bmp"), exact),
        "rgb_lossless.webp": Case(_save(im, d / "rgb_lossless.webp", lossless=True), exact),
        "rgb.tif": Case(_save(im, d / "rgb.tif"), exact),
        "rgb.jpg": Case(_save(jpeg, d / "rgb.jpg", quality=95), Expect((8, 16), {(4, 8): (200, 30, 60)}, tol=4)),
        "rgb_lossy.webp": Case(_save(jpeg, d / "rgb_lossy.webp", quality=90), Expect((8, 16), {(4, 8): (200, 30, 60)}, tol=6)),
        "gray.png": Case(_save(_solid("L", (5, 3), 77), d / "gray.png"), Expect((3, 5), {(1, 1): (77, 77, 77)})),
        "bilevel.png": Case(_save(_solid("1", (5, 3), 1), d / "bilevel.png"), Expect((3, 5), {(2, 4): WHITE})),
    }


def _good_deep(d: Path) -> dict[str, Case]:
    """16- and 32-bit samples must be scaled to 8 bits (65535 -> 255, 32896 -> 128), never clipped."""
    values = np.array([[65535, 32896], [0, 257]], dtype=np.uint16)
    scaled = Expect((2, 2), {(0, 0): WHITE, (0, 1): (128,) * 3, (1, 0): (0,) * 3, (1, 1): (1,) * 3})
    rgb16 = np.array([[[65535, 32896, 0], [0, 0, 65535]]], dtype=">u2").tobytes()
    wide = np.array([[0, 1_000_000], [500_000, -1]], dtype=np.int32)  # beyond 16 bits: min..max stretch
    return {
        "gray16.png": Case(_save(Image.fromarray(values), d / "gray16.png"), scaled),
        "gray16.tif": Case(_save(Image.fromarray(values), d / "gray16.tif"), scaled),
        "int32.tif": Case(_save(Image.fromarray(values.astype(np.int32)), d / "int32.tif"), scaled),
        "int32_wide.tif": Case(_save(Image.fromarray(wide), d / "int32_wide.tif"),
                               Expect((2, 2), {(0, 0): (0,) * 3, (0, 1): WHITE, (1, 0): (128,) * 3})),
        "rgb16.png": Case(_write(d / "rgb16.png", png_bytes(2, 1, 16, 2, rgb16)),
                          Expect((1, 2), {(0, 0): (255, 128, 0), (0, 1): BLUE})),
    }


def _good_alpha(d: Path) -> dict[str, Case]:
    """Transparency of every kind lands on white; opaque pixels keep their colour."""
    rgba = _solid("RGBA", (4, 2), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (255, 0, 0, 128))
    rgba.putpixel((2, 0), (0, 0, 255, 255))
    la = _solid("LA", (3, 1), (100, 0))
    la.putpixel((1, 0), (100, 255))
    pal = _solid("P", (3, 1), 0)
    pal.putpalette([*GREEN, *RED] + [0] * 762)
    pal.putpixel((1, 0), 1)
    rgb_key = _solid("RGB", (3, 1), GREEN)
    rgb_key.putpixel((1, 0), RED)
    return {
        "rgba.png": Case(_save(rgba, d / "rgba.png"),
                         Expect((2, 4), {(0, 0): WHITE, (0, 1): (255, 128, 128), (0, 2): BLUE}, tol=1)),
        "rgba.webp": Case(_save(rgba, d / "rgba.webp", lossless=True, exact=True),
                          Expect((2, 4), {(0, 0): WHITE, (0, 1): (255, 128, 128), (0, 2): BLUE}, tol=1)),
        "la.png": Case(_save(la, d / "la.png"), Expect((1, 3), {(0, 0): WHITE, (0, 1): (100, 100, 100)})),
        "palette_trns.png": Case(_save(pal, d / "palette_trns.png", transparency=0),
                                 Expect((1, 3), {(0, 0): WHITE, (0, 1): RED})),
        "palette_trns.gif": Case(_save(pal, d / "palette_trns.gif", transparency=0),
                                 Expect((1, 3), {(0, 0): WHITE, (0, 1): RED})),
        "rgb_colorkey.png": Case(_save(rgb_key, d / "rgb_colorkey.png", transparency=GREEN),
                                 Expect((1, 3), {(0, 0): WHITE, (0, 1): RED})),
    }


def _good_other(d: Path) -> dict[str, Case]:
    """CMYK, first page / first frame of multi-image files, EXIF orientation."""
    cyan = _solid("CMYK", (8, 8), (255, 0, 0, 0))
    pages = [_solid("RGB", (6, 4), c) for c in (RED, BLUE, GREEN)]
    # Stored 20 wide x 10 high, red block in the stored top-left; orientation 6 says "rotate 90° clockwise
    # to display", so the decoded image is 20 high x 10 wide with the red block in its top-right corner.
    rot = _solid("RGB", (20, 10), GREY)
    rot.paste(RED, (0, 0, 4, 4))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = Expect((20, 10), {(1, 8): RED, (1, 1): GREY, (18, 8): GREY}, tol=6)
    return {
        "cmyk.jpg": Case(_save(cyan, d / "cmyk.jpg", quality=95), Expect((8, 8), {(4, 4): (0, 255, 255)}, tol=4)),
        "cmyk.tif": Case(_save(cyan, d / "cmyk.tif"), Expect((8, 8), {(4, 4): (0, 255, 255)})),
        "multipage.tif": Case(_save(pages[0], d / "multipage.tif", save_all=True, append_images=pages[1:]),
                              Expect((4, 6), {(2, 3): RED})),
        "animated.gif": Case(_save(pages[2], d / "animated.gif", save_all=True, append_images=pages[:2]),
                             Expect((4, 6), {(2, 3): GREEN})),
        "animated.webp": Case(_save(pages[1], d / "animated.webp", save_all=True, append_images=pages[2:],
                                    lossless=True), Expect((4, 6), {(2, 3): BLUE})),
        # Cameras write MPO (several pictures in one JPEG); the first is the photo.
        "multipicture.jpg": Case(_save(pages[0], d / "multipicture.jpg", format="MPO", save_all=True,
                                       append_images=pages[1:]), Expect((4, 6), {(2, 3): RED}, tol=4)),
        "exif_rot6.jpg": Case(_save(rot, d / "exif_rot6.jpg", exif=exif, quality=95), rotated),
        "exif_rot6.png": Case(_save(rot, d / "exif_rot6.png", exif=exif), rotated),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _bad(d: Path) -> dict[str, Case]:
    """Files that must raise DecodeError; ``error`` is a word its reason must contain."""
    photo = Image.effect_noise((64, 64), 60).convert("RGB")  # noise: no long runs, so a cut lands mid-data
    jpeg = _save(photo, d / "_whole.jpg", quality=90).read_bytes()
    png = _save(photo, d / "_whole.png").read_bytes()
    (d / "_whole.jpg").unlink()
    (d / "_whole.png").unlink()
    return {
        "truncated.jpg": Case(_write(d / "truncated.jpg", jpeg[: len(jpeg) // 2]), fails("truncated")),
        "truncated.png": Case(_write(d / "truncated.png", png[: len(png) // 2]), fails("truncated")),
        "empty.jpg": Case(_write(d / "empty.jpg", b""), fails("empty")),
        "text.jpg": Case(_write(d / "text.jpg", b"this is a text file, not a photo\n" * 20), fails("not an image")),
        "huge_header.png": Case(write_huge_png_header(d / "huge_header.png"), fails("pixel limit")),
        "corrupt.png": Case(_write(d / "corrupt.png", png_bytes(64, 64, 8, 2, None)[:-12]  # IHDR, then a
                                   + _chunk(b"IDAT", bytes(range(256)) * 4) + _chunk(b"IEND", b"")),  # non-zlib IDAT
                            fails("corrupt")),
        # Pillow would hand EPS to Ghostscript; a photo reader must refuse it, whatever the file is named.
        "postscript.jpg": Case(_save(photo.resize((8, 8)), d / "postscript.jpg", format="EPS"), fails("not an image")),
    }


def make_good_images(directory: Path) -> dict[str, Case]:
    """Odd but valid files: every one must decode to the pixels in its Expect."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return {**_good_rgb(d), **_good_deep(d), **_good_alpha(d), **_good_other(d)}


def make_bad_images(directory: Path) -> dict[str, Case]:
    """Undecodable files: every one must raise DecodeError naming the path and a reason."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return _bad(d)


def make_hostile_images(directory: Path) -> dict[str, Case]:
    """All cases, good and bad, written flat into ``directory``: {file name: Case(path, expect)}."""
    return {**make_good_images(directory), **make_bad_images(directory)}
