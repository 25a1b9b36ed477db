"""galleonfs.names: one validator for every name, and messages that quote little.

Each kind accepts what users name things and refuses what attackers send: '', '.', '..',
'../../..', '/', NUL and other control characters, a trailing newline (the ``$`` bug),
look-alike characters outside ASCII, and 10,000 characters.
"""

from __future__ import annotations

import pytest

from galleonfs import limits, names
from galleonfs.cli.since import parse_since
from galleonfs.engine.snapshots import check_snapshot_name, view_path
from galleonfs.errors import InvalidArgument
from galleonfs.managers.model import check_labels, check_name
from galleonfs.units import parse_size

ATTACKS = ["", ".", "..", "../../..", "a/b", "/", "base\n", "base\r", "\nbase", "a\x00b", "\x00",
           "tab\there", "x" * 10_000, "café", "a\u202eb", "a\u2028b", "a\x7fb", "\udcff"]

KINDS = [names.VOLUME, names.STORAGE_CLASS, names.SNAPSHOT_POLICY, names.QOS_POLICY,
         names.TENANT, names.TOKEN, names.PRINCIPAL, names.SNAPSHOT]
DNS_LABELS = ["a", "data", "db-1", "0abc", "a" * 63, "1b4e28ba-2fa1-11d2-883f-0016d3cca427"]
GOOD = {
    names.SNAPSHOT: ["a", "before-upgrade", "nightly-20261130-200000", "v1.2:rc_3", "_x", "A" * 128],
    names.PRINCIPAL: ["alice", "ops@example.com", "system:node-1", "CN_like.name", "a" * 128],
}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.what)
@pytest.mark.parametrize("bad", ATTACKS, ids=repr)
def test_every_kind_refuses_the_attacks(kind: names.Kind, bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        names.check(bad, kind)
    message = str(info.value)
    assert kind.what in message
    assert "\n" not in message and "\x00" not in message
    assert len(message) <= 200, message


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.what)
def test_every_kind_accepts_ordinary_names(kind: names.Kind) -> None:
    for good in GOOD.get(kind, DNS_LABELS):
        assert names.check(good, kind) == good


def test_trailing_newline_is_refused_where_dollar_accepted_it() -> None:
    check_name("base")
    for text in ("base\n", "base\r\n"):
        with pytest.raises(InvalidArgument, match=r"invalid volume name 'base\\n'|'base\\r\\n'"):
            check_name(text)
        with pytest.raises(InvalidArgument, match="invalid snapshot name"):
            check_snapshot_name(text)


def test_dns_label_rules_and_lengths() -> None:
    for bad in ("Upper", "under_score", "-lead", "trail-", "a" * 64, "a.b"):
        with pytest.raises(InvalidArgument, match="invalid volume name"):
            check_name(bad)
    with pytest.raises(InvalidArgument, match="a volume needs a name"):
        check_name("")
    with pytest.raises(InvalidArgument, match="at most 63 characters"):
        check_name("a" * 64)
    assert check_name("x", "QoS policy") == "x"
    with pytest.raises(InvalidArgument, match="invalid storage class name 'Fast'"):
        check_name("Fast", "storage class")


def test_snapshot_names_never_become_other_paths() -> None:
    for bad in ("", ".", "..", "../../..", "a/b", "-rf", ":x", ".hidden", "a\x00", "a\n"):
        with pytest.raises(InvalidArgument):
            view_path("/staging", bad)
    assert view_path("/staging", "nightly-1") == "/staging/.snapshots/nightly-1"


def test_labels_follow_kubernetes() -> None:
    good = {"app": "db", "example.com/tier": "gold", "a_b.c-d": "", "k": "v" * 63,
            "x" * 63: "y", "p" * 253 + "/n": "v"}
    assert check_labels(good) == good
    refusals = [
        ({"bad!key": "x"}, "invalid label key 'bad!key'"),
        ({"k": "v" * 64}, "invalid value"),
        ({"k\n": "v"}, "invalid label key"),
        ({"k": "v\n"}, "invalid value"),
        ({"/k": "v"}, "invalid label key"),
        ({"a/b/c": "v"}, "invalid label key"),
        ({"x" * 64: "v"}, "invalid label key"),
        ({"Upper.Prefix/k": "v"}, "invalid label key"),
        ({f"k{i}": "v" for i in range(limits.labels_max + 1)}, "too many"),
    ]
    for labels, phrase in refusals:
        with pytest.raises(InvalidArgument, match=phrase):
            check_labels(labels)


def test_snapshot_references() -> None:
    assert names.split_snapshot_ref("data@before") == ("data", "before")
    for bad, phrase in [("data", "VOLUME@SNAPSHOT"), ("@snap", "VOLUME@SNAPSHOT"),
                        ("data@", "VOLUME@SNAPSHOT"), ("data@..", "invalid snapshot name"),
                        ("Data@x", "invalid volume name"), ("data@a@b", "invalid snapshot name")]:
        with pytest.raises(InvalidArgument, match=phrase):
            names.split_snapshot_ref(bad)


def test_quote_is_one_bounded_line() -> None:
    assert names.quote("data") == "'data'"
    assert names.quote("base\n") == "'base\\n'"
    assert names.quote("it's") == "'it\\'s'"
    long = names.quote("a" * 10_000)
    assert long == "'" + "a" * limits.quote_chars_max + "'… (10000 characters)"
    nuls = names.quote("\x00" * 10_000)
    assert "\x00" not in nuls and len(nuls) < 100, nuls
    assert names.quote("\udcff") == "'\\udcff'"


def test_one_line_and_bounded() -> None:
    assert names.one_line("a\nb\x00c") == "a\\nb\\x00c"
    assert names.one_line("plain") == "plain"
    cut = names.bounded("é" * 1000, 101)
    assert len(cut.encode()) <= 101 and cut.endswith("…")
    assert names.bounded("short", 10) == "short"


def test_paths() -> None:
    assert names.check_path("/mnt/data") == "/mnt/data"
    refusals = [
        ("relative/path", "must be an absolute path"),
        ("/mnt/a\x00b", "control character"),
        ("/mnt/a\nb", "control character"),
        ("/mnt/../etc", "'..' component"),
        ("/mnt/./x", "'.' component"),
        ("/a" * 3000, "too long"),
        ("/a" * (limits.path_components_max + 1), "components"),
        ("/" + "x" * 256, "longer than 255 bytes"),
    ]
    for path, phrase in refusals:
        with pytest.raises(InvalidArgument, match=phrase) as info:
            names.check_path(path)
        assert len(str(info.value)) <= 200


def test_absurd_sizes_are_refused_not_crashed() -> None:
    for text in ("9" * 5000, "9" * 400, "1" * 33, "١٢٣", "1e3", "inf", "nan"):
        with pytest.raises(InvalidArgument, match="invalid size") as info:
            parse_size(text)
        assert len(str(info.value)) <= 200
    assert parse_size("64K") == 64 * 1024


def test_since_out_of_range() -> None:
    now_ns = 1_800_000_000 * 10**9
    for text in ("100000000d", "0001-01-01T00:00:00Z", "1969-12-31T00:00:00Z", "9" * 40 + "d"):
        with pytest.raises(InvalidArgument, match="invalid --since"):
            parse_since(text, now_ns=now_ns)
    assert parse_since("1h", now_ns=now_ns) == now_ns - 3600 * 10**9
    assert parse_since("2999-01-01T00:00:00Z", now_ns=now_ns) == 32472144000 * 10**9   # ahead: none yet
