"""The metrics endpoint's own failure handling, without a daemon: the one expected failure of
the node's callbacks (galleond stopping) is quiet, and any other is a bug that shows (an
ERROR with its traceback in the log), never a silent gap or a made-up answer."""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from galleonfs.metrics.http import MetricsServer, Readiness


def _status() -> Any:
    return SimpleNamespace(capacity_bytes=100, available_bytes=40, provisioned_bytes=70,
                           disk_pressure=False, volumes_by_state={"available": 2},
                           workers_up=1, workers_expected=1, ready=True)


def _finished() -> Any:
    raise trio.RunFinishedError("run is finished")


def _bug() -> Any:
    return 1 // 0


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(status: Callable[[], Any], readiness: Callable[[], Readiness]) -> MetricsServer:
        server = MetricsServer("127.0.0.1:0", str(tmp_path), status, readiness)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _get(server: MetricsServer, path: str) -> tuple[int, str]:
    url = server.url.replace("/metrics", path)
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_node_metrics_and_readiness_come_from_the_callbacks(serve: Callable[..., MetricsServer]) -> None:
    server = serve(_status, lambda: Readiness(False, ["1 of 2 mount workers are not running"]))
    status, text = _get(server, "/metrics")
    assert status == 200
    assert "galleonfs_node_capacity_bytes 100.0" in text
    assert 'galleonfs_volumes{state="available"} 2.0' in text
    assert _get(server, "/readyz") == (503, "not ready\n1 of 2 mount workers are not running\n")


def test_a_stopping_daemon_leaves_out_the_node_metrics_quietly(serve: Callable[..., MetricsServer]) -> None:
    server = serve(_finished, lambda: Readiness(False, ["galleond is shutting down"]))
    status, text = _get(server, "/metrics")
    assert status == 200
    assert "galleonfs_node_" not in text
    assert _get(server, "/healthz") == (200, "ok\n")


@pytest.mark.allow_warnings
@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
def test_a_bug_in_a_callback_is_logged_with_its_traceback(
        serve: Callable[..., MetricsServer], path: str, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(_bug, _bug)
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        _get(server, path)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "galleonfs.metrics.http"]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ZeroDivisionError
