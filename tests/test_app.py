"""The trajectory editor (`camjax.app`): its Python API, and the page driven in a real headless Chromium.

The browser test starts the app on a free loopback port with a 64x64 procedural scene and drives Debian's chromium
through playwright (installed by `.ci/run`; skipped only when /usr/bin/chromium is absent): the page loads, the 3D
view renders (a canvas screenshot that is not blank), and changes made through the page (the preset dropdown, the
"metres" slider, the Add keyframe and Generate buttons) reach the app and change the preview image.
"""

from __future__ import annotations

import io
import os
import socket
import time

import numpy as np
import pytest

from camjax import app as app_lib
from camjax.geometry import render, se3
from camjax.geometry.trajectories import interpolate_poses

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FRAMES = 9


@pytest.fixture(scope="module")
def scene():
  return app_lib.load_inputs(scene=app_lib.HELD_OUT_SCENE, height=64, width=64)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait(condition, timeout: float, what: str):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = condition()
    if value:
      return value
    time.sleep(0.1)
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------------------------------------ the API
def test_keyframes_presets_and_metres(scene):
  app = app_lib.App(*scene, num_frames=FRAMES, preset_name="dolly_in", num_keyframes=3)
  keys = app.keyframes
  np.testing.assert_allclose(keys[0], np.eye(4), atol=1e-9)
  # dolly_in: 1 m forward at the last frame, keyframes at frames 0, 4, 8.
  np.testing.assert_allclose(se3.invert(keys)[:, :3, 3], [[0, 0, 0], [0, 0, 0.5], [0, 0, 1.0]], atol=1e-9)
  # The path passes through the keyframes at their (evenly spread) frames.
  np.testing.assert_allclose(app.trajectory[[0, 4, 8]], keys, atol=1e-9)

  app.set_metres(2.5)
  np.testing.assert_allclose(se3.invert(app.keyframes)[:, :3, 3], [[0, 0, 0], [0, 0, 1.25], [0, 0, 2.5]], atol=1e-9)
  app.set_metres(1.0)

  app.apply_preset("pan_left", 2.0)  # 2 x the default 30 degrees
  angle = np.degrees(se3.geodesic_angle(np.eye(3), app.keyframes[-1][:3, :3]))
  assert angle == pytest.approx(60.0, abs=1e-6)

  # A moved keyframe changes the path between its neighbours and the preview.
  before = app.preview_image()
  moved = se3.invert(se3.make_pose(np.eye(3), np.array([0.4, -0.2, 0.8])))
  app.set_keyframe(1, moved)
  np.testing.assert_allclose(app.keyframes[1], moved, atol=1e-9)
  c2w = se3.invert(app.keyframes)
  expected = interpolate_poses(c2w, [0, 4, 8], np.arange(FRAMES))
  np.testing.assert_allclose(app.trajectory, se3.invert(expected), atol=1e-9)
  after = app.preview_image()
  assert before.shape == after.shape and np.abs(after.astype(int) - before).mean() > 5

  assert app.add_keyframe() == 3 and len(app.keyframes) == 4
  app.remove_keyframe(1)
  assert len(app.keyframes) == 3
  with pytest.raises(app_lib.AppError, match="reference camera"):
    app.set_keyframe(0, np.eye(4))
  with pytest.raises(app_lib.AppError, match="not a rigid"):
    app.set_keyframe(1, np.diag([2.0, 1, 1, 1]))
  with pytest.raises(app_lib.AppError, match="out of range"):
    app.set_keyframe(7, np.eye(4))
  with pytest.raises(app_lib.AppError, match="positive"):
    app.set_metres(0.0)
  with pytest.raises(app_lib.AppError, match="unknown trajectory preset"):
    app.apply_preset("spin_around")


def test_generate_without_a_model_is_the_preview_render(scene):
  image, depth, K = scene
  app = app_lib.App(image, depth, K, num_frames=FRAMES, preset_name="truck_left")
  assert app.generate_label == app_lib.NO_MODEL_LABEL == "no model: preview only"
  video = app.generate()
  assert video.shape == (FRAMES, 64, 64, 3) and video.dtype == np.uint8
  reference = render.preview(image / 255.0, depth, K, np.eye(4), app.trajectory).video
  np.testing.assert_array_equal(video, np.round(np.clip(np.asarray(reference), 0, 1) * 255).astype(np.uint8))
  assert app.result is video and "generated" in app.status

  def no_video(*_):
    return np.zeros((FRAMES, 64, 64))

  with pytest.raises(app_lib.AppError, match=r"\[T, H, W, 3\]"):
    app_lib.App(image, depth, K, no_video, num_frames=FRAMES).generate()


def test_inputs_and_pictures(tmp_path, scene):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  image, depth, _ = scene
  Image.fromarray(image).save(tmp_path / "photo.png")
  Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(tmp_path / "depth.png")
  image2, depth2, K2 = app_lib.load_inputs(tmp_path / "photo.png", tmp_path / "depth.png", depth_scale=1000)
  np.testing.assert_array_equal(image2, image)
  np.testing.assert_allclose(depth2, depth, atol=6e-4)
  np.testing.assert_allclose(K2, [[32, 0, 32], [0, 32, 32], [0, 0, 1]])  # max(H, W) / 2, centred
  with pytest.raises(app_lib.AppError, match="not both"):
    app_lib.load_inputs(tmp_path / "photo.png", tmp_path / "depth.png", scene=3)
  with pytest.raises(app_lib.AppError, match="exactly one of --depth"):
    app_lib.load_inputs(tmp_path / "photo.png")
  assert app_lib.main(["--image", str(tmp_path / "photo.png"), "--scene", "3"]) == 2
  with pytest.raises(app_lib.AppError, match="depth must be"):
    app_lib.App(image, depth[:32], K2)
  with pytest.raises(app_lib.AppError, match="no valid pixel"):
    app_lib.App(image, np.zeros_like(depth), K2)

  video = np.stack([np.full((4, 6, 3), 10 * t, np.uint8) for t in range(9)])
  strip = app_lib.frame_strip(video, 3, gap=2)
  assert strip.shape == (4, 3 * 6 + 2 * 2, 3)
  assert strip[0, 0, 0] == 0 and strip[0, 8, 0] == 40 and strip[0, 16, 0] == 80 and strip[0, 6, 0] == 255
  gif = Image.open(io.BytesIO(app_lib.video_gif(video)))
  assert gif.format == "GIF" and gif.n_frames == 9


# ------------------------------------------------------------------------------------------------ the page
def _canvas_stats(png: bytes) -> tuple[float, float]:
  """(pixel std, fraction of pixels away from the background colour) of the 3D view, left of the GUI panel."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float64)
  height, width = pixels.shape[:2]
  view = pixels[int(0.25 * height):, :int(0.65 * width)]  # below the software-WebGL notice, left of the panel
  background = np.median(view.reshape(-1, 3), axis=0)
  return float(view.std()), float((np.abs(view - background).sum(-1) > 30).mean())


def _pixel(camera, point) -> tuple[float, float]:
  """Where a world point appears in a browser's 3D view (viser's viewer camera: OpenCV axes, vertical fov)."""
  R = app_lib._rotation(camera.wxyz)  # pylint: disable=protected-access  # viser's (w, x, y, z) -> matrix
  x = R.T @ (np.asarray(point) - np.asarray(camera.position))
  focal = camera.image_height / 2 / np.tan(camera.fov / 2)
  return camera.image_width / 2 + focal * x[0] / x[2], camera.image_height / 2 + focal * x[1] / x[2]


def _preview_src(page) -> str:
  return page.locator("img[src^='blob:']").first.get_attribute("src", timeout=10_000)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser: {CHROMIUM} is absent "
                    "(.ci/run installs Debian's chromium with apt-get)")
def test_page_drives_the_editor(scene):
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

  calls = []

  def stand_in(image, depth, K, w2c):
    """A real generate function: the preview render of the full-size inputs, recording what it was given."""
    calls.append(np.array(w2c))
    return app_lib.PresetGenerate()(image, depth, K, w2c)

  stand_in.label = "stand-in generate_fn"
  app = app_lib.App(*scene, generate_fn=stand_in, num_frames=FRAMES, preset_name="dolly_in", max_points=4000)
  try:
    app.start(_free_port())
    assert app.url.startswith("http://127.0.0.1:")
    strip0 = app.preview_image(timeout=60)
    with sync_playwright() as p:
      browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, timeout=30_000)
      try:
        page = browser.new_page(viewport={"width": 1100, "height": 750})
        page.set_default_timeout(15_000)
        page.goto(app.url, timeout=30_000)
        page.get_by_text("Add keyframe").wait_for(timeout=30_000)

        # The 3D view renders: the point cloud fills a good part of it (an empty viser scene is white with a small
        # axes icon: std 5, 0.1% of pixels away from the background).
        canvas = page.locator("canvas").first
        _wait(lambda: (lambda s: s[0] > 25 and s[1] > 0.05)(_canvas_stats(canvas.screenshot(timeout=15_000))),
              40, "the 3D view to show the point cloud")

        # Dragging keyframe 2's gizmo by its x arrow (the mouse, in the 3D view) moves the keyframe sideways and
        # changes the preview (the array and the <img> in the page).
        src0 = _preview_src(page)
        camera = _wait(lambda: list(app.server.get_clients().values()), 15, "the browser's viewer camera")[0].camera
        key = se3.invert(app.keyframes)[2]  # c2w: dolly_in's end, 1 m forward
        x0, y0 = _pixel(camera, key[:3, 3] + key[:3, 0] * 0.12 * app.scene_depth)  # on the x arrow (gizmo 0.15 d)
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 60, y0 + 5, steps=12)
        page.mouse.up()
        _wait(lambda: se3.invert(app.keyframes)[2][0, 3] > 0.1, 15, "the dragged keyframe to reach the app")
        moved = se3.invert(app.keyframes)[2]
        np.testing.assert_allclose(moved[:3, :3], key[:3, :3], atol=1e-6)  # an arrow translates only
        np.testing.assert_allclose(moved[1:3, 3], key[1:3, 3], atol=1e-3)  # ... along its own axis
        strip1 = app.preview_image(timeout=30)
        assert strip1.shape == strip0.shape and np.abs(strip1.astype(int) - strip0).mean() > 2
        _wait(lambda: _preview_src(page) != src0, 15, "the page's preview <img> to change")

        # A preset chosen in the page replaces the keyframes and the preview.
        strip0, src0 = strip1, _preview_src(page)
        version = app.preview_version
        page.get_by_role("combobox", name="Preset").click()
        page.get_by_role("option", name="orbit_left", exact=True).click()
        expected = se3.invert(app_lib.preset_keyframes("orbit_left", 3, FRAMES, radius=app.scene_depth))
        _wait(lambda: np.allclose(app.keyframes, expected, atol=1e-6), 15, "the preset to reach the app")
        _wait(lambda: app.preview_version > version, 30, "a new preview")
        strip1 = app.preview_image(timeout=30)
        assert strip1.shape == strip0.shape and np.abs(strip1.astype(int) - strip0).mean() > 5
        _wait(lambda: _preview_src(page) != src0, 15, "the page's preview <img> to change")

        # The "metres" slider (keyboard on its thumb: 4 steps of 0.05) scales every translation of the path.
        thumb = page.get_by_role("slider").nth(1)
        assert thumb.get_attribute("aria-valuemax") == "5"  # Magnitude's is 3
        thumb.focus()
        for _ in range(4):
          thumb.press("ArrowRight")
        _wait(lambda: abs(app.metres - 1.2) < 1e-6, 15, "metres = 1.2")
        np.testing.assert_allclose(se3.invert(app.keyframes)[:, :3, 3], se3.invert(expected)[:, :3, 3] * 1.2,
                                   atol=1e-6)
        strip2 = app.preview_image(timeout=30)
        assert np.abs(strip2.astype(int) - strip1).mean() > 1

        page.get_by_role("button", name="Add keyframe").click()
        _wait(lambda: len(app.keyframes) == 4, 15, "a fourth keyframe")

        # Generate calls the generate_fn with the path and shows its result (an animated GIF) in the page.
        page.get_by_role("button", name="Generate").click()
        _wait(lambda: app.result is not None, 30, "the generated video")
        assert len(calls) == 1 and calls[0].shape == (FRAMES, 4, 4)
        np.testing.assert_allclose(calls[0], app.trajectory, atol=1e-9)
        page.locator("img[src^='data:image/gif']").wait_for(timeout=15_000)
        page.get_by_text("stand-in generate_fn").first.wait_for(timeout=15_000)
      finally:
        browser.close()
  finally:
    app.stop()
  with pytest.raises(app_lib.AppError, match="not started"):
    _ = app.url
