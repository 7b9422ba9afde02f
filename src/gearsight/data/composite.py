"""Put a cut-out object on a scene: one photo at a time (numpy) or a whole training batch (torch).

``paste`` builds the outdoor benchmark (gearsight.data.outdoor): the object, cropped to its mask's
bounding box, is resized so its longer side is ``scale`` (40-90 % by default) of a square output,
placed at ``position`` in the room left over, and alpha-blended on a square crop of the scene.
Resizing is premultiplied (Pillow resizes RGBA through RGBa), so the pixels under the mask's soft
edge keep the object's colour and no white fringe from the studio photo comes along.

``paste_on_backgrounds`` is the training-time version: uint8 batches in the layout of
``data/transforms.py`` (NHWC RGB, or NCHW with ``layout="nchw"``), each image replaced with
probability ``p`` by its masked object over a random crop of a random background of a pool
(``prepare_backgrounds``, once per run, turns the saved pool into crops at the training size, so no
batch ever resamples a background). Blending is integer arithmetic in int16 (alpha quantised to
0..128, exact at 0 and 255): 3-4x less CPU than the same blend in float32 (one thread: 1.4 vs
4.7 ms for 64 x 64 x 64 x 3, 12-17 vs 56 ms for 64 x 160 x 160 x 3). Its cost on the 2-core CPU:
see ``paste_on_backgrounds``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

#: The object's longer side as a fraction of the output side, drawn uniformly from this range.
SCALE_RANGE = (0.4, 0.9)
#: A scene is cropped to a square whose side is this fraction (uniform) of its short side.
SCENE_CROP_RANGE = (0.6, 1.0)


@dataclass(frozen=True)
class Placement:
    """Where ``paste`` puts things: everything needed to redo one composite exactly."""

    scale: float                      # object's longer side / output side
    position: tuple[float, float]     # (y, x) in [0, 1]: 0 = top/left of the free room, 1 = bottom/right
    scene_box: tuple[int, int, int]   # (top, left, side) of the square taken from the scene, in scene pixels


def draw_placement(rng: np.random.Generator, scene_hw: tuple[int, int], scale_range=SCALE_RANGE,
                   crop_range=SCENE_CROP_RANGE) -> Placement:
    """A random Placement: scale and scene-crop side uniform in their ranges, position uniform."""
    h, w = scene_hw
    side = max(1, round(min(h, w) * rng.uniform(*crop_range)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    scale = float(rng.uniform(*scale_range))
    py, px = (float(v) for v in rng.uniform(0.0, 1.0, size=2))
    return Placement(scale, (py, px), (top, left, side))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask is empty: no object to paste")
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def paste(object_rgb: np.ndarray, mask: np.ndarray, scene_rgb: np.ndarray, scale: float | None = None,
          position: tuple[float, float] | None = None, rng: np.random.Generator | None = None, size: int = 256,
          scene_box: tuple[int, int, int] | None = None) -> np.ndarray:
    """The masked object of ``object_rgb`` (H x W x 3 uint8, ``mask`` H x W uint8, 255 = object)
    blended onto a ``size x size`` square of ``scene_rgb``; returns ``size x size x 3`` uint8.

    ``scale``: the object's longer side as a fraction of ``size``; ``position``: (y, x) in [0, 1] of
    the room left around it (the object always lies wholly inside); ``scene_box``: (top, left, side)
    square of the scene to use. Each one left None is drawn from ``rng`` (scale in SCALE_RANGE, a
    random square of SCENE_CROP_RANGE of the scene's short side); without ``rng`` the defaults are
    0.65, the centre, and the scene's central square.
    """
    if object_rgb.shape[:2] != mask.shape or object_rgb.ndim != 3 or object_rgb.shape[2] != 3:
        raise ValueError(f"object_rgb must be H x W x 3 and mask H x W, got {object_rgb.shape} and {mask.shape}")
    if rng is not None and (scale is None or position is None or scene_box is None):
        drawn = draw_placement(rng, scene_rgb.shape[:2])
        scale = drawn.scale if scale is None else scale
        position = drawn.position if position is None else position
        scene_box = drawn.scene_box if scene_box is None else scene_box
    scale = 0.65 if scale is None else float(scale)
    position = (0.5, 0.5) if position is None else position
    if scene_box is None:
        h, w = scene_rgb.shape[:2]
        side = min(h, w)
        scene_box = ((h - side) // 2, (w - side) // 2, side)
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")

    top, left, side = scene_box
    scene = Image.fromarray(np.ascontiguousarray(scene_rgb[top : top + side, left : left + side]))
    out = np.array(scene.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0), dtype=np.uint8)

    y0, y1, x0, x1 = _bbox(mask > 0)
    rgba = np.dstack([object_rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1]])
    h, w = y1 - y0, x1 - x0
    f = scale * size / max(h, w)
    new_h, new_w = min(size, max(1, round(h * f))), min(size, max(1, round(w * f)))
    # RGBA resize premultiplies: colours under the soft edge are not pulled towards the studio white.
    obj = np.asarray(Image.fromarray(rgba, "RGBA").resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0))
    oy = round(min(max(position[0], 0.0), 1.0) * (size - new_h))
    ox = round(min(max(position[1], 0.0), 1.0) * (size - new_w))
    region = out[oy : oy + new_h, ox : ox + new_w].astype(np.uint16)
    a = obj[..., 3:4].astype(np.uint16)
    out[oy : oy + new_h, ox : ox + new_w] = ((obj[..., :3] * a + region * (255 - a) + 127) // 255).astype(np.uint8)
    return out


# -- training batches ---------------------------------------------------------------------------

def prepare_backgrounds(pool: np.ndarray | torch.Tensor, size: int | tuple[int, int], margin: float = 1.25,
                        zooms: tuple[float, ...] = (1.0, 2.0), layout: str = "nhwc") -> torch.Tensor:
    """A pool of square scenes (M, S, S, 3) uint8 -> uint8 tensor of backgrounds ready for
    ``paste_on_backgrounds`` at image size ``size``: (M * k, R, R, 3), or (M * k, 3, R, R) for
    ``layout="nchw"`` (the layout of the batches it will serve), R = ceil(margin * size).

    Done once per run. Each scene gives, per zoom z, a z x z grid of squares of side S/z (zoom 1:
    the whole scene; zoom 2: its four quarters), each resized to R: at training time a random
    ``size`` crop of one of them shows 1/margin (zoom 1) or 1/(2 margin) (zoom 2) of a scene.
    """
    if layout not in ("nhwc", "nchw"):
        raise ValueError(f"layout must be 'nhwc' or 'nchw', got {layout!r}")
    pool = pool.numpy() if isinstance(pool, torch.Tensor) else np.asarray(pool)
    if pool.dtype != np.uint8 or pool.ndim != 4 or pool.shape[3] != 3:
        raise ValueError(f"pool must be uint8 (M, S, S, 3), got {pool.dtype} {pool.shape}")
    h, w = (size, size) if isinstance(size, int) else size
    r = math.ceil(margin * max(h, w))
    out = []
    for scene in pool:
        s_h, s_w = scene.shape[:2]
        for z in zooms:
            n = max(1, math.ceil(z))
            ch, cw = round(s_h / z), round(s_w / z)
            ys = np.linspace(0, s_h - ch, n).round().astype(int)
            xs = np.linspace(0, s_w - cw, n).round().astype(int)
            for y in ys:
                for x in xs:
                    crop = Image.fromarray(np.ascontiguousarray(scene[y : y + ch, x : x + cw]))
                    out.append(np.asarray(crop.resize((r, r), Image.Resampling.BICUBIC, reducing_gap=3.0)))
    bgs = torch.from_numpy(np.stack(out))
    return bgs.permute(0, 3, 1, 2).contiguous() if layout == "nchw" else bgs


def _alpha7(masks: torch.Tensor) -> torch.Tensor:
    """uint8 alpha 0..255 -> int16 0..128, (a + a // 128) // 2: within 1 of a * 128 / 255, exact at
    0 and 255, and small enough that (x - bg) * alpha fits int16."""
    a = masks.to(torch.int16)
    return a.add_(a >> 7).bitwise_right_shift_(1)


def paste_on_backgrounds(x: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor,
                         generator: torch.Generator | None = None, p: float = 0.5,
                         layout: str = "nhwc") -> torch.Tensor:
    """Per image, with probability ``p``, its masked object on a random crop of a random background.

    x: uint8 (N, H, W, 3) for ``layout="nhwc"`` (transforms.py's layout) or (N, 3, H, W) for "nchw".
    masks: uint8 (N, H, W) (or with a singleton channel axis), 255 = object, aligned with ``x``: put
    them through the same flips and crops (e.g. as a 4th channel whose padding is 0).
    backgrounds: uint8, in the same layout as ``x``, (M, R, R, 3) or (M, 3, R, R) with R >= H, W:
    ``prepare_backgrounds(pool, (H, W), layout=...)``. Crops are mirrored at random. Returns a new
    uint8 tensor in ``x``'s layout; ``x`` is not modified.

    Cost on the 2-core build CPU (bench/make_outdoor.py --time-paste; one torch thread, CPU time,
    median of 50 calls; the machine shared, load average ~5): 64 x 64 x 64 x 3 NHWC 4.0 ms at p = 1,
    2.7 ms at p = 0.5; 64 x 3 x 160 x 160 NCHW 18 ms at p = 1, 14 ms at p = 0.5. Most of it is the
    int16 blend (~8 passes over the batch); the background crops are slice copies (~1.5 ms).
    """
    if layout not in ("nhwc", "nchw"):
        raise ValueError(f"layout must be 'nhwc' or 'nchw', got {layout!r}")
    nhwc = layout == "nhwc"
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[3 if nhwc else 1] != 3:
        want = "(N, H, W, 3)" if nhwc else "(N, 3, H, W)"
        raise ValueError(f"x must be uint8 {want}, got {x.dtype} {tuple(x.shape)}")
    n = x.shape[0]
    h, w = (x.shape[1], x.shape[2]) if nhwc else (x.shape[2], x.shape[3])
    if masks.ndim == 4:  # (N, 1, H, W) or (N, H, W, 1)
        masks = masks.squeeze(1 if masks.shape[1] == 1 else 3)
    if masks.dtype != torch.uint8 or tuple(masks.shape) != (n, h, w):
        raise ValueError(f"masks must be uint8 ({n}, {h}, {w}), got {masks.dtype} {tuple(masks.shape)}")
    if backgrounds.dtype != torch.uint8 or backgrounds.ndim != 4 or backgrounds.shape[3 if nhwc else 1] != 3:
        want = "(M, R, R, 3)" if nhwc else "(M, 3, R, R)"
        raise ValueError(f"backgrounds must be uint8 {want} for {layout} images, got {backgrounds.dtype} "
                         f"{tuple(backgrounds.shape)}: prepare_backgrounds(pool, ({h}, {w}), layout={layout!r})")
    m = backgrounds.shape[0]
    bh, bw = (backgrounds.shape[1], backgrounds.shape[2]) if nhwc else (backgrounds.shape[2], backgrounds.shape[3])
    if bh < h or bw < w:
        raise ValueError(f"backgrounds are {bh}x{bw}, smaller than the {h}x{w} images: "
                         f"prepare_backgrounds(pool, ({h}, {w}), layout={layout!r})")

    chosen = torch.nonzero(torch.rand(n, generator=generator) < p).flatten()
    k = int(chosen.numel())
    if k == 0:
        return x.clone()
    which = torch.randint(0, m, (k,), generator=generator)
    dy = torch.randint(0, bh - h + 1, (k,), generator=generator)
    dx = torch.randint(0, bw - w + 1, (k,), generator=generator)
    mirror = (torch.rand(k, generator=generator) < 0.5).tolist()
    # A loop of slice copies: each is one contiguous block (as in transforms.flip_translate).
    bg = torch.empty((k, *x.shape[1:]), dtype=torch.uint8)
    for j, (b, y, xx) in enumerate(zip(which.tolist(), dy.tolist(), dx.tolist())):
        crop = backgrounds[b, y : y + h, xx : xx + w] if nhwc else backgrounds[b, :, y : y + h, xx : xx + w]
        bg[j] = crop.flip(1 if nhwc else 2) if mirror[j] else crop
    every = k == n  # p = 1, or by chance: no gather, no scatter
    a = _alpha7(masks if every else masks.index_select(0, chosen)).unsqueeze(3 if nhwc else 1)
    fg = (x if every else x.index_select(0, chosen)).to(torch.int16)
    bg16 = bg.to(torch.int16)
    # out = bg + (fg - bg) * a / 128, rounded: exact fg where a = 128 (mask 255), exact bg where a = 0.
    blended = fg.sub_(bg16).mul_(a).add_(64).bitwise_right_shift_(7).add_(bg16).to(torch.uint8)
    if every:
        return blended
    out = x.clone()
    out.index_copy_(0, chosen, blended)
    return out


def zoom_out(x: torch.Tensor, masks: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink each NHWC uint8 image and its mask by ``scale`` (N,) in (0, 1] about the centre, then
    move it by ``shift`` (N, 2) in units of the free margin (-1..1); the revealed border has mask 0.

    One batched ``grid_sample`` (bilinear): the outdoor photos show gear at 40-90% of the frame, the
    catalog at ~95%, so the pasted object must come smaller too or the model only learns one size.
    """
    n, h, w, _ = x.shape
    theta = torch.zeros(n, 2, 3)
    inv = 1.0 / scale
    theta[:, 0, 0] = inv
    theta[:, 1, 1] = inv
    theta[:, :, 2] = -shift * (inv - 1.0)[:, None]  # shift 1 puts the object against the edge
    grid = torch.nn.functional.affine_grid(theta, (n, 4, h, w), align_corners=False)
    rgba = torch.cat([x, masks[..., None]], dim=3).permute(0, 3, 1, 2).float()
    out = torch.nn.functional.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out[..., :3].contiguous(), out[..., 3].contiguous()


def background_augment(x: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor, p: float,
                       scale_range: tuple[float, float] = (0.5, 1.0),
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation: with probability ``p`` an image's object (its mask) is shrunk by a
    random factor in ``scale_range``, moved, and pasted on a random scene crop (NHWC uint8)."""
    chosen = torch.nonzero(torch.rand(len(x), generator=generator) < p).flatten()
    if chosen.numel() == 0:
        return x
    k = chosen.numel()
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(k, generator=generator)
    shift = torch.rand(k, 2, generator=generator) * 2 - 1
    fg, fg_mask = zoom_out(x.index_select(0, chosen), masks.index_select(0, chosen), scale, shift)
    pasted = paste_on_backgrounds(fg, fg_mask, backgrounds, generator=generator, p=1.0)
    out = x.clone()
    out.index_copy_(0, chosen, pasted)
    return out
