"""The web app in a real browser: `changeagent serve` in a subprocess, driven by headless Chromium (Debian's
`chromium` through Playwright's `executable_path`). Uploads two real LEVIR-CD tiles and checks the page
against the mask `changeagent predict` writes for the same pair. Without a browser the test skips on a
developer machine and FAILS in CI (CI=true), where `.ci/run` installs chromium.

Screenshots go to the test's tmp folder, and to $CHANGEAGENT_SCREENSHOT_DIR when set (docs/img/ for
docs/app.md: `CHANGEAGENT_SCREENSHOT_DIR=docs/img pytest tests/app/test_app_web.py`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_helpers import LEVIR, free_port, start, stop
from PIL import Image
from scipy import ndimage

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
STEM = "test_102_0512_0000"  # a LEVIR-CD tile with building changes


def browser_or_fail():
    """Playwright's sync API and the chromium binary, or skip (developer machine) / fail (CI)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    exe = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if sync_playwright is None or exe is None:
        why = "no browser: install Debian's chromium (apt-get install chromium) and playwright (pip)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    return sync_playwright, exe


def shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    dest = os.environ.get("CHANGEAGENT_SCREENSHOT_DIR")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(dest) / name)


@pytest.fixture(scope="module")
def web(app_ckpt, root, index, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    port = free_port()
    proc = start(["serve", "-k", str(app_ckpt), "--root", str(root), "--index", str(index), "--out", str(tmp / "out"),
                  "--port", str(port), "--max-len", "6", "--threads", "1"], port, tmp / "log.txt", timeout=180)
    yield f"http://127.0.0.1:{port}/", tmp
    stop(proc)


def table_rows(page, elem: str) -> list[list[str]]:
    """The cells of a gr.Dataframe as shown (Gradio 6 renders its rows as ARIA grid rows)."""
    rows = page.locator(f"#{elem} [role=row].virtual-row")
    return [[c.strip() for c in rows.nth(i).locator("[role=gridcell]").all_inner_texts()] for i in range(rows.count())]


def test_browser_upload_overlay_caption_counts(web, app_ckpt, root, tmp_path, run_cli):
    sync_playwright, exe = browser_or_fail()
    url, tmp = web
    # the reference: what `changeagent predict` writes for the same pair
    code, _, err = run_cli("predict", "-k", app_ckpt, LEVIR / "A" / f"{STEM}.png", LEVIR / "B" / f"{STEM}.png",
                           "-o", tmp_path / "ref", "--max-len", "6")
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "ref" / f"{STEM}_mask.png"))
    rec = json.loads((tmp_path / "ref" / f"{STEM}.json").read_text())
    want = []
    for i, name in enumerate(["road", "building"], start=1):
        lab, n = ndimage.label(mask == i, structure=np.ones((3, 3), bool))
        objects = int((np.bincount(lab.ravel())[1:] >= 16).sum()) if n else 0
        want.append([name, 100 * float((mask == i).mean()), int((mask == i).sum()), objects])
    assert sum(w[3] for w in want) > 0  # the comparison below compares real counts

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1300})
        page.goto(url, wait_until="load", timeout=90_000)
        page.wait_for_selector("#run", timeout=90_000)
        page.locator("#upload_a input[type=file]").set_input_files(str(LEVIR / "A" / f"{STEM}.png"))
        page.locator("#upload_b input[type=file]").set_input_files(str(LEVIR / "B" / f"{STEM}.png"))
        page.wait_for_selector("#upload_b >> text=.png", timeout=30_000)
        page.locator("#run").click()
        page.wait_for_function("() => { const t = document.querySelector('#caption textarea');"
                               " return t && t.value.length > 0; }", timeout=120_000)
        assert page.locator("#caption textarea").input_value() == rec["caption"]
        overlay = page.locator("#overlay img")
        overlay.wait_for(timeout=30_000)
        assert overlay.evaluate("im => im.complete && im.naturalWidth") == 256
        assert page.locator("#compare img").count() == 2  # before / after
        got = table_rows(page, "counts")
        assert [r[0] for r in got] == [w[0] for w in want]
        for g, w in zip(got, want):
            assert float(g[1]) == pytest.approx(w[1], abs=1e-3) and int(g[2]) == w[2] and int(g[3]) == w[3], (g, w)
        for name in ("pair_mask.png", "pair.json"):
            page.locator(f"#downloads [aria-label='{name}']").wait_for(timeout=30_000)
        # the downloaded mask is the mask predict wrote
        href = page.locator("#downloads [download='pair_mask.png']").get_attribute("href")
        body = page.request.get(href).body()
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), mask)
        shot(page, tmp_path, "app_web.png")

        # the opacity control re-tints the overlay
        before = overlay.get_attribute("src")
        page.locator("#opacity input[type=number]").fill("1")
        page.locator("#opacity input[type=number]").press("Enter")
        page.wait_for_function("s => { const im = document.querySelector('#overlay img'); return im && im.src !== s; }",
                               arg=before, timeout=30_000)

        # a corrupt upload: a message in the page, and the app keeps working
        page.locator("#upload_a button[aria-label='Clear']").first.click()
        page.locator("#upload_a input[type=file]").set_input_files(str(root / "bad.png"))
        page.wait_for_selector("#upload_a >> text=bad.png", timeout=30_000)
        page.locator("#run").click()
        page.get_by_text("cannot read image A (the upload)", exact=False).first.wait_for(timeout=60_000)
        assert page.get_by_text("Traceback").count() == 0
        assert page.get_by_text(str(tmp)).count() == 0  # no server-side path of the upload is shown
        if page.locator(".toast-close").count():  # dismiss the message (it also fades by itself)
            page.locator(".toast-close").first.click()

        # search over the index: thumbnails and the results table
        page.get_by_role("tab", name="Search").click()
        page.locator("#search_text textarea").fill("a new building")
        page.locator("#search_run").click()
        page.locator("#search_gallery img").first.wait_for(timeout=60_000)
        rows = table_rows(page, "search_table")
        assert [r[0] for r in rows] == [str(i) for i in range(1, 9)]
        shot(page, tmp_path, "app_search.png")
        browser.close()


def test_token_login(app_ckpt, tmp_path):
    """With an access token the app answers nothing but its login page until the token is given."""
    import httpx2
    from app_helpers import OPTIONS

    from changeagent.app.service import ChangeService
    from changeagent.app.web import launch

    svc = ChangeService.from_checkpoint(app_ckpt, roots=[], out=tmp_path / "out", **OPTIONS)
    port = free_port()
    demo = launch(svc, port=port, token="s3cret-token", block=False)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx2.Client(base_url=base, timeout=30) as c:
            assert c.get("/config").status_code == 401
            assert c.post("/login", data={"username": "me", "password": "wrong"}).status_code == 400
            assert c.post("/login", data={"username": "me", "password": "s3cret-token"}).status_code == 200
            assert c.get("/config").status_code == 200
    finally:
        demo.close()
