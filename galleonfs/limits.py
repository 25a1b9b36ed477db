"""Every bound in GalleonFS, in one place (TIGER_STYLE: a limit on everything).

Names carry their unit last. Each value says why it is what it is. Nothing here imports
anything from the package, so every layer may import it.
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# --- volumes -------------------------------------------------------------------------------
# Block sizes (DESIGN §3): 4 KiB is the page size, below it FUSE writes are split anyway;
# above 1 MiB a 4 KiB random write would rewrite too much (read-modify-write of the block).
block_size_min_bytes = 4 * KiB
block_size_max_bytes = 1 * MiB
block_size_default_bytes = 64 * KiB
# A volume smaller than 1 MiB cannot hold its own root directory plus one block sensibly.
volume_size_min_bytes = 1 * MiB
# 8 EiB would overflow signed 64-bit offsets in the kernel; 1 PiB is far above what a
# single-node Python engine should promise.
volume_size_max_bytes = 1024 * TiB

# --- POSIX ---------------------------------------------------------------------------------
name_max_bytes = 255                 # f_namemax, like ext4 and tmpfs
symlink_target_max_bytes = 4095      # PATH_MAX - 1
xattr_name_max_bytes = 255           # XATTR_NAME_MAX
xattr_value_max_bytes = 64 * KiB     # XATTR_SIZE_MAX
xattr_list_max_bytes = 64 * KiB      # XATTR_LIST_MAX
link_count_max = 65000               # EMLINK beyond this, like ext4
file_size_max_bytes = 2**63 - 1      # off_t
# statfs reports this many inodes per volume: one per 4 KiB of capacity, at least 65536,
# so that `df -i` shows something an operator can reason about.
inodes_per_byte_divisor = 4 * KiB
inodes_min = 65536

# --- engine --------------------------------------------------------------------------------
# Metadata map size: LMDB reserves address space, not disk; 64 GiB covers ~500 M blocks.
meta_map_size_bytes = 64 * GiB
# Data segments roll at 64 MiB: small enough that GC copies little per segment, large
# enough that a 1 TiB volume has 16k files, not millions.
segment_size_max_bytes = 64 * MiB
# Journal files roll at 64 MiB or at every checkpoint, whichever comes first.
journal_file_size_max_bytes = 64 * MiB
# One journal record carries the changes of one FUSE request. A 1 MiB write of 4 KiB
# blocks is 256 frames; 4096 leaves room and bounds what replay has to hold in memory.
journal_record_frames_max = 4096
journal_record_bytes_max = 64 * MiB
# Inline frames (engine/journal.py): a record whose new frames total at most this carries
# them, so an fsync after a small write is one journal write and one fdatasync; the segment
# copies are synced later (a checkpoint, or a commit once the window below is full). 136 KiB
# is two 64 KiB blocks plus headers (a write that straddles a block boundary).
journal_inline_record_bytes_max = 136 * KiB
# ... and at most this much inline frame data waits for its segment sync: what a recovery
# may have to write back, and what the journal grows by beyond the metadata.
journal_inline_window_bytes = 512 * KiB
# Zeros kept written ahead of the journal's write point (journal.py ``_zero_ahead``): records
# overwrite blocks the file already has, so an fsync's fdatasync does not also write the
# file's new size. Topped up when less than half is left: one bigger sync per 512 KiB.
journal_zero_ahead_bytes = 1 * MiB
# Commit interval: like ext4's default 5 s (DESIGN §3).
commit_interval_s = 5.0
# Checkpoint: every 30 s or 32 MiB of journal. A checkpoint commits the LMDB write
# transaction with a full sync; less often means longer replay, more often means more
# pauses of the FUSE loop (an LMDB commit of 30 s of writes took ~0.1 s, see docs).
checkpoint_interval_s = 30.0
checkpoint_journal_bytes = 32 * MiB
# Host disk full (engine/space.py). The journal's current file is allocated this far ahead
# of its end, so that the record ending an operation never meets ENOSPC half-way through it.
journal_prealloc_bytes = 4 * MiB
# ... and an operation is admitted only while at least this much is allocated ahead: the
# biggest record a single request writes is a purge chunk (16384 extents, ~1.6 MiB, twice
# that with a snapshot keeping history); the rest fits many thousands of small records.
journal_headroom_min_bytes = 2 * MiB
# Each writable volume keeps a file of this size allocated (RESERVE). It is released when a
# write that must not fail (journal space, a checkpoint's LMDB commit) meets a full disk. A
# checkpoint grew LMDB by 0.3 MiB after 100 MB of new 64 KiB blocks, 2.5 MiB after 900 MB
# (measured here); the journal takes journal_headroom_min_bytes of it: 8 MiB covers a
# checkpoint after some 2 GB of writes, more than a checkpoint interval of most disks.
volume_reserve_bytes = 8 * MiB
# A volume that met a full disk accepts writes that need new space again once its reserve
# is back and this much is free besides: more than another volume's released reserve and the
# node's together (8 + 4 MiB), so that those releases never let volumes write data into the
# room they made for journals and checkpoints; and 4 MiB more to write into.
space_resume_free_bytes = 16 * MiB
# While the disk is full, GC compacts a mostly dead segment (to give the rest back) only if
# this much stays free after the copy: room for the checkpoint that then unlinks the segment.
gc_full_disk_margin_bytes = 2 * MiB
# While the disk is full, the mount worker looks this often whether space came back (a
# statvfs; a fallocate when it did) and collects emptied segments.
space_poll_interval_s = 1.0
# GC compacts a segment whose live fraction is below this.
gc_live_fraction_min = 0.5
# GC copies at most this much per pass of the mount worker, so a pass stays short.
gc_pass_bytes_max = 256 * MiB
# The paced reclaimer (engine/reclaim.py) runs while a volume's collectable dead bytes exceed
# this fraction of its live bytes plus the slack: the data directory then holds at most
# 1.2 x the live data, plus the slack, plus the segment being written (64 MiB each).
reclaim_dead_ratio = 0.2
reclaim_slack_bytes = 64 * MiB
# Segment bytes one reclaim step reads (and at most copies): one append, one journal record.
reclaim_step_bytes = 1 * MiB
# While FUSE requests keep the worker busy, reclaim takes at most this share of its loop time,
# in smaller steps, and copies at most this many bytes a second: every copy is synced by the
# next application fsync (data before journal): copying at CPU speed made each 4 KiB write
# + fsync up to 5x slower at p50, 32 MiB/s still ~1.4x (benchmarks/reclaim.py, under load
# 5). 16 MiB/s moves 480 MiB of live data in 30 s; emptiest first, most deletes need less.
reclaim_busy_share = 0.1
reclaim_busy_step_bytes = 256 * KiB
reclaim_busy_bytes_per_s = 16 * MiB
# A yield of the reclaimer that comes back this much later than asked: requests ran meanwhile.
reclaim_busy_lag_s = 0.001
# Idle: how often the worker looks whether there is something to reclaim.
reclaim_poll_interval_s = 0.5
# Emptied segments are unlinked by a checkpoint; after reclaim the worker checkpoints at most
# this often for them (a checkpoint is an LMDB commit with a full sync).
reclaim_checkpoint_interval_s = 1.0

# --- caches in the mount worker (RSS budget 200 MB after 4 GiB written) -------------------
block_cache_bytes = 32 * MiB
attr_timeout_s = 60.0                # the worker is the only writer: kernel caches may live long
entry_timeout_s = 60.0
negative_entry_timeout_s = 10.0

# --- processes -----------------------------------------------------------------------------
mount_ready_timeout_s = 30.0         # `galleonfs mount` waits this long for the worker
unmount_timeout_s = 60.0             # `galleonfs umount` waits this long for the worker to exit
fuse_tasks_max = 32                  # pyfuse3 reader tasks; most handlers never await
control_request_bytes_max = 64 * KiB
control_timeout_s = 10.0             # a worker that takes longer to answer is stuck
# Offline helper (volops/offline.py): one process per operation on an unmounted volume.
# Metadata-only operations (stats, resize, snapshot create/delete/list/diff) take well under
# a second plus the journal replay at open (at most checkpoint_journal_bytes, a few seconds);
# past 5 minutes the helper is stuck (a damaged page can make LMDB loop) and is killed.
offline_op_timeout_s = 300.0
# Operations that touch every block (rekey, flatten, clone, restore) run at disk speed:
# 1 TiB at ~100 MB/s is about 3 h; 12 h bounds them without cutting a real one short.
offline_bulk_op_timeout_s = 12 * 3600.0
# A helper's answer: a snapshot diff lists every changed path (~100 bytes each), so 64 MiB
# is ~600k changes; a bigger answer is refused rather than held in the daemon's memory.
offline_reply_bytes_max = 64 * MiB
# What the daemon keeps of a helper's stderr for its log (the tail: a traceback's end).
offline_stderr_bytes_max = 16 * KiB
# The catalog check at galleond start walks every record of node.lmdb (100k volumes is
# ~100 MB, a few seconds); a check that takes longer is stuck on damage.
catalog_check_timeout_s = 120.0
# The catalog backup (node.lmdb.backup) is refreshed at most this often after a change, and
# at a clean stop. A crash loses at most this much of the backup, and recover-catalog
# still finds every volume created meanwhile through its own super record.
catalog_backup_interval_s = 5.0

# --- audit log ------------------------------------------------------------------------------
# audit.log is rotated (renamed audit.log.N, N counting up) when it would grow past this:
# 64 MiB is ~150k records, and verify reads one file at a time.
audit_file_bytes_default = 64 * MiB
# Smallest rotation size allowed: a file must hold at least a few whole records.
audit_file_bytes_min = 256 * KiB
# One record is at most this long; each field is cut to fit (see audit/bound.py).
audit_record_bytes_max = 64 * KiB
# Space kept allocated past the audit log's end (fallocate KEEP_SIZE), refilled when half
# used: on a full disk ~1,500 more records (~700 bytes each) still go in, enough to unmount
# and delete volumes to make room; past it, state-changing calls are refused.
audit_reserve_bytes = 1 * MiB

# --- the node's disk (managers/disk.py) ---------------------------------------------------------
# /readyz reports disk pressure when the data directory's file system has less free space
# than this fraction of its capacity (kubelet evicts at 10 % nodefs.available; we warn at
# half that, while writes still work) ...
disk_pressure_free_fraction = 0.05
# ... but never asks for more than this: 5 % of a 100 TB array is room for days of writes.
disk_pressure_free_bytes_max = 10 * GiB
# ... and for this long after a volume refused a write because the disk was full.
disk_pressure_recent_s = 60.0
# galleond keeps this much allocated in DATA_DIR/RESERVE and releases it when the disk is down
# to node_reserve_release_free_bytes: its catalog (LMDB) and audit log append a few KiB per
# call, so 4 MiB records a thousand unmounts and deletes while the volumes refuse data ...
node_reserve_bytes = 4 * MiB
# ... (less than the smallest write a worker still attempts, one 1 MiB FUSE write, so the
# volumes have met the full disk and refuse data by then).
node_reserve_release_free_bytes = 1 * MiB
# galleond asks every mount worker how its volume sees the disk this often (one control
# call each, ~1 ms) ...
disk_watch_interval_s = 2.0
# ... and gives one this long to answer (a worker inside a long checkpoint is skipped).
disk_watch_call_timeout_s = 2.0

# --- quality of service ----------------------------------------------------------------------
# A token bucket holds this many seconds of its rate: at 500 IOPS, 50 requests may go at
# once after a pause; a longer window lets a volume exceed its limit for longer after idling.
qos_bucket_window_s = 0.1
# The daemon re-splits the node's budget this often (and sends new rates to the workers):
# one control call per mounted volume per tick costs ~1 ms, so 1 s is cheap and still
# follows a workload that changes within seconds.
qos_tick_s = 1.0
# Bounds on what a policy may say: above these, a limit would never bind on one node.
qos_iops_max = 10_000_000
qos_throughput_mbps_max = 1_000_000.0
qos_burst_duration_max_s = 86_400.0
qos_burst_multiplier_max = 100.0
# An allocation never gives a volume less than this, so a volume without a guarantee on an
# oversubscribed node is slowed down, never stopped.
qos_iops_min = 1.0
qos_bytes_per_s_min = 64 * KiB
# ... nor less than this fraction of the node's budget: a volume without a guarantee that
# wakes up next to busy ones runs at this rate until the next tick sees it wait: 20
# requests a second on a 1000 IOPS node rather than 1. The price: the shares may add up
# to 2 % per starved volume above the budget.
qos_share_min_fraction = 0.02

# --- metrics -------------------------------------------------------------------------------
# The mount worker counts in plain ints and adds them to the shared Prometheus files this
# often: a scrape sees values at most 1 s old, and the flush (~50 µs) costs < 0.01 % of a core.
metrics_flush_interval_s = 1.0
# Each of a worker's metric files (counter, histogram, two gauge kinds) is allocated this big
# when the worker starts, so that no new series ever writes into an unallocated page (SIGBUS
# on a full disk). A worker that had served every operation and several errors used 125 KiB
# of one (the histograms), 5 KiB of the counters; prometheus-client would double a file past
# this size, sparsely again.
metrics_file_bytes = 512 * KiB
# `galleonctl volume stats` rates look back over this many flushes (about 10 s).
metrics_window_samples = 11

# --- API access: the unix-socket gate, tokens, tenants ----------------------------------------
# The gate (rpc/gate.py) splices each unix-socket connection with two threads: 256
# connections at once is far above what galleonctl and an orchestrator's node plugin open
# (one each per command, a handful kept), and 512 idle threads cost little memory. Callers
# past the bound wait in the listen backlog, they are not refused.
gate_connections_max = 256
gate_backlog = 128
# Copy buffer per direction: a unary call is a few KiB; 256 KiB moves a 16 MiB message in
# 64 copies without holding much per connection.
gate_buffer_bytes = 256 * KiB
gate_stop_timeout_s = 5.0
# A token's secret: 32 random bytes (256 bits), stored only as its SHA-256.
token_secret_bytes = 32
# Bounds on the catalog's access tables, so that a loop in a script cannot fill the node's
# catalog: 10,000 of each is far more than one node has principals or tenants.
tokens_max = 10_000
tenants_max = 10_000
# The longest a token may be valid (10 years): long-lived automation tokens are allowed, a
# typo of a few extra digits is not.
token_lifetime_max_s = 10 * 365 * 86_400
# A --token-file bigger than this is not a token (a token is ~60 characters).
token_file_bytes_max = 4 * KiB

# --- names and requests at the API edge (galleonfs.names, galleonfs.rpc.validate) -----------
# Volume, storage class and policy names are DNS labels (RFC 1123: 63 characters), so that
# they can be Kubernetes object names and parts of host names as they are.
dns_label_max_chars = 63
# Snapshot names: 128, what they have allowed since snapshots exist (room for a policy's
# name, a 63-character DNS label, plus its "-YYYYmmdd-HHMMSS-N" suffix).
snapshot_name_max_chars = 128
# Label keys and values follow Kubernetes: an optional DNS-subdomain prefix of at most 253
# characters and '/', a name of at most 63, a value of at most 63.
label_prefix_max_chars = 253
label_name_max_chars = 63
label_value_max_chars = 63
# Labels in one request (a volume's labels, a selector): Kubernetes objects rarely carry
# more than a dozen; 64 keeps the request's audit record far below its 64 KiB bound.
labels_max = 64
# Principals (people, certificates' names, services) may be e-mail-like; 128 is what
# snapshot names allow and far above any account name.
principal_name_max_chars = 128
# Error messages quote at most this much of what was sent: enough to recognise the value,
# never enough to echo a payload back or to make an answer large.
quote_chars_max = 64
# Backstop on every gRPC status message: gRPC sends it as trailing metadata, whose default
# limit is 8 KiB on the client; beyond it the answer turns into RESOURCE_EXHAUSTED.
status_message_bytes_max = 1 * KiB
# A string field of a request that no narrower rule covers (schedules, filters, output-only
# fields a client echoes back): 1 KiB, the bound the audit log cuts request strings to.
request_string_bytes_max = 1 * KiB
# Repeated fields of a request (access modes, ...): no request needs more than a handful.
request_repeated_max = 64
# Paths at the API (mount targets): PATH_MAX - 1 bytes, NAME_MAX per component, and at most
# 64 components: kubelet's deepest target has 10, and a path of 3,000 components made
# os.makedirs recurse past Python's limit (a bug answered as INTERNAL).
path_max_bytes = 4095
path_components_max = 64
# Cron schedules of snapshot policies: six fields with lists fit in far less.
schedule_max_chars = 128
# Storage-class parameter names and values ("block_size", "aes-256-gcm", "64K"): short
# tokens; a 5,000-digit block size made int() refuse the conversion (answered as INTERNAL).
class_parameter_key_max_chars = 63
class_parameter_value_max_chars = 64
# A size as text ("512M", "10GiB"): 32 characters hold any size up to 1 PiB, in bytes.
size_text_max_chars = 32

# --- test helpers (galleonfs.testing) ------------------------------------------------------------
# How long ``testing.clock.wait_for_clock_tick`` waits for the coarse clock to move: one tick
# is at most 10 ms (HZ=100); a second is a hundred ticks, so only a broken clock reaches it.
clock_tick_wait_s = 1.0

# --- volume operations (galleonfs/volops) -----------------------------------------------------
def inodes_max(volume_size_bytes: int) -> int:
    """How many inodes a volume of this size reports (statfs ``files``) and allows: one per
    ``inodes_per_byte_divisor`` bytes, at least ``inodes_min``."""
    return max(inodes_min, volume_size_bytes // inodes_per_byte_divisor)


# A control-socket answer: a snapshot list or a diff of a mounted volume; 1 MiB holds ~10k
# changed paths. (Offline answers have their own, larger bound: offline_reply_bytes_max.)
control_reply_bytes_max = 16 * control_request_bytes_max
