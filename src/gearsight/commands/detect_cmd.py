"""``gearsight detect {train,evaluate,predict,export,convert}``: Faster R-CNN on COCO json or Pascal VOC data."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gearsight.devices import add_device_option

DATA_HELP = ("a Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/) or a COCO instances json "
             "(or a folder holding annotations/instances_*.json)")


def register(subparsers) -> None:
    p = subparsers.add_parser("detect", help="object detection: train, evaluate, predict, convert",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="detect_command", metavar="ACTION", required=True)
    _register_train(sub)
    _register_evaluate(sub)
    _register_predict(sub)
    _register_export(sub)
    _register_convert(sub)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--images", type=Path, default=None, help="COCO image folder (default: beside annotations/)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="COCO json without splits: share of images held out as 'val' (stable hash)")
    g.add_argument("--strict", action="store_true", help="refuse boxes outside the image instead of clipping")


def _register_train(sub) -> None:
    p = sub.add_parser("train", help="train a Faster R-CNN from scratch (or from --weights)",
                       description="Train torchvision's Faster R-CNN; writes RUN/model.safetensors (best on "
                       "validation), RUN/last.pt (resume), RUN/metrics.csv and RUN/config.json.")
    p.add_argument("data", type=Path, help=DATA_HELP)
    p.add_argument("--out", type=Path, required=True, help="run folder")
    _add_data_options(p)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val", help="'none' to train without validation")
    m = p.add_argument_group("model")
    m.add_argument("--arch", default="fasterrcnn_mobilenet_v3_large_fpn",
                   choices=("fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn"))
    m.add_argument("--preset", choices=("cpu", "torchvision"), default="cpu",
                   help="network shape: 'cpu' (light FPN/heads for CPU training) or torchvision's own "
                   "(use it with --weights from torchvision)")
    m.add_argument("--min-size", type=int, default=None, help="shorter side fed to the network (px)")
    m.add_argument("--max-size", type=int, default=None, help="cap on the longer side (px)")
    m.add_argument("--anchors", default="auto",
                   help="'auto' (fit to the training boxes), 'default' (the preset's), or sizes per "
                   "level like '24,40;64,96;160,224'")
    m.add_argument("--aspect-ratios", default="0.5,1,2", help="anchor height/width ratios")
    m.add_argument("--weights", type=Path, default=None, help="local torchvision checkpoint to start from")
    t = p.add_argument_group("schedule")
    t.add_argument("--epochs", type=int, default=30, help="epochs (an upper bound with --time-budget)")
    t.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="run the LR schedule over MIN wall-clock minutes and stop there")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--lr", type=float, default=0.02)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=200, help="linear warmup steps")
    t.add_argument("--resume", action="store_true", help="continue RUN/last.pt")
    a = p.add_argument_group("augmentation")
    a.add_argument("--crop", type=int, default=None, help="training crop side (default: min size)")
    a.add_argument("--scale-range", default="0.75,1.33", help="scale jitter range around the network scale")
    a.add_argument("--vflip", action="store_true", help="also flip vertically (microscopy, aerial)")
    a.add_argument("--no-photometric", action="store_true", help="no colour jitter")
    e = p.add_argument_group("evaluation and machine")
    e.add_argument("--eval-every", type=int, default=1, help="epochs between validation runs")
    e.add_argument("--eval-from", type=float, default=0.0, help="fraction of the schedule before validating")
    e.add_argument("--select", choices=("AP", "AP50"), default="AP", help="validation metric for the best model")
    e.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    e.add_argument("--workers", type=int, default=1, help="data loader processes")
    e.add_argument("--seed", type=int, default=0)
    add_device_option(e)
    p.set_defaults(func=run_train)


def _register_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="COCO mAP of a detector on a split",
                       description="COCO box metrics (pycocotools): AP, AP50, AP75, per-class AP; writes "
                       "DIR/report.json and DIR/predictions.png (ground truth | prediction).")
    p.add_argument("model", type=Path, help="detector model file (.safetensors)")
    p.add_argument("data", type=Path, help=DATA_HELP)
    p.add_argument("--split", default="test", help="VOC split file name, or all/train/val for a COCO json")
    p.add_argument("--out", type=Path, default=None, help="report folder")
    p.add_argument("--draw", type=int, default=4, help="images on the predictions sheet (0: none)")
    _add_data_options(p)
    add_device_option(p)
    p.set_defaults(func=run_evaluate)


def _register_predict(sub) -> None:
    p = sub.add_parser("predict", help="boxes, labels and scores as JSON",
                       description="Detect objects in images; prints one JSON object per image.")
    p.add_argument("model", type=Path, help="detector model file (.safetensors)")
    p.add_argument("images", type=Path, nargs="+", help="image files")
    p.add_argument("--min-score", type=float, default=0.5)
    p.add_argument("--draw", type=Path, default=None, metavar="DIR", help="also save each image with its boxes")
    add_device_option(p)
    p.set_defaults(func=run_predict)


def _register_export(sub) -> None:
    p = sub.add_parser("export", help="write a detector as ONNX, for `gearsight serve --detector`",
                       description="Export the whole Faster R-CNN (pre- and postprocessing included) to ONNX; "
                       "the output is checked against PyTorch before it is kept.")
    p.add_argument("model", type=Path, help="detector model file (.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="output .onnx")
    p.set_defaults(func=run_export)


def _register_convert(sub) -> None:
    p = sub.add_parser("convert", help="write a detection dataset (e.g. Pascal VOC) as COCO json",
                       description="Export any readable detection dataset to one COCO instances json.")
    p.add_argument("data", type=Path, help=DATA_HELP)
    p.add_argument("--out", type=Path, required=True, help="output .json")
    p.add_argument("--split", default="all", help="VOC split file name, or all")
    _add_data_options(p)
    p.set_defaults(func=run_convert)


def _load(args, split: str, classes=None):
    from gearsight.detect.sources import load_detection_data
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below, one line each
        data = load_detection_data(args.data, split, images=args.images, val_fraction=args.val_fraction,
                                   classes=classes, strict=args.strict)
    for issue in data.issues:
        print(f"warning: {issue}", file=sys.stderr)
    return data


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None


def _anchors(text: str) -> str | list[list[float]]:
    return text if text in ("auto", "default") else [_floats(level, "--anchors") for level in text.split(";")]


def run_train(args: argparse.Namespace) -> int:
    from gearsight.detect.recipe import train_config
    from gearsight.detect.train import fit

    train = _load(args, args.train_split)
    val = None if args.val_split == "none" else _load(args, args.val_split, classes=train.classes)
    print(f"train: {len(train.records)} images {train.box_counts()}; "
          f"val: {len(val.records) if val else 0} images", flush=True)
    cfg = train_config(
        train, arch=args.arch, preset=args.preset, min_size=args.min_size, max_size=args.max_size,
        anchors=_anchors(args.anchors), aspect_ratios=_floats(args.aspect_ratios, "--aspect-ratios"),
        scale_range=_floats(args.scale_range, "--scale-range"), epochs=args.epochs, time_budget_min=args.time_budget,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
        crop=args.crop, vflip=args.vflip, photometric=not args.no_photometric,
        eval_every=args.eval_every, eval_from=args.eval_from, select=args.select, threads=args.threads,
        workers=args.workers, seed=args.seed, weights=str(args.weights) if args.weights else None,
        device=args.device)
    print(f"anchors {cfg.model.anchor_sizes} ratios {cfg.model.aspect_ratios} min_size {cfg.model.min_size}", flush=True)
    fit(train, val, args.out, cfg, resume=args.resume)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from gearsight.detect.evaluate import format_metrics
    from gearsight.detect.predict import Detector
    from gearsight.detect.report import evaluate_detector

    detector = Detector.load(args.model, device=args.device)
    data = _load(args, args.split, classes=detector.classes)
    report = evaluate_detector(detector, data, args.out, draw=args.draw, source=f"{args.data} [{args.split}]")
    print(f"{len(data.records)} images, {report['boxes']} boxes, {report['seconds_per_image']:.3f} s/image")
    print(format_metrics(report))
    if args.out:
        print(f"wrote {args.out / 'report.json'}" + (f" and {report['sheet']}" if report.get("sheet") else ""))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from gearsight.detect.predict import Detector

    detector = Detector.load(args.model, device=args.device)
    missing = [p for p in args.images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image file not found: {missing[0]}")
    results = detector.predict([str(p) for p in args.images], min_score=args.min_score)
    for path, result in zip(args.images, results):
        print(json.dumps({"image": str(path), **result}))
        if args.draw:
            _draw_one(path, result, detector.classes, args.draw)
    return 0


def _draw_one(path: Path, result: dict, classes: list[str], out_dir: Path) -> None:
    from PIL import Image

    from gearsight.detect.draw import draw_boxes
    from gearsight.image.decode import decode_image

    labels = [classes.index(name) for name in result["labels"]]
    drawn = draw_boxes(decode_image(path), result["boxes"], labels, classes, result["scores"])
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drawn).save(out_dir / f"{path.stem}.png")


def run_export(args: argparse.Namespace) -> int:
    from gearsight.detect.export import export_detector

    if not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    path = export_detector(args.model, args.out)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB), outputs match PyTorch")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from gearsight.detect.coco import write_coco

    data = _load(args, args.split)
    path = write_coco(data, args.out)
    print(f"wrote {path}: {len(data.records)} images, {sum(len(r.boxes) for r in data.records)} boxes, "
          f"{len(data.classes)} categories")
    return 0
