"""Readers and writers on the real data in ../shared/data, round trips, and malformed-input errors."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camjax import geometry as g
from camjax.geometry import CameraError, Cameras, se3

RE10K_LINE = ("158692025 0.474812461 0.844111024 0.5 0.5 0 0 0.780003667 0.059620168 -0.622928321 0.726968666 "
              "-0.062449891 0.997897983 0.017311305 0.217967188 0.622651041 0.025398925 0.782087326 -1.002211444")


def random_cameras(T=6, height=320, width=576, seed=0):
  R = Rotation.random(T, random_state=seed).as_matrix()
  w2c = se3.make_pose(R, np.random.default_rng(seed).normal(size=(T, 3)))
  return Cameras.create(w2c, g.intrinsics(300.0, 310.0, 290.0, 158.0), height=height, width=width)


# --------------------------------------------------------------------------------------------- RealEstate10K
def test_every_re10k_pose_file_parses(shared_data):
  files = sorted((shared_data / "re10k_clips" / "pose_files").glob("*.txt"))
  files += sorted((shared_data / "re10k_poses_49f" / "re10k_poses").glob("*.txt"))
  assert len(files) == 12 + 22
  for f in files:
    cams = g.read_re10k(f, image_size=(320, 576))
    expected = {"svd": 14, "svdxt": 25}.get(f.stem.split("_")[-1], 49 if "49f" in str(f) else 16)
    assert cams.num_frames == expected, f
    assert cams.image_size == (320, 576)
    if "49f" in str(f):  # relative files: frame 0 is the identity, no timestamps
      np.testing.assert_allclose(cams.w2c[0], np.eye(4), atol=1e-5)
      assert cams.timestamps is None
    else:
      assert np.all(np.diff(cams.timestamps) > 0)


def test_re10k_intrinsics_at_576x320(shared_data):
  cams = g.read_re10k(shared_data / "re10k_clips" / "pose_files" / "0bf152ef84195293_svdxt.txt", (320, 576))
  np.testing.assert_allclose(cams.K[0], g.intrinsics(0.474812461 * 576, 0.844111024 * 324, 288, 160), atol=1e-6)


def test_re10k_round_trip(tmp_path):
  cams = random_cameras()
  for url in (None, "https://www.youtube.com/watch?v=x"):
    path = tmp_path / "poses.txt"
    g.write_re10k(path, cams, url=url)
    back = g.read_re10k(path, original_size=cams.image_size)
    np.testing.assert_allclose(back.w2c, cams.w2c, atol=1e-8)
    np.testing.assert_allclose(back.K, cams.K, atol=1e-6)


@pytest.mark.parametrize("content, message, line", [
    ("", "empty", None),
    ("https://x\n" + RE10K_LINE + "\n" + " ".join(RE10K_LINE.split()[:-1]) + "\n", "expected 19 numbers", 3),
    ("https://x\n" + RE10K_LINE.replace("0.780003667", "nan") + "\n", "non-finite", 2),
    ("https://x\n" + RE10K_LINE.replace("0.780003667", "abc") + "\n", "not a number", 2),
    ("https://x\n" + RE10K_LINE.replace("0.780003667", "0.9") + "\n", "not orthonormal", 2),
    ("https://x\n" + RE10K_LINE.replace(" 0.474812461", " -0.474812461") + "\n", "focal", 2),
    ("https://x\n", "empty", None),
])
def test_re10k_rejects_malformed_input(tmp_path, content, message, line):
  path = tmp_path / "bad.txt"
  path.write_text(content)
  with pytest.raises(CameraError, match=message) as info:
    g.read_re10k(path)
  assert info.value.source == str(path) and info.value.line == line


def test_missing_file_is_a_camera_error(tmp_path):
  for reader in (g.read_re10k, g.read_tum, g.read_kitti, g.read_nerf_transforms):
    with pytest.raises(CameraError, match="not found"):
      reader(tmp_path / "absent.txt")


# ---------------------------------------------------------------------------------------------- NeRF / fox
def test_fox_transforms_convert_to_opencv_and_back_exactly(shared_data, tmp_path):
  src = shared_data / "fox" / "transforms.json"
  cams, paths = g.read_nerf_transforms(src, with_file_paths=True)
  assert cams.num_frames == 50 and cams.image_size == (1920, 1080)
  np.testing.assert_allclose(cams.K[0], g.intrinsics(1375.52, 1374.49, 554.558, 965.268))
  original = np.array([f["transform_matrix"] for f in json.loads(src.read_text())["frames"]])
  # OpenCV c2w = OpenGL c2w with the y and z columns negated.
  np.testing.assert_allclose(cams.c2w[:, :, 0], original[:, :, 0], atol=1e-12)
  np.testing.assert_allclose(cams.c2w[:, :, 1:3], -original[:, :, 1:3], atol=1e-12)
  out = tmp_path / "transforms.json"
  g.write_nerf_transforms(out, cams, paths)
  again = json.loads(out.read_text())
  np.testing.assert_allclose(np.array([f["transform_matrix"] for f in again["frames"]]), original, atol=1e-12)
  assert [f["file_path"] for f in again["frames"]] == paths


def test_fox_cameras_look_at_the_object(shared_data):
  """Real-geometry check of the axis flip: every OpenCV camera's +z axis points towards the common look-at point."""
  cams = g.read_nerf_transforms(shared_data / "fox" / "transforms.json")
  c, d = cams.centers, cams.c2w[:, :3, 2]
  # Least-squares point closest to all optical axes.
  A = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
  target = np.linalg.solve(A.sum(0), np.einsum("nij,nj->i", A, c))
  assert np.all(np.einsum("ni,ni->n", target - c, d) > 0)


def test_nerf_rejects_bad_json(tmp_path):
  path = tmp_path / "t.json"
  path.write_text("{not json")
  with pytest.raises(CameraError, match="malformed JSON"):
    g.read_nerf_transforms(path)
  path.write_text(json.dumps({"w": 4, "h": 4, "fl_x": 2, "frames": [{"transform_matrix": np.eye(3).tolist()}]}))
  with pytest.raises(CameraError, match="shape"):
    g.read_nerf_transforms(path)


# -------------------------------------------------------------------------------------------------- TUM / KITTI
def test_tum_and_kitti_read_as_metres(shared_data):
  d = shared_data / "slam_trajectories" / "evo"
  tum = g.read_tum(d / "freiburg1_xyz-groundtruth.txt")
  assert tum.num_frames == 3000
  # fr1/xyz: the Kinect is moved along the axes by a few tens of centimetres around a point ~1.5 m from the origin.
  extent = np.ptp(tum.centers, axis=0)
  assert 0.1 < extent.max() < 1.0 and 1.0 < np.linalg.norm(tum.centers[0]) < 3.0
  kitti = g.read_kitti(d / "KITTI_00_gt.txt")
  assert kitti.num_frames == 4541
  path_length = np.linalg.norm(np.diff(kitti.centers, axis=0), axis=-1).sum()
  assert 3600 < path_length < 3800  # KITTI 00 is 3.7 km
  seq06 = g.read_kitti(shared_data / "slam_trajectories" / "pyslam_kitti" / "kitti06" / "06.txt")
  assert seq06.num_frames == 1101


def test_tum_kitti_round_trip(tmp_path):
  cams = random_cameras().replace(timestamps=np.arange(6) * 0.1 + 1000.0)
  g.write_tum(tmp_path / "t.txt", cams)
  back = g.read_tum(tmp_path / "t.txt", K=cams.K[0], image_size=cams.image_size)
  np.testing.assert_allclose(back.w2c, cams.w2c, atol=1e-8)
  np.testing.assert_allclose(back.timestamps, cams.timestamps)
  g.write_kitti(tmp_path / "k.txt", cams)
  np.testing.assert_allclose(g.read_kitti(tmp_path / "k.txt").w2c, cams.w2c, atol=1e-7)


@pytest.mark.parametrize("reader, row, message", [
    (g.read_tum, "1.0 0 0 0 0 0 0 1 5", "expected 8"),
    (g.read_tum, "1.0 0 0 0 0 0 0 0", "quaternion norm"),
    (g.read_tum, "1.0 0 0 nan 0 0 0 1", "non-finite"),
    (g.read_kitti, "1 0 0 0 0 1 0 0 0 0 1", "expected 12"),
    (g.read_kitti, "1 0 0 0 0 2 0 0 0 0 1 0", "not orthonormal"),
    (g.read_kitti, "1 0 0 0 0 -1 0 0 0 0 1 0", "det"),
])
def test_tum_kitti_reject_malformed_rows(tmp_path, reader, row, message):
  path = tmp_path / "bad.txt"
  path.write_text("# comment\n" + row + "\n")
  with pytest.raises(CameraError, match=message) as info:
    reader(path)
  assert info.value.line == 2


# ------------------------------------------------------------------------------------------- Nerfies / DyCheck
def test_dycheck_windmill_cameras(shared_data):
  d = shared_data / "slam_trajectories" / "dycheck_paper_windmill" / "camera"
  moving = g.read_nerfies(d, pattern="0_*.json")
  assert moving.num_frames == 277 and moving.image_size == (960, 720)
  static = g.read_nerfies(d, pattern="1_*.json")
  assert static.num_frames == 219
  np.testing.assert_allclose(static.w2c, np.broadcast_to(static.w2c[0], static.w2c.shape), atol=1e-6)
  assert np.ptp(moving.centers, axis=0).max() > 0.01  # the handheld camera moves
  first = json.loads(sorted(d.glob("0_*.json"))[0].read_text())
  np.testing.assert_allclose(moving.centers[0], first["position"], atol=1e-9)


def test_nerfies_missing_field(tmp_path):
  (tmp_path / "c.json").write_text(json.dumps({"orientation": np.eye(3).tolist(), "position": [0, 0, 0]}))
  with pytest.raises(CameraError, match="focal_length"):
    g.read_nerfies(tmp_path)


# ---------------------------------------------------------------------------------------------------- MotionCtrl
def test_motionctrl_round_trip_and_errors(tmp_path):
  cams = random_cameras()
  g.write_motionctrl(tmp_path / "m.json", cams)
  back = g.read_motionctrl(tmp_path / "m.json", image_size=cams.image_size, K=cams.K[0])
  np.testing.assert_allclose(back.w2c, cams.w2c, atol=1e-12)
  (tmp_path / "bad.json").write_text(json.dumps([[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]]))
  with pytest.raises(CameraError, match="shape"):
    g.read_motionctrl(tmp_path / "bad.json", image_size=(4, 4))


# ------------------------------------------------------------------------------------- ReCamMaster MultiCamVideo
def opencv_to_unreal(c2w_cv_lh):
  """Inverse of `unreal_to_opencv_c2w` (test-side, written independently): OpenCV-axes c2w in the left-handed
  world (metres) -> Unreal row-vector matrix (cm)."""
  m = np.array(c2w_cv_lh, dtype=np.float64)
  m[:3, 3] *= 100.0
  m[:, 1] *= -1
  out = np.zeros_like(m)
  out[:, [1, 2, 0, 3]] = m
  return out.T


def test_multicam_relative_poses_are_proper_rotations(tmp_path):
  # Ground truth: two cameras moving in a right-handed OpenCV world. The Unreal world is its mirror (z -> -z).
  mirror = np.diag([1.0, 1.0, -1.0, 1.0])
  T = 5
  gt = {cam: se3.invert(random_cameras(T=T, seed=s).w2c) for cam, s in (("cam01", 3), ("cam02", 4))}
  frames = {}
  for i in range(T):
    frames[f"frame{i}"] = {}
    for cam, c2w in gt.items():
      lh = mirror @ c2w[i]  # pose of the camera in the left-handed world; det of its rotation block is -1
      ue = opencv_to_unreal(lh)
      frames[f"frame{i}"][cam] = " ".join("[" + " ".join(f"{v:.12g}" for v in row) + "]" for row in ue)
  path = tmp_path / "cameras.json"
  path.write_text(json.dumps(frames))
  rel = g.read_multicam(path, "cam02", image_size=(480, 832), reference_camera="cam01")
  np.testing.assert_allclose(np.linalg.det(rel.c2w[:, :3, :3]), 1.0, atol=1e-9)
  # The physical relation between two cameras does not depend on the world's handedness: the relative poses equal
  # the right-handed ground truth `inv(c2w_ref) @ c2w_i`.
  np.testing.assert_allclose(rel.c2w, np.linalg.inv(gt["cam01"][0]) @ gt["cam02"], atol=1e-8)
  own = g.read_multicam(path, "cam01", image_size=(480, 832))
  np.testing.assert_allclose(own.c2w[0], np.eye(4), atol=1e-9)
  with pytest.raises(CameraError, match="left-handed"):
    g.read_multicam(path, "cam01", image_size=(480, 832), absolute=True)
  with pytest.raises(CameraError, match="missing"):
    g.read_multicam(path, "cam09", image_size=(480, 832))


# ------------------------------------------------------------------------- bad input (issue 15): named errors
def test_re10k_bom_without_url_keeps_frame_0(tmp_path):
  path = tmp_path / "bom.txt"
  path.write_bytes(b"\xef\xbb\xbf" + (RE10K_LINE + "\n" + RE10K_LINE.replace("158692025", "158725392") + "\n").encode())
  cams = g.read_re10k(path)
  assert cams.num_frames == 2
  np.testing.assert_allclose(cams.timestamps, [158.692025, 158.725392])
  np.testing.assert_allclose(cams.K[0, 0, 0], 0.474812461 * 1280)


def test_re10k_skips_comment_lines_around_the_url(tmp_path):
  path = tmp_path / "commented.txt"
  path.write_text("# clip from RealEstate10K\n\nhttps://www.youtube.com/watch?v=x\n" + RE10K_LINE + "\n"
                  "# second frame\n" + RE10K_LINE + "\n")
  cams = g.read_re10k(path)
  assert cams.num_frames == 2
  path.write_text("# no url\n" + RE10K_LINE + "\n")
  assert g.read_re10k(path).num_frames == 1


def test_re10k_garbled_first_frame_is_reported_not_taken_for_the_url(tmp_path):
  path = tmp_path / "garbled.txt"
  path.write_text(RE10K_LINE.replace("158692025", "x158692025") + "\n" + RE10K_LINE + "\n")
  with pytest.raises(CameraError, match="not a number") as info:
    g.read_re10k(path)
  assert (info.value.line, info.value.frame) == (1, 0)


def test_tum_with_bom_and_comment_header_reads(tmp_path):
  cams = random_cameras().replace(timestamps=np.arange(6) * 0.1 + 1000.0)
  g.write_tum(tmp_path / "t.txt", cams)
  path = tmp_path / "bom.txt"
  path.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "t.txt").read_bytes())
  assert path.read_text(encoding="utf-8").startswith("\ufeff# timestamp")
  back = g.read_tum(path, K=cams.K[0], image_size=cams.image_size)
  np.testing.assert_allclose(back.w2c, cams.w2c, atol=1e-8)


@pytest.mark.parametrize("image_size", [(0, 0), (-320, -576), (320, 0), (320.5, 576), (320,), None])
def test_readers_reject_non_positive_image_size(tmp_path, image_size):
  re10k, motionctrl = tmp_path / "r.txt", tmp_path / "m.json"
  re10k.write_text(RE10K_LINE + "\n")
  g.write_motionctrl(motionctrl, random_cameras(T=2))
  readers = [lambda: g.read_motionctrl(motionctrl, image_size=image_size)]
  if image_size is not None:  # None is read_re10k's "original size"
    readers.append(lambda: g.read_re10k(re10k, image_size=image_size))
    readers.append(lambda: g.read_re10k(re10k, original_size=image_size))
  for read in readers:
    with pytest.raises(CameraError, match="size") as info:
      read()
    assert info.value.source is not None


@pytest.mark.parametrize("K, message", [
    (g.intrinsics(-525.0, 525.0, 319.5, 239.5), "focal"),
    (g.intrinsics(0.0, 0.0, 319.5, 239.5), "focal"),
    (g.intrinsics(np.nan, 525.0, 319.5, 239.5), "non-finite"),
    (np.eye(4), "shape"),
    ([["a", 0, 0], [0, 1, 0], [0, 0, 1]], "not numeric"),
])
def test_readers_reject_bad_K_argument(tmp_path, K, message):
  cams = random_cameras(T=3)
  g.write_tum(tmp_path / "t.txt", cams)
  g.write_kitti(tmp_path / "k.txt", cams)
  g.write_motionctrl(tmp_path / "m.json", cams)
  for read in (lambda: g.read_tum(tmp_path / "t.txt", K=K), lambda: g.read_kitti(tmp_path / "k.txt", K=K),
               lambda: g.read_motionctrl(tmp_path / "m.json", image_size=(480, 640), K=K)):
    with pytest.raises(CameraError, match=message):
      read()


def test_multicam_rejects_frame_keys_without_a_number(tmp_path):
  pose = "[1 0 0 0] [0 1 0 0] [0 0 1 0] [0 0 0 1]"
  path = tmp_path / "cameras.json"
  path.write_text(json.dumps({"frame0": {"cam01": pose}, "frameX": {"cam01": pose}, "frame1": {"cam01": pose}}))
  with pytest.raises(CameraError, match="'frameX'") as info:
    g.read_multicam(path, "cam01", image_size=(480, 832))
  assert info.value.source == str(path)
  path.write_text(json.dumps({"frame1": {"cam01": pose}, "frame01": {"cam01": pose}}))
  with pytest.raises(CameraError, match="'frame1' and 'frame01'"):
    g.read_multicam(path, "cam01", image_size=(480, 832))


@pytest.mark.parametrize("pose, message", [
    ("[0 0 0 0] [0 0 0 0] [0 0 0 0] [0 0 0 0]", "last column"),
    ("[0 0 0 0] [0 0 0 0] [0 0 0 0] [0 0 0 1]", "singular"),
])
def test_multicam_rejects_degenerate_matrices(tmp_path, pose, message):
  path = tmp_path / "cameras.json"
  path.write_text(json.dumps({"frame0": {"cam01": pose}}))
  with pytest.raises(CameraError, match=message) as info:
    g.read_multicam(path, "cam01", image_size=(480, 832))
  assert info.value.frame == 0


NERF_OK = {"w": 8, "h": 6, "fl_x": 10.0, "frames": [{"transform_matrix": np.eye(4).tolist()}]}


@pytest.mark.parametrize("fields, name", [
    ({"fl_x": "abc"}, "fl_x"), ({"fl_x": None}, "fl_x"), ({"fl_y": [1.0]}, "fl_y"), ({"w": None}, "w"),
    ({"h": "6"}, "h"), ({"w": True}, "w"), ({"cx": "centre"}, "cx"), ({"cy": float("nan")}, "cy"),
    ({"fl_x": float("inf")}, "fl_x"), ({"w": -8}, "w"), ({"w": 0}, "w"),
])
def test_nerf_rejects_wrongly_typed_fields(tmp_path, fields, name):
  path = tmp_path / "transforms.json"
  path.write_text(json.dumps({**NERF_OK, **fields}))
  with pytest.raises(CameraError, match=f"'{name}'") as info:
    g.read_nerf_transforms(path)
  assert (info.value.source, info.value.frame) == (str(path), 0)


def test_nerf_rejects_wrongly_typed_camera_angle(tmp_path):
  path = tmp_path / "transforms.json"
  fields = {k: v for k, v in NERF_OK.items() if k != "fl_x"}
  path.write_text(json.dumps({**fields, "camera_angle_x": "wide"}))
  with pytest.raises(CameraError, match="'camera_angle_x'"):
    g.read_nerf_transforms(path)
  path.write_text(json.dumps({**fields, "camera_angle_x": 0.7}))
  np.testing.assert_allclose(g.read_nerf_transforms(path).K[0, 0, 0], 4.0 / np.tan(0.35))


NERFIES_OK = {"orientation": np.eye(3).tolist(), "position": [0.0, 0.0, 0.0], "focal_length": 10.0,
              "principal_point": [4.0, 3.0], "image_size": [8, 6]}


@pytest.mark.parametrize("fields, name", [
    ({"focal_length": "abc"}, "focal_length"), ({"focal_length": None}, "focal_length"),
    ({"pixel_aspect_ratio": "x"}, "pixel_aspect_ratio"), ({"image_size": [None, 6]}, "image_size"),
    ({"image_size": [-8, 6]}, "image_size"), ({"image_size": [8.5, 6]}, "image_size"),
    ({"principal_point": "centre"}, "principal_point"),
])
def test_nerfies_rejects_wrongly_typed_fields(tmp_path, fields, name):
  good, bad = tmp_path / "0_00000.json", tmp_path / "0_00001.json"
  good.write_text(json.dumps(NERFIES_OK))
  assert g.read_nerfies(tmp_path).num_frames == 1
  bad.write_text(json.dumps({**NERFIES_OK, **fields}))
  with pytest.raises(CameraError, match=name) as info:
    g.read_nerfies(tmp_path)
  assert (info.value.source, info.value.frame) == (str(bad), 1)
