"""The 3-D test world (vpr_ros.world): exact depth through every lens model, lens consistency,
determinism, drifting odometry, same-place ground truth, export and the CLI."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import yaml

from vpr_ros.evaluation.ground_truth import read_tum
from vpr_ros.geometry import pose_matrix
from vpr_ros.world import (
    LENSES,
    CameraSpec,
    OdometryDrift,
    Ring,
    base_T_camera,
    covisibility,
    export_world_sequence,
    integrate_odometry,
    make_building,
    make_camera,
    make_world_sequence,
    relative_camera_pose,
    render,
    revisit_pairs,
    ring_trajectory,
)
from vpr_ros.world.trajectory import yaw_pose

W, H = 160, 120
# South side: centreline y = -5.8, outer wall 1.2 m away at y = -7; place S3 spans x in
# [0, 3.2] (no alcove there).
CENTRE_Y = -5.8


@pytest.fixture(scope="module")
def scene():
    return make_building(texels_per_m=60.0, floor_texels_per_m=40.0)


@pytest.fixture(scope="module")
def seq():
    return make_world_sequence(image_size=(W, H), texels_per_m=60.0)


def camera_pose(x: float, y: float, yaw_deg: float, height: float = 1.2) -> np.ndarray:
    """world_T_camera of a level camera at (x, y, height) looking along yaw (0 = +x)."""
    return yaw_pose(x, y, math.radians(yaw_deg)) @ base_T_camera((0.0, 0.0, height))


def quad_named(scene, name: str):
    return next(q for q in scene.quads if q.name == name)


def inverse_depth_at(depth: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Depth at sub-pixel (u, v) from bilinear interpolation of 1/depth over the four pixel
    centres around it: exact for a plane seen through a pinhole (1/z is affine in pixels), and
    within 0.3 mm through these lenses (their pixel-to-ray map curves a little over a pixel)."""
    c0, r0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - c0, v - r0
    inv = 1.0 / depth.astype(np.float64)
    top = inv[r0, c0] * (1 - fu) + inv[r0, c0 + 1] * fu
    bottom = inv[r0 + 1, c0] * (1 - fu) + inv[r0 + 1, c0 + 1] * fu
    return 1.0 / (top * (1 - fv) + bottom * fv)


def bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    c0, r0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = (u - c0)[:, None], (v - r0)[:, None]
    img = image.astype(np.float64)
    top = img[r0, c0] * (1 - fu) + img[r0, c0 + 1] * fu
    bottom = img[r0 + 1, c0] * (1 - fu) + img[r0 + 1, c0 + 1] * fu
    return top * (1 - fv) + bottom * fv


@pytest.mark.parametrize("lens", LENSES)
def test_depth_at_projected_texel_corners_is_their_z(scene, lens):
    """(a) Texel corners of an obliquely seen wall, projected with Lens.project, land where the
    rendered depth is their z (1 mm); half a pixel off it is not (the test can fail)."""
    camera = make_camera(lens, W, H)
    pose = camera_pose(0.5, CENTRE_Y + 0.2, -50.0)
    _, depth = render(scene, camera, pose)
    wall = quad_named(scene, "S3/outer")
    rows, cols = wall.texture.shape[:2]
    grid = [wall.point(c, r) for c in range(8, cols - 8, 9) for r in range(8, rows - 8, 9)]
    cam_T_world = np.linalg.inv(pose)
    pts = (np.c_[np.array(grid), np.ones(len(grid))] @ cam_T_world.T)[:, :3]
    pts = pts[pts[:, 2] > 0.1]
    px = camera.lens.project(pts, camera.K)
    inside = (px[:, 0] >= 1) & (px[:, 0] <= W - 3) & (px[:, 1] >= 1) & (px[:, 1] <= H - 3)
    pts, px = pts[inside], px[inside]
    assert len(pts) > 50
    z = inverse_depth_at(depth, px[:, 0], px[:, 1])
    assert np.abs(z - pts[:, 2]).max() < 1e-3
    shifted = inverse_depth_at(depth, px[:, 0] + 0.5, px[:, 1])
    assert np.abs(shifted - pts[:, 2]).max() > 2e-3
    # At pixel centres, depth is the ray-plane intersection of Lens.undistort's ray (float64).
    cols, rows = np.meshgrid(np.arange(0, W, 3), np.arange(0, H, 3))
    rays = np.c_[camera.lens.undistort(np.c_[cols.ravel(), rows.ravel()], camera.K), np.ones(cols.size)]
    normal, origin = cam_T_world[:3, :3] @ wall.normal, (cam_T_world @ [*wall.origin, 1.0])[:3]
    t = (normal @ origin) / (rays @ normal)
    local = t[:, None] * rays - origin
    a = local @ (cam_T_world[:3, :3] @ wall.u) / (wall.u @ wall.u)
    b = local @ (cam_T_world[:3, :3] @ wall.v) / (wall.v @ wall.v)
    on_wall = (t > 0) & (a > 0.01) & (a < 0.99) & (b > 0.01) & (b < 0.99)
    assert on_wall.sum() > 100
    assert np.abs(depth[rows.ravel(), cols.ravel()][on_wall] - t[on_wall]).max() < 1e-5


def test_depth_of_a_wall_ahead_is_its_distance(scene):
    """(b) Facing a wall 1.2 m away, every pixel's depth is 1.2 m (z, not ray length); turned
    by 30 degrees, the depth on the optical axis is 1.2 / cos(30 deg)."""
    camera = make_camera("", W, H)
    _, depth = render(scene, camera, camera_pose(1.6, CENTRE_Y, -90.0))
    assert np.abs(depth - 1.2).max() < 1e-4
    _, depth = render(scene, camera, camera_pose(1.6, CENTRE_Y, -60.0))
    cx, cy = camera.K[0, 2], camera.K[1, 2]
    axis = inverse_depth_at(depth, np.array([cx]), np.array([cy]))[0]
    assert axis == pytest.approx(1.2 / math.cos(math.radians(30.0)), abs=1e-4)


@pytest.mark.parametrize("lens", ["plumb_bob", "rational_polynomial", "equidistant"])
def test_distorted_rendering_is_the_rectified_one_seen_through_the_lens(scene, lens):
    """(c) Pixel p of a distorted image shows what a pinhole camera with the same focal length
    shows at K undistort(p): same depth (1 mm), same colour (textures unfiltered in both)."""
    distorted = make_camera(lens, W, H)
    # The pinhole reference samples twice as finely, so interpolating it is accurate.
    f = 2.0 * distorted.K[0, 0]
    big_w, big_h = 8 * W, 8 * H
    k_rect = np.array([[f, 0, (big_w - 1) / 2], [0, f, (big_h - 1) / 2], [0, 0, 1]])
    rectified = CameraSpec(big_w, big_h, k_rect)
    pose = camera_pose(0.3, CENTRE_Y + 0.3, -25.0)
    rgb_d, depth_d = render(scene, distorted, pose, lod_bias=-20)
    rgb_r, depth_r = render(scene, rectified, pose, lod_bias=-20)
    cols, rows = np.meshgrid(np.arange(2, W - 2, 5), np.arange(2, H - 2, 5))
    p = np.c_[cols.ravel(), rows.ravel()].astype(np.float64)
    q = distorted.lens.undistort(p, distorted.K) * f + k_rect[:2, 2]
    ok = (q[:, 0] >= 2) & (q[:, 0] <= big_w - 4) & (q[:, 1] >= 2) & (q[:, 1] <= big_h - 4)
    p, q = p[ok], q[ok]
    # Keep samples whose 4x4 neighbourhood in the rectified image lies on one plane: 1/depth
    # is affine there (no second differences), so no edge or crease is interpolated across.
    c0, r0 = np.floor(q[:, 0]).astype(int), np.floor(q[:, 1]).astype(int)
    inv = 1.0 / np.maximum(depth_r.astype(np.float64), 1e-9)
    patch = np.stack([inv[r0 + i, c0 + j] for i in range(-1, 3) for j in range(-1, 3)], 1).reshape(-1, 4, 4)
    second = np.maximum(
        np.abs(np.diff(patch, 2, axis=1)).max(axis=(1, 2)), np.abs(np.diff(patch, 2, axis=2)).max(axis=(1, 2))
    )
    flat = (second < 1e-6) & (patch.max(axis=(1, 2)) < 1e8)
    p, q = p[flat].astype(int), q[flat]
    assert len(p) > 0.7 * ok.sum() and len(p) > 300
    z_d = depth_d[p[:, 1], p[:, 0]]
    assert np.abs(inverse_depth_at(depth_r, q[:, 0], q[:, 1]) - z_d).max() < 1e-3
    colour_d = rgb_d[p[:, 1], p[:, 0]].astype(np.float64)
    # Interpolating the reference blurs texel-sized detail, hence a median, not a maximum.
    assert np.median(np.abs(bilinear(rgb_r, q[:, 0], q[:, 1]) - colour_d)) < 2.0
    # Ignoring the distortion (the pinhole pixel of p) gives clearly different colours.
    naive = (p - distorted.K[:2, 2]) * 2.0 + k_rect[:2, 2]
    assert np.median(np.abs(bilinear(rgb_r, naive[:, 0], naive[:, 1]) - colour_d)) > 8.0


def test_the_same_pose_renders_the_same_image(scene):
    """(d)"""
    camera = make_camera("plumb_bob", W, H)
    pose = camera_pose(-2.0, CENTRE_Y - 0.2, 10.0)
    rgb1, depth1 = render(scene, camera, pose)
    rgb2, depth2 = render(scene, make_camera("plumb_bob", W, H), pose.copy())
    assert np.array_equal(rgb1, rgb2) and np.array_equal(depth1, depth2)
    assert rgb1.std() > 10 and (depth1 > 0).all()
    other, _ = render(scene, camera, camera_pose(-1.9, CENTRE_Y - 0.2, 10.0))
    assert not np.array_equal(rgb1, other)


def test_nothing_hit_is_depth_zero_and_dark(scene):
    camera = make_camera("", W, H)
    # From outside the building, looking away from it.
    rgb, depth = render(scene, camera, camera_pose(0.0, -20.0, -90.0))
    assert (depth == 0).all() and rgb.max() < 40


def test_odometry_without_drift_is_ground_truth_and_drift_grows():
    """(e)"""
    body, _ = ring_trajectory(Ring(), laps=2.0, step_m=0.7, seed=3)
    exact = integrate_odometry(body, OdometryDrift.none())
    assert np.abs(exact - body).max() < 1e-9
    drifting = integrate_odometry(body, OdometryDrift(seed=1))
    assert np.array_equal(drifting[0], body[0])
    error = np.linalg.norm(drifting[:, :2, 3] - body[:, :2, 3], axis=1)
    n = len(body)
    assert error[5] < 0.3 < 1.0 < np.sqrt(np.mean(error[n // 2 :] ** 2))
    assert np.mean(error[n // 2 :]) > 2 * np.mean(error[: n // 4])
    # Frame to frame it stays smooth: steps differ from the true ones by centimetres.
    steps = np.linalg.norm(np.diff(drifting[:, :2, 3], axis=0), axis=1)
    true_steps = np.linalg.norm(np.diff(body[:, :2, 3], axis=0), axis=1)
    assert np.abs(steps - true_steps).max() < 0.1
    assert np.array_equal(integrate_odometry(body, OdometryDrift(seed=1)), drifting)


def test_trajectory_revisits_are_near_but_not_identical():
    ring = Ring()
    body, s = ring_trajectory(ring, laps=2.0, step_m=0.7, seed=7)
    cams = body @ base_T_camera()
    lap = np.floor(s / ring.length).astype(int)
    nearest = [
        np.linalg.norm(cams[lap == 0, :3, 3] - cams[q, :3, 3], axis=1).min() for q in np.flatnonzero(lap == 1)
    ]
    assert 0.15 < np.median(nearest) < 0.65 and max(nearest) < 0.8
    assert np.allclose(body[:, 2, 3], 0.0) and np.allclose(body[:, 2, :3], [0, 0, 1])


def test_camera_mount_axes():
    mount = base_T_camera((0.2, 0.0, 1.2))
    assert np.allclose(mount[:3, 2], [1, 0, 0]) and np.allclose(mount[:3, 0], [0, -1, 0])
    assert np.allclose(mount[:3, 1], [0, 0, -1]) and np.allclose(mount[:3, 3], [0.2, 0.0, 1.2])
    down = base_T_camera(pitch_deg=10.0)[:3, 2]
    assert down[2] == pytest.approx(-math.sin(math.radians(10.0)))


def _other_half_of_the_ring(seq) -> np.ndarray:
    """[N, N] bool: frame pairs more than 0.4 laps apart along the ring (walls in between)."""
    lap = Ring().length  # the sequence's ring (the default building's centreline)
    gap = np.abs(seq.distance_m[:, None] - seq.distance_m[None]) % lap
    return np.minimum(gap, lap - gap) > 0.4 * lap


def test_same_place_marks_revisits_not_the_far_side(seq):
    """(f)"""
    n = len(seq)
    assert 150 <= n <= 200 and seq.same_place.shape == (n, n) and seq.same_place.diagonal().all()
    first, second = np.flatnonzero(seq.lap == 0), np.flatnonzero(seq.lap == 1)
    revisited = [seq.same_place[q, first].any() for q in second]
    assert np.mean(revisited) > 0.95
    assert not seq.same_place[_other_half_of_the_ring(seq)].any()
    centres = seq.gt_camera_poses[:, :3, 3]
    # 3 m apart, or views sharing 30 % of their surfaces within 10 m (down a corridor).
    assert np.linalg.norm(centres[:, None] - centres[None], axis=-1)[seq.same_place].max() <= 10.0
    for q, m in revisit_pairs(seq, 10):
        assert seq.lap[q] == 1 and seq.lap[m] == 0 and seq.same_place[q, m]
        assert np.linalg.norm(relative_camera_pose(seq, q, m)[:3, 3]) < 1.0


def test_covisibility_is_exact_view_overlap(seq):
    cov = covisibility(seq, stride=20)
    assert np.allclose(cov.diagonal(), 1.0)
    q, m = revisit_pairs(seq, 5)[2]
    assert cov[q, m] > 0.5 and cov[m, q] > 0.5
    assert cov[_other_half_of_the_ring(seq)].max() < 0.05
    # Walking down a straight corridor: the frame behind sees much of what the frame 4 m
    # ahead sees (the far walls), not the other way round.
    behind, ahead = 66, 72
    assert seq.lap[ahead] == 0
    assert cov[ahead, behind] > 0.2 > cov[behind, ahead]


def test_sequence_fields_and_stamps(seq):
    assert len(seq.images) == len(seq.depths) == len(seq.stamps_ns) == len(seq)
    assert seq.images[0].shape == (H, W, 3) and seq.images[0].dtype == np.uint8
    assert seq.depths[0].dtype == np.float32 and (seq.depths[0] > 0).all()
    assert seq.stamps_ns.dtype == np.int64 and seq.stamps_ns[0] == 1_700_000_000_123_456_789
    assert np.all(np.diff(seq.stamps_ns) == 500_000_000)
    assert np.allclose(seq.gt_camera_poses, seq.gt_body_poses @ seq.base_T_camera)
    # The DemoSequence names.
    assert seq.poses is seq.gt_camera_poses and seq.camera_matrix is seq.camera.K
    assert seq.positions.shape == (len(seq), 2)


def test_lookalike_places_are_near_copies():
    scene = make_building(texels_per_m=40.0, floor_texels_per_m=20.0, lookalikes=2)
    assert len(scene.lookalike_pairs) == 2
    for a, b in scene.lookalike_pairs:
        ta, tb = quad_named(scene, f"{a}/outer").texture, quad_named(scene, f"{b}/outer").texture
        diff = np.abs(ta.astype(int) - tb.astype(int))
        assert 0 < np.median(diff) < 20
        other = quad_named(scene, "E1/outer").texture
        assert np.median(np.abs(ta.astype(int) - cv2.resize(other, ta.shape[1::-1]).astype(int))) > 30


def test_full_size_views_have_many_spread_keypoints_and_verify_exactly():
    """640x480 revisit pair: hundreds of SIFT keypoints over the image, and the repository's
    verifier recovers the ground-truth relative pose (the project's acceptance targets)."""
    from vpr_ros.rerank.geometric import GeometricVerifier

    scene = make_building()
    camera = make_camera("", 640, 480)
    ring = Ring()
    body, s = ring_trajectory(ring, 2.0, 0.7, seed=7)
    q = int(np.argmin(np.abs(s - (ring.length + 30.0))))
    cams = body @ base_T_camera()
    first = np.flatnonzero(s < ring.length)
    m = int(first[np.argmin(np.linalg.norm(cams[first, :3, 3] - cams[q, :3, 3], axis=1))])
    (img_q, depth_q), (img_m, depth_m) = render(scene, camera, cams[q]), render(scene, camera, cams[m])
    kps = cv2.SIFT_create(1000).detect(cv2.cvtColor(img_q, cv2.COLOR_RGB2GRAY), None)
    pts = np.array([k.pt for k in kps])
    assert len(kps) > 400
    hist, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=(4, 3), range=((0, 640), (0, 480)))
    assert (hist > 5).sum() >= 10
    v = GeometricVerifier()
    _, passed, reason, pose = v.verify_pair(
        v.features(img_q, depth_q), v.features(img_m, depth_m), img_q.shape[:2], camera.K, camera.K
    )
    assert passed and pose is not None and pose.metric, reason
    truth = np.linalg.inv(cams[m]) @ cams[q]
    r = pose.rotation @ truth[:3, :3].T
    assert math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1, 1))) < 0.5
    assert np.linalg.norm(pose.translation - truth[:3, 3]) < 0.03 * np.linalg.norm(truth[:3, 3])


def test_export_reads_back(tmp_path):
    """(g)"""
    seq = make_world_sequence(image_size=(96, 72), lens="plumb_bob", texels_per_m=40.0, max_frames=8)
    paths = export_world_sequence(seq, tmp_path / "out")
    for path in paths.values():
        assert path.exists(), path
    for i in range(len(seq)):
        rgb = cv2.cvtColor(cv2.imread(str(paths["images"] / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(rgb, seq.images[i])
        mm = cv2.imread(str(paths["depth"] / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert mm.dtype == np.uint16 and np.abs(mm / 1000.0 - seq.depths[i]).max() <= 0.0005 + 1e-9
    stamps = [int(line) for line in paths["stamps_ns"].read_text().split()]
    assert stamps == [int(ns) for ns in seq.stamps_ns]
    assert paths["poses"].read_text().splitlines()[1].startswith("1700000000.123456789 ")
    for key, poses in (
        ("poses", seq.gt_camera_poses),
        ("gt_body", seq.gt_body_poses),
        ("odometry", seq.odom_body_poses),
    ):
        track = read_tum(paths[key])
        assert np.array_equal(track.stamps, seq.stamps)
        assert np.abs(track.poses - poses).max() < 1e-6
    assert np.array_equal(np.load(paths["same_place"]), seq.same_place)
    info = yaml.safe_load(paths["camera_info"].read_text())
    assert (info["image_width"], info["image_height"]) == (96, 72)
    assert np.allclose(np.reshape(info["camera_matrix"]["data"], (3, 3)), seq.camera.K)
    assert info["distortion_model"] == "plumb_bob"
    assert info["distortion_coefficients"]["data"] == list(seq.camera.lens.coeffs)
    assert info["distortion_coefficients"]["cols"] == 5 and len(info["projection_matrix"]["data"]) == 12
    ext = yaml.safe_load(paths["extrinsics"].read_text())
    assert (ext["parent_frame"], ext["child_frame"]) == ("base_link", "camera_optical_frame")
    mount = pose_matrix((ext["x"], ext["y"], ext["z"]), (ext["qx"], ext["qy"], ext["qz"], ext["qw"]))
    assert np.allclose(mount, seq.base_T_camera, atol=1e-12)
    meta = yaml.safe_load(paths["sequence"].read_text())
    assert meta["frames"] == 8 and meta["generator"]["lens"] == "plumb_bob"
    with pytest.raises(FileExistsError):
        export_world_sequence(seq, tmp_path / "out")


def test_cli_exports(tmp_path, capsys):
    """(h)"""
    from vpr_ros.apps.world import main

    out = tmp_path / "cli"
    args = ["--export", str(out), "--size", "64", "48", "--laps", "0.1", "--texels-per-m", "30"]
    assert main([*args, "--lens", "equidistant", "--lookalikes", "1", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "evaluate" in text and str(out / "same_place.npy") in text
    n = len(list((out / "images").iterdir()))
    assert n > 5 and len(list((out / "depth").iterdir())) == n
    meta = yaml.safe_load((out / "sequence.yaml").read_text())
    assert meta["generator"]["lens"] == "equidistant" and meta["generator"]["seed"] == 3


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_camera("kannala")
    with pytest.raises(ValueError):
        make_building(texels_per_m=400.0)
    with pytest.raises(ValueError):
        make_building(texels_per_m=20.0, lookalikes=50)
