"""gearsight's ONNX files: the model's ``ModelSpec`` in ``metadata_props``. Torch-free.

Export (export.py, detect/export.py) writes the metadata with ``write_metadata``; the service reads
it back with ``read_metadata`` from an onnxruntime session's ``custom_metadata_map``, so one .onnx
file alone is enough to serve: classes, input size, resize mode, pad fill and mean/std travel with
the weights. Keys:
    gearsight            ModelSpec.to_json(), the JSON a .safetensors model file's header holds
    gearsight_version    the gearsight that exported it
    source_sha256        digest of the .safetensors file it was exported from (the served "version")
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

from gearsight.modelfile import ModelSpec

SPEC_KEY = "gearsight"  # metadata_props key holding ModelSpec.to_json()
VERSION_KEY = "gearsight_version"
SOURCE_KEY = "source_sha256"


def write_metadata(onnx_path: str | os.PathLike, spec: ModelSpec, source_sha256: str, doc: str) -> None:
    """Write the spec JSON, gearsight version and source digest into an ONNX file's metadata_props
    (replacing any there), check the model and save it in place."""
    import onnx

    from gearsight import __version__

    proto = onnx.load(str(onnx_path))
    props = {SPEC_KEY: spec.to_json(), VERSION_KEY: __version__, SOURCE_KEY: source_sha256}
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "gearsight"
    proto.doc_string = doc
    onnx.checker.check_model(proto)
    onnx.save(proto, str(onnx_path))


def read_metadata(meta: Mapping[str, str], path: str | os.PathLike, export_command: str) -> tuple[ModelSpec, str]:
    """(ModelSpec, version) from an ONNX file's metadata (onnxruntime: ``session.get_modelmeta()
    .custom_metadata_map``). The version names the weights: the first 12 hex digits of the source
    .safetensors digest when export recorded it, else of the .onnx file's own bytes. A file without
    gearsight metadata is refused with the command that makes one."""
    if SPEC_KEY not in meta:
        raise ValueError(f"{path}: ONNX file without gearsight metadata (export it with `{export_command}`)")
    digest = meta.get(SOURCE_KEY) or hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return ModelSpec.from_json(meta[SPEC_KEY], str(path)), digest[:12]


def cpu_session(onnx_path: str | os.PathLike):
    """A plain onnxruntime CPU session (export's checks; the service tunes its own options)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
