"""CIFAR-10 from the shapes it is found in -> uint8 arrays, and into gearsight's packed format.

    data = load_cifar("../shared/data/cifar10/cifar10_jpg.tar")
    x_train, y_train = data["train"]          # (50000, 32, 32, 3) uint8 RGB, int64
    write_packed_cifar(path, "work/cifar10", val_fraction=0.1)   # then `gearsight train work/cifar10`
    write_cifar_map_files(path, "work/cifar10-maps")    # PNGs + train_map.txt / test_map.txt for cntk.dataset.MapFileDataset

Sources (``load_cifar`` tells them apart):
- a tar of class folders ``train/<class>/*.jpg``, ``test/<class>/*.jpg`` (any compression, any
  leading folder), read member by member from inside the tar; or the same tree extracted;
- Kaggle's layout: ``train/<id>.png`` + ``trainLabels.csv`` (id,label). Kaggle's test images have
  no labels, so there is no test split;
- the official python batches: a ``cifar-10-batches-py`` folder (data_batch_1..5, test_batch,
  batches.meta) or ``cifar-10-python.tar.gz`` itself (what ``gearsight datasets download cifar10``
  keeps), unpickled by SafeUnpickler.

Images are decoded on pack's worker pool (``workers``, default ``pack.default_workers()``); the
result is sorted (split, class, name; Kaggle by id; batches in file order), so it does not depend
on tar order or worker count. The packed folder is written by pack.PackWriter, the format's one writer.
Images that cannot be decoded, or are not 32x32, and files that are not where a CIFAR image goes,
are listed in ``skipped`` with the reason, never dropped silently.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image

from gearsight.data.pack import PackWriter, imap_workers, read_and_decode
from gearsight.data.sources import IMAGE_SUFFIXES, SPLITS

SIZE = 32
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCH_DIR = "cifar-10-batches-py"


@dataclass
class CifarSplit:
    images: np.ndarray  # (N, 32, 32, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64, index into classes
    paths: list[str]    # provenance of each image: file, "<tar>::<member>", or "<batch file>#<row>"
    sha256: list[str]   # of the file/member bytes; of the row's 3072 pixel bytes for batches


@dataclass
class CifarData:
    kind: str  # "class-folders-tar", "class-folders", "kaggle", "python-batches"
    classes: list[str]
    splits: dict[str, CifarSplit]  # "train", and "test" where the source has a labelled test set
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason", "sha256"}


# -- Restricted unpickling ---------------------------------------------------------------------------

def _allowed_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):  # the batches were pickled under numpy 1's names
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


_ALLOWED = _allowed_globals()


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that names a callable outside SafeUnpickler's list."""


class SafeUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, numpy arrays, dtypes and scalars.

    Why: unpickling calls whatever callable the file names (``os.system`` included), and a CIFAR
    batch is data from the internet. A batch needs just numpy's array/dtype/scalar rebuilders
    (under numpy 1's module names too) and ``_codecs.encode``, which protocol-2 pickles written by
    Python 3 use to store bytes. Everything else is refused before it can run.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only "
                                    "dicts, lists, bytes and numpy arrays") from None


def safe_unpickle(data: bytes, source: str):
    """``data`` unpickled by SafeUnpickler (Python 2 strings come back as bytes); errors name ``source``."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle raises almost anything
        raise ValueError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None


# -- Decoding many small images on pack's worker pool ---------------------------------------------------

def _decode_job(blob: bytes | str) -> tuple[np.ndarray | None, str, str]:
    """Worker: image bytes (or a file path) -> (32x32x3 pixels or None, sha256, reason or '')."""
    rgb, digest, reason = read_and_decode(blob)
    if rgb is not None and rgb.shape != (SIZE, SIZE, 3):
        return None, digest, f"image is {rgb.shape[1]}x{rgb.shape[0]}, not {SIZE}x{SIZE}"
    return rgb, digest, reason


_MIN_PARALLEL = 1000  # fewer images are done faster in-process than a pool starts


def _parallel_map(fn: Callable, items: list, workers: int | None) -> list:
    """``[fn(x) for x in items]`` on pack's worker pool (``workers`` None: pack.default_workers())."""
    if len(items) < _MIN_PARALLEL:
        workers = 1
    # Chunks of 256 keep the IPC per image small.
    return list(imap_workers(fn, items, workers, chunksize=256))


Entry = tuple[str, str, str, "bytes | str"]  # (split, class name, provenance path, bytes or file path)


def _from_entries(kind: str, entries: list[Entry], skipped: list[dict], workers: int | None) -> CifarData:
    """Decode sorted entries into per-split arrays; failures join ``skipped``."""
    if not entries:
        raise ValueError(f"no CIFAR images found ({kind}); skipped: {[s['path'] for s in skipped[:3]]}")
    classes = sorted({label for _, label, _, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    results = _parallel_map(_decode_job, [blob for *_, blob in entries], workers)
    grouped: dict[str, list] = {}
    for (split, label, path, _), (rgb, digest, reason) in zip(entries, results):
        if rgb is None:
            skipped.append({"path": path, "reason": reason, "sha256": digest})
        else:
            grouped.setdefault(split, []).append((rgb, index[label], path, digest))
    splits = {split: CifarSplit(np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], np.int64),
                                [r[2] for r in rows], [r[3] for r in rows])
              for split, rows in grouped.items()}
    return CifarData(kind, classes, splits, skipped)


def _class_folder_entry(name: str, provenance: str, blob: bytes | str) -> Entry | None:
    """``.../train|test/<class>/<image>`` -> an entry, else None."""
    parts = PurePosixPath(name).parts
    if len(parts) >= 3 and parts[-3] in ("train", "test") and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
        return parts[-3], parts[-2], provenance, blob
    return None


def _class_folders(members: list[tuple[str, str, bytes | str]], kind: str, workers: int | None) -> CifarData:
    """(name inside the tree, provenance, bytes or path) for every file -> CifarData."""
    entries, skipped = [], []
    for name, provenance, blob in members:
        entry = _class_folder_entry(name, provenance, blob)
        if entry is None:
            skipped.append({"path": provenance, "reason": "not at train/<class>/<image> or test/<class>/<image>",
                            "sha256": hashlib.sha256(blob).hexdigest() if isinstance(blob, bytes) else ""})
        else:
            entries.append(entry)
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return _from_entries(kind, entries, skipped, workers)


# -- Python batches ----------------------------------------------------------------------------------

def _str_keys(d: dict) -> dict:
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _read_batch(data: bytes, source: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(data, source)
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    batch = _str_keys(batch)
    pixels, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.shape[1:] == (3 * SIZE * SIZE,)):
        raise ValueError(f"{source}: 'data' must be a uint8 array of shape (N, 3072)")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(pixels),) or (labels.size and not 0 <= labels.min() <= labels.max() < n_classes):
        raise ValueError(f"{source}: 'labels' must be {len(pixels)} integers in 0..{n_classes - 1}")
    return pixels, labels


def _python_batches(read: Callable[[str], bytes], where: Callable[[str], str]) -> CifarData:
    meta = safe_unpickle(read("batches.meta"), where("batches.meta"))
    names = _str_keys(meta).get("label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise ValueError(f"{where('batches.meta')}: expected a dict with a 'label_names' list")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    splits = {}
    for split, files in (("train", TRAIN_BATCHES), ("test", ("test_batch",))):
        parts = [(f, *_read_batch(read(f), where(f), len(classes))) for f in files]
        pixels = np.concatenate([p for _, p, _ in parts])
        splits[split] = CifarSplit(
            np.ascontiguousarray(pixels.reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)),  # stored as planar RGB rows
            np.concatenate([labels for *_, labels in parts]),
            [f"{where(f)}#{row}" for f, p, _ in parts for row in range(len(p))],
            [hashlib.sha256(row.tobytes()).hexdigest() for row in pixels])
    return CifarData("python-batches", classes, splits)


def _batches_in_dir(folder: Path) -> CifarData:
    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{folder / name}: missing; a {BATCH_DIR} folder holds "
                                    f"{', '.join(TRAIN_BATCHES)}, test_batch and batches.meta") from None
    return _python_batches(read, lambda name: str(folder / name))


# -- Archives and folders ----------------------------------------------------------------------------

def _tar_files(path: Path, limit: int | None = None) -> list[tuple[str, bytes]]:
    """(member name, bytes) of the regular files in a tar, in archive order: one sequential pass,
    which is also the only fast way through a compressed tar."""
    out = []
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    out.append((member.name, tar.extractfile(member).read()))
                    if limit is not None and len(out) >= limit:
                        break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the tar archive ({exc})") from None
    return out


def _from_tar(path: Path, workers: int | None, limit: int | None = None) -> CifarData:
    files = _tar_files(path, limit)
    batches = {PurePosixPath(name).name: (name, data) for name, data in files
               if PurePosixPath(name).name in (*TRAIN_BATCHES, "test_batch", "batches.meta")}
    if "data_batch_1" in batches:
        def read(name: str) -> bytes:
            if name not in batches:
                raise FileNotFoundError(f"{path}: no {BATCH_DIR}/{name} member")
            return batches[name][1]
        return _python_batches(read, lambda name: f"{path}::{batches.get(name, (name,))[0]}")
    return _class_folders([(name, f"{path}::{name}", data) for name, data in files], "class-folders-tar", workers)


def _kaggle(root: Path, workers: int | None) -> CifarData:
    """``train/<id>.png`` + ``trainLabels.csv``; a bad CSV row is an error naming its line."""
    csv_path, train_dir = root / "trainLabels.csv", root / "train"
    rows: dict[int, tuple[str, str]] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if header != ["id", "label"]:
            raise ValueError(f"{csv_path}, line 1: expected the header 'id,label', got {','.join(header)!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip().isdigit() or not row[1].strip():
                raise ValueError(f"{csv_path}, line {lineno}: expected '<integer id>,<label>', got {','.join(row)!r}")
            image_id, label = int(row[0]), row[1].strip()
            png = train_dir / f"{image_id}.png"
            if image_id in rows:
                raise ValueError(f"{csv_path}, line {lineno}: id {image_id} repeats line {rows[image_id][1]}")
            if not png.is_file():
                raise ValueError(f"{csv_path}, line {lineno}: id {image_id} has no image {png}")
            rows[image_id] = (label, str(lineno))
    listed = {f"{i}.png" for i in rows}
    skipped = [{"path": str(p), "reason": "no row in trainLabels.csv", "sha256": ""}
               for p in sorted(train_dir.iterdir()) if p.name not in listed]
    entries = [("train", label, str(train_dir / f"{i}.png"), str(train_dir / f"{i}.png"))
               for i, (label, _) in sorted(rows.items())]
    return _from_entries("kaggle", entries, skipped, workers)


def read_cifar(path: str | os.PathLike, workers: int | None = None, limit: int | None = None) -> CifarData:
    """Detect the source at ``path`` and read it (see the module docstring).

    ``limit`` (tar sources only) reads just the first ``limit`` files of the archive: a quick look.
    """
    path = Path(path)
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise ValueError(f"{path}: not a tar archive (expected cifar-10-python.tar.gz or a tar of "
                             "train/<class>/ and test/<class>/ images)")
        return _from_tar(path, workers, limit)
    if not path.is_dir():
        raise FileNotFoundError(f"CIFAR source not found: {path}")
    if (path / "data_batch_1").is_file():
        return _batches_in_dir(path)
    if (path / BATCH_DIR).is_dir():
        return _batches_in_dir(path / BATCH_DIR)
    if (path / "trainLabels.csv").is_file():
        return _kaggle(path, workers)
    if (path / "train").is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _class_folders([(p.relative_to(path).as_posix(), str(p), str(p)) for p in files],
                              "class-folders", workers)
    archives = sorted(p for p in path.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz")))
    if len(archives) == 1:
        return read_cifar(archives[0], workers, limit)
    raise ValueError(f"{path}: not a CIFAR source: expected {BATCH_DIR}/ or data_batch_1, trainLabels.csv + "
                     "train/, train/<class>/, or one .tar/.tar.gz archive")


def load_cifar(path: str | os.PathLike, workers: int | None = None) -> dict:
    """``{"train": (images, labels), "test": (images, labels) or None, "classes": [...], "skipped": [...],
    "kind": ...}``; images (N, 32, 32, 3) uint8 RGB, labels int64."""
    data = read_cifar(path, workers)
    pair = {name: (s.images, s.labels) for name, s in data.splits.items()}
    return {"train": pair.get("train"), "test": pair.get("test"), "classes": data.classes,
            "skipped": data.skipped, "kind": data.kind}


# -- Packed writer -----------------------------------------------------------------------------------

def _val_mask(split: CifarSplit, fraction: float, seed: int) -> np.ndarray:
    """Per class, the round(fraction x n) images with the lowest seeded hash of their content go to
    val: stratified, and independent of the order the source lists them in."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    keys = [hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest() for digest in split.sha256]
    mask = np.zeros(len(split.labels), dtype=bool)
    for label in np.unique(split.labels):
        members = sorted(np.flatnonzero(split.labels == label), key=lambda i: (keys[i], i))
        mask[members[:round(fraction * len(members))]] = True
    return mask


def _packed_rows(data: CifarData, val_fraction: float, seed: int) -> tuple[list[CifarSplit], np.ndarray, list[dict]]:
    """The parts in file order (train, test), their split codes, and one provenance item per row."""
    parts = [data.splits["train"]] + ([data.splits["test"]] if "test" in data.splits else [])
    codes = [np.where(_val_mask(parts[0], val_fraction, seed), SPLITS.index("val"), SPLITS.index("train"))]
    codes += [np.full(len(part.labels), SPLITS.index("test")) for part in parts[1:]]
    items = []
    for part, part_codes in zip(parts, codes):
        items += [{"path": p, "sha256": d, "label": data.classes[y], "split": SPLITS[c]}
                  for p, d, y, c in zip(part.paths, part.sha256, part.labels, part_codes)]
    return parts, np.concatenate(codes).astype(np.uint8), items


def write_packed_cifar(path: str | os.PathLike, out_dir: str | os.PathLike, val_fraction: float = 0.0, *,
                       seed: int = 0, resize: str = "crop", fill: int = 0, workers: int | None = None) -> dict:
    """Write the CIFAR source at ``path`` as a gearsight packed dataset (docs/FORMATS.md); returns meta.

    train -> train (``val_fraction`` of it, per class, -> val), CIFAR's test set -> test. The images
    are stored as they are (32 px); ``resize`` and ``fill`` are recorded for inference on other
    images (centre crop: CIFAR objects fill the frame) and for the trainer's translate padding
    (0: black, as the usual CIFAR recipes pad). Deterministic: same source -> identical files.
    """
    data = read_cifar(path, workers)
    parts, splits, items = _packed_rows(data, val_fraction, seed)
    writer = PackWriter(out_dir, len(items), SIZE)
    start = 0
    for part in parts:
        end = start + len(part.labels)
        writer.add_rows(part.images, part.labels, splits[start:end], items[start:end])
        start = end
    return writer.finish(data.classes, resize, fill, data.skipped,
                         extra={"source": {"path": str(path), "kind": data.kind}})


# -- Map files ---------------------------------------------------------------------------------------

def _write_png(job: tuple[str, np.ndarray]) -> None:
    Path(job[0]).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(job[1]).save(job[0], format="PNG")


def write_cifar_map_files(path: str | os.PathLike, out_dir: str | os.PathLike,
                          workers: int | None = None) -> dict[str, Path]:
    """The CIFAR source at ``path`` as CNTK's CIFAR-10 example lays it out: lossless PNGs in
    ``out_dir/<split>/<class>/<NNNNN>.png`` and ``out_dir/<split>_map.txt`` (``path<TAB>label``,
    paths relative to the map file). Returns {split: map file}. Pixels equal ``load_cifar``'s."""
    data = read_cifar(path, workers)
    out, maps = Path(out_dir), {}
    for split, part in data.splits.items():
        names = [f"{split}/{data.classes[y]}/{i:05d}.png" for i, y in enumerate(part.labels)]
        _parallel_map(_write_png, [(str(out / n), img) for n, img in zip(names, part.images)], workers)
        maps[split] = out / f"{split}_map.txt"
        maps[split].write_text("".join(f"{n}\t{y}\n" for n, y in zip(names, part.labels)))
    return maps
