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

# --- the node's disk (node/disk.py) -------------------------------------------------------------
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
