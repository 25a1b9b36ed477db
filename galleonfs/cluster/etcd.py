"""The one door to etcd: a typed, bounded wrapper around ``etcd3gw`` (etcd's v3 JSON gateway).

Why etcd3gw: OpenStack maintains it, it is pure Python (``requests``), typed, and speaks
etcd's own v3 API through the gRPC gateway every etcd >= 3.4 serves on its client port;
the alternatives are unmaintained (python-etcd3) or need stubs built from etcd's protos.
We use it for plain requests only (range, put, delete, transactions, leases), never its
watch threads or locks.

Every call is synchronous and bounded by ``limits.etcd_request_timeout_s``; trio code calls
it through ``trio.to_thread.run_sync``. Every failure comes out as our error tree:
``Unavailable`` when etcd cannot be reached or timed out (one line: which URL and what to
check), ``GalleonError`` when it answered with an error. Keys are text built by
``keys`` from validated names only; values are JSON objects.

What it must not do: let an etcd3gw or ``requests`` exception escape, wait without a bound,
or retry on its own (callers decide: a keep-alive retries, a transaction must not).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import etcd3gw
from etcd3gw import exceptions as etcd_errors

from ..errors import GalleonError, InvalidArgument, Unavailable
from . import limits

T = TypeVar("T")


def parse_url(text: str) -> tuple[str, str, int]:
    """``http://host:port`` (or https) -> (scheme, host, port); anything else is refused."""
    url = urllib.parse.urlsplit(text.strip())
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme not in ("http", "https") or not url.hostname or port is None or url.path not in ("", "/"):
        raise InvalidArgument(what="etcd URL", value=repr(text[:200]),
                              expected="use http://HOST:PORT or https://HOST:PORT (etcd's client URL)")
    return url.scheme, url.hostname, port


@dataclass(frozen=True)
class Kv:
    key: str
    value: dict[str, Any]
    mod_revision: int
    create_revision: int
    lease: int                       # 0: no lease


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction (etcd's Compare): ``target`` of ``key`` ``result`` ``number``."""

    key: str
    target: str                      # "VERSION", "MOD" (mod_revision), "CREATE" (create_revision)
    number: int
    result: str = "EQUAL"            # "EQUAL", "GREATER", "LESS", "NOT_EQUAL"

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, "VERSION", 0)

    @staticmethod
    def unchanged(kv: Kv) -> Compare:
        return Compare(kv.key, "MOD", kv.mod_revision)

    def to_json(self) -> dict[str, Any]:
        field = {"VERSION": "version", "MOD": "mod_revision", "CREATE": "create_revision"}[self.target]
        return {"key": _b64(self.key), "target": self.target, "result": self.result,
                field: str(self.number)}


@dataclass(frozen=True)
class Put:
    key: str
    value: dict[str, Any]
    lease: int = 0

    def to_json(self) -> dict[str, Any]:
        request: dict[str, Any] = {"key": _b64(self.key), "value": _b64(_encode(self.value))}
        if self.lease:
            request["lease"] = str(self.lease)
        return {"request_put": request}


@dataclass(frozen=True)
class Delete:
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"request_delete_range": {"key": _b64(self.key)}}


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Etcd:
    """A client of one etcd endpoint. Thread-safe enough for our use: each call is one HTTP
    request on a ``requests`` session; keep-alives use a client of their own."""

    def __init__(self, url: str, *, timeout_s: float = limits.etcd_request_timeout_s) -> None:
        scheme, host, port = parse_url(url)
        self.url = f"{scheme}://{host}:{port}"
        # api_path fixed to /v3/ (etcd >= 3.4): no discovery round trip, no guess.
        self._client = etcd3gw.Etcd3Client(host=host, port=port, protocol=scheme,
                                           timeout=timeout_s, api_path="/v3/")

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError):
            raise Unavailable(f"etcd at {self.url} does not answer ({what}): check that etcd "
                              f"runs there and that --cluster etcd=URL names its client URL") from None
        except etcd_errors.Etcd3Exception as exc:
            detail = " ".join(str(exc.detail_text or exc).split())[:200]
            raise GalleonError(f"etcd at {self.url} refused {what}: {detail}") from None
        except (ValueError, KeyError, TypeError) as exc:     # a garbled answer
            raise GalleonError(f"etcd at {self.url} gave an answer GalleonFS cannot read "
                               f"({what}): {exc}") from None

    # --- keys ------------------------------------------------------------------------------------
    def get(self, key: str) -> Kv | None:
        found = self._call(f"get {key}", lambda: self._client.get(key, metadata=True))
        return _kv(*found[0]) if found else None

    def get_prefix(self, prefix: str) -> list[Kv]:
        assert prefix.endswith("/"), "prefixes end in '/' so that n1 does not match n10"
        found = self._call(f"list {prefix}", lambda: self._client.get(
            prefix, metadata=True, range_end=_prefix_end(prefix),
            limit=limits.etcd_range_keys_max, sort_order="ascend", sort_target="key"))
        if len(found) >= limits.etcd_range_keys_max:     # never a silently cut list
            raise GalleonError(f"etcd holds {limits.etcd_range_keys_max} or more keys under {prefix}, "
                               f"more than GalleonFS reads at once (cluster/limits.py)")
        return [_kv(value, meta) for value, meta in found]

    def put(self, key: str, value: dict[str, Any], *, lease: int = 0) -> None:
        self.txn([], [Put(key, value, lease)], what=f"put {key}")

    def delete(self, key: str) -> None:
        self.txn([], [Delete(key)], what=f"delete {key}")

    def txn(self, compare: Sequence[Compare], success: Sequence[Put | Delete],
            failure: Sequence[Put | Delete] = (), *, what: str = "a transaction") -> bool:
        """One etcd transaction: if every ``compare`` holds, ``success``, else ``failure``.
        True when the compares held."""
        body = {"compare": [c.to_json() for c in compare], "success": [op.to_json() for op in success],
                "failure": [op.to_json() for op in failure]}
        result = self._call(what, lambda: self._client.transaction(body))
        return bool(result.get("succeeded", False))

    # --- leases ----------------------------------------------------------------------------------
    def grant(self, ttl_s: int) -> int:
        assert limits.lease_ttl_min_s <= ttl_s <= limits.lease_ttl_max_s, ttl_s
        return self._call("a lease grant", lambda: self._client.lease(ttl_s).id)

    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; its TTL in seconds, or -1 when etcd no longer has it (expired)."""
        return self._call("a lease renewal",
                          lambda: etcd3gw.Lease(lease, client=self._client).refresh())

    def revoke(self, lease: int) -> None:
        self._call("a lease revocation", lambda: etcd3gw.Lease(lease, client=self._client).revoke())

    def check(self) -> None:
        """Raise ``Unavailable`` unless etcd answers (one status request)."""
        self._call("a status request", self._client.status)


def _prefix_end(prefix: str) -> str:
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


def _kv(value: bytes, meta: Any) -> Kv:
    key = meta["key"]
    return Kv(key=key.decode() if isinstance(key, bytes) else str(key), value=_decode(value),
              mod_revision=int(meta.get("mod_revision", 0)),
              create_revision=int(meta.get("create_revision", 0)), lease=int(meta.get("lease", 0)))


def _decode(value: bytes) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise GalleonError(f"etcd holds a value GalleonFS did not write: {value[:80]!r}")
    return data
