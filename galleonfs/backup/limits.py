"""Every bound of the backup repository, with the reason for its value (TIGER_STYLE).

Kept apart from ``galleonfs/limits.py`` while that file is being reshaped by issue 10; the
lead may fold it in. Names carry their unit last. Nothing here imports anything.
"""

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# --- packs ---------------------------------------------------------------------------------
# A pack closes once it holds this many raw blob bytes: 16 MiB makes 64 PUTs per GiB (an S3 request costs
# ~10-50 ms of latency, so a tiny object per 64 KiB block would be 16384 requests per GiB),
# while a lost upload or a repack moves at most 16 MiB.
pack_target_bytes = 16 * MiB
# One blob (a volume block, a metadata chunk). Volume blocks are at most 1 MiB; metadata
# chunks at most ``chunk_max_bytes``; 16 MiB leaves room without letting one pack balloon.
blob_max_bytes = 16 * MiB
# Blobs per pack: offsets are u32 and every entry costs 48-80 bytes of pack index, so a pack
# full of 1-byte blobs is cut before its index outgrows the tail read below.
pack_blobs_max = 65536
# The tail of a pack (its own index) is read with one ranged GET of this many bytes; a pack
# of 256 blocks of 64 KiB has a ~12 KiB index, a pack of 65536 tiny blobs needs a second GET.
pack_tail_read_bytes = 64 * KiB

# zstd level of blobs (before encryption). Level 1: 490 MB/s against 340 MB/s for the
# default level 3 on the benchmark's log-like 64 KiB blocks, for the same ratio (0.667 vs
# 0.661; benchmarks/backup_repo.py's data).
zstd_level = 1

# --- index objects -------------------------------------------------------------------------
# Written after every this many uploaded packs (and at commit): a kill -9 loses the index of
# at most 1 GiB of packs, which the next writer recovers from the packs' own tails anyway.
index_flush_packs = 64
# Entries per index object when GC rewrites the index: ~3 MiB objects, few enough GETs to
# open a repository of 1 TiB (16 M blocks of 64 KiB) with ~250 of them.
index_object_entries_max = 65536
# An index or manifest object larger than this is refused as damaged rather than allocated.
object_max_bytes = 1 * GiB

# --- metadata tables -----------------------------------------------------------------------
# Records are cut into chunks at content-defined keys: a chunk ends after a record whose
# keyed hash falls under (record size / chunk_avg_extra_bytes), once the chunk holds
# chunk_min_bytes, or unconditionally at chunk_max_bytes. 16 KiB..~64 KiB..256 KiB: an
# incremental that changes one record rewrites ~64 KiB of metadata, and a 1 TiB volume's
# ~1 GiB of records is ~16k chunks (a manifest body of ~1.5 MiB).
chunk_min_bytes = 16 * KiB
chunk_avg_extra_bytes = 48 * KiB
chunk_max_bytes = 256 * KiB
# One record: a key as long as a directory entry's key with a 255-byte name and room to
# spare; a value as large as the largest xattr (64 KiB) with room; references enough for
# an extent record naming a whole 1 MiB range of 4 KiB blocks.
record_key_max_bytes = 1 * KiB
record_value_max_bytes = 1 * MiB
record_refs_max = 4096
# Table chunks fetched ahead while a restore walks the records.
chunk_prefetch = 8

# --- manifests -----------------------------------------------------------------------------
# The header (volume, time, stats) is read with one ranged GET of this many bytes, so that
# listing 1000 backups is 1000 small GETs, never 1000 manifest bodies.
manifest_head_read_bytes = 16 * KiB
manifest_header_max_bytes = 1 * MiB
# Caller-provided metadata of a backup (labels, sizes): keys and values are short strings.
manifest_meta_items_max = 64
manifest_meta_chars_max = 1024

# --- parallelism ---------------------------------------------------------------------------
# Uploads and downloads run on this many threads. S3 is latency-bound (one request ~ 20 ms on
# a LAN, 16 MiB at 1 Gbit/s is 130 ms), so 8 streams keep a 1-2 Gbit/s link busy; the
# machine's 2 cores do the compression and encryption, so more threads buy nothing.
pool_threads_default = 8
pool_threads_max = 64
# Packs sealed but not yet stored, beyond the threads working: bounds memory at
# (threads + this) x 16 MiB while a slow target catches up.
packs_queued_max = 2
# Restore: bytes of blobs asked for in one batch of ranged GETs; with two batches in flight
# a restore holds at most ~128 MiB of downloaded packs.
restore_batch_bytes = 64 * MiB
# Records handed to a restoring caller at once (with the blobs they reference): bounds the
# memory of a walk over a table of small records whose blobs are mostly there already.
restore_window_records = 65536
# Two wanted blobs in one pack whose gap is at most this are fetched by one ranged GET:
# reading 1 MiB of unwanted bytes costs less than another request's latency.
range_gap_bytes = 1 * MiB

# --- S3 ------------------------------------------------------------------------------------
# Objects above this go up in multipart uploads of s3_part_bytes. 64 MiB keeps a 16 MiB pack
# a single PUT (one request, not create+parts+complete) and splits large manifests/indexes.
s3_multipart_threshold_bytes = 64 * MiB
s3_part_bytes = 16 * MiB
# botocore's "standard" retry mode: this many attempts with jittered exponential backoff;
# enough to ride out a throttling burst or a dropped connection, few enough that an
# unreachable endpoint is reported in seconds.
s3_attempts_max = 4
s3_connect_timeout_s = 5.0
s3_read_timeout_s = 60.0

# --- directory target ----------------------------------------------------------------------
# Temporary files of interrupted writes older than this are swept by GC (a live writer
# renames its temporary within seconds).
incomplete_age_s = 3600.0

# --- locks ---------------------------------------------------------------------------------
# A lock not refreshed for lock_ttl_s is stale. Holders refresh every lock_refresh_s; a
# writer whose last successful refresh is older than lock_ttl_s - lock_clock_skew_s refuses
# to commit (GC may have judged its lock stale). Clocks of the hosts sharing a target are
# assumed within lock_clock_skew_s of each other (NTP keeps them within a second).
lock_ttl_s = 600.0
lock_refresh_s = 120.0
lock_clock_skew_s = 120.0
# How long acquiring a lock waits for a conflicting holder before RepositoryLocked.
lock_wait_default_s = 0.0
lock_retry_interval_s = 2.0

# --- keys ----------------------------------------------------------------------------------
# scrypt as for volume keys (galleonfs/crypto/keys.py): n=2**15, r=8, 32 MiB per derivation.
scrypt_log2_n = 15
scrypt_r = 8
scrypt_p = 1
key_slots_max = 8
# Derived key-encryption keys remembered per process (a few targets x a few slots each).
kek_cache_entries = 32
passphrase_max_chars = 1024

# --- GC ------------------------------------------------------------------------------------
# A pack whose live bytes are below this fraction is repacked (its live blobs copied into
# new packs, the old one deleted): at 50 % a repack at most doubles the bytes it moves.
repack_live_fraction_max = 0.5

# --- progress ------------------------------------------------------------------------------
progress_interval_s = 0.5
