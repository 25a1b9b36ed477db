"""Every bound of cluster mode, with the reason for its value (TIGER_STYLE).

Kept apart from ``galleonfs/limits.py`` (as ``backup/limits.py`` is) so that cluster mode's
numbers sit together and the shared file is not reshaped by this work; the lead may fold
it in. Names carry their unit last. Nothing here imports anything.
"""

# --- etcd ----------------------------------------------------------------------------------------
# One etcd request (a get, a put, a transaction, a lease grant or keep-alive) over the v3
# JSON gateway. Loopback answers in ~1-3 ms; a healthy cluster across a datacentre in
# ~10 ms. 2 s is far above that and still a third of the node lease, so a node that finds
# etcd slow has time to retry before its lease runs out.
etcd_request_timeout_s = 2.0
# Keys one range read may return: the biggest read is "every node" (3 keys a node: 3,333
# nodes); reaching it is an error, never a silently cut list (paging comes with more nodes).
etcd_range_keys_max = 10_000

# --- membership ----------------------------------------------------------------------------------
# A node's alive key lives on a lease of this TTL and is kept alive every third of it: a
# node killed (kill -9, power cut, partition) is shown down within 6 s, and a keep-alive may
# be lost twice in a row (a GC pause, a slow etcd) before a live node is taken for dead.
node_lease_ttl_s = 6
node_keepalive_interval_s = node_lease_ttl_s / 3
# etcd grants leases in whole seconds and never shorter than its own minimum (about 1.5 x
# its election timeout, 1.5 s at the defaults); 2 s keeps tests fast without going below it.
lease_ttl_min_s = 2
lease_ttl_max_s = 3600

# --- primary lease and epoch ---------------------------------------------------------------------
# The primary of a volume holds a lease of this TTL on the volume's primary key.
primary_lease_ttl_s = 10
# How far the primary's clock may run slow against etcd's, over one lease period, plus the
# time a keep-alive answer spends in flight: etcd starts the TTL when it *grants* (or
# renews) the lease, the primary starts counting when it *sent* the request, so the
# primary's deadline is already early by the round trip; the bound covers clock rate error
# (NTP keeps it under 500 ppm: 5 ms over 10 s) and scheduling stalls of the fencing task
# (a loaded 2-core machine here stalls a trio task up to ~200 ms). 2 s is ten times that.
clock_bound_s = 2.0
# After this long without a successful renewal the primary must stop acknowledging writes:
# TTL minus the clock bound, counted from the send time of the last renewal that succeeded.
# A new primary can be chosen only once etcd expired the lease (TTL after etcd's renewal),
# so the old one has stopped at least ``clock_bound_s`` before that.
primary_fence_after_s = primary_lease_ttl_s - clock_bound_s

# --- placement -----------------------------------------------------------------------------------
replicas_max = 5                 # as a storage class's replication_factor (managers/model.py)
# Power-of-two-choices: sample this many eligible nodes and take the one with the most free
# space. Two is the classic result (max load ln ln n / ln 2 above mean, against ln n / ln ln n
# for one random choice) and keeps placement from piling every new volume on the single
# emptiest node when many are created at once.
placement_choices = 2

# --- names ---------------------------------------------------------------------------------------
node_name_chars_max = 63         # a DNS label, like volume names
zone_name_chars_max = 63
