"""The gear job as three Python calls, shared by the CLI and the notebooks.

    from gearsight import workflow
    workflow.pack_source("gear/split.csv", "work/gear64", size=64)
    workflow.train_packed("work/gear64", "work/runs/gear")
    report = workflow.evaluate_packed("work/runs/gear/model.safetensors", "work/gear64", "test")
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from gearsight.config import TrainConfig


def pack_source(source: str | Path, out: str | Path, size: int = 64, resize: str = "pad", fill: int = 255,
                split=(0.7, 0.1, 0.2), seed: int = 0, workers: int | None = None, progress: bool = True) -> dict:
    """Read a source (folder, CSV, map file, tar of class folders, CIFAR-10 archive), split it if
    needed, pack it. Returns meta. What kind of source a path is, data/inputs.py decides.

    CIFAR-10 sources (the JPEG tar, cifar-10-python.tar.gz, cifar-10-batches-py/, Kaggle's layout)
    keep their official test set; ``split[1]`` of the train set becomes val.
    """
    from gearsight.data.pack import PackOptions, pack
    from gearsight.data.sources import read_source, stratified_split

    if is_cifar_source(source):
        from gearsight.data.cifar import write_packed_cifar

        return write_packed_cifar(source, out, val_fraction=split[1], seed=seed, workers=workers)

    records = stratified_split(read_source(source), tuple(split), seed)
    return pack(records, out, PackOptions(size, resize, fill), workers=workers, progress=progress)


def pack_ctf(source: str | Path, out: str | Path, size: int = 64, resize: str = "pad", fill: int = 255,
             split=(0.7, 0.1, 0.2), seed: int = 0, workers: int | None = None,
             progress: bool = True) -> tuple[dict, list[Path]]:
    """``gearsight pack --format ctf``: OUT.ctf (every sample) plus OUT.<split>.ctf per split, and the
    sidecars OUT.classes.txt and OUT.pack.json (classes, size, resize, fill) that ``ctf_sidecars``
    reads back for training. Decoded through the packed writer (same skip and report rules).
    Returns (the pack's meta, the CTF files written)."""
    import tempfile

    import numpy as np

    from gearsight.cntk import ctf
    from gearsight.data.pack import PackedDataset

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        meta = pack_source(source, tmp, size, resize, fill, split, seed, workers=workers, progress=progress)
        packed = PackedDataset(tmp)
        images, labels, splits = np.array(packed.images), packed.labels, packed.splits
    n_classes = len(meta["classes"])
    ctf.write_ctf(out, images, labels, num_classes=n_classes)
    written = [out]
    for code, name in enumerate(meta["splits"]):
        mask = splits == code
        if mask.any():
            path = out.with_suffix(f".{name}.ctf")
            ctf.write_ctf(path, images[mask], labels[mask], num_classes=n_classes)
            written.append(path)
    out.with_suffix(".classes.txt").write_text("\n".join(meta["classes"]) + "\n")
    # The geometry travels with the CTF files: a model trained from them must be fed photos
    # resized the same way (padded with white by default), not stretched.
    geometry = {k: meta[k] for k in ("size", "resize", "fill")}
    out.with_suffix(".pack.json").write_text(json.dumps({"classes": meta["classes"], **geometry}, indent=1) + "\n")
    return meta, written


def _sidecar(data: str | Path, suffix: str) -> Path:
    """OUT<suffix> beside DATA = OUT.ctf or OUT.<split>.ctf (or a map file OUT.txt)."""
    return Path(data).with_name(Path(data).name.split(".")[0] + suffix)


def ctf_sidecars(data: str | Path) -> dict:
    """``OUT.pack.json`` beside ``OUT.<split>.ctf`` (written by ``pack_ctf``): classes, size, resize,
    fill; {} without one."""
    path = _sidecar(data, ".pack.json")
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected an object with classes, size, resize, fill")
    return info


def class_names_for(data: str | Path, option: str | None = None) -> list[str] | None:
    """Class names for a CTF or map file: ``option`` (a file with one name per line, or names
    separated by commas), else DATA's ``OUT.classes.txt`` (``pack_ctf``), else None (0..N-1)."""
    if option and Path(option).is_file():
        return Path(option).read_text().split()
    if option:
        return option.split(",")
    guess = _sidecar(data, ".classes.txt")
    return guess.read_text().split() if guess.is_file() else None


def is_cifar_source(source: str | Path) -> bool:
    from gearsight.data import inputs

    return inputs.input_kind(source) == inputs.CIFAR


def epochs_text(cfg: TrainConfig) -> str:
    return f"epochs to fit {cfg.minutes:g} min (measured next)" if cfg.minutes else f"{cfg.epochs} epochs"


def train_packed(data: str | Path, out: str | Path, cfg: TrainConfig | None = None, resume: bool = False,
                 progress: bool = True, **overrides) -> dict:
    """Train on a packed dataset's train split (``cfg.train_splits``), select on val. Returns the fit summary.

    Training options (``cfg`` or keyword overrides, e.g. ``device="cpu"``) are TrainConfig's."""
    from gearsight.data.pack import PackedDataset

    cfg = training_config(cfg, overrides)
    ds = PackedDataset(data)
    train_idx, val_idx = training_indices(ds, cfg.train_splits)
    paste = background_inputs(ds, cfg, train_idx) if cfg.background_p > 0 else {}
    return train_arrays(ds.take(train_idx), ds.take(val_idx), ds.classes, out, cfg, resume, progress,
                        resize=ds.meta["resize"], fill=ds.meta["fill"],
                        data_info={"path": str(data), "counts": ds.meta["counts"]}, paste=paste)


def training_indices(ds, train_splits: list[str]) -> tuple["np.ndarray", "np.ndarray"]:
    """Pack indices to train on (the union of ``train_splits``) and to select on (val, unless it trains)."""
    import numpy as np

    if not train_splits or "test" in train_splits:
        raise ValueError(f"train_splits: {train_splits!r}; name train and/or val (the test split never trains)")
    train = np.sort(np.concatenate([ds.indices(name) for name in train_splits]))
    val = np.array([], int) if "val" in train_splits else ds.indices("val")  # every pack has the three splits
    return train, val


def training_config(cfg: TrainConfig | None, overrides: dict) -> TrainConfig:
    """``cfg`` (or the defaults) with ``overrides``; a pretrained run gets its weights' mean/std here,
    before any batches are built (they normalise with cfg.mean/std)."""
    cfg = (cfg or TrainConfig()).update(**overrides)
    if cfg.ensemble < 1:
        raise ValueError(f"ensemble: the number of members must be >= 1, not {cfg.ensemble}")
    if cfg.pretrained:
        from gearsight.models.pretrained import apply_pretrained_normalization

        apply_pretrained_normalization(cfg)
    return cfg


def background_inputs(ds, cfg: TrainConfig, train_idx) -> dict:
    """Masks of the training images (pack indices ``train_idx``) and the scene pool at the pack's size, for background augmentation.

    Masks are cut once per pack (data/matting.py, ~13 ms a photo) and cached as DATA/masks.npy; the
    scene pool is COCO128's *augment* half (never the outdoor benchmark's scenes), built once into
    the work folder, unless ``cfg.backgrounds`` names a pool.
    """
    import numpy as np
    import torch

    from gearsight.data.composite import prepare_backgrounds
    from gearsight.data.matting import masks_for_pack
    from gearsight.data.paths import dataset_dir, work_dir

    cache = Path(ds.root) / "masks.npy"
    if cache.is_file() and cache.stat().st_mtime >= (Path(ds.root) / "meta.json").stat().st_mtime:
        masks = np.load(cache)  # newer than the pack it belongs to
    else:
        print(f"cutting {len(ds)} objects from their backgrounds (once; cached in {cache})")
        masks = masks_for_pack(ds.root)
        np.save(cache, masks)
    pool_path = Path(cfg.backgrounds) if cfg.backgrounds else work_dir() / "backgrounds" / "coco128_augment256.npy"
    if not pool_path.is_file():
        if cfg.backgrounds:
            raise FileNotFoundError(f"backgrounds: {pool_path} does not exist")
        coco = dataset_dir("coco128")
        if coco is None:
            raise FileNotFoundError("background augmentation needs scene photos: COCO128 is not available "
                                    "(`gearsight datasets download coco128`, or set backgrounds: POOL.npy)")
        from gearsight.data.outdoor import build_background_pool

        build_background_pool(coco, pool_path)
    scenes = prepare_backgrounds(np.load(pool_path), ds.size)
    train_masks = masks[train_idx]
    return {"masks": torch.from_numpy(np.ascontiguousarray(train_masks)), "backgrounds": scenes,
            "background_p": cfg.background_p, "background_scale": tuple(cfg.background_scale)}


def train_ctf(train_file: str | Path, val_file: str | Path, out: str | Path, image_shape=None,
              classes: list[str] | None = None, cfg: TrainConfig | None = None, resume: bool = False,
              progress: bool = True, resize: str | None = None, fill: int | None = None, **overrides) -> dict:
    """Train from CNTK Text Format files (``|labels`` one-hot, ``|features`` flattened CHW pixels).

    The CTF files are parsed once into uint8 arrays (the vectorised reader does ~80 MB/s), then
    training runs from memory exactly as for packed data. What is not given comes from the sidecars
    ``pack_ctf`` wrote beside ``train_file`` (``ctf_sidecars``, ``class_names_for``), else the CTF
    defaults: ``image_shape`` (its size, else 32x32x3), ``classes`` (else 0..N-1), and ``resize``/
    ``fill``, how the pixels were made to size, recorded in the model file so photos are prepared
    alike at inference (`pack --format ctf` pads with white; CNTK's Scale transform stretches, the
    default without a sidecar).
    """
    from gearsight.cntk.ctf import read_ctf_images

    info = ctf_sidecars(train_file)
    size = info.get("size") or 32
    image_shape = tuple(image_shape) if image_shape else (size, size, 3)
    classes = classes or class_names_for(train_file) or info.get("classes")
    resize = resize or info.get("resize", "stretch")
    fill = info.get("fill", 0) if fill is None else fill
    train = read_ctf_images(train_file, image_shape)
    val = read_ctf_images(val_file, image_shape)
    n_classes = int(max(train[1].max(), val[1].max())) + 1
    classes = classes or [str(i) for i in range(n_classes)]
    return train_arrays(train, val, classes, out, cfg, resume, progress, resize=resize, fill=fill,
                        data_info={"train": str(train_file), "val": str(val_file)}, **overrides)


def train_mapfile(train_map: str | Path, val_map: str | Path, out: str | Path, transforms=None,
                  val_transforms=None, classes: list[str] | None = None, cfg: TrainConfig | None = None,
                  resume: bool = False, progress: bool = True, workers: int = 2, **overrides) -> dict:
    """Train straight from CNTK map files (``path<TAB>label``), decoding and transforming every epoch.

    ``transforms``: CNTK config text, a list of ``{type = ...}`` dicts or a Pipeline (docs/MAPFILE.md);
    it must end in a fixed size (a Scale). ``val_transforms`` defaults to ``transforms`` without its
    random parts (``Pipeline.for_evaluation``: centre crops, no flips or colour noise). Packed data trains ~12x faster; this is
    CNTK's image-deserializer path, for data that changes or does not fit a pack.
    """
    from gearsight.cntk.dataset import MapFileDataset
    from gearsight.data.loader import MapFileBatches
    from gearsight.train import fit

    cfg = training_config(cfg, overrides)
    if cfg.ensemble > 1:
        raise ValueError("ensemble: train from packed data or CTF files (`gearsight pack` the map file first)")
    train_ds = MapFileDataset(train_map, transforms, seed=cfg.seed)
    # No val transforms: the training ones without their random parts (a centre crop, no flips or
    # colour noise), so the best epoch is chosen on the same val images every epoch.
    val_ds = MapFileDataset(val_map, val_transforms if val_transforms is not None else train_ds.pipeline.for_evaluation(),
                            seed=cfg.seed)
    n_classes = int(max(train_ds.labels.max(), val_ds.labels.max())) + 1
    classes = classes or [str(i) for i in range(n_classes)]
    common = dict(mean=cfg.mean, std=cfg.std, seed=cfg.seed, workers=workers)
    train_b = MapFileBatches(train_ds, cfg.batch_size, shuffle=True, drop_last=True, **common)
    val_b = MapFileBatches(val_ds, 256, **common)
    size = int(next(val_ds.minibatches(1))[0].shape[-1])  # one image, not a batch: the size after transforms
    print(f"train {len(train_b.labels)} / val {len(val_b.labels)} map-file images, {len(classes)} classes, "
          f"{size}px after transforms; {epochs_text(cfg)} of {len(train_b)} steps")
    summary = fit(train_b, val_b, classes, out, cfg, size=size, resize="stretch", fill=0, resume=resume,
                  progress=progress, data_info={"train": str(train_map), "val": str(val_map)})
    for ds in (train_ds, val_ds):  # never a silent drop: every skipped image, once, with its line
        for skip in ds.skipped:
            print(f"skipped {ds.map_file}, line {skip.line}: {skip.source}: {skip.reason}", file=sys.stderr)
    summary["skipped"] = len(train_ds.skipped) + len(val_ds.skipped)
    return summary


def train_arrays(train: tuple, val: tuple, classes: list[str], out: str | Path, cfg: TrainConfig | None = None,
                 resume: bool = False, progress: bool = True, resize: str = "pad", fill: int = 255,
                 data_info: dict | None = None, paste: dict | None = None, **overrides) -> dict:
    """Train on (uint8 NHWC images, labels) arrays for train and val; ``paste``: background
    augmentation inputs (``background_inputs``)."""
    from gearsight.data.loader import Batches
    from gearsight.distributed import DistInfo
    from gearsight.train import fit

    cfg = training_config(cfg, overrides)
    if cfg.ensemble > 1:
        member = lambda member_cfg, member_out: train_arrays(  # noqa: E731
            train, val, classes, member_out, member_cfg, resume, progress, resize, fill, data_info, paste)
        return train_ensemble(member, cfg, out, val)
    common = dict(mean=cfg.mean, std=cfg.std, seed=cfg.seed)
    train_b = Batches.from_arrays(*train, batch_size=cfg.batch_size, shuffle=True, augment=True,
                                  flip=cfg.flip, alternate_flip=cfg.alternate_flip, translate=cfg.translate, fill=fill,
                                  pad_mode=cfg.translate_pad, cutout=cfg.cutout,
                                  drop_last=True, **(paste or {}), **common)
    val_b = Batches.from_arrays(*val, batch_size=256, **common)
    if len(train_b) == 0:
        raise ValueError(f"need at least {cfg.batch_size} train images (have {len(train_b.labels)})")
    is_main = DistInfo.from_env().is_main  # print once, not per torchrun process
    if len(val_b.labels) == 0 and is_main:
        print("no val images: no per-epoch validation, the last epoch's model is kept")
    size = train[0].shape[1]
    if is_main:
        print(f"train {len(train_b.labels)} / val {len(val_b.labels)} images, {len(classes)} classes, "
              f"{size}px; {epochs_text(cfg)} of {len(train_b)} steps")
    return fit(train_b, val_b, classes, out, cfg, size=size, resize=resize, fill=fill, resume=resume,
               progress=progress, data_info=data_info)


def train_ensemble(train_member, cfg: TrainConfig, out: str | Path, val: tuple) -> dict:
    """Train ``cfg.ensemble`` members (seeds seed, seed+1, ...) in RUN/member-I, one after another,
    then write their average as RUN/model.safetensors (models/ensemble.py). ``minutes`` is shared out.

    ``train_member(member_cfg, member_dir)`` trains one model and returns fit's summary."""
    from dataclasses import asdict, replace

    from gearsight.distributed import DistInfo
    from gearsight.modelfile import save_ensemble
    from gearsight.predict import Classifier

    if DistInfo.from_env().world_size > 1:
        raise ValueError("ensemble: run it as one process (members are trained one after another); "
                         "torchrun data parallelism is per model")
    out = Path(out)
    members = []
    for i in range(cfg.ensemble):
        member_cfg = replace(cfg, seed=cfg.seed + i, ensemble=1, minutes=cfg.minutes / cfg.ensemble)
        print(f"ensemble member {i + 1} of {cfg.ensemble} (seed {member_cfg.seed}) -> {out / f'member-{i}'}",
              flush=True)
        members.append(train_member(member_cfg, out / f"member-{i}"))
    model_path = out / "model.safetensors"
    extra = {"config": asdict(cfg), "members": [{"seed": cfg.seed + i, "best_epoch": m["best_epoch"],
                                                  "val_acc": m["best_val_acc"]} for i, m in enumerate(members)]}
    save_ensemble([m["model"] for m in members], model_path, extra)
    cfg.dump(out / "config.yaml")
    val_acc = math.nan
    if len(val[1]):
        probs = Classifier.load(model_path, device=cfg.device).predict_packed(val[0], tta=cfg.tta)
        val_acc = float((probs.argmax(1) == val[1]).mean())
    return {"best_epoch": max(m["best_epoch"] for m in members), "best_val_acc": val_acc,
            "train_seconds": sum(m["train_seconds"] for m in members), "model": str(model_path),
            "world_size": 1, "members": members}


def evaluate_packed(model: str | Path, data: str | Path, split: str = "test", out: str | Path | None = None,
                    tta: bool = True, device: str = "auto") -> dict:
    """Evaluate a model file on one split of a packed dataset; writes the report folder, returns the report.

    ``device``: where the model runs (gearsight.devices; "auto" = the GPU when there is one)."""
    from gearsight.data.pack import PackedDataset
    from gearsight.evaluate import evaluate_to_dir
    from gearsight.predict import Classifier

    clf = Classifier.load(model, device=device)
    ds = PackedDataset(data)
    if clf.spec.input_size != ds.size or clf.spec.resize != ds.meta["resize"]:
        raise ValueError(f"{data} is packed at {ds.size}px/{ds.meta['resize']} but {model} expects "
                         f"{clf.spec.input_size}px/{clf.spec.resize}: pack again with --size "
                         f"{clf.spec.input_size} --resize {clf.spec.resize}")
    if list(clf.classes) != list(ds.classes):
        raise ValueError(f"{model} classes {clf.classes} differ from {data} classes {ds.classes}")
    images, labels = ds.subset(split)
    probs = clf.predict_packed(images, tta=tta)
    out = Path(out) if out else Path(model).parent / f"eval-{split}"
    return evaluate_to_dir(labels, probs.argmax(1), probs, clf.classes, images, ds.paths(split), out)
