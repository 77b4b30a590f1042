"""``edgeser web MODEL_DIR``: the browser page and an exported model, served from localhost.

The page (``static/``: HTML, ES modules, CSS; no bundler) runs the 8-bit model with
onnxruntime-web's WASM backend on the visitor's device. The server only hands out files:
the page, onnxruntime-web's WASM build (from the npm registry through ``web/package.json``
and its lock file: ``npm ci --prefix web`` in the checkout, or ``EDGESER_WEB_VENDOR``
naming its ``dist`` folder) and the model folder's ``model.json`` and the ONNX files it
lists. Every response carries the cross-origin isolation headers WASM threads need
(``Cross-Origin-Opener-Policy: same-origin``, ``Cross-Origin-Embedder-Policy:
require-corp``). The same files on any static host (HTTPS, same headers) make the page
work on a phone.

numpy-free and torch-free: the standard library's HTTP server only.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from edgeser.core.errors import EdgeserError
from edgeser.runtime.card import read_model_card
from edgeser.runtime.vad import BUNDLED_SILERO

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: The onnxruntime-web files the page loads (WASM backend, SIMD + threads build).
VENDOR_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".wasm": "application/wasm",
    ".onnx": "application/octet-stream", ".png": "image/png",
}
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def vendor_dir() -> Path:
    """onnxruntime-web's ``dist`` folder: ``EDGESER_WEB_VENDOR``, else the checkout's
    ``web/node_modules/onnxruntime-web/dist``."""
    env = os.environ.get("EDGESER_WEB_VENDOR")
    root = Path(__file__).resolve().parents[3]
    path = Path(env) if env else root / "web" / "node_modules" / "onnxruntime-web" / "dist"
    missing = [f for f in VENDOR_FILES if not (path / f).is_file()]
    if missing:
        raise EdgeserError(
            f"onnxruntime-web not found in {path} (missing {', '.join(missing)}): run "
            "`npm ci --prefix web` in the edgeser checkout, or set EDGESER_WEB_VENDOR to "
            "onnxruntime-web's dist folder"
        )
    return path


def site_files(model_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """URL path -> file for everything the page may load (nothing else is served)."""
    onnx_path, card = read_model_card(model_dir)
    folder = onnx_path.parent
    files = {f"/{p.name}": p for p in STATIC.iterdir() if p.is_file()}
    files["/"] = STATIC / "index.html"
    vendor = vendor_dir()
    files.update({f"/vendor/ort/{name}": vendor / name for name in VENDOR_FILES})
    files["/vad/silero_vad.onnx"] = BUNDLED_SILERO
    files["/model/model.json"] = folder / "model.json"
    for name in (card.get("files") or {}).values():
        if (folder / name).is_file():
            files[f"/model/{name}"] = folder / name
    return files


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, Path]] = {}

    def do_GET(self) -> None:
        self._send(head=False)

    def do_HEAD(self) -> None:
        self._send(head=True)

    def _send(self, head: bool) -> None:
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        target = self.files.get(path)
        if target is None or not target.is_file():
            self.send_error(404, "not part of this page")
            return
        body = target.read_bytes()
        self.send_response(200)
        kind = CONTENT_TYPES.get(target.suffix, "application/octet-stream")
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the page went away
                log.debug("%s: client closed the connection", path)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def make_server(model_dir: str | os.PathLike[str], host: str = "127.0.0.1",
                port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server for the page and ``model_dir``'s exported model (not yet serving)."""
    handler = type("EdgeserPage", (_Handler,), {"files": site_files(model_dir)})
    try:
        return http.server.ThreadingHTTPServer((host, int(port)), handler)
    except OSError as e:
        raise EdgeserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def add_web_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``edgeser web MODEL_DIR [--port P] [--host H]``."""
    p: argparse.ArgumentParser = sub.add_parser(
        "web",
        help="serve the on-device browser page for an exported model (nothing leaves the device)",
        description="Serve the browser page and MODEL_DIR's exported model (model.json, "
        "model.int8.onnx) from this machine. The page classifies audio files on the visitor's "
        "device with onnxruntime-web.",
    )
    p.add_argument("model_dir", type=Path, help="exported model folder (model.json inside)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.set_defaults(func=run_web)
    return p


def run_web(args: argparse.Namespace) -> int:
    server = make_server(args.model_dir, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.model_dir} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0

