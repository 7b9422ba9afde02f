"""Training checkpoints for ``--resume`` (RUN/last.pt), classifier and detector alike, and the rule
that picks the best epoch.

A checkpoint is one ``torch.save`` file, written atomically after each epoch: model, optimizer (and
scheduler) state dicts plus plain values (epoch, best score, the config). It is loaded with
``weights_only=True``, which refuses arbitrary objects, and ``map_location`` the model's device, so
a GPU run resumes on a CPU (or cuda:1 on cuda:0) without tensors on two devices.

The model file (weights + spec, what predict, export and serve read) is gearsight.modelfile; its
old names here resolve to it with a DeprecationWarning. Torch is imported inside the functions only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from gearsight._moved import names as moved_names
from gearsight.files import atomic_write

# The model file's names moved to gearsight.modelfile: the old paths warn for one release.
__getattr__ = moved_names(__name__, {name: f"gearsight.modelfile.{name}" for name in
                                     ("FORMAT", "FORMAT_VERSION", "ModelSpec", "load_model", "read_spec",
                                      "save_ensemble", "save_model")})


def improves(score: float, best: float | None) -> bool:
    """Whether an epoch's validation score replaces the best so far. Ties go to the later epoch, in
    the classifier and the detector alike: val splits are small (189 gear photos, 1 image = 0.5%; 87
    BCCD images), and a later epoch has seen a lower learning rate on the schedule's way down."""
    return best is None or score >= best


def save_checkpoint(path: str | Path, model, optimizer, scheduler=None, **values: Any) -> None:
    """Write model/optimizer/scheduler state and ``values`` (state dicts, tensors, plain types; None
    is left out) to ``path`` atomically."""
    import torch

    blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if scheduler is not None:
        blob["scheduler"] = scheduler.state_dict()
    blob.update({k: v for k, v in values.items() if v is not None})
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_checkpoint(path: str | Path, model, optimizer, scheduler=None) -> dict[str, Any]:
    """Restore model, optimizer (and scheduler) from a ``save_checkpoint`` file; every tensor lands
    on the model's device. Returns the whole file's dict for the caller's other parts."""
    import torch

    from gearsight.devices import model_device

    # weights_only=True: tensors and plain containers only, no arbitrary unpickling.
    blob = torch.load(path, map_location=model_device(model), weights_only=True)
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(blob["scheduler"])
    return blob


# -- the classifier (train.fit) ----------------------------------------------------------------------

def save_resume_state(path: Path, model, optimizer, scheduler, epoch: int, best: dict, cfg, ema=None,
                      lookahead=None) -> None:
    """The classifier's RUN/last.pt: epoch, best so far, config, and EMA / lookahead weights when used."""
    from dataclasses import asdict

    save_checkpoint(path, model, optimizer, scheduler, epoch=epoch, best=best, config=asdict(cfg),
                    ema=ema.state_dict() if ema is not None else None,
                    lookahead=lookahead.slow if lookahead is not None else None)


def load_resume_state(path: Path, model, optimizer, scheduler, ema=None, lookahead=None) -> tuple[int, dict]:
    """Restore a ``save_resume_state`` file (EMA and lookahead tensors on the model's device too);
    returns (the epoch it was saved after, the best so far)."""
    from gearsight.devices import model_device

    state = load_checkpoint(path, model, optimizer, scheduler)
    if ema is not None and "ema" in state:
        ema.load_state_dict(state["ema"])
    if lookahead is not None and "lookahead" in state:
        device = model_device(model)
        lookahead.slow = {name: value.to(device) for name, value in state["lookahead"].items()}
    return state["epoch"], state["best"]


# -- the detector (detect.train.fit) -----------------------------------------------------------------

def save_detector_state(path: Path, model, optimizer, state: dict, cfg) -> None:
    """The detector's RUN/last.pt: its loop state (epoch, step, elapsed, best) and config JSON."""
    save_checkpoint(path, model, optimizer, state=state, config=cfg.to_json())


def load_detector_state(path: Path, model, optimizer) -> dict:
    """Restore a ``save_detector_state`` file; returns the loop state."""
    return load_checkpoint(path, model, optimizer)["state"]
