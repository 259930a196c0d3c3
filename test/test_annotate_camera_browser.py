"""The camera panel in a real browser (headless Chromium, as test_annotate_browser.py): for a bag
with a camera the panel shows the frame's image, a click on the box in the view redraws it with
the box in the object's colour, stepping shows the next frame's image; for a bag without a
camera the panel is hidden."""
from __future__ import annotations

import json

import numpy as np
import pytest

from annotate_helpers import ARTIFACTS, ToolProcess, get
from test_annotate_browser import (CHROMEDRIVER, CHROMIUM, RENDERED, _click_canvas, _wait,
                                   browser)  # noqa: F401 - browser is a fixture
from test_annotate_camera import (WIDTH, _front_pixels, camera_bag, needs_rosbags, scene)
from npiseg_ros.annotate.projection import object_colour

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver "
                              "(apt-get install -y chromium chromium-driver)"),
    needs_rosbags,
]

SHOWN = ("const c = window.npiseg.camera, img = document.getElementById('cameraimg');"
         "return c.visible && c.shown !== '' && c.shown === c.wanted && img.complete && "
         "img.naturalWidth > 0 && JSON.parse(c.shown)[1] === window.npiseg.state.frame_index && "
         "JSON.parse(c.shown)[2] === window.npiseg.state.version")
"""The panel shows the overlay of the state on screen, loaded."""

PIXELS = ("const img = document.getElementById('cameraimg');"
          "const canvas = document.createElement('canvas');"
          "canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;"
          "const g = canvas.getContext('2d'); g.drawImage(img, 0, 0);"
          "const d = g.getImageData(0, 0, canvas.width, canvas.height).data;"
          "return arguments[0].map(([x, y]) => Array.from(d.slice(4 * (y * canvas.width + x), "
          "4 * (y * canvas.width + x) + 3)));")
"""The RGB of the shown overlay at the given (column, row) pixels."""


def test_camera_panel_follows_clicks_and_frames(browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    from npiseg_ros.annotate.bag import write_cloud_bag

    bag, xyz, front = camera_bag(tmp_path / "bag", frames=2)
    tool = ToolProcess(str(bag), "--session", str(tmp_path / "session"), "--samples", "4",
                       env={"NPISEG_WEB_DIR": str(tmp_path / "no-web")})  # the 2-D canvas
    try:
        browser.get(tool.url)
        _wait(browser, "return document.body.dataset.ready === '1'")
        _wait(browser, SHOWN)
        assert browser.execute_script("return document.getElementById('cameraimg').naturalWidth") \
            == WIDTH
        assert browser.find_element(By.ID, "camerapick").get_attribute("hidden") is not None
        assert "/camera/image_raw: image +0.000 s from the sweep" in \
            browser.find_element(By.ID, "cameranote").text

        pixel = browser.execute_script("return window.npiseg.findPixel(arguments[0])",
                                       front.tolist())
        _click_canvas(browser, pixel)
        _wait(browser, "return window.npiseg.state.clicks.length === 1 && " + RENDERED)
        _wait(browser, SHOWN)
        state = browser.execute_script("return window.npiseg.state")
        labels = np.frombuffer(get(tool.url + "api/labels")[:4 * len(xyz)], "<i4")
        object_id = state["active_object"]
        labelled = front[labels[front] == object_id]
        assert len(labelled) > len(front) // 2
        shown = browser.execute_script(PIXELS, _front_pixels(xyz, labelled).tolist())
        assert np.array_equal(np.array(shown), np.tile(object_colour(object_id), (len(shown), 1)))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "browser_camera.png"))

        browser.find_element(By.ID, "next").click()  # the next frame's image, its objects tracked
        _wait(browser, "return window.npiseg.state.position === 1 && " + RENDERED)
        _wait(browser, SHOWN)
        assert json.loads(browser.execute_script("return window.npiseg.camera.shown"))[1] == 1

        xyz_plain, _ = scene()
        plain = write_cloud_bag(tmp_path / "plain", [xyz_plain], topic="/velodyne_points")
        browser.find_element(By.CSS_SELECTOR, "#opener summary").click()
        browser.find_element(By.ID, "openpath").send_keys(str(plain))
        browser.find_element(By.ID, "open").click()
        _wait(browser, "return window.npiseg.state.source.description.includes('plain') && "
                       "!window.npiseg.camera.visible && " + RENDERED)
        assert not browser.find_element(By.ID, "camera").is_displayed()
    finally:
        tool.stop()
