"""The outdoor benchmark: gear test photos cut out of the studio and pasted on real scenes.

The gear classifier scores ~98 % on its test split and far less on the same products in a real
scene: the studio white is part of what it learned. ``build_outdoor`` measures that: every photo of
the gear **test** split is cut out with ``matting.gear_mask`` and composited (``composite.paste``)
on a square crop of a **benchmark** scene at a random scale (longer side 40-90 % of the frame) and
position, with a fixed seed. The result is an ordinary image folder (``<class>/<name>.png`` and a
``split.csv`` with split ``test``) that ``gearsight pack`` packs at any size and ``gearsight
evaluate --split test`` scores.

Scenes: the 128 COCO128 photos (train2017/), split **by image** into two fixed halves: sorted by file
name, even positions (0, 2, ...) are the ``benchmark`` scenes, odd positions the ``augment`` scenes.
The benchmark is built only from the first half, training augmentation (``build_background_pool``)
only from the second, so no scene a model trained on is ever a benchmark background.

Deterministic: each composite's random draws come from a generator seeded with (seed, a hash of the
photo's path relative to the split CSV), so building a subset gives the same images as the full set.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gearsight.data.composite import draw_placement, paste
from gearsight.data.matting import cutout
from gearsight.image.decode import decode_image

POOLS = ("benchmark", "augment")
SCENE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_SIZE = 256
POOL_SIDE = 256


def scene_files(coco_dir: str | Path, pool: str) -> list[Path]:
    """The scene files of one pool: sorted by name, ``benchmark`` = even positions, ``augment`` = odd.

    ``coco_dir``: the folder of scene images, or a folder holding it as ``train2017/`` (COCO128)."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    coco_dir = Path(coco_dir)
    if (coco_dir / "train2017").is_dir():
        coco_dir = coco_dir / "train2017"
    files = sorted((p for p in coco_dir.iterdir() if p.suffix.lower() in SCENE_SUFFIXES and p.is_file()),
                   key=lambda p: p.name)
    if len(files) < 2:
        raise ValueError(f"{coco_dir}: need at least 2 scene images (.jpg/.png), found {len(files)}")
    return files[POOLS.index(pool) :: 2]


def _rng_for(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)])


def _test_rows(gear_split_csv: Path) -> list[tuple[str, str]]:
    """(path relative to the CSV, label) of the test split, in CSV order."""
    with open(gear_split_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"path", "label", "split"} <= set(reader.fieldnames or []):
            raise ValueError(f"{gear_split_csv}: need the header path,label,split")
        return [(r["path"].strip(), r["label"].strip()) for r in reader if (r["split"] or "").strip() == "test"]


def _readme(n: int, n_classes: int, scenes: int, seed: int, size: int, gear_csv: Path, coco_dir: Path) -> str:
    return f"""# Outdoor gear benchmark (generated)

Built by `gearsight.data.outdoor.build_outdoor` (bench/make_outdoor.py); rebuild it rather than edit it.

- {n} composites, {n_classes} classes: every photo of the **test** split of `{gear_csv}`, cut out of
  its studio background (gearsight.data.matting.gear_mask: the file's alpha matte, else a flood fill
  of near-white from the border) and pasted on a square crop of one of {scenes} **benchmark** scenes
  of COCO128 (`{coco_dir}`, sorted file names at even positions; the odd half is reserved for
  training augmentation), the object's longer side 40-90 % of the frame, at a random position.
- Size {size} x {size} px PNG; seed {seed}. `manifest.csv` gives for each composite its source photo,
  scene, scale, position and scene crop. `split.csv` (path,label,split=test) is the pack source:

      gearsight pack {'{this folder}'}/split.csv work/outdoor64 --size 64
      gearsight evaluate MODEL work/outdoor64 --split test

- Sources and licences: the gear photos are third-party catalog images (see the gear data's
  SOURCE.md; no licence stated); the scenes are COCO 2017 train images (each under its Flickr
  licence, COCO annotations CC BY 4.0). For measurement, not for redistribution.
"""


def build_outdoor(gear_split_csv: str | Path, coco_dir: str | Path, out_dir: str | Path, seed: int = 0,
                  size: int = DEFAULT_SIZE, limit: int | None = None, progress: bool = True) -> dict:
    """Write the outdoor benchmark into ``out_dir`` (see the module docstring); returns a summary dict
    (``counts`` per class, ``n``, ``skipped`` with reasons, ``scenes``, ``seconds``).

    ``limit``: only the first ``limit`` test photos of the CSV (a quick subset; same images as in
    the full build). A photo that cannot be decoded or has an empty mask is skipped and listed.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    gear_split_csv, coco_dir, out_dir = Path(gear_split_csv), Path(coco_dir), Path(out_dir)
    rows = _test_rows(gear_split_csv)[:limit]
    if not rows:
        raise ValueError(f"{gear_split_csv}: no rows with split 'test'")
    scenes = scene_files(coco_dir, "benchmark")
    scene_cache: dict[int, np.ndarray] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written, manifest, skipped = [], [], []
    for rel, label in tqdm(rows, desc="outdoor", unit="img", disable=not progress):
        rng = _rng_for(seed, rel)
        try:
            rgb, mask = cutout(gear_split_csv.parent / rel)
        except ValueError as exc:  # DecodeError is a ValueError
            skipped.append({"path": rel, "reason": str(getattr(exc, "reason", exc))})
            continue
        if not (mask > 0).any():
            skipped.append({"path": rel, "reason": "empty mask (nothing but background)"})
            continue
        s = int(rng.integers(len(scenes)))
        if s not in scene_cache:
            scene_cache[s] = decode_image(scenes[s])
        scene = scene_cache[s]
        place = draw_placement(rng, scene.shape[:2])
        image = paste(rgb, mask, scene, place.scale, place.position, size=size, scene_box=place.scene_box)
        name = f"{label}/{Path(rel).stem}.png"
        k = 2
        while name in used:
            name, k = f"{label}/{Path(rel).stem}_{k}.png", k + 1
        used.add(name)
        (out_dir / label).mkdir(exist_ok=True)
        Image.fromarray(image).save(out_dir / name, optimize=False, compress_level=6)
        written.append((name, label))
        top, left, side = place.scene_box
        manifest.append({"path": name, "label": label, "source": rel, "scene": scenes[s].name,
                         "scale": f"{place.scale:.4f}", "pos_y": f"{place.position[0]:.4f}",
                         "pos_x": f"{place.position[1]:.4f}", "scene_top": top, "scene_left": left, "scene_side": side})
    with open(out_dir / "split.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "label", "split"])
        w.writerows((name, label, "test") for name, label in written)
    with open(out_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(manifest[0]) if manifest else ["path"], lineterminator="\n")
        w.writeheader()
        w.writerows(manifest)
    counts: dict[str, int] = {}
    for _, label in written:
        counts[label] = counts.get(label, 0) + 1
    (out_dir / "README.md").write_text(_readme(len(written), len(counts), len(scenes), seed, size,
                                               gear_split_csv, coco_dir), encoding="utf-8")
    summary = {"n": len(written), "counts": dict(sorted(counts.items())), "skipped": skipped, "seed": seed,
               "size": size, "scenes": len(scenes), "scenes_used": len(scene_cache),
               "seconds": round(time.perf_counter() - t0, 2)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def build_and_pack(gear_split_csv: str | Path, coco_dir: str | Path, out_dir: str | Path, pack_dir: str | Path,
                   pack_size: int = 64, seed: int = 0, size: int = DEFAULT_SIZE, limit: int | None = None,
                   progress: bool = True) -> tuple[dict, dict]:
    """``build_outdoor`` then ``gearsight pack OUT/split.csv PACK --size pack_size``: (summary, pack meta)."""
    from gearsight.data.pack import PackOptions, pack
    from gearsight.data.sources import read_source, stratified_split

    summary = build_outdoor(gear_split_csv, coco_dir, out_dir, seed=seed, size=size, limit=limit, progress=progress)
    records = stratified_split(read_source(Path(out_dir) / "split.csv"), (0.7, 0.1, 0.2), 0)  # as pack_source
    meta = pack(records, pack_dir, PackOptions(pack_size), progress=progress)
    return summary, meta


def build_background_pool(coco_dir: str | Path, out_path: str | Path, side: int = POOL_SIDE, seed: int = 0) -> dict:
    """The **augment** scenes as one uint8 array (M, side, side, 3) saved to ``out_path`` (.npy),
    with a ``.json`` beside it naming the files. Each scene is resized so its short side is ``side``
    and a square is cropped at a random (seeded) offset along the long side.

    Load it with ``np.load`` and hand it to ``composite.prepare_backgrounds`` at the training size.
    """
    files = scene_files(coco_dir, "augment")
    rng = np.random.default_rng(seed)
    pool = np.empty((len(files), side, side, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        rgb = decode_image(path)
        h, w = rgb.shape[:2]
        f = side / min(h, w)
        nh, nw = max(side, round(h * f)), max(side, round(w * f))
        im = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0))
        top, left = int(rng.integers(0, nh - side + 1)), int(rng.integers(0, nw - side + 1))
        pool[i] = im[top : top + side, left : left + side]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, pool)
    info = {"pool": "augment", "rule": "COCO128 train2017 sorted by file name, odd positions",
            "side": side, "seed": seed, "shape": list(pool.shape), "files": [p.name for p in files]}
    out_path.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info
