"""gearsight datasets: verified downloads from a real HTTP server on 127.0.0.1, never the internet.

The served archives are built here, shaped like the real ones (a GitHub commit zip, a CIFAR
tar.gz); the checksum source is injected by passing a Dataset with our own sums file.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import require_dataset, run_cli
from gearsight.data import datasets
from gearsight.data.datasets import (CHECKSUMS, DATASETS, GEAR_COMMIT, default_dest, download, make_gear_split,
                                     read_sums, resolve_dataset)

TOP = f"MLopenhack-{GEAR_COMMIT}"
PREFIX = f"{TOP}/Challenge2/gear_images/"


@pytest.fixture()
def served(tmp_path):
    """(folder, base URL, list of requested paths): a real HTTP server serving ``folder``."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No shared data, work dir in tmp: resolve_dataset must find only what these tests download."""
    monkeypatch.setenv("GEARSIGHT_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("GEARSIGHT_WORK", str(tmp_path / "work"))
    monkeypatch.delenv(datasets.MIRROR_ENV, raising=False)


def tiny_images() -> dict[str, bytes]:
    """``class/file`` -> real encoded image bytes (PNG and JPEG, as in the gear set)."""
    files = {}
    for i, (rel, fmt) in enumerate([("axes/a1.png", "PNG"), ("axes/a2.jpeg", "JPEG"),
                                    ("boots/b1.jpg", "JPEG"), ("boots/b2.png", "PNG")]):
        buf = io.BytesIO()
        Image.new("RGB", (6 + i, 5), (40 * i, 200, 10)).save(buf, fmt)
        files[rel] = buf.getvalue()
    return files


def write_gear_zip(path: Path, files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> None:
    """A zip shaped like GitHub's commit archive: one ``<repo>-<commit>/`` folder holding the repo."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{TOP}/", "")
        zf.writestr(f"{TOP}/Challenge1/notes.md", "not part of the dataset\n")
        for rel, data in {**files, **(extra or {})}.items():
            zf.writestr(PREFIX + rel, data)
            zf.writestr(f"{TOP}/Challenge5/gear_images/{rel}", data)  # the repo's duplicate copy


def gear_spec(tmp_path: Path, files: dict[str, bytes]) -> datasets.Dataset:
    sums = tmp_path / "gear-test.sha256"
    sums.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  ./{rel}\n" for rel, d in sorted(files.items())))
    return dataclasses.replace(DATASETS["gear"], sums=sums)


def no_leftovers(dest: Path) -> list[str]:
    """Anything a failed download left beside (or at) dest."""
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def test_gear_download_verifies_every_file_and_writes_split(tmp_path, served):
    www, base, requests = served
    files = tiny_images()
    write_gear_zip(www / "gear.zip", files, extra={"boots/Thumbs.db": b"junk"})
    spec = gear_spec(tmp_path, files)
    logged: list[str] = []

    dest = download(spec, url=f"{base}/gear.zip", progress=False, log=logged.append)

    assert dest == default_dest("gear") == resolve_dataset("gear")
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert not (dest / "boots/Thumbs.db").exists()
    assert any("ignoring 1 file(s)" in m and "boots/Thumbs.db" in m for m in logged)  # reported, not silent
    assert not (dest / "Challenge1").exists() and not (dest / "notes.md").exists()
    assert (dest / "SHA256SUMS").read_bytes() == spec.sums.read_bytes()
    split = (dest / "split.csv").read_text()
    assert split == make_gear_split(dest)
    lines = split.splitlines()
    assert lines[0] == "path,label,split" and [ln.split(",")[0] for ln in lines[1:]] == sorted(files)
    for line in lines[1:]:
        rel, label, part = line.split(",")
        bucket = int(hashlib.sha256(files[rel]).hexdigest()[:8], 16) % 100
        assert label == rel.split("/")[0]
        assert part == ("train" if bucket < 70 else "val" if bucket < 80 else "test")
    assert no_leftovers(dest) == ["gear"]

    # A second call finds the finished download and fetches nothing.
    n = len(requests)
    assert download(spec, url=f"{base}/gear.zip", progress=False, log=logged.append) == dest
    assert len(requests) == n and "already downloaded" in logged[-1]


def test_gear_corrupt_byte_is_refused_naming_the_file(tmp_path, served):
    www, base, _ = served
    files = tiny_images()
    spec = gear_spec(tmp_path, files)
    bad = bytearray(files["boots/b1.jpg"])
    bad[len(bad) // 2] ^= 0x01
    write_gear_zip(www / "gear.zip", {**files, "boots/b1.jpg": bytes(bad)})

    with pytest.raises(ValueError, match=r"boots/b1\.jpg: SHA-256 .* does not match"):
        download(spec, url=f"{base}/gear.zip", progress=False, log=lambda m: None)
    assert no_leftovers(default_dest("gear")) == []  # no partial folder, no temp files
    with pytest.raises(FileNotFoundError, match="gearsight datasets download gear"):
        resolve_dataset("gear")


def test_gear_missing_file_is_refused_naming_it(tmp_path, served):
    www, base, _ = served
    files = tiny_images()
    spec = gear_spec(tmp_path, files)
    write_gear_zip(www / "gear.zip", {k: v for k, v in files.items() if k != "axes/a2.jpeg"})

    with pytest.raises(ValueError, match=r"1 of 4 files .* missing .*axes/a2\.jpeg"):
        download(spec, url=f"{base}/gear.zip", progress=False, log=lambda m: None)
    assert no_leftovers(default_dest("gear")) == []


def write_fake_cifar(path: Path) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        data = b"fake batch bytes"
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def cifar_spec(tmp_path: Path, archive: bytes, md5: str | None = None) -> datasets.Dataset:
    sums = tmp_path / "cifar-test.sha256"
    sums.write_text(f"{hashlib.sha256(archive).hexdigest()}  cifar-10-python.tar.gz\n")
    return dataclasses.replace(DATASETS["cifar10"], sums=sums,
                               md5=hashlib.md5(archive).hexdigest() if md5 is None else md5)


def test_cifar_download_via_mirror_env_checks_md5_and_sha256(tmp_path, served, monkeypatch):
    www, base, requests = served
    archive = write_fake_cifar(www / "cifar-10-python.tar.gz")
    monkeypatch.setenv(datasets.MIRROR_ENV, base + "/")

    dest = download(cifar_spec(tmp_path, archive), progress=False, log=lambda m: None)

    assert requests == ["/cifar-10-python.tar.gz"]
    assert (dest / "cifar-10-python.tar.gz").read_bytes() == archive
    assert resolve_dataset("cifar10") == dest == default_dest("cifar10")


@pytest.mark.parametrize("check", ["md5", "sha256"])
def test_cifar_corrupt_archive_is_refused(tmp_path, served, check):
    www, base, _ = served
    archive = write_fake_cifar(www / "good.tar.gz")
    bad = bytearray(archive)
    bad[-3] ^= 0xFF
    (www / "cifar-10-python.tar.gz").write_bytes(bytes(bad))
    # md5 "" skips the MD5 so the SHA-256 check is the one that must catch it.
    spec = cifar_spec(tmp_path, archive, md5=None if check == "md5" else "")
    dest = tmp_path / "elsewhere" / "cifar"

    with pytest.raises(ValueError, match=rf"cifar-10-python\.tar\.gz: {check.upper().replace('SHA', 'SHA-')} "):
        download(spec, dest, url=f"{base}/cifar-10-python.tar.gz", progress=False, log=lambda m: None)
    assert no_leftovers(dest) == []


def test_dest_holding_other_files_is_not_overwritten(tmp_path, served):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not a finished cifar10 download"):
        download("cifar10", dest, url=f"{served[1]}/x", progress=False, log=lambda m: None)
    assert (dest / "keep.txt").read_text() == "user data"


def test_cli_where_download_and_errors(tmp_path, served):
    www, base, _ = served
    write_gear_zip(www / "gear.zip", tiny_images())  # not the real 2122 files: the shipped sums refuse it

    where = run_cli("datasets", "where", "gear", check=False)
    assert where.returncode == 2 and "gearsight datasets download gear" in where.stderr

    bad = run_cli("datasets", "download", "gear", "--quiet", "--url", f"{base}/gear.zip", check=False)
    assert bad.returncode == 2 and "2122 files listed in gear.sha256 are missing" in bad.stderr
    missing = run_cli("datasets", "download", "cifar10", "--quiet", "--url", f"{base}/nope.tar.gz", check=False)
    assert missing.returncode == 1 and f"{base}/nope.tar.gz failed: HTTP 404" in missing.stderr
    assert no_leftovers(default_dest("gear")) == []

    dest = download(gear_spec(tmp_path, tiny_images()), url=f"{base}/gear.zip", progress=False, log=lambda m: None)
    assert run_cli("datasets", "where", "gear").stdout.strip() == str(dest)
    assert "not present (gearsight datasets download cifar10)" in run_cli("datasets", "list").stdout


def test_read_sums_names_the_bad_line(tmp_path):
    sums = tmp_path / "s.sha256"
    sums.write_text(f"{'a' * 64}  ./axes/1.jpg\nnot-a-digest  ./axes/2.jpg\n")
    with pytest.raises(ValueError, match=r"s\.sha256:2: expected"):
        read_sums(sums)
    sums.write_text(f"{'a' * 64}  ../../etc/passwd\n")
    with pytest.raises(ValueError, match=r"s\.sha256:1:"):
        read_sums(sums)


def test_shipped_checksums_parse():
    gear = read_sums(CHECKSUMS / "gear.sha256")
    assert len(gear) == 2122 and len({rel.split("/")[0] for rel in gear}) == 12
    assert read_sums(CHECKSUMS / "cifar10.sha256") == {
        "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}


def test_make_gear_split_reproduces_shared_split_csv(monkeypatch):
    monkeypatch.undo()  # the real ../shared/data, not the isolated empty one
    gear = require_dataset("gear")
    assert make_gear_split(gear) == (gear / "split.csv").read_text()
    assert (CHECKSUMS / "gear.sha256").read_bytes() == (gear / "SHA256SUMS").read_bytes()


def test_coco128_download_keeps_train2017_and_the_json_not_the_val_copy(tmp_path, served):
    """COCO128's GitHub archive: the whole repository is the dataset (member_prefix "."), but only
    the files in coco128.sha256 are kept; its byte-identical val2017/ copy is reported and dropped."""
    www, base, _ = served
    top = f"COCO128-{datasets.COCO128_COMMIT}"
    files = {f"train2017/{rel.split('/')[1]}": data for rel, data in tiny_images().items()}
    files["annotations/instances_train2017.json"] = b'{"images": [], "annotations": [], "categories": []}'
    with zipfile.ZipFile(www / "coco128.zip", "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{top}/{rel}", data)
            zf.writestr(f"{top}/{rel.replace('train2017', 'val2017')}", data)
        zf.writestr(f"{top}/README.md", "readme\n")
    sums = tmp_path / "coco128-test.sha256"
    sums.write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {rel}\n" for rel, d in sorted(files.items())))
    spec = dataclasses.replace(DATASETS["coco128"], sums=sums)
    logged: list[str] = []
    dest = download(spec, url=f"{base}/coco128.zip", progress=False, log=logged.append)
    assert dest == resolve_dataset("coco128")
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert not (dest / "val2017").exists() and not (dest / "README.md").exists()
    assert any("ignoring" in m and "README.md" in m for m in logged)


def test_shipped_coco128_checksums_match_the_shared_copy():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"  # the fixture hides $GEARSIGHT_DATA
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent")
    sums = datasets.read_sums(DATASETS["coco128"].sums)
    assert len(sums) == 129  # 128 photos + the instances json
    for rel in list(sums)[:5]:
        assert hashlib.sha256((shared / rel).read_bytes()).hexdigest() == sums[rel]
