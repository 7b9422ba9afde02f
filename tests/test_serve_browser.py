"""The web page at `/`, driven in headless Chromium (Debian's) by Playwright: pick, drop, see predictions."""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from gearsight.export import export_onnx
from test_serve import CLASSES, make_model_file, make_photo, reference, running_server

CHROMIUM = os.environ.get("GEARSIGHT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("browser test needs Debian's chromium: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test needs playwright (see requirements.lock)")

# Flags for a closed network and a root user: no sandbox, no GPU, no calls home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("page")
    model_path = make_model_file(d / "gear.safetensors")
    onnx_path = export_onnx(model_path, d / "gear.onnx")
    from gearsight.modelfile import load_model

    model, spec = load_model(model_path)
    photos = [make_photo(d / "first.jpg", (180, 120), 5), make_photo(d / "second.png", (90, 150), 6, "PNG")]
    (d / "notes.txt").write_text("not a picture")
    expected = {p.name: reference(model, spec, p.read_bytes()) for p in photos}
    with running_server(onnx_path) as (url, _):
        yield {"url": url, "photos": photos, "expected": expected, "dir": d}


@pytest.fixture(scope="module")
def page(site):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(site["url"] + "/")
        yield page
        browser.close()


def shown_predictions(page) -> list[tuple[str, float]]:
    page.wait_for_function("document.querySelectorAll('#predictions li').length > 0")
    rows = page.locator("#predictions li")
    return [(rows.nth(i).locator(".label").inner_text(), float(rows.nth(i).locator(".prob").inner_text().rstrip("%")))
            for i in range(rows.count())]


def assert_shows(page, expected: dict[str, float]) -> None:
    shown = shown_predictions(page)
    assert [label for label, _ in shown] == sorted(expected, key=expected.get, reverse=True)
    for label, percent in shown:
        assert abs(percent - 100 * expected[label]) < 0.06, (label, percent, expected[label])


def test_page_names_the_model(page):
    page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
    assert f"{len(CLASSES)} classes" in page.locator("#model").inner_text()


def test_pick_a_file_and_see_its_predictions(page, site):
    photo = site["photos"][0]
    page.set_input_files("#file", str(photo))
    assert_shows(page, site["expected"][photo.name])
    assert page.evaluate("document.getElementById('preview').complete && document.getElementById('preview').naturalWidth") == 180
    page.screenshot(path=str(site["dir"] / "page.png"))


def test_drop_a_file_and_see_its_predictions(page, site):
    photo = site["photos"][1]
    page.evaluate("""([name, b64]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: "image/png" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true }));
    }""", [photo.name, base64.b64encode(photo.read_bytes()).decode()])
    page.wait_for_function(f"document.getElementById('status').textContent.startsWith('{photo.name}:')")
    assert_shows(page, site["expected"][photo.name])


def test_a_non_image_shows_the_servers_error(page, site):
    page.set_input_files("#file", str(site["dir"] / "notes.txt"))
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "notes.txt: not an image" in page.locator("#error").inner_text()


def test_a_model_with_fewer_than_five_classes_and_no_broken_image_before_a_pick(site, page):
    """Issue 11 finding 10: the page asked top_k=5 (a 400 for a 3-class model) and showed a broken
    image box before any image was chosen."""
    from gearsight.modelfile import load_model

    d = site["dir"]
    three = ["axes", "boots", "rope"]
    model_path = make_model_file(d / "three.safetensors", classes=three)
    model, spec = load_model(model_path)
    photo = site["photos"][0]
    expected = reference(model, spec, photo.read_bytes())
    with running_server(export_onnx(model_path, d / "three.onnx")) as (url, _):
        page = page.context.browser.new_page(viewport={"width": 1200, "height": 900})  # the module's Chromium
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
        assert not page.locator("#preview").is_visible() and not page.locator("#result").is_visible()
        page.screenshot(path=str(d / "before-pick.png"))
        page.set_input_files("#file", str(photo))
        assert_shows(page, expected)
        assert page.locator("#error").inner_text() == ""
        page.close()
