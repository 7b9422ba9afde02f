"""The serving container, built and run for real: scripts/build_image.sh (buildah), then the image run
with podman where it can start containers, else `buildah run` (chroot isolation: no OCI runtime,
which is what works inside this project's sandboxed machines), scored with a base64 image and a
float32 array. `make system-deps` installs buildah and podman where apt-get works; without buildah
this test skips. The first build makes a local Debian base with debootstrap (minutes); later ones
reuse its layers.
"""
from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time

import httpx
import pytest

from gearsight.serve.preprocess import Preprocessor
from test_serve import REPO, SIZE, free_port
from test_serve_hostile import files  # noqa: F401  (fixture: model.onnx, a photo and its expected answer)

pytestmark = pytest.mark.slow
if shutil.which("buildah") is None:
    pytest.skip("container test needs buildah (`make system-deps` installs it where apt-get works)",
                allow_module_level=True)

TAG = "localhost/gearsight-serve:test"
KEY = "container-key"


def sh(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def image():
    proc = sh("scripts/build_image.sh", TAG, timeout=2400, cwd=REPO)
    size = proc.stdout.strip().splitlines()[-1]
    print(f"\n{size}")  # "built TAG on BASE; image size: N MB": docs/BENCHMARKS.md quotes it
    return TAG


@contextlib.contextmanager
def container(image: str, onnx, env: dict[str, str]):
    """A working container with the model at /models/model.onnx; yields a command runner prefix."""
    ctr = sh("buildah", "from", "--quiet", image).stdout.strip()
    try:
        sh("buildah", "copy", "--chmod", "0644", ctr, str(onnx), "/models/model.onnx")
        envs = [a for k, v in env.items() for a in ("--env", f"{k}={v}")]
        yield ["buildah", "run", "--isolation", "chroot", *envs, ctr, "--"]
    finally:
        sh("buildah", "rm", ctr, check=False)


def podman_works(image: str) -> bool:
    proc = sh("podman", "run", "--rm", "--entrypoint", "true", image, check=False, timeout=120) \
        if shutil.which("podman") else None
    return proc is not None and proc.returncode == 0


@contextlib.contextmanager
def served(image: str, onnx, port: int):
    """The image's own entrypoint on 0.0.0.0:port with the API key in the environment."""
    args = ["/models/model.onnx", "--host", "0.0.0.0", "--port", str(port)]
    with contextlib.ExitStack() as stack:
        if podman_works(image):
            cmd = ["podman", "run", "--rm", "--network", "host", "-e", f"GEARSIGHT_API_KEY={KEY}",
                   "-v", f"{onnx}:/models/model.onnx:ro", image, *args]
        else:  # e.g. crun: "setrlimit RLIMIT_NOFILE: Operation not permitted" in a sandbox
            run = stack.enter_context(container(image, onnx, {"GEARSIGHT_API_KEY": KEY}))
            cmd = [*run, "python3", "-m", "gearsight.serve", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, f"container exited {proc.returncode}:\n{proc.stdout.read()}"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, "container did not start"
                time.sleep(0.5)
            yield url, cmd[0]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group this test started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_image_scores_a_base64_image_and_a_float32_array(image, files):
    with served(image, files["onnx"], free_port()) as (url, runner):
        print(f"container run with {runner}")
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(url + "/score", json={"image": "AAAA"}, timeout=30).status_code == 401
        photo = files["photo"].read_bytes()
        r = httpx.post(url + "/score", json={"image": base64.b64encode(photo).decode()}, headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        for p in r.json()["predictions"]:
            assert abs(p["probability"] - files["expected"][p["label"]]) < 1e-4
        x = Preprocessor(files["spec"], 10**8).from_image(photo)
        body = {"data": base64.b64encode(x.astype("<f4").tobytes()).decode(), "shape": [3, SIZE, SIZE]}
        r = httpx.post(url + "/score", json=body, headers=auth, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == max(files["expected"],
                                                                                   key=files["expected"].get)


def test_image_refuses_0000_without_an_api_key(image, files):
    with container(image, files["onnx"], {}) as run:
        proc = sh(*run, "python3", "-m", "gearsight.serve", "/models/model.onnx", "--host", "0.0.0.0",
                  check=False, timeout=120)
    assert proc.returncode == 2 and "without an API key" in proc.stderr and "--insecure" in proc.stderr, proc.stderr
