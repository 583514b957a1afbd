"""End-to-end: the web page in headless Chromium (Debian's package), driven by Playwright.

Screenshots go to the test's temporary folder, or to $IMRET_SCREENSHOTS when set.
"""
import os
import shutil
import socket
import threading
import time

import pytest

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium package")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from imret.index.store import Index  # noqa: E402
from imret.presets import get_preset  # noqa: E402
from imret.service.app import ServiceConfig, create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    photos = root / "photos"
    photos.mkdir()
    for p in photoset.db[:30]:
        shutil.copy(p, photos)
    index, _ = Index.build([photos], get_preset("fast"))
    path = str(root / "web.index")
    index.save(path)
    yield from _serve(create_app(ServiceConfig(index_path=path), index=index))


@pytest.fixture(scope="module")
def token_server(photoset, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-token")
    photos = root / "photos"
    photos.mkdir()
    for p in [p for p in photoset.db if "distractor" in p][:3]:
        shutil.copy(p, photos)
    index, _ = Index.build([photos], get_preset("fast"))
    path = str(root / "rw.index")
    index.save(path)
    for url in _serve(create_app(ServiceConfig(index_path=path, token="page-token"), index=index)):
        yield url, "page-token"


@pytest.fixture(scope="module")
def local_server(local_index):
    path = local_index[0]
    yield from _serve(create_app(ServiceConfig(index_path=path), index=Index.load(path)))


def _serve(app):
    """The app on a free loopback port, in a thread, for as long as the generator runs."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


def _shots(tmp_path):
    d = os.environ.get("IMRET_SCREENSHOTS") or str(tmp_path)
    os.makedirs(d, exist_ok=True)
    return d


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
                         ids=["laptop", "phone"])
def test_upload_a_photo_and_see_the_right_result_first(server, browser, photoset, tmp_path, viewport):
    page = browser.new_page(viewport=viewport)
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('status').textContent.includes('images')")
    assert "30 images" in page.text_content("#status")
    query = next(q for q in photoset.queries if os.path.basename(q) == "coffee__rotate.jpg")
    page.set_input_files("#file", query)
    page.wait_for_selector(".results li")
    names = page.locator(".results .name").all_text_contents()
    assert names[0] == "coffee.png"
    assert len(names) == 20
    assert "query" in page.text_content("#status")
    name = viewport["width"]
    page.screenshot(path=os.path.join(_shots(tmp_path), f"results-{name}.png"), full_page=False)
    page.click(".results li >> nth=0")
    page.wait_for_selector("#detail[open]")
    page.wait_for_function("document.getElementById('detail-result').naturalWidth > 0")
    assert "coffee.png" in page.text_content("#detail-title")
    page.screenshot(path=os.path.join(_shots(tmp_path), f"detail-{name}.png"))
    page.close()


def test_the_status_line_says_whose_head_weights_the_index_holds(server, browser):
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('status').textContent.includes('images')")
    assert "head" not in page.text_content("#status")  # 'fast' is GeM: nothing learnt
    info = {"images": 1234, "preset": "lite0-dagf", "dim": 1280}
    texts = {w: page.evaluate("info => statusText(info)", {**info, "head_weights": w})
             for w in ("shipped", "own", None)}
    page.close()
    assert texts["shipped"] == "1,234 images · preset lite0-dagf · 1280-d · head: the preset's trained weights"
    assert texts["own"] == ("1,234 images · preset lite0-dagf · 1280-d · head: weights of its own "
                            "(--adapt, --checkpoint or an earlier release)")
    assert texts[None] == "1,234 images · preset lite0-dagf · 1280-d"


def test_drawing_a_box_searches_inside_it(server, browser, photoset):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server + "/")
    page.set_input_files("#file", os.path.join(photoset.root, "queries", "astronaut__paste.jpg"))
    page.wait_for_selector(".results li")
    box = page.locator("#preview").bounding_box()
    # drag over the pasted astronaut's neighbourhood: the middle of the canvas
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8, steps=5)
    with page.expect_response(lambda r: r.url.endswith("/search")) as resp:
        page.mouse.up()
    assert resp.value.json()["query"]["bbox"] is not None
    assert not page.is_disabled("#clear-box")
    page.close()


def test_a_non_image_shows_a_message_and_clears_the_old_results(server, browser, photoset, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file", os.path.join(photoset.root, "queries", "coffee__rotate.jpg"))
    page.wait_for_selector(".results li")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("document.getElementById('message').textContent.includes('not an image')")
    assert "notes.jpg" in page.text_content("#message")
    assert page.locator(".results li").count() == 0
    page.close()


def test_a_stale_answer_never_replaces_the_latest(server, browser, photoset):
    """The first search's answer is held back until the second one has been shown: the page
    must keep the second's results."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    held = []

    def hold_first(route):
        if not held:
            held.append(route)  # answered later, after the newer search
        else:
            route.continue_()

    page.route("**/search", hold_first)
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('status').textContent.includes('images')")
    page.set_input_files("#file", os.path.join(photoset.root, "queries", "coffee__rotate.jpg"))
    page.wait_for_function("document.getElementById('results').children.length === 0")
    while not held:
        page.wait_for_timeout(50)
    page.set_input_files("#file", os.path.join(photoset.root, "queries", "astronaut__crop.jpg"))
    page.wait_for_selector(".results li")
    assert page.locator(".results .name").first.text_content() == "astronaut.png"
    try:
        held[0].continue_()  # the aborted request may already be gone
    except Exception:
        pass
    page.wait_for_timeout(1500)
    assert page.locator(".results .name").first.text_content() == "astronaut.png"
    page.close()


def test_no_good_match_is_said_and_non_matches_are_greyed(server, browser, photoset):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('min-score').value === '0.75'")
    page.fill("#min-score", "0.999")
    page.set_input_files("#file", os.path.join(photoset.root, "queries", "coffee__occlude.jpg"))
    page.wait_for_selector(".results li")
    page.wait_for_function("!document.getElementById('notice').hidden")
    assert "no good match" in page.text_content("#notice")
    assert page.locator(".results li.no-match").count() == page.locator(".results li").count()
    page.close()


def test_add_and_remove_photos_with_the_token(token_server, browser, photoset):
    url, token = token_server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(url + "/")
    page.wait_for_function("!document.getElementById('manage').hidden")
    page.click("#manage summary")
    rocket = next(p for p in photoset.db if os.path.basename(p).startswith("rocket."))
    page.fill("#token", "wrong")
    page.set_input_files("#add-files", rocket)
    page.wait_for_function("document.getElementById('manage-message').textContent.startsWith('not added')")
    assert "wrong token" in page.text_content("#manage-message")
    page.fill("#token", token)
    page.set_input_files("#add-files", rocket)
    page.wait_for_function("document.getElementById('manage-message').textContent.startsWith('added 1')")
    assert "4 images in the index" in page.text_content("#manage-message")
    page.set_input_files("#file", rocket)
    page.wait_for_selector(".results li .remove")
    assert page.locator(".results .name").first.text_content().endswith("rocket.png")
    page.click(".results li >> nth=0 >> .remove")
    page.wait_for_function("document.getElementById('manage-message').textContent.startsWith('removed')")
    assert "3 images in the index" in page.text_content("#manage-message")
    page.close()


def test_verified_results_show_inliers_and_their_matches(local_server, browser, photoset, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(local_server + "/")
    page.wait_for_function("[...document.getElementById('rerank').options].some(o => o.value === 'sv')")
    page.select_option("#rerank", "sv")
    page.set_input_files("#file", os.path.join(photoset.root, "queries", "coffee__occlude.jpg"))
    page.wait_for_selector(".results li .inliers")
    assert page.locator(".results .name").first.text_content() == "coffee.png"
    inliers = int(page.locator(".results .inliers").first.text_content().split()[0])
    assert inliers >= 20
    # green (verified) only where verification verified; the others are plain
    marks = page.locator(".results .inliers").evaluate_all(
        "els => els.map(e => [parseInt(e.textContent), e.classList.contains('verified')])")
    assert marks[0][1] and all(v == (n >= 12) for n, v in marks)
    assert "cosine" in page.locator(".results .cosine").first.text_content()
    page.click(".results li >> nth=0")
    page.wait_for_selector("#detail-extra canvas.matches")
    assert page.get_attribute("#detail-extra canvas.matches", "aria-label") == f"{inliers} inlier matches"
    # the picture is drawn: its pixels are not all one colour
    spread = page.evaluate("""() => { const c = document.querySelector('#detail-extra canvas.matches');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lo = 255, hi = 0; for (let i = 1; i < d.length; i += 4 * 97) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
        return hi - lo; }""")
    assert spread > 50
    # the match drawing is in view when the detail opens, without scrolling
    rect = page.evaluate("""() => { const r = document.querySelector('#detail-extra canvas.matches')
        .getBoundingClientRect(); return [r.top, r.bottom, window.innerHeight]; }""")
    assert 0 <= rect[0] and rect[1] <= rect[2], rect
    assert "query (left)" in page.text_content("#detail-extra figcaption")
    page.screenshot(path=os.path.join(_shots(tmp_path), "matches.png"))
    page.close()
