"""The auditioner in headless Chromium against a running grid service: a real grid loads with the right layout,
a click plays the right file, a drag builds the path in order, the path sequence is gapless, shift/ctrl-click edit
the path, export gives a .npy of the right shape, and a screenshot is kept under test-artifacts/."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support import chromium
from support.chromium import headless_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(not chromium.available(), reason=chromium.MISSING)


@pytest.fixture(scope="module")
def tall_grid(services):
    """A second grid, 3 columns x 6 rows, for the side-by-side view."""
    from smf.grid.client import GridClient

    with GridClient(f"127.0.0.1:{services.grid_port}", token=services.token) as client:
        op = client.wait(client.create_grid("tiny", services.corners, d0=3, d1=6, pm=False).id, timeout=300)
    return op.result_uris[0].split(services.store.uri + "/", 1)[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def _open(driver, url):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return window.__smf && window.__smf.ready"))
    assert driver.execute_script("return window.__smf.errors") == []


def _cell(driver, i, j, panel=0):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, ".panel")[panel].find_element(
        By.CSS_SELECTOR, f'.cell[data-i="{i}"][data-j="{j}"]'
    )


def _wait_played(driver, count):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return window.__smf.played.length") >= count)
    return driver.execute_script("return window.__smf.played")


def _path(driver, panel=0):
    return driver.execute_script(f"return document.querySelectorAll('.panel')[{panel}].dataset.path")


def test_page_plays_draws_and_exports(services, small_grid, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    _open(d, f"{services.http.url}/{small_grid}?token={services.token}")
    assert "token=" not in d.current_url  # moved into a cookie, out of the address bar

    # layout: d0 = 5 columns across, d1 = 3 rows down (the original swapped width and height)
    cells = d.find_elements(By.CSS_SELECTOR, ".panel .cell")
    assert len(cells) == 15
    rects = {(int(c.get_attribute("data-i")), int(c.get_attribute("data-j"))): c.rect for c in cells}
    assert len({round(rects[(0, j)]["x"]) for j in range(5)}) == 5
    assert all(rects[(0, j)]["x"] < rects[(0, j + 1)]["x"] for j in range(4))
    assert all(rects[(i, 0)]["y"] < rects[(i + 1, 0)]["y"] for i in range(2))
    assert all(abs(rects[(i, 0)]["y"] - rects[(i, 4)]["y"]) < 1 for i in range(3))
    grid = d.find_element(By.CSS_SELECTOR, ".panel .grid").rect
    assert grid["width"] > grid["height"] * 1.5  # 5 x 64 by 3 x 48 px tiles
    colours = {c.value_of_css_property("background-color") for c in cells}
    assert len(colours) >= 14  # coloured by position (the centre of an odd grid is grey)

    # click plays the right file, through Web Audio
    _cell(d, 1, 3).click()
    played = _wait_played(d, 1)
    assert played[-1]["file"] == "cells/grid_d1.1_d0.3_v.0.wav" and (played[-1]["i"], played[-1]["j"]) == (1, 3)
    assert d.execute_script("return document.body.dataset.lastPlayed") == "cells/grid_d1.1_d0.3_v.0.wav"

    # hover read-out of dim0 / dim1
    ActionChains(d).move_to_element(_cell(d, 2, 3)).perform()
    readout = d.find_element(By.CSS_SELECTOR, ".panel .readout").text
    assert "dim0 0.750" in readout and "dim1 1.000" in readout

    # drag builds an ordered path
    order = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]
    chain = ActionChains(d).click_and_hold(_cell(d, *order[0]))
    for ij in order[1:]:
        chain = chain.move_to_element(_cell(d, *ij))
    chain.release().perform()
    assert _path(d) == " ".join(f"{i},{j}" for i, j in order)
    assert len(d.execute_script("return window.__smf.played")) == 1  # drawing does not play

    # clicking a path cell plays the path as a gapless sequence, one clip per clip length
    _cell(d, 0, 2).click()
    played = _wait_played(d, 6)[1:]
    assert [(p["i"], p["j"]) for p in played] == order
    starts = np.array([p["at"] for p in played])
    duration = json.loads(services.store.get_bytes(f"{small_grid}/grid.json"))["duration"]
    np.testing.assert_allclose(np.diff(starts), duration, rtol=1e-3)

    # shift-click appends, ctrl-click removes
    ActionChains(d).key_down(Keys.SHIFT).click(_cell(d, 2, 4)).key_up(Keys.SHIFT).perform()
    ActionChains(d).key_down(Keys.CONTROL).click(_cell(d, 0, 1)).key_up(Keys.CONTROL).perform()
    path = [(0, 0), (0, 2), (1, 2), (2, 2), (2, 4)]
    assert _path(d) == " ".join(f"{i},{j}" for i, j in path)

    # export: [1, N, 2] float32, columns dim0, dim1, each cell held for an equal share of the duration
    arr = np.load(
        io.BytesIO(
            base64.b64decode(
                d.execute_script("return window.__smf.exportPath(0, {duration: 2, rate: 50, mode: 'steps'})")
            )
        )
    )
    assert arr.shape == (1, 100, 2) and arr.dtype == np.float32
    expected = np.repeat([[j / 4, i / 2] for i, j in path], 20, axis=0)
    np.testing.assert_allclose(arr[0], expected, atol=1e-6)
    glide = np.load(
        io.BytesIO(
            base64.b64decode(
                d.execute_script("return window.__smf.exportPath(0, {duration: 1.5, rate: 20, mode: 'glide'})")
            )
        )
    )
    assert glide.shape == (1, 30, 2)
    np.testing.assert_allclose(glide[0, [0, -1]], [[0, 0], [1, 1]], atol=1e-6)

    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "grid-auditioner.png"))
    assert (ARTIFACTS / "grid-auditioner.png").read_bytes()[:4] == b"\x89PNG"

    # Esc clears the path; so does a click on the background
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    assert _path(d) == ""
    ActionChains(d).key_down(Keys.SHIFT).click(_cell(d, 1, 1)).key_up(Keys.SHIFT).perform()
    assert _path(d) == "1,1"
    d.find_element(By.TAG_NAME, "footer").click()
    assert _path(d) == ""

    # keyboard: arrows move the cursor, Enter plays, "a" appends
    n = len(d.execute_script("return window.__smf.played"))
    g = d.find_element(By.CSS_SELECTOR, ".panel .grid")
    _cell(d, 0, 0).click()
    g.send_keys(Keys.ARROW_DOWN, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ENTER)
    played = _wait_played(d, n + 2)
    assert (played[-1]["i"], played[-1]["j"]) == (1, 2)
    g.send_keys("a", Keys.ARROW_DOWN, "a")
    assert _path(d) == "1,2 2,2"


def test_two_grids_side_by_side(services, small_grid, tall_grid, browser):
    from selenium.webdriver.common.by import By

    d = browser
    _open(d, f"{services.http.url}/{small_grid}?compare={tall_grid.split('/', 1)[1]}&token={services.token}")
    panels = d.find_elements(By.CSS_SELECTOR, ".panel")
    assert [p.get_attribute("data-grid") for p in panels] == [small_grid, tall_grid]
    assert len(panels[1].find_elements(By.CSS_SELECTOR, ".cell")) == 18
    tall = panels[1].find_element(By.CSS_SELECTOR, ".grid").rect
    assert tall["height"] > tall["width"]  # 3 columns x 6 rows
    assert panels[0].rect["x"] < panels[1].rect["x"]
    _cell(d, 5, 2, panel=1).click()
    played = _wait_played(d, 1)
    assert played[-1]["grid"] == tall_grid and played[-1]["file"] == "cells/grid_d1.5_d0.2_v.0.wav"
    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "grid-auditioner-compare.png"))


def test_listing_page(services, small_grid, browser):
    from selenium.webdriver.common.by import By

    _open(browser, f"{services.http.url}/?token={services.token}")
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#grid-list a")]
    assert f"{services.http.url}/{small_grid}" in links


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_http_api_is_read_only_and_needs_the_token(services, small_grid, s3_server):
    base, auth = services.http.url, {"Authorization": f"Bearer {services.token}"}
    assert _get(f"{base}/healthz")[0] == 200
    assert _get(f"{base}/{small_grid}")[0] == 401
    assert _get(f"{base}/api/grids", {"Authorization": "Bearer wrong"})[0] == 401
    status, body, headers = _get(f"{base}/{small_grid}?token={services.token}")
    assert status == 200 and "smf_token=" in headers.get("Set-Cookie", "") and "HttpOnly" in headers["Set-Cookie"]
    cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
    status, body, _ = _get(f"{base}/api/grid?id={small_grid}", cookie)
    assert status == 200 and json.loads(body)["d0"] == 5
    status, body, headers = _get(f"{base}/api/file?id={small_grid}&name=cells/grid_d1.0_d0.0_v.0.wav", auth)
    assert status == 200 and body[:4] == b"RIFF" and "immutable" in headers["Cache-Control"]
    assert body == services.store.get_bytes(f"{small_grid}/cells/grid_d1.0_d0.0_v.0.wav")
    # only the artifact's own files, never other keys or credentials
    assert _get(f"{base}/api/file?id={small_grid}&name=../../gan/tiny/config.json", auth)[0] == 404
    assert _get(f"{base}/api/file?id=gan/tiny/../x&name=config.json", auth)[0] == 400
    assert _get(f"{base}/api/grid?id=grids/nope", auth)[0] == 404
    for url in (f"{base}/api/grids", f"{base}/api/grid?id={small_grid}"):
        assert s3_server.secret_key.encode() not in _get(url, auth)[1]
    req = urllib.request.Request(f"{base}/api/grids", data=b"{}", headers=auth, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 501
