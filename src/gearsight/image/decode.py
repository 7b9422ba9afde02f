"""Bytes or path -> RGB uint8 array, or a DecodeError that names the file and the reason.

Real catalog folders hold every oddity a camera or an editor can write, so each one is handled
explicitly rather than trusted to ``Image.convert("RGB")``, which gets several of them wrong:
- EXIF orientation is applied (phones store portraits as rotated landscapes).
- Transparency (RGBA, LA, palette with a transparent index) is composited on white: catalog photos
  are cut-outs meant for a white page, and converting RGBA straight to RGB turns the background black.
- CMYK is converted by Pillow's ICC-less formula (good enough for classification, no colour-managed
  pipeline is assumed).
- 16-bit grayscale/RGB (PNG ``I;16``, TIFF ``I;16``/``I``) is scaled to 8 bits, not clipped: Pillow's
  ``convert("L")`` on ``I;16`` clips everything above 255 to white.
- Multi-page TIFF and animated GIF/WebP: the first page/frame.
- A declared size over ``max_pixels`` is refused before the pixels are decoded (decompression bombs).
  Pillow refuses anything over twice its own ``Image.MAX_IMAGE_PIXELS`` (about 179 M) while opening,
  so a ``max_pixels`` above that has no effect.
- Only the photo formats in ``FORMATS`` are opened: Pillow identifies files by content, and its rarer
  plugins (EPS runs Ghostscript, PSD, FITS, ...) are attack surface a photo folder does not need.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Refuse images whose declared width*height exceeds this (about 10k x 9k). Our largest real photo
#: is 436x436; a bigger one is far more likely a bomb or a scan than a catalog photo.
DEFAULT_MAX_PIXELS = 89_478_485

#: Pillow format ids we open (a camera JPEG with several pictures opens as MPO through "JPEG").
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "DIB", "GIF", "WEBP", "AVIF", "JPEG2000", "PPM")

# Truncated files must raise, not decode into grey padding silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class DecodeError(ValueError):
    """An image that cannot be decoded; ``source`` names the file, ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def describe_source(src: ImageSource) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    name = getattr(src, "name", None)
    return str(name) if name else "<bytes>"


def _open(src: ImageSource) -> Image.Image:
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise DecodeError("<bytes>", "empty (0 bytes)")
        src = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise DecodeError(str(path), "file not found")
        if not path.is_file():
            raise DecodeError(str(path), "not a file")
        if path.stat().st_size == 0:
            raise DecodeError(str(path), "empty file (0 bytes)")
    return Image.open(src, formats=FORMATS)


def _to_8bit(im: Image.Image) -> Image.Image:
    """16/32-bit integer and float modes -> 8-bit 'L' by scaling to the data's range.

    I;16 holds 0..65535 and is scaled by 257. Mode 'I' (32-bit) does not say how many bits were used:
    in practice it holds 16-bit data (scaled the same way) or 8-bit data from ``convert("I")`` (kept),
    so values within 0..255 are kept and within 0..65535 scaled. Beyond 16 bits, and for float 'F',
    there is no display convention, so min..max is stretched to 0..255.
    """
    arr = np.asarray(im)
    finite = arr[np.isfinite(arr)] if im.mode == "F" else arr
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and 255 < hi <= 65535 and lo >= 0):
        # round(a / 257) in integers: one uint32 copy instead of float64 ones (a / 257 is never
        # exactly half-way for an integer a, so this equals numpy's round-half-even).
        out = arr.astype(np.uint32)
        out += 128
        out //= 257
        return Image.fromarray(out.astype(np.uint8), mode="L")
    if im.mode == "F" or lo < 0 or hi > 255:
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
        arr = (arr - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return Image.fromarray(arr.clip(0, 255).round().astype(np.uint8), mode="L")


def _flatten_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, with the rules in the module docstring."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_8bit(im).convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")  # a tRNS colour key in a grey or RGB PNG
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_on_white(im)
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return im


def decode_image(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, draft: bool = False) -> np.ndarray:
    """Decode ``src`` (path, bytes or binary file) to an ``H x W x 3`` uint8 RGB array.

    ``draft``: a JPEG declared over ``max_pixels`` is decoded at 1/2, 1/4 or 1/8 scale (see
    ``within_limit``) instead of refused. Raises DecodeError naming the source and the reason for
    anything that is not a readable image.
    """
    return decode_with(src, lambda im: np.asarray(to_rgb(im), dtype=np.uint8).copy(), max_pixels, draft)


def within_limit(im: Image.Image, max_pixels: int, draft: bool = False) -> bool:
    """Whether ``im`` (opened, not loaded) decodes to at most ``max_pixels``; with ``draft``, a JPEG
    over it is first set to decode at the largest DCT scale (1/2..1/8) that fits, which costs a
    fraction of a full decode. Images within the limit are never drafted (they decode as in training)."""
    width, height = im.size
    if width * height <= max_pixels:
        return True
    if not draft or im.format not in ("JPEG", "MPO"):
        return False
    for k in (2, 4, 8):
        if -(-width // k) * -(-height // k) <= max_pixels:
            im.draft(im.mode, (max(1, width // k), max(1, height // k)))  # Pillow picks scale >= k
            return im.size[0] * im.size[1] <= max_pixels
    return False


def decode_with(src: ImageSource, finish, max_pixels: int = DEFAULT_MAX_PIXELS, draft: bool = False):
    """Open, check the declared size, load and EXIF-rotate ``src``, then ``finish(PIL image)``.

    The one place decode errors are named: ``decode_image`` finishes to RGB, the matting code
    (data/matting.py) to RGBA with the file's alpha kept.
    """
    name = describe_source(src)
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below, so Pillow's bomb warning is noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open(src) as im:  # closes files we opened; a multi-frame file stays on frame 0
                width, height = im.size
                if not within_limit(im, max_pixels, draft):
                    raise DecodeError(name, f"declared size {width}x{height} exceeds the {max_pixels:,}-pixel limit")
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return finish(im)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError(name, f"not an image, or not one of the formats read here ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(name, f"declared size over the pixel limit ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise OSError, SyntaxError, struct.error, ...
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt or unreadable"
        raise DecodeError(name, f"{kind} ({type(exc).__name__}: {exc})") from None
