"""The evaluation figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import PRCurve

TRUE_COLOR, FALSE_COLOR, GT_COLOR = "#1a9850", "#d73027", "#2c7bb6"
MAX_MATRIX_PIXELS = 1200  # larger similarity matrices are max-pooled for display


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curve(
    curve: PRCurve,
    operating_point: tuple[float | None, float | None],
    path: Path,
    title: str,
    average_precision: float | None,
    r100p: float | None,
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
    if len(curve.recall):
        # Start at recall 0 with the first point's precision, like the step curve AP integrates.
        ax.step(np.r_[0.0, curve.recall], np.r_[curve.precision[0], curve.precision], where="pre", lw=2)
    p, r = operating_point
    if p is not None and r is not None:
        ax.plot([r], [p], "o", color=FALSE_COLOR if p < 1 else TRUE_COLOR, ms=8, label="published closures")
        ax.legend(loc="lower left")
    stats = []
    if average_precision is not None:
        stats.append(f"AP {average_precision:.3f}")
    if r100p is not None:
        stats.append(f"R@100P {r100p:.3f}")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    ax.set_title(f"{title}\n{', '.join(stats)}", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pool(matrix: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return matrix
    n = (matrix.shape[0] // factor) * factor
    m = matrix[:n, :n].reshape(n // factor, factor, n // factor, factor)
    return m.max(axis=(1, 3))


def plot_similarity(
    similarity: np.ndarray,
    same_place: np.ndarray,
    closures: list[tuple[int, int, bool]],
    path: Path,
    title: str,
) -> Path:
    """Keyframe x keyframe descriptor similarity; ground truth outlined, closures marked.

    ``same_place`` and ``closures`` are in keyframe indices (rows/columns of ``similarity``).
    """
    plt = _pyplot()
    n = len(similarity)
    factor = max(1, int(np.ceil(n / MAX_MATRIX_PIXELS)))
    fig, ax = plt.subplots(figsize=(5.6, 5.0), dpi=100)
    im = ax.imshow(_pool(similarity, factor), cmap="Greys", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    gt = _pool(same_place.astype(np.float32), factor)
    if gt.any():
        ax.contour(gt, levels=[0.5], colors=GT_COLOR, linewidths=0.9)
    for ok in (True, False):
        pts = np.array([(q, m) for q, m, good in closures if good == ok], dtype=float).reshape(-1, 2) / factor
        if len(pts):
            ax.plot(
                pts[:, 1],
                pts[:, 0],
                "o" if ok else "x",
                ms=4,
                mew=1.2,
                color=TRUE_COLOR if ok else FALSE_COLOR,
                mfc="none" if ok else None,
                label=f"{'true' if ok else 'false'} loop closures ({len(pts)})",
            )
    ax.plot([], [], color=GT_COLOR, label="ground truth (same place), outlined")
    fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
    unit = "keyframe" if factor == 1 else f"keyframe / {factor}"
    ax.set(xlabel=f"match {unit}", ylabel=f"query {unit}")
    ax.set_title(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_trajectory(
    positions: dict[int, np.ndarray],
    stamps: dict[int, float],
    closures: list[tuple[int, int, bool]],
    path: Path,
    title: str,
) -> Path:
    """Camera path with loop-closure edges: top view, and lifted by time.

    Revisits overlap in the top view, so the second panel puts time on the vertical axis:
    there a loop edge joins the two passes and a false one stands out by its length.
    """
    plt = _pyplot()
    frames = sorted(positions)
    xyz = np.array([positions[f] for f in frames])
    extent = xyz.max(axis=0) - xyz.min(axis=0)
    a, b = sorted(np.argsort(-extent)[:2])
    names = "xyz"
    t0 = min(stamps[f] for f in frames)
    t = {f: stamps[f] - t0 for f in frames}
    fig = plt.figure(figsize=(10, 4.6), dpi=100)
    top = fig.add_subplot(1, 2, 1)
    lifted = fig.add_subplot(1, 2, 2, projection="3d")
    top.plot(xyz[:, a], xyz[:, b], "-", color="0.5", lw=1, label="trajectory")
    top.plot(xyz[:1, a], xyz[:1, b], "k^", ms=6, label="start")
    lifted.plot(xyz[:, a], xyz[:, b], [t[f] for f in frames], "-", color="0.5", lw=1)
    for ok in (True, False):
        edges = [(q, m) for q, m, good in closures if good == ok and q in positions and m in positions]
        color = TRUE_COLOR if ok else FALSE_COLOR
        for i, (q, m) in enumerate(edges):
            pq, pm = positions[q], positions[m]
            label = f"{'true' if ok else 'false'} loop closures ({len(edges)})" if i == 0 else None
            top.plot([pq[a], pm[a]], [pq[b], pm[b]], "-", color=color, lw=1.2 if ok else 1.8, label=label)
            top.plot([pq[a]], [pq[b]], ".", color=color, ms=5)
            lifted.plot([pq[a], pm[a]], [pq[b], pm[b]], [t[q], t[m]], "-", color=color, lw=1.0 if ok else 1.6)
    top.set(xlabel=f"{names[a]} [m]", ylabel=f"{names[b]} [m]")
    top.set_aspect("equal", adjustable="datalim")
    top.legend(loc="best", fontsize=8)
    top.grid(alpha=0.3)
    top.set_title("top view", fontsize=9)
    lifted.set(xlabel=f"{names[a]} [m]", ylabel=f"{names[b]} [m]", zlabel="time [s]")
    lifted.set_title("time upward", fontsize=9)
    lifted.view_init(elev=20, azim=-60)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
