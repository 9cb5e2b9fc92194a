"""Map persistence soak: a save loop racing the keyframe writer, then SIGKILLs mid-save.

Not run in CI (it takes minutes). No model is loaded: a fake encoder makes a descriptor from
each image, so the test exercises ``MapSession`` exactly as the descriptor node drives it::

    python tools/map_soak.py                        # 600 s save loop, 100 kills
    python tools/map_soak.py --seconds 60 --kills 20

1. Save loop: keyframes arrive at ``--rate`` Hz (10) and ``MapSession.save`` runs every
   ``--save-period`` s (0.2) on its own thread, for ``--seconds``. Afterwards every keyframe
   of the saved map must have a complete folder (``read_payload``) and none may be missing.
2. Kills: a child process runs the same loop on one map directory (which starts with
   ``--bulk`` descriptors, so that a save takes long enough to be hit) and is SIGKILLed at a
   random moment, ``--kills`` times. After each kill the map is opened as a restarted node
   would, and must hold the keyframes of the last committed save (or of the save in flight,
   if it passed its commit point), each with a complete folder.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MODEL = "mobilenetv2"  # the name the map records; its weights are never loaded


class FakeEncoder:
    def __init__(self, dim: int):
        from vpr_ros.models.registry import get_model_spec

        self.spec = get_model_spec(MODEL)  # no local features: encode() is used
        self.input_size = self.spec.input.size
        self.descriptor_dim = dim
        self.device = "cpu"

    def encode(self, images):
        out = []
        for image in images:
            x = np.random.default_rng(int(image[:8].sum())).standard_normal(self.descriptor_dim)
            out.append(x / np.linalg.norm(x))
        return np.asarray(out, np.float32)


def _session(path: Path, dim: int):
    from vpr_ros.config import PipelineConfig
    from vpr_ros.map import MapSession
    from vpr_ros.pipeline import DescriptorStage

    config = PipelineConfig(
        model=MODEL, keyframe_min_period=0.0, map_device="cpu", verification_image_width=320
    )
    session = MapSession(str(path))
    session.open(DescriptorStage(config, encoder=FakeEncoder(dim), camera="front"))
    return session


def _frame(i: int):
    from vpr_ros.types import Frame

    rng = np.random.default_rng(i)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)  # 240x320, compresses like a photo
    pose = np.eye(4)
    pose[0, 3] = float(i)
    return Frame(float(i), image, "cam", np.array([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]]), None, pose)


def _run_loop(session, seconds: float, rate: float, save_period: float, on_add=None) -> dict:
    """Keyframes at ``rate`` Hz on this thread, saves every ``save_period`` s on another."""
    stop, stats = threading.Event(), {"added": 0, "saves": 0, "save_failures": 0, "save_s": []}

    def saver():
        while not stop.wait(save_period):
            try:
                stats["save_s"].append(session.save()[2])
                stats["saves"] += 1
            except Exception as exc:
                stats["save_failures"] += 1
                print(f"save failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    thread = threading.Thread(target=saver, daemon=True)
    thread.start()
    start = session.stage.map.next_id
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        result, _ = session.process(_frame(start + i))
        if result is not None:
            stats["added"] += 1
            if on_add is not None:
                on_add(result.keyframe.id)
        i += 1
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    stop.set()
    thread.join()
    return stats


def _check_folders(path: Path, ids) -> list[int]:
    """Keyframes whose folder is missing or damaged."""
    from vpr_ros.map import read_payload

    bad = []
    for kf_id in ids:
        try:
            if read_payload(path, kf_id) is None:
                bad.append(kf_id)
        except Exception:
            bad.append(kf_id)
    return bad


def save_loop(args) -> None:
    from vpr_ros.map import load_map

    path = Path(tempfile.mkdtemp(prefix="map_soak_")) / "map"
    session = _session(path, args.dim)
    stats = _run_loop(session, args.seconds, args.rate, args.save_period)
    session.save()
    errors = session.counts["map_payload_errors"]
    session.close()
    kmap, _ = load_map(path, MODEL, args.dim)
    incomplete = _check_folders(path, sorted(kmap.records))
    save_s = sorted(stats["save_s"]) or [0.0]
    print(
        f"save loop: {args.seconds:.0f} s, keyframes at {args.rate:g} Hz, saves every {args.save_period:g} s"
    )
    print(f"  keyframes added     {stats['added']}")
    print(f"  keyframes saved     {len(kmap)}")
    print(f"  incomplete folders  {len(incomplete)}")
    print(f"  lost keyframes      {stats['added'] - len(kmap)}")
    print(f"  payload errors      {errors}")
    print(
        f"  saves               {stats['saves']} ({stats['save_failures']} failed), "
        f"p50 {statistics.median(save_s) * 1e3:.0f} ms, max {save_s[-1] * 1e3:.0f} ms"
    )


def child(path: Path, log_path: Path, dim: int, bulk: int, rate: float, save_period: float) -> None:
    """Run by the kill loop: the save loop on ``path``, logging each save's begin and end."""
    session = _session(path, dim)
    log = open(log_path, "a", buffering=1)
    if len(session.stage.map) == 0 and bulk:  # descriptors without folders: a long save
        data = np.random.default_rng(0).standard_normal((bulk, dim)).astype(np.float32)
        with session.lock:
            for d in data / np.linalg.norm(data, axis=1, keepdims=True):
                session.stage.map.add(d, stamp=0.0)
            session.version += 1
    real = session.store.save

    def logged(snap, **kwargs):
        log.write(f"begin {snap.num_keyframes}\n")
        info = real(snap, **kwargs)
        log.write(f"end {info.num_keyframes}\n")
        return info

    session.store.save = logged
    _run_loop(session, 1e9, rate, save_period, on_add=lambda kf_id: log.write(f"added {kf_id + 1}\n"))


def kill_loop(args) -> None:
    from vpr_ros.map import open_map

    path = Path(tempfile.mkdtemp(prefix="map_soak_")) / "map"
    log = path.parent / "saves.log"
    rnd = random.Random(args.seed)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    counts = {"mid_save": 0, "loadable": 0, "lost": 0, "incomplete": 0, "unsaved": 0, "added": 0}
    committed = 0
    for k in range(args.kills):
        log.write_text("")
        cmd = [sys.executable, __file__, "--child", str(path), str(log), str(args.dim), str(args.bulk)]
        proc = subprocess.Popen(cmd + [str(args.rate), str(args.save_period)], env=env)
        deadline = time.monotonic() + 120
        while "begin" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if proc.poll() is not None:
            raise SystemExit(f"kill {k}: the child died on its own (exit {proc.returncode})")
        time.sleep(rnd.uniform(0.0, args.max_delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        events = [line.split() for line in log.read_text().splitlines()]
        begun = [int(n) for kind, n in events if kind == "begin"]
        ended = [int(n) for kind, n in events if kind == "end"]
        added = [int(n) for kind, n in events if kind == "added"]  # next id after each keyframe
        counts["added"] += len(added)
        in_flight = begun[-1] if len(begun) > len(ended) else None
        counts["mid_save"] += in_flight is not None
        committed = ended[-1] if ended else committed
        try:
            kmap, _, _ = open_map(path, MODEL, args.dim, device="cpu")  # as a restarted node
        except Exception as exc:
            print(f"kill {k}: map NOT loadable: {type(exc).__name__}: {exc}")
            continue
        counts["loadable"] += 1
        n = len(kmap)
        if n not in {committed, in_flight}:
            print(
                f"kill {k}: map holds {n} keyframes, last committed save {committed}, in flight {in_flight}"
            )
        counts["lost"] += max(0, committed - n)
        counts["incomplete"] += len(_check_folders(path, [i for i in kmap.records if i >= args.bulk]))
        counts["unsaved"] += sum(1 for a in added if a - 1 >= kmap.next_id)
        committed = n
    print(f"kills: {args.kills} SIGKILLs at random moments ({counts['mid_save']} mid-save)")
    print(f"  keyframes added     {counts['added']} (by the children, besides {args.bulk} bulk descriptors)")
    print(f"  loadable after kill {counts['loadable']} of {args.kills}")
    print(f"  lost keyframes      {counts['lost']} (of committed saves)")
    print(f"  unsaved at the kill {counts['unsaved']} (added after the last commit: lost by design)")
    print(f"  incomplete folders  {counts['incomplete']}")
    print(f"  final map           {committed} keyframes ({args.bulk} bulk, no folders)")


def main(argv=None) -> None:
    if argv is None and sys.argv[1:2] == ["--child"]:
        p, log, dim, bulk, rate, period = sys.argv[2:8]
        return child(Path(p), Path(log), int(dim), int(bulk), float(rate), float(period))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the save loop")
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs of a saving child process")
    parser.add_argument("--rate", type=float, default=10.0, help="keyframes per second")
    parser.add_argument("--save-period", type=float, default=0.2, help="seconds between saves")
    parser.add_argument("--dim", type=int, default=256, help="descriptor size")
    parser.add_argument("--bulk", type=int, default=20000, help="descriptors in the killed map")
    parser.add_argument("--max-delay", type=float, default=1.0, help="latest kill after the first save")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seconds > 0:
        save_loop(args)
    if args.kills > 0:
        kill_loop(args)


if __name__ == "__main__":
    main()
