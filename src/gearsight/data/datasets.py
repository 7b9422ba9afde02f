"""Known public datasets: where they come from, their checksums, and where they live on this machine.

``resolve_dataset(name)`` prefers the shared read-only copy (``../shared/data/NAME``); without it,
``download(name)`` fetches the public source into ``work_dir()/datasets/NAME``. Nothing lands
there unverified: the archive is streamed into a hidden temporary folder beside the destination,
every kept file is checked against the sums shipped in ``gearsight/data/checksums/``, and only
then is the folder renamed into place (one atomic rename), so a failed or interrupted download
leaves nothing behind that ``resolve_dataset`` could mistake for data.

Downloads use ``urllib`` from the standard library: one streamed GET per dataset needs no retry
policy, sessions or auth, so an HTTP client dependency would buy nothing here.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from gearsight.data.paths import dataset_dir, shared_data_dir, work_dir
from gearsight.files import file_sha256

CHECKSUMS = Path(__file__).with_name("checksums")
MARKER = ".gearsight-dataset.json"   # written last inside a finished download
MIRROR_ENV = "GEARSIGHT_DATASETS_URL"  # base URL of a mirror holding every Dataset.filename
GEAR_COMMIT = "1cfd2ebb4349834a9741650a7cb1fdf4f2083a11"
COCO128_COMMIT = "47a3de30aaf7ad1c02105bd80598fb03ac0d0789"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """One public dataset. ``member_prefix`` empty: keep the archive file itself; else extract the
    files under that folder of the archive (its single top-level folder stripped)."""

    name: str
    url: str             # the publisher's location of the archive
    filename: str        # archive name; also its name under a $GEARSIGHT_DATASETS_URL mirror
    sums: Path           # sha256sum-format file listing every file we keep
    md5: str = ""        # the publisher's MD5 of the archive, where one is published
    member_prefix: str = ""
    split_csv: bool = False  # write split.csv by the gear rule (see _split_csv)
    about: str = ""


DATASETS: dict[str, Dataset] = {
    "gear": Dataset(
        name="gear",
        # GitHub re-creates archives on demand and their bytes are not guaranteed stable, so we
        # verify the 2122 extracted images one by one instead of the zip.
        url=f"https://codeload.github.com/ktakita1011/MLopenhack/zip/{GEAR_COMMIT}",
        filename=f"MLopenhack-{GEAR_COMMIT}.zip",
        sums=CHECKSUMS / "gear.sha256",
        member_prefix="Challenge2/gear_images",
        split_csv=True,
        about="2122 outdoor-gear catalog photos, 12 classes (GitHub ktakita1011/MLopenhack, no license stated)",
    ),
    "coco128": Dataset(
        name="coco128",
        # The scenes of the outdoor benchmark and of background augmentation, and a small COCO-json
        # detection set. The repository's val2017/ is a byte-identical copy of train2017/: not kept.
        url=f"https://codeload.github.com/developer0hye/COCO128/zip/{COCO128_COMMIT}",
        filename=f"COCO128-{COCO128_COMMIT}.zip",
        sums=CHECKSUMS / "coco128.sha256",
        member_prefix=".",
        about="the first 128 COCO train2017 photos with their instances json (CC BY 4.0 annotations, "
              "Flickr image licenses; GitHub developer0hye/COCO128)",
    ),
    "cifar10": Dataset(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        sums=CHECKSUMS / "cifar10.sha256",  # the SHA-256 Keras pins for this archive
        md5="c58f30108f718f92721af3b95e74349a",  # published on the CIFAR page
        about="CIFAR-10 python batches, 50000 train + 10000 test 32x32 images (Krizhevsky 2009)",
    ),
}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def default_dest(name: str) -> Path:
    return work_dir() / "datasets" / name


def resolve_dataset(name: str) -> Path:
    """The shared copy if present, else a finished download in work_dir, else FileNotFoundError."""
    shared = dataset_dir(name)
    if shared is not None:
        return shared
    if name not in DATASETS:
        raise FileNotFoundError(f"dataset {name!r} is not in {shared_data_dir()} and is not one gearsight "
                                f"can download ({', '.join(DATASETS)})")
    local = default_dest(name)
    if (local / MARKER).is_file():
        return local
    raise FileNotFoundError(f"dataset {name!r} not found in the shared data folder nor at {local}; "
                            f"run `gearsight datasets download {name}`")


def read_sums(path: Path) -> dict[str, str]:
    """``{relative path: lowercase hex}`` from a sha256sum-format file; a bad line names its number."""
    sums: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        rel = rel.removeprefix("./")
        parts = PurePosixPath(rel).parts
        if (not sep or len(digest) != 64 or not all(c in "0123456789abcdefABCDEF" for c in digest)
                or not parts or rel.startswith("/") or ".." in parts):
            raise ValueError(f"{path}:{lineno}: expected '<64 hex digits>  <relative path>', got {line!r}")
        sums[rel] = digest.lower()
    if not sums:
        raise ValueError(f"{path}: no checksums")
    return sums


def download(dataset: str | Dataset, dest: str | Path | None = None, *, url: str | None = None,
             progress: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Fetch, verify and install ``dataset`` at ``dest`` (default ``default_dest(name)``); return dest.

    ``url`` overrides the source; else ``$GEARSIGHT_DATASETS_URL/<filename>`` if set, else the
    publisher's URL. Passing a ``Dataset`` (e.g. with other ``sums``) injects the checksum source.
    """
    spec = get_dataset(dataset) if isinstance(dataset, str) else dataset
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = Path(dest) if dest is not None else default_dest(spec.name)
    if _already_there(spec, dest):
        log(f"{spec.name}: already downloaded at {dest}")
        return dest
    source = source_url(spec, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        archive = tmp / spec.filename
        tree = tmp / "tree"
        tree.mkdir()
        log(f"{spec.name}: downloading {source}")
        md5 = fetch(source, archive, progress=progress)
        if spec.member_prefix:
            _install_tree(spec, archive, tree, log)
        else:
            _install_archive(spec, archive, md5, tree)
        (tree / MARKER).write_text(json.dumps({"name": spec.name, "url": source, "sums": spec.sums.name}) + "\n")
        os.replace(tree, dest)  # atomic: dest appears only once everything is verified
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{spec.name}: verified and installed at {dest}")
    return dest


def source_url(spec: Dataset, url: str | None = None) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return url or (f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url)


def _already_there(spec: Dataset, dest: Path) -> bool:
    if (dest / MARKER).is_file():
        return True
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} exists and is not a finished {spec.name} download; remove it or pick another --dest")
    if dest.is_dir():
        dest.rmdir()  # an empty folder would block the atomic rename
    return False


def fetch(url: str, target: Path, progress: bool = True) -> str:
    """Stream ``url`` into ``target``; return the MD5 of the bytes (computed on the way, for free)."""
    from tqdm import tqdm

    from gearsight import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"gearsight/{__version__}"})
    md5 = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    md5.update(chunk)
                    bar.update(len(chunk))
    except urllib.error.URLError as exc:  # its own text lacks the URL
        why = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else exc.reason
        raise ConnectionError(f"download of {url} failed: {why}") from exc
    return md5.hexdigest()


def _install_archive(spec: Dataset, archive: Path, md5: str, tree: Path) -> None:
    """Keep the archive as is, after checking the published MD5 and our SHA-256."""
    if spec.md5 and md5 != spec.md5:
        raise ValueError(f"{spec.filename}: MD5 {md5} does not match the published {spec.md5}; "
                         "the download is corrupt or not the official archive")
    expected = read_sums(spec.sums).get(spec.filename)
    if expected is None:
        raise ValueError(f"{spec.sums}: no checksum for {spec.filename}")
    got = file_sha256(archive)
    if got != expected:
        raise ValueError(f"{spec.filename}: SHA-256 {got} does not match {expected} in {spec.sums.name}")
    os.replace(archive, tree / spec.filename)


def _install_tree(spec: Dataset, archive: Path, tree: Path, log: Callable[[str], None]) -> None:
    """Extract exactly the files listed in ``spec.sums``, each checked as it is written."""
    sums = read_sums(spec.sums)
    with zipfile.ZipFile(archive) as zf:
        base = _member_base(zf, spec.member_prefix, archive.name)
        members = {i.filename[len(base):]: i for i in zf.infolist()
                   if i.filename.startswith(base) and not i.is_dir()}
        missing = [rel for rel in sums if rel not in members]
        if missing:
            raise ValueError(f"{archive.name}: {len(missing)} of {len(sums)} files listed in {spec.sums.name} "
                             f"are missing from {spec.member_prefix}/, e.g. {', '.join(missing[:3])}")
        extra = sorted(set(members) - set(sums))
        if extra:  # reported, not silently dropped; the checksum list defines the dataset
            log(f"{spec.name}: ignoring {len(extra)} file(s) not in {spec.sums.name}: {', '.join(extra[:5])}")
        for rel, digest in sums.items():
            _extract_checked(zf, members[rel], tree / rel, digest, rel)
    (tree / "SHA256SUMS").write_bytes(spec.sums.read_bytes())
    if spec.split_csv:
        (tree / "split.csv").write_text(_split_csv(sums), newline="")


def _member_base(zf: zipfile.ZipFile, prefix: str, archive_name: str) -> str:
    """``<top folder>/<prefix>/``: GitHub archives wrap the repo in one ``<repo>-<commit>/`` folder."""
    tops = {name.split("/", 1)[0] for name in zf.namelist()}
    if len(tops) != 1:
        raise ValueError(f"{archive_name}: expected one top-level folder, found {len(tops)}")
    inner = prefix.strip("/")
    base = f"{tops.pop()}/" + (f"{inner}/" if inner != "." else "")  # "." = the whole repository
    if not any(name.startswith(base) for name in zf.namelist()):
        raise ValueError(f"{archive_name}: no {prefix}/ folder inside")
    return base


def _extract_checked(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path, expected: str, rel: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    with zf.open(info) as src, open(out, "wb") as dst:
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            dst.write(chunk)
    if sha.hexdigest() != expected:
        raise ValueError(f"{rel}: SHA-256 {sha.hexdigest()} does not match {expected} in the checksum list; "
                         "refusing a corrupt or altered download")


def make_gear_split(root: str | Path) -> str:
    """split.csv text for a gear folder (``class/file`` images), by the documented SHA-256 rule."""
    root = Path(root)
    digests = {}
    for path in sorted(p for p in root.glob("*/*") if p.is_file() and not p.parent.name.startswith(".")):
        digests[path.relative_to(root).as_posix()] = file_sha256(path)
    if not digests:
        raise FileNotFoundError(f"{root}: no class/file images")
    return _split_csv(digests)


def _split_csv(digests: dict[str, str]) -> str:
    """Documented rule (../shared/data/gear/SOURCE.md): int(first 8 hex digits) % 100 below 70 is
    train, below 80 val, else test. Content-based, so identical files share a split on any machine."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")  # quotes a name only if it holds a comma or quote
    writer.writerow(["path", "label", "split"])
    for rel in sorted(digests):
        bucket = int(digests[rel][:8], 16) % 100
        writer.writerow([rel, rel.split("/", 1)[0], "train" if bucket < 70 else "val" if bucket < 80 else "test"])
    return text.getvalue()
