"""The QoS end-to-end tests reuse the daemon tests' fixtures: a real galleond (one per
module, or one per test where it is restarted), checked at the end (clean exit, fsck,
quiet logs)."""

from node.conftest import daemon, module_daemon, shared_daemon  # noqa: F401  (fixtures, found by name)
