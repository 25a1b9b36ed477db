"""The etcd wrapper (galleonfs/cluster/etcd.py) against a real etcd: values round-trip,
transactions compare and swap, leases expire, and an unreachable etcd is one clear line."""

from __future__ import annotations

import time

import pytest

from galleonfs.cluster.etcd import Compare, Etcd, Put
from galleonfs.errors import GalleonError, InvalidArgument, Unavailable
from galleonfs.testing.etcd import RunningEtcd, free_port


def test_put_get_prefix_delete(etcd: RunningEtcd, prefix: str) -> None:
    e = etcd.client()
    e.put(prefix + "a", {"n": 1})
    e.put(prefix + "b", {"n": 2})
    e.put(prefix[:-1] + "x/c", {"n": 3})           # a sibling prefix: not listed
    kv = e.get(prefix + "a")
    assert kv is not None and kv.value == {"n": 1} and kv.mod_revision > 0
    assert [(k.key, k.value) for k in e.get_prefix(prefix)] == [(prefix + "a", {"n": 1}),
                                                               (prefix + "b", {"n": 2})]
    e.delete(prefix + "a")
    assert e.get(prefix + "a") is None


def test_transaction_compares_and_swaps(etcd: RunningEtcd, prefix: str) -> None:
    e = etcd.client()
    key = prefix + "k"
    assert e.txn([Compare.absent(key)], [Put(key, {"v": 1})]) is True
    assert e.txn([Compare.absent(key)], [Put(key, {"v": 2})]) is False      # already there
    kv = e.get(key)
    assert kv is not None and kv.value == {"v": 1}
    assert e.txn([Compare.unchanged(kv)], [Put(key, {"v": 3})]) is True
    assert e.txn([Compare.unchanged(kv)], [Put(key, {"v": 4})]) is False    # stale revision
    now = e.get(key)
    assert now is not None and now.value == {"v": 3}


def test_lease_keeps_key_until_it_expires(etcd: RunningEtcd, prefix: str) -> None:
    e = etcd.client()
    lease = e.grant(2)
    e.put(prefix + "alive", {"up": True}, lease=lease)
    time.sleep(1.2)
    assert e.keepalive(lease) == 2
    time.sleep(1.2)
    assert e.get(prefix + "alive") is not None       # renewed: still there after 2.4 s
    deadline = time.monotonic() + 6
    while e.get(prefix + "alive") is not None:
        assert time.monotonic() < deadline, "the key outlived its lease"
        time.sleep(0.2)
    assert e.keepalive(lease) == -1


def test_unreachable_etcd_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"      # nothing listens there
    with pytest.raises(Unavailable) as caught:
        Etcd(url, timeout_s=1).get("/galleonfs/v1/nodes/")
    assert str(caught.value) == (f"etcd at {url} does not answer (get /galleonfs/v1/nodes/): check "
                                 f"that etcd runs there and that --cluster etcd=URL names its client URL")


@pytest.mark.parametrize("url", ["127.0.0.1:2379", "ftp://h:1", "http://h", "http://h:99999",
                                 "http://h:1/path", ""])
def test_bad_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidArgument, match="use http://HOST:PORT or https://HOST:PORT"):
        Etcd(url)


def test_foreign_value_is_an_error_not_a_crash(etcd: RunningEtcd, prefix: str) -> None:
    import etcd3gw

    etcd3gw.Etcd3Client(port=etcd.client_port, api_path="/v3/").put(prefix + "raw", "not json")
    with pytest.raises(GalleonError, match="etcd holds a value GalleonFS did not write"):
        etcd.client().get(prefix + "raw")


def test_a_range_at_its_bound_is_an_error_not_a_cut_list(etcd: RunningEtcd, prefix: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from galleonfs.cluster import limits

    e = etcd.client()
    for name in "abc":
        e.put(prefix + name, {})
    monkeypatch.setattr(limits, "etcd_range_keys_max", 3)
    with pytest.raises(GalleonError, match=f"etcd holds 3 or more keys under {prefix}"):
        e.get_prefix(prefix)
    monkeypatch.setattr(limits, "etcd_range_keys_max", 4)
    assert len(e.get_prefix(prefix)) == 3
