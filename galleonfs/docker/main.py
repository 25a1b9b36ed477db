"""``galleonfs-docker``: serve Docker's volume-plugin protocol on a unix socket.

    galleonfs-docker            # /run/docker/plugins/galleonfs.sock: `docker volume create -d galleonfs`

Docker finds a plugin by its socket in /run/docker/plugins/; the plugin's name is the
socket's. Requests are ``POST /VolumeDriver.<Call>`` with a JSON body, answered with JSON
(``{"Err": "..."}`` and status 500 on failure), one request at a time per connection,
several connections at once (threads: a mount waits for its worker).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socketserver
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler
from types import FrameType
from typing import Any

from .. import __version__
from ..errors import ExitCode, GalleonError
from ..rpc.client import Client
from .plugin import Plugin, PluginError

log = logging.getLogger("galleonfs.docker")

DEFAULT_SOCKET = "/run/docker/plugins/galleonfs.sock"
DEFAULT_GALLEOND = "unix:/run/galleonfs/galleond.sock"
# Under galleond's default mount root /run/galleonfs/mounts.
DEFAULT_MOUNT_DIR = "/run/galleonfs/mounts/docker"
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
BODY_MAX_BYTES = 64 * 1024       # a Create with options is well under 1 KiB


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    plugin: Plugin


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 <= length <= BODY_MAX_BYTES:
                raise PluginError(f"a request body must be at most {BODY_MAX_BYTES} bytes")
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise PluginError("the request body must be a JSON object")
            self._reply(200, self.server.plugin.handle(self.path, body))
        except (PluginError, GalleonError) as exc:
            self._reply(500, {"Err": str(exc)})
        except (ValueError, UnicodeDecodeError):
            self._reply(500, {"Err": "the request body is not JSON"})
        except Exception as exc:
            log.exception("%s failed", self.path[:64])
            self._reply(500, {"Err": f"internal error in the GalleonFS volume plugin: {type(exc).__name__}"})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return "unix"         # a unix socket's client has no address (the default indexes one)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galleonfs-docker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"where to listen (default {DEFAULT_SOCKET})")
    parser.add_argument("--galleond-address", default=os.environ.get("GALLEONFS_ADDRESS", DEFAULT_GALLEOND),
                        help=f"galleond's address (default {DEFAULT_GALLEOND}, or GALLEONFS_ADDRESS)")
    parser.add_argument("--mount-dir", default=DEFAULT_MOUNT_DIR,
                        help=f"where volumes are mounted, inside galleond's mount_roots (default {DEFAULT_MOUNT_DIR})")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"galleonfs-docker {__version__}")
    return parser


def serve(args: argparse.Namespace) -> _Server:
    for path, what in ((args.socket, "--socket"), (args.mount_dir, "--mount-dir")):
        if not os.path.isabs(path):
            raise GalleonError(f"{what} {path[:128]!r} must be an absolute path")
    try:
        if not stat.S_ISSOCK(os.lstat(args.socket).st_mode):
            raise GalleonError(f"{args.socket} exists and is not a socket; remove it or choose another --socket")
        os.unlink(args.socket)               # left by an earlier run
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(args.socket), exist_ok=True)
    os.makedirs(args.mount_dir, mode=0o755, exist_ok=True)
    umask = os.umask(0o117)                 # born 0660, never briefly wider: dockerd runs as root
    try:
        server = _Server(args.socket, _Handler)
    finally:
        os.umask(umask)
    os.chmod(args.socket, 0o660)
    server.plugin = Plugin(Client(args.galleond_address), os.path.realpath(args.mount_dir))
    return server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = serve(args)
    except GalleonError as exc:
        print(f"galleonfs-docker: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"galleonfs-docker: cannot serve on {args.socket}: {exc.strerror}", file=sys.stderr)
        return ExitCode.ERROR

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("galleonfs-docker %s serving %s, galleond at %s", __version__, args.socket, args.galleond_address)
    server.serve_forever()
    server.server_close()
    os.unlink(args.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
