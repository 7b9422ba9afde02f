#!/usr/bin/env bash
# Build the slim serving image (Dockerfile) with buildah: no Docker daemon needed.
#
#   scripts/build_image.sh [TAG]            # default TAG: localhost/gearsight-serve:latest
#   BASE=python:3.11-slim scripts/build_image.sh
#
# The Dockerfile's base is python:3.11-slim. Where it cannot be pulled (no route to Docker Hub, as
# on the project's build machines), the script makes a local base once: Debian bookworm (its
# python3 is 3.11) with debootstrap from the Debian mirror apt already uses, committed as
# $LOCAL_BASE, and passes it with --build-arg BASE=... . Prints the image size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-localhost/gearsight-serve:latest}
BASE=${BASE:-docker.io/library/python:3.11-slim}
LOCAL_BASE=${LOCAL_BASE:-localhost/gearsight-base:bookworm-py311}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

need() {  # install a Debian package when its command is missing (root only)
  command -v "$1" >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "error: $1 not found; install the Debian package $2" >&2; exit 1; }
  apt-get install -y -qq "$2" >/dev/null
}

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

make_local_base() {
  need debootstrap debootstrap
  local rootfs ctr mnt
  rootfs=$(mktemp -d /tmp/gearsight-base.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  echo "making $LOCAL_BASE with debootstrap (Debian bookworm minbase + python3)..."
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$MIRROR" >/dev/null
  chroot "$rootfs" apt-get clean
  # What python:3.11-slim also leaves out: docs, man pages, translations, apt lists.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/cache/debconf/*-old
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$rootfs"/. "$mnt"/
  buildah umount "$ctr" >/dev/null
  buildah config --env LANG=C.UTF-8 --cmd python3 "$ctr"
  buildah commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
}

need buildah buildah
if ! have_image "$BASE" && ! buildah pull --quiet "$BASE" >/dev/null 2>&1; then
  echo "cannot pull $BASE; building on a local Debian base instead ($LOCAL_BASE)"
  have_image "$LOCAL_BASE" || make_local_base
  BASE=$LOCAL_BASE
fi

# chroot isolation: RUN steps need no OCI runtime, so they work inside VMs and CI containers whose
# cgroup setup crun/runc refuse ("cgroups in hybrid mode not supported"). It is also the default of
# buildah's own container images.
# pip inside the build must trust what the host's pip trusts: behind a TLS-inspecting proxy that is
# a local CA bundle (PIP_CERT, or `cert` in pip's config), mounted read-only for the build only.
extra=()
host_cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
if [ -n "$host_cert" ] && [ -f "$host_cert" ]; then
  extra+=(--volume "$host_cert:/etc/gearsight-build-ca.crt:ro" --build-arg PIP_CERT=/etc/gearsight-build-ca.crt)
fi
buildah bud --isolation "${BUILDAH_ISOLATION:-chroot}" --layers --build-arg BASE="$BASE" "${extra[@]}" \
  -f Dockerfile -t "$TAG" .
echo "built $TAG on $BASE; image size: $(buildah images --format '{{.Size}}' "$TAG")"
