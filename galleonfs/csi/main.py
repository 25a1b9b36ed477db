"""``galleonfs-csi``: serve the CSI Identity, Controller and Node services on a unix socket.

    galleonfs-csi --endpoint unix:///csi/csi.sock --mode node --node-id "$NODE_NAME"

``--mode controller`` serves Identity and Controller (the Deployment with the
provisioner, resizer and snapshotter sidecars), ``--mode node`` Identity and Node (the
DaemonSet with the node-driver-registrar), ``--mode all`` the three (one process per
node, and the test tier). galleond is reached at ``--galleond-address`` (default its
unix socket); a token, when galleond needs one, comes from ``--token-file`` or
``GALLEONFS_TOKEN``, never from the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import stat
import sys
import threading
from concurrent import futures
from types import FrameType

import grpc

from .. import __version__
from ..errors import ExitCode, GalleonError
from .controller import Controller
from .identity import Identity
from .node import Node
from .service import Backend
from .spec import DRIVER_NAME
from .v1 import csi_pb2_grpc

log = logging.getLogger("galleonfs.csi")

DEFAULT_ENDPOINT = "unix:///csi/csi.sock"
DEFAULT_GALLEOND = "unix:/run/galleonfs/galleond.sock"
# Calls served at once: the sidecars send a few each; a mount can take seconds (its worker
# starts), so a handful of threads keeps one slow call from stalling the probe.
RPC_THREADS = 8
STOP_GRACE_S = 10.0


def socket_path(endpoint: str) -> str:
    """The file of a ``unix://`` endpoint (``unix:///csi/csi.sock``, ``unix:/csi/csi.sock``
    or a bare absolute path, the forms the sidecars accept)."""
    text = endpoint
    if text.startswith("unix://"):
        text = text[len("unix://"):]
    elif text.startswith("unix:"):
        text = text[len("unix:"):]
    if not text.startswith("/") or "\0" in text:
        raise GalleonError(f"--endpoint {endpoint[:128]!r} must be a unix socket with an absolute path, "
                           f"e.g. {DEFAULT_ENDPOINT}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galleonfs-csi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", default=os.environ.get("CSI_ENDPOINT", DEFAULT_ENDPOINT),
                        help=f"unix socket to serve CSI on (default {DEFAULT_ENDPOINT}, or CSI_ENDPOINT)")
    parser.add_argument("--mode", choices=("all", "controller", "node"), default="all",
                        help="which services to serve (default all)")
    parser.add_argument("--galleond-address", default=os.environ.get("GALLEONFS_ADDRESS", DEFAULT_GALLEOND),
                        help=f"galleond's address (default {DEFAULT_GALLEOND}, or GALLEONFS_ADDRESS)")
    parser.add_argument("--token-file", help="a file holding a galleond bearer token (or GALLEONFS_TOKEN)")
    parser.add_argument("--tls-ca", default=os.environ.get("GALLEONFS_TLS_CA"),
                        help="CA of a TCP galleond's certificate (or GALLEONFS_TLS_CA)")
    parser.add_argument("--tls-cert", default=os.environ.get("GALLEONFS_TLS_CERT"),
                        help="client certificate for a TCP galleond (or GALLEONFS_TLS_CERT)")
    parser.add_argument("--tls-key", default=os.environ.get("GALLEONFS_TLS_KEY"),
                        help="its key (or GALLEONFS_TLS_KEY)")
    parser.add_argument("--node-id", default=os.environ.get("NODE_ID") or socket.gethostname(),
                        help="this node's id for the orchestrator (default NODE_ID, else the host name)")
    parser.add_argument("--max-volumes-per-node", type=int, default=0,
                        help="volumes the orchestrator may publish on this node (default 0: no limit)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"galleonfs-csi {__version__} ({DRIVER_NAME})")
    return parser


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            with open(args.token_file) as f:
                return f.read().strip() or None
        except OSError as exc:
            raise GalleonError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
    return os.environ.get("GALLEONFS_TOKEN") or None


def _remove_stale_socket(path: str) -> None:
    """A socket file left by an earlier run is removed; any other file is refused."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise GalleonError(f"{path} exists and is not a socket; remove it or choose another --endpoint")
    os.unlink(path)


def serve(args: argparse.Namespace) -> grpc.Server:
    path = socket_path(args.endpoint)
    if args.max_volumes_per_node < 0:
        raise GalleonError("--max-volumes-per-node must not be negative")
    backend = Backend(args.galleond_address, token=_token(args),
                      tls={"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="csi"))
    controller = args.mode in ("all", "controller")
    csi_pb2_grpc.add_IdentityServicer_to_server(Identity(backend, controller=controller), server)
    if controller:
        csi_pb2_grpc.add_ControllerServicer_to_server(Controller(backend), server)
    if args.mode in ("all", "node"):
        csi_pb2_grpc.add_NodeServicer_to_server(
            Node(backend, node_id=args.node_id, max_volumes=args.max_volumes_per_node), server)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _remove_stale_socket(path)
    # Born 0660, never briefly wider: the sidecars run as root; nobody else talks CSI.
    umask = os.umask(0o117)
    try:
        server.add_insecure_port(f"unix:{path}")
        server.start()
    finally:
        os.umask(umask)
    os.chmod(path, 0o660)
    log.info("galleonfs-csi %s serving %s (%s) on %s, galleond at %s", __version__, DRIVER_NAME, args.mode,
             path, args.galleond_address)
    return server


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = serve(args)
    except GalleonError as exc:
        print(f"galleonfs-csi: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"galleonfs-csi: cannot serve on {args.endpoint}: {exc.strerror}", file=sys.stderr)
        return ExitCode.ERROR
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done.wait()
    server.stop(STOP_GRACE_S).wait()
    log.info("galleonfs-csi stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
