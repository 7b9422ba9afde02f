"""Image bytes, raw pixels or a ready tensor -> the model's ``3 x S x S`` float32 input.

Pixels must equal training's ``decode_image`` -> ``fit_square``, then ``(x / 255 - mean) / std``.
Those two take and return numpy arrays, and each array <-> Pillow conversion copies the image
(~0.75 ms of a ~2.3 ms decode for a 300 px photo), so ``from_image`` replays their steps on one
Pillow image; tests/test_serve_units.py checks the pixels are identical on real photos and on
every odd file of tests/imagefactory.py. Anything the fast path cannot read goes through
``decode_image`` itself, whose DecodeError names the reason.

JPEG draft decoding was measured on the gear photos (71-436 px) and not kept for images within
``max_pixels``: at a reducing gap that keeps pixels close it saved under 0.5 ms, and it still
changed a quarter of the images. A JPEG over ``max_pixels`` is decoded at 1/2..1/8 scale instead
of refused (a phone photo on a 64 px model); anything else over it is a 413 before decoding.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from gearsight.modelfile import ModelSpec
from gearsight.image.decode import FORMATS, DecodeError, decode_image, to_rgb, within_limit
from gearsight.image.resize import crop_box, fit_square
from gearsight.serve.errors import RequestError, too_large

ORIENTATION = 0x0112  # EXIF tag
BICUBIC = Image.Resampling.BICUBIC


def decode_request_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 by decode_image's rules; a 413/400 naming the problem."""
    try:
        return decode_image(data, max_pixels=max_pixels, draft=True)
    except DecodeError as exc:
        if "pixel limit" in exc.reason:
            raise too_large(f"{name}: {exc.reason}") from None
        raise RequestError(f"{name}: {exc.reason}") from None


def pixels_from_floats(arr: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    """Raw ``H x W x 3`` pixel values 0..255 sent as float32 -> RGB uint8, checked."""
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise RequestError(f"{name}: layout 'hwc' needs shape [H, W, 3], got {list(arr.shape)}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise too_large(f"{name}: {arr.shape[1]}x{arr.shape[0]} pixels exceed the {max_pixels:,}-pixel limit")
    if arr.min() < 0 or arr.max() > 255:
        raise RequestError(f"{name}: layout 'hwc' holds pixel values 0..255, got {arr.min():g}..{arr.max():g}")
    return np.rint(arr).astype(np.uint8)


class Preprocessor:
    def __init__(self, spec: ModelSpec, max_pixels: int):
        self.spec = spec
        self.size = spec.input_size
        self.max_pixels = max_pixels
        std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
        mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
        # (x/255 - mean)/std folded into one multiply and one subtract.
        self.scale = 1.0 / (255.0 * std)
        self.offset = mean / std

    def normalize(self, square: np.ndarray) -> np.ndarray:
        """``S x S x 3`` uint8 -> ``3 x S x S`` float32, normalised."""
        out = np.empty((3, self.size, self.size), dtype=np.float32)
        np.multiply(square.transpose(2, 0, 1), self.scale, out=out)
        out -= self.offset
        return out

    def from_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 pixels of any size -> model input, resized as in training."""
        square = fit_square(rgb, self.size, self.spec.resize, self.spec.pad_fill)
        return self.normalize(square)

    def from_image(self, data: bytes, name: str = "image") -> np.ndarray:
        """Encoded image bytes (JPEG, PNG, ...) -> model input."""
        try:
            return self.normalize(self._fast_square(data, name))
        except RequestError:
            raise
        except Exception:  # noqa: BLE001 - decode_image below names the reason, or reads it after all
            pass
        return self.from_pixels(decode_request_image(data, name, self.max_pixels))

    def _fast_square(self, data: bytes, name: str) -> np.ndarray:
        """decode_image's steps, then fit_square's, on one Pillow image (see the module docstring)."""
        with Image.open(io.BytesIO(data), formats=FORMATS) as im:
            width, height = im.size
            if not within_limit(im, self.max_pixels, draft=True):  # a big JPEG decodes at 1/2..1/8 scale
                raise too_large(f"{name}: declared size {width}x{height} exceeds the {self.max_pixels:,}-pixel limit")
            im.load()
            if im.getexif().get(ORIENTATION, 1) in range(2, 9):
                im = ImageOps.exif_transpose(im)
            return self._fit(to_rgb(im))

    def _fit(self, im: Image.Image) -> np.ndarray:
        """``fit_square(np.asarray(im), ...)`` without the copies: same calls in the same order."""
        size, mode = self.size, self.spec.resize
        box = crop_box(*im.size) if mode == "crop" else None
        if box is not None:
            im = im.crop(box)
        w, h = im.size
        if mode == "stretch":
            return np.asarray(im.resize((size, size), BICUBIC, reducing_gap=3.0))
        scale = size / max(h, w) if mode == "pad" else size / min(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        im = im.resize((new_w, new_h), BICUBIC, reducing_gap=3.0)
        if mode == "crop":
            left, top = (new_w - size) // 2, (new_h - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)))
        fill = self.spec.pad_fill
        canvas = Image.new("RGB", (size, size), (fill, fill, fill))
        canvas.paste(im, ((size - new_w) // 2, (size - new_h) // 2))
        return np.asarray(canvas)

    def from_hwc_floats(self, arr: np.ndarray, name: str = "data") -> np.ndarray:
        """Raw ``H x W x 3`` pixel values 0..255 sent as float32 -> model input."""
        return self.from_pixels(pixels_from_floats(arr, name, self.max_pixels))

    def check_chw(self, arr: np.ndarray, name: str = "data") -> np.ndarray:
        """A client-preprocessed tensor: must already be ``3 x S x S``."""
        if arr.shape != (3, self.size, self.size):
            raise RequestError(f"{name}: layout 'chw' needs shape [3, {self.size}, {self.size}], got {list(arr.shape)}")
        return arr
