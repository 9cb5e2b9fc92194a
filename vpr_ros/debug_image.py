"""A picture of one verification: query and match side by side, inlier matches drawn.

The matches are found again for the picture (local features, ratio test, fundamental-matrix
RANSAC), with the re-ranker's own ``features``/``match`` methods when it has them (the
geometric verifier does) and SIFT otherwise. The verdict written on the image is the
re-ranker's; the lines only show where the two views agree.
"""

from __future__ import annotations

import cv2
import numpy as np

# Colours in RGB.
_INLIER = (40, 220, 60)
_OUTLIER = (230, 60, 40)
_TEXT = (255, 255, 255)


def _sift_matches(img_q: np.ndarray, img_m: np.ndarray, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    sift = cv2.SIFT_create(nfeatures=1000)
    kq, dq = sift.detectAndCompute(cv2.cvtColor(img_q, cv2.COLOR_RGB2GRAY), None)
    km, dm = sift.detectAndCompute(cv2.cvtColor(img_m, cv2.COLOR_RGB2GRAY), None)
    if dq is None or dm is None or len(dq) < 2 or len(dm) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pairs = [
        (m[0].queryIdx, m[0].trainIdx)
        for m in cv2.BFMatcher(cv2.NORM_L2).knnMatch(dq, dm, k=2)
        if len(m) == 2 and m[0].distance < ratio * m[1].distance
    ]
    if not pairs:
        return np.zeros((0, 2)), np.zeros((0, 2))
    qi, mi = np.array(pairs).T
    return np.array([kq[i].pt for i in qi]), np.array([km[i].pt for i in mi])


def find_matches(
    img_q: np.ndarray, img_m: np.ndarray, reranker=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query points [M,2], match points [M,2], inlier mask [M]) for drawing."""
    if reranker is not None and hasattr(reranker, "features") and hasattr(reranker, "match"):
        result = reranker.match(reranker.features(img_q), reranker.features(img_m))
        pts_q, pts_m = np.asarray(result.query_pts), np.asarray(result.match_pts)
    else:
        pts_q, pts_m = _sift_matches(img_q, img_m)
    inliers = np.zeros(len(pts_q), bool)
    if len(pts_q) >= 8:
        model, mask = cv2.findFundamentalMat(pts_q, pts_m, cv2.FM_RANSAC, 2.0, 0.999)
        # Several stacked solutions or a mask of the wrong length mean no usable model.
        if model is not None and mask is not None and model.shape == (3, 3) and mask.size == len(pts_q):
            inliers = mask.ravel().astype(bool)
    return pts_q, pts_m, inliers


def draw_pair(
    img_q: np.ndarray,
    img_m: np.ndarray,
    pts_q: np.ndarray,
    pts_m: np.ndarray,
    inliers: np.ndarray,
    caption: str = "",
    max_lines: int = 300,
    show_outliers: bool = False,
) -> np.ndarray:
    """Query (left) and match (right) at one height, match lines between them, a caption."""
    h = max(img_q.shape[0], img_m.shape[0])
    scale_q, scale_m = h / img_q.shape[0], h / img_m.shape[0]
    left = cv2.resize(img_q, (round(img_q.shape[1] * scale_q), h)) if scale_q != 1 else img_q
    right = cv2.resize(img_m, (round(img_m.shape[1] * scale_m), h)) if scale_m != 1 else img_m
    canvas = np.ascontiguousarray(np.concatenate([left, right], axis=1))
    offset = left.shape[1]
    order = np.flatnonzero(inliers)
    if show_outliers:
        order = np.concatenate([np.flatnonzero(~inliers), order])
    for i in order[-max_lines:]:
        colour = _INLIER if inliers[i] else _OUTLIER
        p = (int(round(pts_q[i, 0] * scale_q)), int(round(pts_q[i, 1] * scale_q)))
        q = (int(round(pts_m[i, 0] * scale_m)) + offset, int(round(pts_m[i, 1] * scale_m)))
        cv2.line(canvas, p, q, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, p, 2, colour, -1)
        cv2.circle(canvas, q, 2, colour, -1)
    if caption:
        cv2.rectangle(canvas, (0, 0), (canvas.shape[1], 24), (0, 0, 0), -1)
        cv2.putText(canvas, caption, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _TEXT, 1, cv2.LINE_AA)
    return canvas
