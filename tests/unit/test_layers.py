"""The dependency direction of DESIGN section 5, enforced: every import of every module of
galleonfs (read from the source, function-level "late" imports and ``TYPE_CHECKING`` ones
included) must point down the layer graph below, and ``pyfuse3``, ``grpc`` and ``lmdb``
are imported only where DESIGN says.

The graph is the one docs/design.md ("Package map") draws. No exceptions are listed: an
import that runs back up fails, and so does an import cycle between two modules.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import galleonfs

PACKAGE_DIR = Path(galleonfs.__file__).resolve().parent

# Which layer a module is in: the longest prefix decides (``galleonfs`` itself is only the
# package's __init__). A module no prefix matches fails the test: give new packages a layer.
LAYER_OF_PREFIX: dict[str, str] = {
    "galleonfs": "floor",
    "galleonfs.errors": "floor", "galleonfs.limits": "floor", "galleonfs.units": "floor",
    "galleonfs.ids": "floor", "galleonfs.names": "floor",
    "galleonfs.qos": "qos", "galleonfs.metrics": "metrics", "galleonfs.audit": "audit",
    "galleonfs.backup": "backup",
    # Files and directories, durably (fsync of a directory, fallocate): it imports nothing of
    # ours, so every layer may stand on it, the leaves (audit) and backup included.
    "galleonfs.storage": "floor",
    "galleonfs.crypto": "crypto",
    "galleonfs.meta": "meta",
    "galleonfs.engine": "engine",
    "galleonfs.vfs": "vfs",
    "galleonfs.fuse": "fuse mount", "galleonfs.fuse.kernel": "fuse mount",
    "galleonfs.fuse.tuning": "fuse mount", "galleonfs.fuse.ready": "fuse mount",
    "galleonfs.fuse.adapter": "fuse adapter", "galleonfs.fuse.metering": "fuse adapter",
    "galleonfs.fuse.worker": "fuse worker", "galleonfs.fuse.control": "fuse worker",
    "galleonfs.volops": "volume operations",
    "galleonfs.workers": "workers",
    "galleonfs.cluster": "cluster",
    "galleonfs.model": "model", "galleonfs.managers.model": "model",
    "galleonfs.managers": "managers",
    "galleonfs.rpc": "api", "galleonfs.v1": "api", "galleonfs.rpc.convert": "api",
    "galleonfs.rpc.address": "api", "galleonfs.rpc.status": "api",
    "galleonfs.rpc.client": "rpc client",
    "galleonfs.rpc.services": "services", "galleonfs.rpc.keys": "services",
    "galleonfs.rpc.access": "services", "galleonfs.rpc.bridge": "services",
    "galleonfs.rpc.cluster": "services",
    # The peer channel (cluster mode): its generated code is wire types like the API's; the
    # server and client (a server, like rpc.server: its interceptors) reach the cluster layer.
    "galleonfs.peer": "api", "galleonfs.rpc.peer": "rpc server",
    # Who is calling (the unix-socket gate's peer credentials, the principal): servicers ask.
    "galleonfs.rpc.auth": "services", "galleonfs.rpc.gate": "services",
    "galleonfs.rpc.server": "rpc server",
    "galleonfs.rpc.audit": "rpc server",
    "galleonfs.rpc.validate": "rpc server", "galleonfs.rpc.codegen": "rpc server",
    "galleonfs.node": "node",
    "galleonfs.cli": "cli",
    "galleonfs.cli.galleonfs": "tool",
    # The CSI driver: a client of galleond (like the CLI) that serves the CSI API itself.
    "galleonfs.csi": "csi",
    # The Docker volume plugin: the same, over Docker's HTTP protocol (no grpc).
    "galleonfs.docker": "docker",
    "galleonfs.testing": "testing",
}

# The arrows: a layer may import the layers it points at and, through them, everything they
# may import. On top of these, every layer may import the floor, and every layer above the
# leaves (qos, metrics, audit) may import the leaves; a leaf imports only the floor. So does
# backup, the backup repository (issue 13), but it is no leaf: only what integrates it
# (managers) may import it, and it knows nothing of volumes.
ARROWS: dict[str, set[str]] = {
    "floor": set(),
    "qos": set(), "metrics": set(), "audit": set(),
    "backup": set(),
    "crypto": set(),
    "meta": {"crypto"},           # the store seals values with the volume's keys
    "engine": {"meta", "crypto"},
    "vfs": {"engine"},
    "fuse mount": set(),                     # the kernel side of a mount: find, tune, ready pipe
    "fuse adapter": {"vfs", "fuse mount"},   # pyfuse3 operations over the VFS, their metering
    "volume operations": {"engine"},         # one typed interface: offline (engine), online (control)
    "fuse worker": {"fuse adapter", "volume operations"},
    "workers": {"fuse mount", "volume operations"},   # supervise and launch mount workers
    "cluster": {"volume operations"},
    "model": set(),                          # the node's plain data: volumes, classes, states
    "managers": {"volume operations", "workers", "cluster", "model", "meta",   # meta: the catalog
                 "backup"},              # managers/backup feeds the repository a volume's blocks
    "api": {"model"},                        # the wire types and what both ends share
    "rpc client": {"api"},
    "cli": {"rpc client"},
    "csi": {"rpc client"},
    "docker": {"rpc client"},
    "tool": {"cli", "fuse worker", "workers"},   # galleonfs: one volume directory, no daemon
    "services": {"managers", "api"},
    "rpc server": {"services"},
    "node": {"rpc server"},
    "testing": {"node", "tool", "cli"},     # fixtures drive every part
}
FLOOR, LEAVES = "floor", {"qos", "metrics", "audit"}
FLOOR_ONLY = LEAVES | {"backup"}         # layers that import nothing of ours but the floor

# Third-party modules only one place may import (DESIGN section 5).
ONLY_IN: dict[str, tuple[str, ...]] = {
    "pyfuse3": ("galleonfs.fuse.adapter", "galleonfs.fuse.worker"),
    "grpc": ("galleonfs.rpc", "galleonfs.v1", "galleonfs.peer", "galleonfs.csi"),
    "grpc_health": ("galleonfs.rpc", "galleonfs.v1"),
    "grpc_reflection": ("galleonfs.rpc", "galleonfs.v1"),
    "grpc_tools": ("galleonfs.rpc", "galleonfs.v1"),
    "lmdb": ("galleonfs.meta.store", "galleonfs.meta.catalog"),
}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports(module: str, path: Path, source: str, known: set[str]) -> Iterator[Edge]:
    """Every import in ``source`` (anywhere in the tree: functions, ``if TYPE_CHECKING``),
    as an edge to the most precise module it names: ``from ..engine import frames`` is an
    edge to ``galleonfs.engine.frames`` when that is a module, else to ``galleonfs.engine``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield Edge(module, sub if sub in known else target, node.lineno)


def layer_of(module: str) -> str | None:
    best = None
    for prefix in LAYER_OF_PREFIX:
        exact_only = prefix == "galleonfs"
        if module == prefix or (not exact_only and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best):
                best = prefix
    return None if best is None else LAYER_OF_PREFIX[best]


def may_import(layer: str) -> set[str]:
    """``layer`` itself, what its arrows reach, the floor, and the leaves (above them: not
    for a leaf, nor for the other layers that import only the floor)."""
    reach, todo = {layer}, [layer]
    while todo:
        for down in ARROWS[todo.pop()]:
            if down not in reach:
                reach.add(down)
                todo.append(down)
    reach.add(FLOOR)
    if layer != FLOOR and layer not in FLOOR_ONLY:
        reach |= LEAVES
    return reach


def violations(edges: list[Edge]) -> dict[tuple[str, str], str]:
    """(importer, imported) -> why it breaks the graph, for every breaking edge."""
    out: dict[tuple[str, str], str] = {}
    for e in edges:
        top = e.imported.split(".")[0]
        if top in ONLY_IN:
            if not any(e.importer == m or e.importer.startswith(m + ".") for m in ONLY_IN[top]):
                out[(e.importer, top)] = f"line {e.line}: only {', '.join(ONLY_IN[top])} may import {top}"
            continue
        if top != "galleonfs":
            continue
        src, dst = layer_of(e.importer), layer_of(e.imported)
        assert src is not None and dst is not None
        if dst not in may_import(src):
            out[(e.importer, e.imported)] = (
                f"line {e.line}: {src} imports {dst}; {src} may import "
                f"{', '.join(sorted(may_import(src) - {src}))}")
    return out


@functools.cache
def current() -> tuple[dict[str, Path], list[Edge]]:
    modules = all_modules()
    known = set(modules)
    edges = [e for name, path in modules.items() for e in imports(name, path, path.read_text(), known)]
    return modules, edges


def test_every_module_has_a_layer() -> None:
    modules, _ = current()
    missing = sorted(m for m in modules if layer_of(m) is None)
    assert not missing, f"give these a layer in LAYER_OF_PREFIX (and docs/design.md): {missing}"
    assert set(LAYER_OF_PREFIX.values()) == set(ARROWS)


def test_imports_run_down_the_layers() -> None:
    _, edges = current()
    found = violations(edges)
    assert not found, "imports that run back up the layer graph (DESIGN section 5):\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(found.items()))


def cycles(modules: set[str], edges: list[Edge]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.imported in graph and e.imported != e.importer:
            graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycles_between_modules() -> None:
    modules, edges = current()
    found = cycles(set(modules), edges)
    assert not found, f"modules that import each other (break the cycle): {[sorted(c) for c in found]}"


# --- the checker itself ----------------------------------------------------------------------
KNOWN = {"galleonfs.engine", "galleonfs.engine.frames", "galleonfs.crypto", "galleonfs.crypto.codec",
         "galleonfs.qos.throttle", "galleonfs.metrics"}


def _edges_of(source: str, module: str = "galleonfs.crypto.codec") -> list[Edge]:
    return list(imports(module, PACKAGE_DIR / "crypto" / "codec.py", source, KNOWN))


def test_a_late_import_inside_a_function_counts() -> None:
    source = "def seal():\n    if True:\n        from ..engine import frames\n    return frames\n"
    [edge] = _edges_of(source)
    assert (edge.imported, edge.line) == ("galleonfs.engine.frames", 3)
    assert set(violations([edge])) == {("galleonfs.crypto.codec", "galleonfs.engine.frames")}


@pytest.mark.parametrize(("source", "imported"), [
    ("from .. import engine\n", "galleonfs.engine"),
    ("from ..engine import Engine\n", "galleonfs.engine"),
    ("import galleonfs.engine.frames\n", "galleonfs.engine.frames"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..engine import frames\n",
     "galleonfs.engine.frames"),
])
def test_each_import_form_resolves_to_its_module(source: str, imported: str) -> None:
    assert imported in [e.imported for e in _edges_of(source)]


def test_a_cycle_through_a_late_import_is_found() -> None:
    edges = [Edge("a", "b", 1), Edge("b", "c", 1), Edge("c", "a", 9), Edge("c", "d", 2)]
    assert cycles({"a", "b", "c", "d"}, edges) == [{"a", "b", "c"}]
    assert cycles({"a", "b"}, [Edge("a", "b", 1)]) == []


def test_leaves_import_only_the_floor_and_the_top_may_import_down() -> None:
    edge = Edge("galleonfs.qos.throttle", "galleonfs.metrics", 1)
    assert set(violations([edge])) == {("galleonfs.qos.throttle", "galleonfs.metrics")}
    assert violations([Edge("galleonfs.node.daemon", "galleonfs.engine.engine", 1)]) == {}
    assert violations([Edge("galleonfs.fuse.kernel", "pyfuse3", 1)]) != {}
    assert violations([Edge("galleonfs.cli.galleonctl", "galleonfs.managers.volumes", 1)]) != {}


def test_backup_imports_only_the_floor_and_only_the_managers_reach_it() -> None:
    assert violations([Edge("galleonfs.backup.writer", "galleonfs.errors", 1)]) == {}
    assert violations([Edge("galleonfs.backup.writer", "galleonfs.metrics", 1)]) != {}
    assert violations([Edge("galleonfs.backup.gc", "galleonfs.engine.engine", 1)]) != {}
    assert violations([Edge("galleonfs.managers.volumes", "galleonfs.backup", 1)]) == {}
    assert violations([Edge("galleonfs.engine.engine", "galleonfs.backup.repository", 1)]) != {}
    assert violations([Edge("galleonfs.metrics.http", "galleonfs.backup", 1)]) != {}
