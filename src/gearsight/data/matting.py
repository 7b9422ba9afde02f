"""Cut a gear photo out of its studio background: ``gear_mask(image) -> uint8 H x W, 255 = object``.

The gear photos are catalog shots on plain near-white backgrounds (2,062 JPEGs; 60 PNGs, 59 of them
RGBA). The rule, in order:

1. **A real alpha matte is used as it is.** An RGBA file whose alpha has transparent pixels *and*
   whose opaque part is not simply its own bounding box (a photo on a transparent canvas) is a
   cut-out already: the alpha is the mask, soft edges included. Gear: 50 of the 2,122 photos.
2. **Otherwise, flood fill from the border over near-white pixels.** A pixel is near-white when all
   three channels are >= ``BG_THRESHOLD`` (240); the background is every near-white pixel connected
   (4-neighbourhood) to the image border. White parts *inside* the object are not connected to the
   border and stay object. An RGBA file with a rectangular alpha (7 gear PNGs) is flattened on white
   first, and its alpha still zeroes what it hides.
3. **Holes.** A near-white region enclosed by the object (so not reached by the fill) is background
   seen *through* the object (the inside of a carabiner, between a harness's leg loops, between arm
   and body) when at least 70 % of its pixels are studio white (all channels >= 250) and it covers
   at least 0.05 % of the frame; such regions become background.
4. **Edge.** The binary object is eroded by 1 px and blurred (Gaussian sigma 0.7 px): a soft edge
   that drops the light anti-aliased fringe the photo has where the object meets the white.

Measured (``bench/make_outdoor.py --mask-stats``, docs/BENCHMARKS.md "Outdoor benchmark"):
- The files: 2,063 RGB JPEGs/PNGs, 50 RGBA cut-outs (rule 1), 7 RGBA photos on a transparent
  canvas and 2 all-opaque RGBA files (both flood-filled).
- Threshold, flood fill alone: the median mask covers 0.587 / 0.612 / 0.621 / 0.640 of the frame at
  T = 200 / 230 / 240 / 250. Below 240 the fill leaks into white and silver products (coverage moves
  by more than 5 points for 124 photos between T = 200 and 220, 35 between 220 and 230, 31 between
  230 and 240, seen to be leaks); above 245 the JPEG noise in the white (values 240..250) cuts the
  background into pieces the fill cannot reach (the inside of rope coils and harness loops stays
  "object"; 12 photos move between 245 and 250). 240 is the compromise; white jackets and white
  helmets still lose a little (a 245-white shell and a 245-white background look the same).
- Against ground truth: the 50 alpha cut-outs flattened on white and saved as JPEG (quality 90),
  then matted by rules 2-4 as if they had no alpha: mean IoU with alpha >= 128 of 0.937 for the flood
  fill alone, 0.967 with holes, 0.975 with the edge step (as PNG: 0.939, 0.972, 0.974). The edge
  step also lowers the mean |mask - alpha| within 3 px of the true edge from 0.12 to 0.09.
- All 2,122 photos: the mask (>= 128) covers 5-95 % of the frame for 99.67 %, median 0.51; the 7
  outside are 6 thin ice axes (3-5 % of the frame, correct masks) and 1 tent photographed outdoors
  (no studio white: the whole frame is the object; a train photo). A hole was removed in 55 % of
  the flood-filled photos (nearly every carabiner). ~13 ms CPU a photo (at ~400 x 400 px).

Decoding: :func:`decode_rgba` is ``decode.decode_image`` (same formats, limits, EXIF rotation and
error messages) but keeps the alpha channel instead of compositing it on white.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from gearsight.image.decode import DEFAULT_MAX_PIXELS, ImageSource, decode_with, to_rgb

#: Near-white: every channel at or above this (0..255). See the module docstring for the measurement.
BG_THRESHOLD = 240
#: A pixel counts as "studio white" (for holes) at or above this on every channel.
HOLE_WHITE = 250
#: An enclosed near-white region is a hole when this share of its pixels is studio white ...
HOLE_WHITE_SHARE = 0.7
#: ... and it covers at least this fraction of the frame.
HOLE_MIN_AREA = 0.0005
#: Edge: erode by this many pixels, then blur with this Gaussian sigma (pixels). 0/0 = hard edge.
EDGE_ERODE = 1
EDGE_SIGMA = 0.7
#: An alpha whose opaque part fills more of its bounding box than this is a canvas, not a cut-out.
CANVAS_FILL = 0.95

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _to_rgba(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H x W x 4 uint8, straight (not premultiplied) alpha; 255 where none."""
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")  # a tRNS colour key
    if im.mode in _ALPHA_MODES:
        return np.asarray(im.convert("RGBA"), dtype=np.uint8).copy()
    rgb = np.asarray(to_rgb(im), dtype=np.uint8)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)


def decode_rgba(src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``src`` to ``H x W x 4`` uint8 RGBA, keeping the file's alpha (255 where it has none).

    Same formats, pixel limit, EXIF rotation and DecodeError reasons as ``decode.decode_image``;
    ``flatten_on_white(decode_rgba(x))`` equals ``decode_image(x)`` (within 1 level of rounding).
    """
    return decode_with(src, _to_rgba, max_pixels)


def flatten_on_white(rgba: np.ndarray) -> np.ndarray:
    """H x W x 4 straight-alpha uint8 -> H x W x 3 composited on white (as decode_image does)."""
    rgb = rgba[..., :3].astype(np.uint16)
    a = rgba[..., 3:4].astype(np.uint16)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def is_cutout_alpha(alpha: np.ndarray) -> bool:
    """True when ``alpha`` (H x W uint8) is a real matte: some transparency, and the opaque part
    (>= 128) is not its own bounding box (a photo on a transparent canvas has a rectangular alpha)."""
    alpha = np.asarray(alpha)
    if alpha.min() == 255:
        return False
    opaque = alpha >= 128
    if not opaque.any():
        return False
    rows, cols = np.flatnonzero(opaque.any(axis=1)), np.flatnonzero(opaque.any(axis=0))
    box = opaque[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return bool(box.mean() < CANVAS_FILL)


def background(rgb: np.ndarray, threshold: int = BG_THRESHOLD, holes: bool = True) -> np.ndarray:
    """Boolean H x W background of a photo on near-white (rules 2 and 3 of the module docstring)."""
    from scipy import ndimage  # scipy comes with scikit-learn

    low = rgb.min(axis=2)
    labels, n = ndimage.label(low >= threshold)  # 4-connectivity
    is_bg = np.zeros(n + 1, dtype=bool)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    is_bg[edge] = True
    if holes and n:
        flat = labels.ravel()
        area = np.bincount(flat, minlength=n + 1)
        white = np.bincount(flat, weights=(low >= HOLE_WHITE).ravel(), minlength=n + 1)
        is_bg |= (area >= HOLE_MIN_AREA * low.size) & (white >= HOLE_WHITE_SHARE * area)
    is_bg[0] = False  # label 0: the pixels that are not near-white
    return is_bg[labels]


def soften(obj: np.ndarray, erode: int = EDGE_ERODE, sigma: float = EDGE_SIGMA) -> np.ndarray:
    """Boolean object -> uint8 mask with the edge step (erode ``erode`` px, Gaussian blur ``sigma``).

    The frame border does not erode an object that touches it (it continues outside the photo)."""
    from scipy import ndimage

    if erode:
        obj = ndimage.binary_erosion(obj, iterations=erode, border_value=1)
    m = obj.astype(np.float32)
    if sigma:
        m = ndimage.gaussian_filter(m, sigma, mode="nearest")
    return np.rint(m * 255).astype(np.uint8)


def gear_mask(image: np.ndarray, threshold: int = BG_THRESHOLD, holes: bool = True,
              soft_edge: bool = True) -> np.ndarray:
    """``H x W x 3`` RGB or ``H x W x 4`` RGBA uint8 -> ``H x W`` uint8 mask, 255 = object, 0 = background.

    RGBA with a real matte: the alpha. Anything else: the flood-fill rule of the module docstring
    (``holes`` and ``soft_edge`` switch off rules 3 and 4). An all-white image gives an all-zero mask;
    a photo with no near-white border gives an all-255 mask (the whole frame is the object).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W x 3 or H x W x 4 uint8 image, got {image.dtype} {image.shape}")
    alpha = None
    if image.shape[2] == 4:
        alpha = image[..., 3]
        if is_cutout_alpha(alpha):
            return alpha.copy()
        rgb = flatten_on_white(image)
    else:
        rgb = image
    obj = ~background(rgb, threshold, holes)
    mask = soften(obj) if soft_edge else obj.astype(np.uint8) * np.uint8(255)
    if alpha is not None and alpha.min() < 255:
        mask = ((mask.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return mask


def cutout(src: ImageSource | np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """A gear photo (file, bytes, or an RGB/RGBA array) -> (H x W x 3 RGB, H x W uint8 mask).

    The RGB keeps the file's own colours under soft alpha edges (straight alpha, so compositing with
    the mask gives no white fringe); fully transparent pixels are white.
    """
    rgba = src if isinstance(src, np.ndarray) else decode_rgba(src, max_pixels)
    if rgba.ndim == 3 and rgba.shape[2] == 3:
        return rgba, gear_mask(rgba)
    mask = gear_mask(rgba)
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb, mask


def mask_square(mask: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """A mask through ``resize.fit_square``'s geometry (pad with 0 = background): it stays aligned
    with the pixels ``gearsight pack`` stores for the same photo at ``size``/``mode``."""
    from gearsight.image.resize import fit_square

    return np.ascontiguousarray(fit_square(np.repeat(mask[:, :, None], 3, axis=2), size, mode, fill=0)[:, :, 0])


def masks_for_pack(packed_dir: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """uint8 (N, S, S) masks aligned with every image of a packed dataset (the source files must
    still be where meta.json says). For training augmentation (composite.paste_on_backgrounds)."""
    from gearsight.data.pack import PackedDataset

    ds = PackedDataset(packed_dir)
    size, mode = ds.size, ds.meta["resize"]
    out = np.zeros((len(ds), size, size), dtype=np.uint8)
    for i, item in enumerate(ds.meta["items"]):
        out[i] = mask_square(gear_mask(decode_rgba(item["path"], max_pixels)), size, mode)
    return out
