"""Regenerate the gRPC code from ``proto/galleonfs/v1/*.proto``, ``proto/galleonfs/peer/v1/*.proto``
and ``proto/csi/v1/csi.proto``.

    python -m galleonfs.rpc.codegen          # write galleonfs/v1/, galleonfs/peer/v1/, galleonfs/csi/v1/
    python -m galleonfs.rpc.codegen --check  # exit 1 if the checked-in code is stale

The generated package is ``galleonfs.v1`` (the proto package path), checked in so that
installing GalleonFS needs no protoc. Besides grpcio-tools' code and message stubs
(``*_pb2.pyi``), mypy-protobuf's plugin writes typed stubs of the services
(``*_pb2_grpc.pyi``), so that ``mypy --strict`` checks every client call and servicer
against the API instead of seeing ``Any``. The output depends on the versions of both,
which are pinned in pyproject.toml's ``test`` extra (the suite checks the code is fresh).

The node-to-node API (``galleonfs.peer.v1``, ``proto/galleonfs/peer/v1/``) is generated into
``galleonfs.peer.v1``: a package of its own, so that it is not part of the public API (the
access table, reflection and the API listener never see it).

The CSI specification's ``csi.v1`` (``proto/csi/v1/csi.proto``, the CSI driver's API) is
generated into ``galleonfs.csi.v1``: protoc names Python modules after the proto's path, so
the file is compiled from a copy placed at ``galleonfs/csi/v1/csi.proto`` in a scratch
include directory. The proto package (``csi.v1``, what travels on the wire) is unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PACKAGE = Path("galleonfs") / "v1"
INIT = '"""Generated gRPC code for the galleonfs.v1 API (from proto/; see galleonfs.rpc.codegen)."""\n'
PEER_PACKAGE = Path("galleonfs") / "peer" / "v1"
PEER_INIT = ('"""Generated gRPC code for the node-to-node galleonfs.peer.v1 API (from proto/galleonfs/peer/v1/; '
             'see galleonfs.rpc.codegen)."""\n')
CSI_PROTO = PROTO_DIR / "csi" / "v1" / "csi.proto"
CSI_PACKAGE = Path("galleonfs") / "csi" / "v1"
CSI_INIT = ('"""Generated gRPC code for the CSI specification\'s csi.v1 (from proto/csi/v1/csi.proto; '
            'see galleonfs.rpc.codegen)."""\n')


def proto_files(package: Path = PACKAGE) -> list[Path]:
    return sorted((PROTO_DIR / package).glob("*.proto"))


def _grpc_stub_plugin() -> str:
    """mypy-protobuf's protoc plugin, installed next to this interpreter by the dev extra."""
    name = "protoc-gen-mypy_grpc"
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: install the test extra (pip install -e '.[test]')")
    return found


@contextlib.contextmanager
def _quiet_plugin() -> Iterator[None]:
    """The plugin announces each file on stderr ("Writing mypy to ..."); keep protoc's own
    messages (errors), drop those."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not line.startswith("Writing mypy to "):
                    print(line, file=sys.stderr)


def generate(out_root: Path) -> list[Path]:
    """Generate into ``out_root/galleonfs/v1`` and ``out_root/galleonfs/csi/v1``; return the
    files written."""
    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    _protoc(out_root, PROTO_DIR, [str(p.relative_to(PROTO_DIR)) for p in proto_files()])
    (out_root / PACKAGE / "__init__.py").write_text(INIT)
    (out_root / PEER_PACKAGE).mkdir(parents=True, exist_ok=True)
    _protoc(out_root, PROTO_DIR, [str(p.relative_to(PROTO_DIR)) for p in proto_files(PEER_PACKAGE)])
    (out_root / PEER_PACKAGE / "__init__.py").write_text(PEER_INIT)
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / CSI_PACKAGE / "csi.proto"
        staged.parent.mkdir(parents=True)
        shutil.copyfile(CSI_PROTO, staged)
        (out_root / CSI_PACKAGE).mkdir(parents=True, exist_ok=True)
        _protoc(out_root, Path(staging), [str(CSI_PACKAGE / "csi.proto")])
    (out_root / CSI_PACKAGE / "__init__.py").write_text(CSI_INIT)
    return sorted([*(out_root / PACKAGE).iterdir(), *(out_root / PEER_PACKAGE).iterdir(),
                   *(out_root / CSI_PACKAGE).iterdir()])


def _protoc(out_root: Path, include_root: Path, protos: list[str]) -> None:
    import grpc_tools  # type: ignore[import-untyped]  # grpcio-tools ships no types
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{include_root}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}",
            f"--plugin=protoc-gen-mypy_grpc={_grpc_stub_plugin()}", f"--mypy_grpc_out={out_root}",
            *protos]
    with _quiet_plugin():
        status = protoc.main(args)
    if status != 0:
        raise SystemExit("protoc failed")


def stale_files() -> list[str]:
    """Names of generated files that differ from what the .proto files produce now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {str(p.relative_to(tmp)): p for p in generate(Path(tmp)) if p.is_file()}
        current = {str(p.relative_to(ROOT)): p for package in (PACKAGE, PEER_PACKAGE, CSI_PACKAGE)
                   for p in (ROOT / package).glob("*") if p.is_file()}
        names = sorted(set(fresh) | set(current))
        return [n for n in names if n not in fresh or n not in current
                or not filecmp.cmp(fresh[n], current[n], shallow=False)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m galleonfs.rpc.codegen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the code is fresh")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"generated gRPC code is stale: {', '.join(stale)}; run python -m galleonfs.rpc.codegen",
                  file=sys.stderr)
            return 1
        print("generated gRPC code is fresh")
        return 0
    for path in generate(ROOT):
        print(os.path.relpath(path, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
