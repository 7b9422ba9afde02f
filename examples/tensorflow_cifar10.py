"""A taste of TensorFlow: the CNN of TensorFlow's CIFAR-10 tutorial, trained in TensorFlow from gearsight's packed arrays.

The model is ``inference()`` of the tutorial's ``cifar10.py`` (tensorflow/models, tutorials/image/cifar10):
conv 5x5x64 + ReLU, 3x3/2 max-pool (SAME), LRN; conv 5x5x64 + ReLU, LRN, 3x3/2 max-pool; dense 384,
dense 192, linear 10; its initialisation too. The input pipeline is ``cifar10_input.py``'s, on ``tf.data``:
training images are random 24x24 crops, flipped left/right at random, brightness +-63 and contrast
x0.2..1.8 jittered, then standardized per image; evaluation uses the central 24x24 crop, standardized.

Training follows gearsight's optimizer so that `gearsight train --arch tf_cifar10` (the same net in
PyTorch, src/gearsight/models/tf_cifar10.py, configs/cifar10-tf-tutorial.yaml) trains with the same
update: Nesterov SGD (momentum 0.9), linear one-cycle lr (0.1x peak -> peak at 20% of the steps ->
0.001x), L2 decay 5e-4 on conv and dense kernels (as torch's coupled weight_decay), batch 128,
plain cross-entropy. (The tutorial itself runs plain SGD at lr 0.1 for ~250 epochs with decay on the
dense weights only.)

Data: a folder written by `gearsight pack` (images.npy uint8 N x 32 x 32 x 3, labels.npy, splits.npy,
meta.json; docs/FORMATS.md), read with numpy: this runs in .venv-tf (`make tf`) without gearsight.

    .venv/bin/gearsight pack ../shared/data/cifar10/cifar10_jpg.tar work/cifar10-full --split 1,0,0
    nice -n 10 .venv-tf/bin/python examples/tensorflow_cifar10.py work/cifar10-full --epochs 10 \\
        --onnx work/tf_cifar10.onnx --json work/tf_cifar10.json
    .venv/bin/gearsight serve work/tf_cifar10.onnx --port 8000          # the main venv serves it unchanged

Prints one line per epoch, then sklearn's confusion matrix and classification report on the test
split (as `gearsight evaluate`), the wall times and the machine. ``--onnx`` exports the trained model
with tf2onnx: input ``N x 3 x 32 x 32`` float32 pixel values 0..255 (gearsight's layout with mean 0,
std 1/255), the central crop and standardization inside the graph, and gearsight's model metadata
(classes, input size, resize, normalization) under the ``gearsight`` key, so `gearsight serve` needs
nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

CROP = 24
BATCH_EVAL = 500


def load_packed(folder: Path, split: str, limit: int | None = None, seed: int = 0):
    """(uint8 N x S x S x 3 images, int labels, meta) of one split of a gearsight pack (docs/FORMATS.md)."""
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("format") != "gearsight-pack":
        raise SystemExit(f"{folder}: not a gearsight pack (meta.json format {meta.get('format')!r})")
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    idx = np.flatnonzero(np.load(folder / "splits.npy") == meta["splits"].index(split))
    if limit is not None and limit < len(idx):  # a seeded sample, not the first N: CIFAR packs are in class order
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    return np.ascontiguousarray(images[idx]), labels[idx].astype(np.int64), meta


def build_model(num_classes: int, weight_decay: float):
    """cifar10.py inference() as a Keras model on standardized 24 x 24 x 3 input; layer names as in the tutorial."""
    import tensorflow as tf
    from tensorflow.keras import initializers, layers, regularizers

    # torch's coupled weight_decay wd adds wd * w to the gradient; Keras' l2(c) adds 2c * w.
    reg = regularizers.l2(weight_decay / 2) if weight_decay else None

    def normal(std):
        return initializers.TruncatedNormal(stddev=std)

    class LRN(layers.Layer):
        def call(self, x):
            return tf.nn.local_response_normalization(x, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)

    return tf.keras.Sequential([
        layers.Input((CROP, CROP, 3)),
        layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=normal(5e-2),
                      bias_initializer="zeros", kernel_regularizer=reg, name="conv1"),
        layers.MaxPooling2D(3, 2, padding="same", name="pool1"),
        LRN(name="norm1"),
        layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=normal(5e-2),
                      bias_initializer=initializers.Constant(0.1), kernel_regularizer=reg, name="conv2"),
        LRN(name="norm2"),
        layers.MaxPooling2D(3, 2, padding="same", name="pool2"),
        layers.Flatten(),
        layers.Dense(384, activation="relu", kernel_initializer=normal(0.04),
                     bias_initializer=initializers.Constant(0.1), kernel_regularizer=reg, name="local3"),
        layers.Dense(192, activation="relu", kernel_initializer=normal(0.04),
                     bias_initializer=initializers.Constant(0.1), kernel_regularizer=reg, name="local4"),
        layers.Dense(num_classes, kernel_initializer=normal(1 / 192.0), bias_initializer="zeros",
                     kernel_regularizer=reg, name="head"),
    ])


def distort(image, label):
    """cifar10_input.distorted_inputs(), one image: crop, flip, brightness, contrast, standardize."""
    import tensorflow as tf

    x = tf.image.random_crop(tf.cast(image, tf.float32), [CROP, CROP, 3])
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_brightness(x, max_delta=63)
    x = tf.image.random_contrast(x, lower=0.2, upper=1.8)
    return tf.image.per_image_standardization(x), label


def central(images):
    """cifar10_input.inputs(): the central 24 x 24 crop, standardized (a batch, any pixel dtype)."""
    import tensorflow as tf

    x = tf.image.resize_with_crop_or_pad(tf.cast(images, tf.float32), CROP, CROP)
    return tf.image.per_image_standardization(x)


def one_cycle(peak: float, total_steps: int, warmup: float, start: float, end: float):
    """torch's OneCycleLR(anneal_strategy="linear", cycle_momentum=False), as gearsight's make_scheduler builds it."""
    import tensorflow as tf

    class OneCycle(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            s = tf.cast(step, tf.float32)
            up_end = float(warmup * total_steps) - 1.0
            down_end = float(total_steps - 1)
            up = peak * start + (peak - peak * start) * s / max(up_end, 1.0)
            down = peak + (peak * end - peak) * (s - up_end) / max(down_end - up_end, 1.0)
            return tf.where(s <= up_end, up, tf.maximum(down, peak * end))

        def get_config(self):
            return {}

    return OneCycle()


def export_onnx(model, path: Path, classes: list[str], extra: dict, opset: int = 17) -> None:
    """tf2onnx export of NCHW 0..255 input -> logits, with gearsight's ModelSpec JSON in metadata_props."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, 3, 32, 32], tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def serving(x):  # gearsight's input layout (N x 3 x S x S) -> the tutorial's eval input
        return tf.identity(model(central(tf.transpose(x, [0, 2, 3, 1])), training=False), name="logits")

    proto, _ = tf2onnx.convert.from_function(serving, input_signature=[spec], opset=opset)
    spec_json = json.dumps({
        "format": "gearsight-model", "format_version": 1,  # gearsight.modelfile.ModelSpec.to_json()
        "arch": "tensorflow:cifar10_tutorial", "arch_config": {}, "classes": list(classes),
        "input_size": 32, "resize": "stretch", "pad_fill": 255,
        # gearsight's input is (x / 255 - mean) / std: mean 0, std 1/255 gives the pixel values the model takes
        "mean": [0.0, 0.0, 0.0], "std": [1 / 255] * 3, "extra": extra,
    }, sort_keys=True)
    del proto.metadata_props[:]
    for key, value in {"gearsight": spec_json, "gearsight_version": "tensorflow-example"}.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "tf2onnx (gearsight examples/tensorflow_cifar10.py)"
    proto.doc_string = f"TensorFlow CIFAR-10 tutorial CNN over {len(classes)} classes"
    onnx.checker.check_model(proto)
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or platform.machine())
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="a `gearsight pack` folder of 32 x 32 images (CIFAR-10)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.02, help="peak lr of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--train-limit", type=int, help="train on a seeded sample of N train images (default: all)")
    p.add_argument("--test-limit", type=int, help="test on a seeded sample of N test images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all cores)")
    p.add_argument("--onnx", type=Path, help="export the trained model here, with gearsight's metadata")
    p.add_argument("--weights", type=Path, help="save the weights as .npz ({layer}/kernel, {layer}/bias)")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    x_train, y_train, meta = load_packed(args.data, "train", args.train_limit, args.seed)
    x_test, y_test, _ = load_packed(args.data, "test", args.test_limit, args.seed)
    classes = meta["classes"]
    if x_train.shape[1:] != (32, 32, 3):
        raise SystemExit(f"{args.data}: images are {x_train.shape[1:]}, the tutorial's net takes 32 x 32 x 3")
    print(f"read {len(x_train)} train / {len(x_test)} test images of {args.data}, {len(classes)} classes, "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)

    import tensorflow as tf
    from sklearn.metrics import classification_report, confusion_matrix

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.keras.utils.set_random_seed(args.seed)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                .shuffle(len(x_train), seed=args.seed, reshuffle_each_iteration=True)
                .map(distort, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    test_ds = (tf.data.Dataset.from_tensor_slices(x_test).batch(BATCH_EVAL)
               .map(central, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

    model = build_model(len(classes), args.weight_decay)
    optimizer = tf.keras.optimizers.SGD(
        one_cycle(args.lr, steps_per_epoch * args.epochs, warmup=0.2, start=0.1, end=0.001),
        momentum=0.9, nesterov=True)
    model.compile(optimizer=optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    t1 = time.perf_counter()
    history = model.fit(train_ds, epochs=args.epochs, verbose=2)
    train_s = time.perf_counter() - t1

    logits = model.predict(test_ds, verbose=0)
    pred = logits.argmax(1)
    acc = float((pred == y_test).mean())
    labels = list(range(len(classes)))
    print(f"test accuracy {acc:.2%} ({int((pred == y_test).sum())}/{len(y_test)} correct) "
          f"after {args.epochs} epochs")
    print("confusion matrix (rows: true class, columns: predicted)")
    print(confusion_matrix(y_test, pred, labels=labels))
    print(classification_report(y_test, pred, labels=labels, target_names=classes, digits=4, zero_division=0))

    result = {
        "test_accuracy": acc, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
        "weight_decay": args.weight_decay, "train": len(x_train), "test": len(x_test), "classes": classes,
        "train_seconds": round(train_s, 1), "total_seconds": None,
        "train_accuracy_per_epoch": [round(float(v), 4) for v in history.history["accuracy"]],
        "confusion_matrix": confusion_matrix(y_test, pred, labels=labels).tolist(),
        "test_logits_first": logits[:16].round(5).tolist(), "test_labels_first": y_test[:16].tolist(),
        "tensorflow": tf.__version__, "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.weights:
        args.weights.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.weights, **{f"{layer.name}/{w.name}": np.asarray(w.numpy()) for layer in model.layers
                                  for w in layer.weights})
    if args.onnx:
        args.onnx.parent.mkdir(parents=True, exist_ok=True)
        t2 = time.perf_counter()
        export_onnx(model, args.onnx, classes, {"test_accuracy": acc, "epochs": args.epochs, "framework":
                                                f"tensorflow {tf.__version__}", "data": str(args.data)})
        print(f"exported {args.onnx} (tf2onnx, gearsight metadata) in {time.perf_counter() - t2:.1f} s")
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"training {train_s:.0f} s, total {result['total_seconds']:.0f} s; TensorFlow {tf.__version__}; "
          f"{result['machine']}; {result['date']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
