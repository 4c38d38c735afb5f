"""The web demo in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright against a tiny model
served on 127.0.0.1. Upload a photo and see the dish and kcal; ask about it; classify zero-shot; draw from a text.

Needs `pip install playwright gradio` and `apt-get install -y chromium` (no `playwright install`: the system browser
is used); skipped when any is missing. Screenshots go to the test's tmp folder, and also to $RUDOLPH_FT_SCREENSHOTS
when set (e.g. to keep them as CI artifacts).
"""

import importlib.util
import os
import shutil
import socket
from pathlib import Path

import pytest
from conftest import ASSETS

pytest.importorskip("gradio", reason="the web demo needs gradio: pip install gradio")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs: pip install playwright")

CHROMIUM = os.environ.get("RUDOLPH_FT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium executable: apt-get install -y chromium (or set RUDOLPH_FT_CHROMIUM)",
                allow_module_level=True)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHOTOS = sorted((ASSETS / "images").glob("*.jpg"))[:4]
PHOTO = PHOTOS[0]
TIMEOUT_MS = 90_000

_spec = importlib.util.spec_from_file_location("pipeline_bundle", ASSETS / "pipelines" / "bundle.py")
bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle)
one_thread = bundle.one_thread  # autouse: tiny models, one thread


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    """The demo over the scripted tiny model (it captions every photo as borscht), served on 127.0.0.1."""
    from rudolph_ft.app import build_demo

    demo = build_demo(bundle.tiny_components(seed=1, scripted=bundle.SCRIPT), title="rudolph-ft browser test",
                      examples=PHOTOS)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def page(tmp_path):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        sync_api.expect.set_options(timeout=TIMEOUT_MS)
        yield context.new_page()
        context.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=path, full_page=True)
    if os.environ.get("RUDOLPH_FT_SCREENSHOTS"):
        keep = Path(os.environ["RUDOLPH_FT_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, keep / name)
    return path


def test_example_photo_predicts_in_one_click(server_url, page, tmp_path):
    page.goto(server_url, wait_until="networkidle")
    examples = page.locator("#examples img")
    sync_api.expect(examples).to_have_count(len(PHOTOS))  # the page opens with the example photos
    examples.first.click()
    sync_api.expect(page.locator("#nutrition-headline")).to_contain_text("борщ — 70 kcal", timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#captions")).to_contain_text(bundle.SCRIPT)  # the evidence
    assert page.locator("#photo img").count() >= 1  # the clicked photo is shown as the input
    screenshot(page, tmp_path, "example_clicked.png")


def test_upload_photo_classify_and_draw_in_chromium(server_url, page, tmp_path):
    page.goto(server_url, wait_until="networkidle")
    assert "127.0.0.1" in page.url

    page.locator("#photo input[type=file]").set_input_files(PHOTO)  # uploading runs the prediction
    sync_api.expect(page.locator("#nutrition-headline")).to_contain_text("борщ — 70 kcal", timeout=TIMEOUT_MS)
    sync_api.expect(page.locator("#captions")).to_contain_text(bundle.SCRIPT)  # the evidence
    assert screenshot(page, tmp_path, "nutrition.png").stat().st_size > 10_000

    page.locator("#question textarea").fill("какое это блюдо?")
    page.get_by_role("button", name="Ask", exact=True).click()
    sync_api.expect(page.locator("#answer")).to_contain_text("борщ", timeout=TIMEOUT_MS)  # the scripted answer
    screenshot(page, tmp_path, "ask.png")

    page.get_by_role("tab", name="Zero-shot").click()
    page.locator("#zs-photo input[type=file]").set_input_files(PHOTO)
    page.locator("#zs-classes textarea").fill("плов, борщ, шаурма")
    page.get_by_role("button", name="Classify").click()
    sync_api.expect(page.locator("#zs-label")).to_contain_text("борщ", timeout=TIMEOUT_MS)
    screenshot(page, tmp_path, "zero_shot.png")

    page.get_by_role("tab", name="Text to image").click()
    page.get_by_role("button", name="Draw").click()
    page.locator("#t2i-gallery img").first.wait_for()
    assert page.locator("#t2i-gallery img").count() >= 1
    screenshot(page, tmp_path, "text_to_image.png")
