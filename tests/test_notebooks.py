"""The notebooks run top to bottom (executed with nbclient, in a fresh work folder)."""
from __future__ import annotations

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, require_dataset


def execute(name: str, work, timeout: int = 900) -> nbformat.NotebookNode:
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    os.environ["GEARSIGHT_WORK"] = str(work)  # the kernel inherits it: train from scratch, not the demo's model
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        del os.environ["GEARSIGHT_WORK"]
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def test_gear_notebook_trains_and_shows_test_and_per_class_accuracy(tmp_path):
    require_dataset("gear")
    nb = execute("gear.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "Test accuracy:" in text
    for name in ("axes", "boots", "tents", "pulleys"):
        assert f"| {name} |" in text
    assert (tmp_path / "runs" / "gear" / "model.safetensors").is_file()
    # a fresh work folder has no outdoor benchmark: the notebook says how to build it
    assert f"no outdoor benchmark at {tmp_path / 'outdoor64'}" in text


def test_gear_notebook_evaluates_the_saved_model_at_its_own_input_size(tmp_path):
    """After `make demo` the saved model is EfficientNet-Lite0 at 144 px, not the from-scratch 64 px
    net: the notebook packs at the size the model file records (evaluate refuses a 64 px pack)."""
    require_dataset("gear")
    from gearsight import workflow
    from gearsight.data.datasets import resolve_dataset

    workflow.pack_source(resolve_dataset("gear") / "split.csv", tmp_path / "gear32", size=32, progress=False)
    workflow.train_packed(tmp_path / "gear32", tmp_path / "runs" / "gear", progress=False, threads=0)
    text = outputs_text(execute("gear.ipynb", tmp_path))
    assert "loading the saved model" in text and "gearnet, 32 px" in text
    assert "Test accuracy:" in text and "| pulleys |" in text
    assert not (tmp_path / "gear64").exists()  # nothing packed at the from-scratch default


def test_cifar10_notebook_trains_from_ctf_and_from_a_map_file(tmp_path):
    require_dataset("cifar10")
    nb = execute("cifar10.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "CTF path: trained" in text and "map-file path: trained" in text
    assert "precision" in text and "recall" in text  # the classification report
    assert text.count("test accuracy") == 2


def test_coco_notebook_compares_whole_images_with_object_crops(tmp_path):
    require_dataset("coco128")
    nb = execute("coco.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "(a) whole images:" in text and "(b) object crops:" in text
    assert "photos in more than one split: 0" in text  # crops split by photo, no leak into test
    assert text.count("always guessing the largest class") == 2
    for line in WHY_LINES:  # "why do you get bad results?": four figures, one plot each
        assert re.search(line, text), line
    assert len(why_plots(nb)) == 4


def test_detection_notebook_trains_evaluates_and_draws(tmp_path):
    require_dataset("bccd")
    nb = execute("detection.ipynb", tmp_path)  # a fresh work folder: the one-minute toy run, not the bench model
    text = outputs_text(nb)
    assert "AP50" in text and "class" in text
    for name in ("RBC", "WBC", "Platelets"):
        assert name in text
    images = [out for cell in nb.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= 2  # the box-size histogram and ground truth vs prediction


TF_PYTHON = REPO / ".venv-tf" / "bin" / "python"


def tensorflow_notebook_figures(nb, n_test: int) -> dict:
    """The TensorFlow notebook's figures, parsed from its outputs and checked against each other."""
    text = outputs_text(nb)
    tf = re.search(r"test accuracy ([\d.]+)% \((\d+)/(\d+) correct\) after (\d+) epochs", text)
    tf_acc, correct, n = float(tf.group(1)) / 100, int(tf.group(2)), int(tf.group(3))
    assert n == n_test and tf_acc == pytest.approx(correct / n, abs=5e-5)
    # sklearn's confusion matrices (TensorFlow's, then PyTorch's): 10 x 10, summing to the test count
    matrices = re.findall(r"^\[\[.*?\]\]$", text, re.M | re.S)
    assert len(matrices) == 2
    for m in matrices:
        rows = [[int(v) for v in row.split()] for row in re.findall(r"\[([\d\s]+)\]", m)]
        assert len(rows) == 10 and all(len(r) == 10 for r in rows) and sum(map(sum, rows)) == n
    tf_diag = sum(int(row.split()[i]) for i, row in enumerate(re.findall(r"\[([\d\s]+)\]", matrices[0])))
    assert tf_diag == correct
    reports = [float(a) for a in re.findall(r"^\s+accuracy\s+([\d.]+)\s+\d+$", text, re.M)]
    side = dict(re.findall(r"^(TensorFlow|PyTorch) \S+(?: \(gearsight\))?\s+\d+\s+\d+\s+\d+\s+([\d.]+)%$", text, re.M))
    torch_acc = float(side["PyTorch"]) / 100
    assert float(side["TensorFlow"]) / 100 == pytest.approx(tf_acc, abs=5e-5)
    assert reports == [pytest.approx(tf_acc, abs=5e-5), pytest.approx(torch_acc, abs=5e-5)]
    served = re.findall(r"^test_\d+\.png\s+true (\w+)\s+served (\w+)\s+([\d.]+)", text, re.M)
    assert len(served) == 8 and "served: tensorflow:cifar10_tutorial [3, 32, 32]" in text
    assert all(0.1 <= float(p) <= 1 for _, _, p in served)  # the top probability of 10 classes
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1  # TensorFlow's confusion matrix
    return {"tf": tf_acc, "torch": torch_acc}


def test_tensorflow_notebook_trains_both_frameworks_and_serves_the_tf_model(tmp_path, monkeypatch):
    require_dataset("cifar10")
    if not TF_PYTHON.is_file():
        pytest.skip(f"{TF_PYTHON} is absent: `make tf` builds the TensorFlow venv (`make test` does)")
    monkeypatch.setenv("GEARSIGHT_NB_SMALL", "1")  # 2,000 train / 500 test images, 2 epochs
    acc = tensorflow_notebook_figures(execute("tensorflow.ipynb", tmp_path), n_test=500)
    assert acc["tf"] >= 0.15 and acc["torch"] >= 0.15, acc  # 10 classes: chance 0.1 (+-0.013 on 500 images)


def test_committed_tensorflow_notebook_shows_both_frameworks_and_the_served_model():
    acc = tensorflow_notebook_figures(nbformat.read(REPO / "notebooks" / "tensorflow.ipynb", as_version=4), n_test=1000)
    assert acc["tf"] >= 0.2 and acc["torch"] >= 0.2, acc  # 5,000 images, 3 epochs; chance 0.1 (+-0.01 on 1,000)


# -- The committed notebooks themselves (`make notebooks`): what GitHub shows, checked without rerunning.

COMMITTED = sorted((REPO / "notebooks").glob("*.ipynb"))


def cell_text(cell) -> str:
    return outputs_text(nbformat.from_dict({"cells": [cell]}))


def code_cells(name: str) -> list:
    return [c for c in nbformat.read(REPO / "notebooks" / name, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_notebook_holds_the_outputs_of_one_run(path):
    code = code_cells(path.name)
    # One run top to bottom, nothing edited since: execution counts 1..N (rerun `make notebooks`).
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: run `make notebooks`"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


# detection.ipynb keeps its run with the 57-minute BCCD model (work/bench_bccd, commit 5654102), made
# before the machine cell existed; rerun without that model it shows the one-minute toy run instead.
@pytest.mark.parametrize("name", ["gear.ipynb", "cifar10.ipynb", "coco.ipynb", "tensorflow.ipynb"])
def test_committed_notebook_says_where_and_when_it_ran(name):
    first = cell_text(code_cells(name)[0])
    assert re.match(r"executed \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+, \d+ cores", first), first


def test_committed_gear_notebook_shows_test_accuracy_and_per_class_table():
    text = outputs_text(nbformat.read(REPO / "notebooks" / "gear.ipynb", as_version=4))
    accuracy = float(re.search(r"Test accuracy: ([\d.]+)%", text).group(1))
    assert accuracy >= 85
    rows = re.findall(r"^\| (\w+) \| (\d+) \| ([\d.]+)% \|", text, re.M)
    assert len(rows) >= 10 and "pulleys" in {r[0] for r in rows}
    n = int(re.search(r"\((\d+) test images", text).group(1))
    assert sum(int(r[1]) for r in rows) == n
    assert sum(int(r[1]) * float(r[2]) for r in rows) / n == pytest.approx(accuracy, abs=0.1)
    # the committed run is make demo's model: it shows the outdoor benchmark too
    assert float(re.search(r"Outdoor accuracy: ([\d.]+)%", text).group(1)) >= 50


def test_committed_coco_notebook_text_states_what_its_outputs_show():
    nb = nbformat.read(REPO / "notebooks" / "coco.ipynb", as_version=4)
    text = outputs_text(nb)
    assert "photos in more than one split: 0" in text
    claims = re.findall(r"\d+\.\d%", nb.cells[-1].source)
    assert len(claims) >= 4
    for figure in claims:
        assert figure in text, f"the markdown says {figure}, no stored output does"


# The coco notebook's answer to "why do you get bad results?": one line of figures and one plot per reason.
WHY_LINES = {
    "multi": r"multi-label: (\d+) of (\d+) photos \(([\d.]+)%\) hold 2 or more categories \(median ([\d.]+), up to "
             r"(\d+)\); the one label of \(a\) names ([\d.]+)% of the (\d+) objects",
    "imbalance": r"imbalance: (\w+) is (\d+) of (\d+) crops \(([\d.]+)%\) and the dominant label of (\d+) of (\d+) "
                 r"photos \(([\d.]+)%\); (\d+) of (\d+) categories have under 10 crops \(median category: ([\d.]+) crops\)",
    "tiny": r"tiny objects: ([\d.]+)% of the (\d+) boxes are under 32x32 px of area \(COCO's 'small'\), ([\d.]+)% have "
            r"a side under 16 px \(no crop\); median box (\d+) px, and ([\d.]+)% of the crops are smaller than 64x64 px",
    "crowded": r"crowded scenes: median ([\d.]+) objects per photo, (\d+) of (\d+) photos \(([\d.]+)%\) hold 10 or "
               r"more; ([\d.]+)% of the crops have 25% or more of their area under another object's box",
}.values()


def why_plots(nb) -> list:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(("# 1.", "# 2.", "# 3.", "# 4."))]
    return [o for c in cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def test_committed_coco_notebook_why_figures_are_the_data_s():
    """Each printed figure recomputed here from coco128's json (raw annotations, not gearsight's reader)."""
    import json

    import numpy as np

    coco = require_dataset("coco128")
    nb = nbformat.read(REPO / "notebooks" / "coco.ipynb", as_version=4)
    text = outputs_text(nb)
    multi, imbalance, tiny, crowded = (re.search(line, text).groups() for line in WHY_LINES)
    assert len(why_plots(nb)) == 4

    raw = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in raw["categories"]}
    by_photo: dict[int, list] = {}
    for a in raw["annotations"]:
        if not a["iscrowd"]:
            by_photo.setdefault(a["image_id"], []).append(a)
    n = len(by_photo)
    cats = [len({a["category_id"] for a in anns}) for anns in by_photo.values()]
    objects = [len(anns) for anns in by_photo.values()]
    boxes = [a["bbox"] for anns in by_photo.values() for a in anns]
    side = np.sqrt([w * h for _, _, w, h in boxes])
    cropped = [min(round(x + w) - round(x), round(y + h) - round(y)) >= 16 for x, y, w, h in boxes]
    crops: dict[str, int] = {}
    for a, ok in zip([a for anns in by_photo.values() for a in anns], cropped):
        if ok:
            crops[names[a["category_id"]]] = crops.get(names[a["category_id"]], 0) + 1

    assert (int(multi[0]), int(multi[1]), int(multi[4]), int(multi[6])) == (sum(c >= 2 for c in cats), n, max(cats), len(boxes))
    assert float(multi[2]) == round(100 * sum(c >= 2 for c in cats) / n, 1)
    top = max(crops, key=crops.get)
    assert (imbalance[0], int(imbalance[1]), int(imbalance[2])) == (top, crops[top], sum(crops.values()))
    assert (int(imbalance[7]), int(imbalance[8])) == (sum(v < 10 for v in crops.values()), len(crops))
    assert float(tiny[0]) == round(100 * float(np.mean(side < 32)), 1) and int(tiny[1]) == len(boxes)
    assert float(tiny[2]) == round(100 * (1 - float(np.mean(cropped))), 1) and int(tiny[3]) == round(float(np.median(side)))
    assert float(crowded[0]) == float(np.median(objects)) and int(crowded[1]) == sum(o >= 10 for o in objects)
    # the shares that need box geometry: equal to coco_obstacles', which tests/test_coverage_coco_split.py checks by hand
    from gearsight.detect.classify import coco_obstacles

    why = coco_obstacles(coco / "annotations" / "instances_train2017.json", coco / "train2017")
    named = (why["dominant_share"] * why["objects"]).sum() / why["objects"].sum()
    assert float(multi[5]) == round(100 * float(named), 1)
    assert float(crowded[4]) == round(100 * float((why["covered"][why["cropped"]] >= 0.25).mean()), 1)
