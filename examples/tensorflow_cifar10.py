"""A taste of TensorFlow: the CNN of TensorFlow's "Convolutional Neural Network (CNN)" tutorial on CIFAR-10.

The tutorial's model and training exactly: Conv2D 32-64-64 (3x3, ReLU) with 2x2 max-pooling after the
first two, Flatten, Dense 64 (ReLU), Dense 10 (logits); Adam at Keras' defaults, sparse categorical
cross-entropy from logits, batch 32, 10 epochs, pixels scaled to 0..1, no augmentation; the test
split doubles as validation data, as in the tutorial. The data is the shared CIFAR-10 JPEG tar
(train/<class>/NNNN.jpg, test/<class>/NNNN.jpg), read here with tarfile + Pillow, so this runs in
.venv-tf (`make tf`) without gearsight.

    nice -n 10 .venv-tf/bin/python examples/tensorflow_cifar10.py                    # the tutorial: 10 epochs
    .venv-tf/bin/python examples/tensorflow_cifar10.py --per-class 50 --epochs 1      # a quick look

Prints one line per epoch, then the test accuracy, the wall time and the machine; --json writes them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "cifar10_jpg.tar"


def read_split(tar: tarfile.TarFile, members: list[tarfile.TarInfo], split: str, classes: list[str],
               per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and int labels of one split; ``per_class``: the first N of each class."""
    chosen: dict[str, list[tarfile.TarInfo]] = {c: [] for c in classes}
    for m in members:
        parts = m.name.split("/")
        if len(parts) == 3 and parts[0] == split and (per_class is None or len(chosen[parts[1]]) < per_class):
            chosen[parts[1]].append(m)
    images, labels = [], []
    for label, name in enumerate(classes):
        for m in chosen[name]:
            with Image.open(io.BytesIO(tar.extractfile(m).read())) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(label)
    return np.stack(images), np.array(labels, np.int64)


def load_cifar(path: Path, per_class: int | None, test_per_class: int | None):
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        classes = sorted({m.name.split("/")[1] for m in members if m.name.startswith("train/")})
        train = read_split(tar, members, "train", classes, per_class)
        test = read_split(tar, members, "test", classes, test_per_class)
    return train, test, classes


def tutorial_cnn(num_classes: int):
    from tensorflow.keras import layers, models

    return models.Sequential([
        layers.Input((32, 32, 3)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(num_classes),
    ])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tar", type=Path, default=DEFAULT_TAR, help="CIFAR-10 JPEG tar (train/<class>/, test/<class>/)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--per-class", type=int, help="train on the first N images of each class (default: all)")
    p.add_argument("--test-per-class", type=int, help="test on the first N of each class (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    (x_train, y_train), (x_test, y_test), classes = load_cifar(args.tar, args.per_class, args.test_per_class)
    load_s = time.perf_counter() - t0
    print(f"read {len(x_train)} train / {len(x_test)} test images, {len(classes)} classes, in {load_s:.1f} s", flush=True)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    model = tutorial_cnn(len(classes))
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x_train, x_test = x_train.astype("float32") / 255.0, x_test.astype("float32") / 255.0
    t1 = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), verbose=2)
    train_s = time.perf_counter() - t1
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    result = {
        "test_accuracy": float(acc), "test_loss": float(loss), "epochs": args.epochs,
        "train": len(x_train), "test": len(x_test), "train_seconds": round(train_s, 1),
        "load_seconds": round(load_s, 1), "total_seconds": round(time.perf_counter() - t0, 1),
        "val_accuracy_per_epoch": [round(float(v), 4) for v in history.history["val_accuracy"]],
        "tensorflow": tf.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(f"test accuracy {acc:.4f} after {args.epochs} epochs; training {train_s:.0f} s, "
          f"total {result['total_seconds']:.0f} s; TensorFlow {tf.__version__}; {result['machine']}; {result['date']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
