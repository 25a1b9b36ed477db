"""The snapshot end-to-end tests reuse the daemon tests' fixtures: a real galleond (one per
module), checked at the end (clean exit, nothing left mounted, fsck of every volume, quiet
logs)."""

from node.conftest import module_daemon, shared_daemon  # noqa: F401  (fixtures, found by name)
