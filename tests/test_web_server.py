"""``edgeser web`` as an attacker meets it: only the page's files, bounded memory and
connections, loopback and a Host allow-list (no browser needed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeser.cli import main
from edgeser.core.errors import EdgeserError
from edgeser.testing import make_dummy_model
from edgeser.web.server import Limits, host_allowed, is_loopback, make_server, warn_if_exposed

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "web" / "node_modules" / "onnxruntime-web" / "dist"

pytestmark = pytest.mark.skipif(
    not VENDOR.is_dir(), reason="the page's npm packages are not installed (npm ci --prefix web)"
)


def _raw_get(
    url: str, path: str, host: str | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no normalisation, as ``curl --path-as-is``)."""
    addr = url.split("//", 1)[1].rstrip("/")
    h, port = addr.rsplit(":", 1)
    with socket.create_connection((h, int(port)), timeout=timeout) as s:
        name = addr if host is None else host
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def hostile_model(tmp_path):
    """An exported model whose model.json names files outside its folder, with a symlink
    out of it and one inside it."""
    folder = tmp_path / "model"
    make_dummy_model(folder)
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve", encoding="utf-8")
    (folder / "escape.onnx").symlink_to(secret)
    (folder / "inside.onnx").symlink_to(folder / "model.onnx")
    (folder / "sub").mkdir()
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card["files"].update(
        {
            "x": "../../../../../../etc/passwd",
            "y": "/etc/passwd",
            "z": "../secret.txt",
            "link": "escape.onnx",
            "dir": "sub",
            "ok": "inside.onnx",
        }
    )
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return folder, secret


def test_only_the_pages_files_are_served(hostile_model, caplog):
    folder, _secret = hostile_model
    server = make_server(folder, "127.0.0.1", 0).start()
    try:
        url = server.url
        assert _raw_get(url, "/model/model.onnx")[0] == 200
        assert _raw_get(url, "/model/inside.onnx")[0] == 200  # a link that stays inside
        status, body = _raw_get(url, "/model/model.json")
        assert status == 200 and json.loads(body)["format"] == "edgeser-onnx"
        for path in (
            "/model//etc/passwd",
            "/model/../../../../../../etc/passwd",
            "/model/../secret.txt",
            "/model/escape.onnx",
            "/model/sub",
            "/../../etc/passwd",
            "/model/%2e%2e/secret.txt",
            "/etc/passwd",
            "/model/42",
        ):
            status, body = _raw_get(url, path)
            assert status == 404, path
            assert b"do not serve" not in body and b"root:" not in body
        # a file swapped for a symlink out of the folder after the start is not followed
        os.replace(folder / "escape.onnx", folder / "model.int8.onnx")
        assert _raw_get(url, "/model/model.int8.onnx")[0] == 404
    finally:
        server.stop()
    refused = [r.getMessage() for r in caplog.records if "not serving" in r.getMessage()]
    assert len(refused) == 5  # x, y, z, link, dir: each named once
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card["files"]["bad"] = 42
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(EdgeserError, match='"files" must map names to file names'):
        make_server(folder, "127.0.0.1", 0)


def test_host_header_allow_list(hostile_model):
    folder, _ = hostile_model
    server = make_server(folder, "127.0.0.1", 0, allowed_hosts=["box.lan"]).start()
    try:
        port = server.address[1]
        for ok in (
            f"127.0.0.1:{port}",
            "localhost",
            f"localhost:{port}",
            "[::1]:80",
            "box.lan:8000",
            "10.0.0.5",
        ):
            assert _raw_get(server.url, "/", host=ok)[0] == 200, ok
        for bad in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
            status, body = _raw_get(server.url, "/", host=bad)
            assert status in (400, 404) and b"edgeser" not in body, bad
    finally:
        server.stop()
    assert host_allowed("anything.example", ["*"])
    assert not host_allowed("localhost.evil", [])


def test_slow_readers_do_not_make_the_server_hold_the_file(tmp_path):
    """Eight clients ask for a 64 MB model and never read: the server's memory must not
    grow by the file size for each (it did: a whole copy per request)."""
    folder = tmp_path / "model"
    make_dummy_model(folder)
    with open(folder / "model.onnx", "wb") as fh:
        fh.write(os.urandom(1 << 20) * 64)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeser.cli", "web", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving" in line, proc.stderr.read()
        url = line.split(" at ", 1)[1].split()[0]
        addr = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)

        def rss() -> int:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])

        before = rss()
        clients = []
        for _ in range(8):
            s = socket.create_connection((addr[0], int(addr[1])))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET /model/model.onnx HTTP/1.1\r\nHost: {addr[0]}\r\n\r\n".encode())
            clients.append(s)
        time.sleep(3)
        grown_mb = (rss() - before) / 1024
        for s in clients:
            s.close()
        print(f"server RSS grew {grown_mb:.1f} MB with 8 stalled downloads of 64 MB")
        assert grown_mb < 40  # one 64 MB copy alone would exceed it
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_idle_and_slow_header_connections_are_closed(hostile_model):
    folder, _ = hostile_model
    limits = Limits(header_timeout=0.5, keep_alive=1.0, max_connections=8)
    server = make_server(folder, "127.0.0.1", 0, limits=limits).start()
    try:
        host, port = server.address
        idle = [socket.create_connection((host, port), timeout=5) for _ in range(4)]
        slow = socket.create_connection((host, port), timeout=5)
        slow.sendall(b"GET / HTTP/1.1\r\n")  # headers that never end
        time.sleep(1.5)
        for s in [*idle, slow]:
            assert s.recv(1024) == b""  # the server closed it
            s.close()
        assert _raw_get(server.url, "/")[0] == 200  # and still serves others
    finally:
        server.stop()


def test_connections_beyond_the_limit_get_503(hostile_model):
    folder, _ = hostile_model
    server = make_server(
        folder, "127.0.0.1", 0, limits=Limits(max_connections=3, header_timeout=30)
    ).start()
    try:
        host, port = server.address
        held = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
        time.sleep(0.3)
        assert _raw_get(server.url, "/")[0] == 503
        for s in held:
            s.close()
        time.sleep(0.3)
        assert _raw_get(server.url, "/")[0] == 200
    finally:
        server.stop()


def test_bad_ports_and_exposed_hosts_are_one_line(hostile_model, capsys):
    folder, _ = hostile_model
    with pytest.raises(SystemExit) as e:
        main(["web", str(folder), "--port", "70000"])
    assert e.value.code == 2
    assert "--port: must be in 0-65535, got 70000" in capsys.readouterr().err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        assert main(["web", str(folder), "--port", str(busy.getsockname()[1])]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edgeser: error: cannot listen on 127.0.0.1")
    finally:
        busy.close()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    warn_if_exposed("127.0.0.1", "the page")
    assert capsys.readouterr().err == ""
    warn_if_exposed("0.0.0.0", "the page")
    assert capsys.readouterr().err.startswith("edgeser: warning: listening on 0.0.0.0")
