/*
 * hannoy.h
 *	  The one C ABI between the PostgreSQL shim (src/am) and the C++ core
 *	  (src/core).
 *
 * Plain C types only, no PostgreSQL and no C++ headers.  Every function that
 * can fail returns a HannoyStatus and fills a HannoyError; none of them
 * throws, longjmps, or calls back into PostgreSQL.  Memory the core returns
 * belongs to the core until the matching *_free call.
 */
#ifndef HANNOY_HANNOY_H
#define HANNOY_HANNOY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

/* Limits shared by the shim and the core. */
#define HANNOY_MAX_DIMS  16000
#define HANNOY_MAX_BITS  (HANNOY_MAX_DIMS * 64)
#define HANNOY_MAX_ITEMS UINT32_MAX
/* The storage format new sidecars get; older ones down to the minimum stay readable. */
#define HANNOY_FORMAT_VERSION     8
#define HANNOY_MIN_FORMAT_VERSION 3

	typedef enum HannoyStatus
	{
		HANNOY_OK = 0,
		HANNOY_ERR_INTERNAL,  /* a bug or an unexpected exception */
		HANNOY_ERR_NOMEM,     /* out of memory */
		HANNOY_ERR_STORAGE,   /* LMDB or file system failure */
		HANNOY_ERR_MAP_FULL,  /* the LMDB map size is exhausted */
		HANNOY_ERR_CORRUPT,   /* the sidecar does not hold what it must */
		HANNOY_ERR_NOT_FOUND, /* no environment at that path */
		HANNOY_ERR_INVALID,   /* bad argument (dimensions, metric...) */
		HANNOY_ERR_LIMIT      /* more than HANNOY_MAX_ITEMS items */
	} HannoyStatus;

	typedef struct HannoyError
	{
		HannoyStatus status;
		int          sys_errno; /* the operating system's error behind it (ENOSPC...), or 0 */
		char         message[512];
	} HannoyError;

	/* What the elements of a metric's vectors are. */
	typedef enum HannoyElement
	{
		HANNOY_ELEMENT_FLOAT4 = 1, /* real[]: 4 bytes per dimension */
		HANNOY_ELEMENT_BIT = 2     /* bit(n): one bit per dimension, padded to whole bytes */
	} HannoyElement;

/*
 * The metric table: one row per distance metric, read by the core (its
 * kernels, the stored vector layout, the build's list fill) and by the shim
 * (operator classes and the SQL distance functions).  A new metric is a row
 * here, its kernel in src/core/distance.cpp (a function template named
 * <key>_segments), its SQL objects and its tests.  Columns:
 *
 *   NAME      the metric is HANNOY_METRIC_<NAME>
 *   KEY       the core's kernel is <KEY>_segments
 *   ID        number stored on disk and in the metapage: never renumber
 *   STRATEGY  strategy number of the ordering operator in its operator class
 *   ELEMENT   HannoyElement of its vectors
 *   ZERO_NAN  1 when a zero vector has no distance (NaN): such rows are
 *             kept as unindexed rows, returned last
 *   FILL      a node's neighbour lists are topped up to max / FILL links
 *   SQLFUNC   C symbol of the SQL function behind its operator
 */
#define HANNOY_METRICS(X)                                                                          \
	X(L2, l2, 1, 1, HANNOY_ELEMENT_FLOAT4, 0, 1, hannoy_real_l2_distance)                          \
	X(COSINE, cosine, 2, 2, HANNOY_ELEMENT_FLOAT4, 1, 1, hannoy_real_cosine_distance)              \
	X(IP, ip, 3, 3, HANNOY_ELEMENT_FLOAT4, 0, 2, hannoy_real_negative_inner_product)               \
	X(L1, l1, 4, 4, HANNOY_ELEMENT_FLOAT4, 0, 1, hannoy_real_l1_distance)                          \
	X(HAMMING, hamming, 5, 5, HANNOY_ELEMENT_BIT, 0, 1, hannoy_bit_hamming_distance)

	/* Distance metrics, from the metric table. */
	typedef enum HannoyMetric
	{
#define HANNOY_METRIC_ENUM(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)              \
	HANNOY_METRIC_##NAME = ID,
		HANNOY_METRICS(HANNOY_METRIC_ENUM)
#undef HANNOY_METRIC_ENUM
	} HannoyMetric;

	/*
	 * One row of the metric table as data; 'id' 0 when the number names no
	 * metric (a damaged or foreign meta record).
	 */
	typedef struct HannoyMetricInfo
	{
		uint32_t      id;
		uint32_t      strategy;
		HannoyElement element;
		bool          zero_nan;
		uint32_t      fill;
	} HannoyMetricInfo;

	/* The metric table's row for 'metric' (id 0 for an unknown number). */
	static inline HannoyMetricInfo
	hannoy_metric_info(uint32_t metric)
	{
		HannoyMetricInfo info = {0, 0, HANNOY_ELEMENT_FLOAT4, false, 1};

		switch (metric)
		{
#define HANNOY_METRIC_CASE(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)              \
	case ID:                                                                                       \
		info.id = ID;                                                                              \
		info.strategy = STRATEGY;                                                                  \
		info.element = ELEMENT;                                                                    \
		info.zero_nan = ZERO_NAN;                                                                  \
		info.fill = FILL;                                                                          \
		break;
			HANNOY_METRICS(HANNOY_METRIC_CASE)
#undef HANNOY_METRIC_CASE
			default:
				break;
		}
		return info;
	}

	/* Bytes one vector of a metric takes: dims floats or ceil(bits / 8); 0 for an unknown metric.
	 */
	static inline size_t
	hannoy_vector_bytes(uint32_t metric, uint32_t dims)
	{
		HannoyMetricInfo info = hannoy_metric_info(metric);

		if (info.id == 0)
			return 0;
		return info.element == HANNOY_ELEMENT_BIT ? ((size_t) dims + 7) / 8 : (size_t) dims * 4;
	}

/*
 * The index options: one row per reloption, read by the reloption parser,
 * the metapage and the sidecar's meta record.  DEFAULT 0 means "derived"
 * (ef_construction: max(64, 2m)).  Columns: NAME, DEFAULT, MIN, MAX, and
 * the description shown by the reloption parser.
 */
#define HANNOY_OPTIONS(X)                                                                          \
	X(m, 16, 2, 100, "Links per node above layer 0 (2m at layer 0) (2 to 100)")                    \
	X(ef_construction, 0, 4, 1000,                                                                 \
	  "Candidate list size during build (4 to 1000, at least 2 * m; default max(64, 2 * m))")

	/* The values of the index options, as the metapage and the meta record keep them. */
	typedef struct HannoyOptions
	{
#define HANNOY_OPTION_FIELD(NAME, DEFAULT, MIN, MAX, DESCRIPTION) uint32_t NAME;
		HANNOY_OPTIONS(HANNOY_OPTION_FIELD)
#undef HANNOY_OPTION_FIELD
	} HannoyOptions;

/*
 * The values of the index option "quantizer": which codes the build gives
 * the index (DESIGN.md "Codes").  Columns: NAME (the option's value), ID
 * (stored in the reloptions), whether codes fit only float metrics.
 */
#define HANNOY_QUANTIZERS(X)                                                                       \
	X(AUTO, auto, 0, 0)                                                                            \
	X(NONE, none, 1, 0)                                                                            \
	X(SCALAR8, scalar8, 2, 1)                                                                      \
	X(BINARY, binary, 3, 1)

	typedef enum HannoyQuantizerChoice
	{
#define HANNOY_QUANTIZER_ENUM(NAME, KEY, ID, FLOAT_ONLY) HANNOY_QUANTIZER_##NAME = ID,
		HANNOY_QUANTIZERS(HANNOY_QUANTIZER_ENUM)
#undef HANNOY_QUANTIZER_ENUM
	} HannoyQuantizerChoice;

	/*
	 * The values of the index option "rerank": where a scan on codes reads
	 * the exact distances its windows are re-ranked by (DESIGN.md "Heap
	 * re-ranking").
	 */
	typedef enum HannoyRerankChoice
	{
		HANNOY_RERANK_SIDECAR = 0, /* the sidecar keeps every float vector */
		HANNOY_RERANK_HEAP = 1     /* only codes; exact distances from the heap tuples */
	} HannoyRerankChoice;
/* ef_construction when the option is not set: at least 64 and at least 2m. */
#define HANNOY_MIN_DEFAULT_EF_CONSTRUCTION 64

	/* What a row without an indexable vector is (hannoy_build_add, hannoy_insert). */
	typedef enum HannoyUnindexedKind
	{
		HANNOY_ROW_INDEXED = 0,        /* a graph row: it has a vector */
		HANNOY_ROW_UNINDEXED_NULL = 1, /* NULL value: its distance is NULL */
		HANNOY_ROW_UNINDEXED_NAN = 2   /* a vector the metric gives no distance (NaN) */
	} HannoyUnindexedKind;

	/*
	 * A heap TID packed as (block << 16) | offset.  Only 48 bits are used.
	 */
	typedef uint64_t HannoyTid;

	/* ---------------------------------------------------------------------
	 * Distances.  One implementation per metric, used by the SQL operators and
	 * by the index, so both report bit-identical values.  Float vectors may be
	 * unaligned (LMDB values are only 2-byte aligned).  Never fail.
	 * ---------------------------------------------------------------------
	 */
	/*
	 * The distance of two vectors of a metric: 'dims' floats (bits for a bit
	 * metric, whose pad bits are zero).  NaN for an unknown metric.
	 */
	extern double hannoy_distance(HannoyMetric metric, const void *a, const void *b, uint32_t dims);

	/* Name of the SIMD kernel set chosen at run time ("avx2", "scalar"...). */
	extern const char *hannoy_simd_name(void);

	/* ---------------------------------------------------------------------
	 * Environments: one LMDB environment per index relation file.
	 * ---------------------------------------------------------------------
	 */
	typedef struct HannoyEnv HannoyEnv;

	/* Identity and shape of an index, stored in the sidecar's meta database. */
	typedef struct HannoyMeta
	{
		uint32_t      format_version; /* HANNOY_MIN_FORMAT_VERSION .. HANNOY_FORMAT_VERSION */
		uint32_t      metric;         /* HannoyMetric */
		uint32_t      dims;           /* 0 until the first vector is seen */
		HannoyOptions options;        /* the index options (m: links per node above layer 0) */
		uint32_t      m0;             /* links per node at layer 0 */
		uint64_t      generation;     /* must equal the metapage's */
		uint64_t      system_id;      /* pg_control system identifier of the writer */
		uint32_t      timeline;       /* timeline of the last writer */
		uint32_t      index_oid;      /* OID of the owning index */
		uint64_t      seed;           /* seed of the level generator */
	} HannoyMeta;

	/* Counters kept by the sidecar. */
	typedef struct HannoyStats
	{
		uint64_t items;     /* live graph nodes */
		uint64_t unindexed; /* rows without an indexable vector */
		uint64_t deleted;   /* tombstoned nodes kept for navigation */
		uint64_t free_ids;  /* ids VACUUM freed, reused by inserts */
		uint64_t next_id;   /* first item id never used */
		int32_t  max_level; /* -1 when the graph is empty */
		uint32_t entry_point;
		uint64_t file_bytes; /* size of data.mdb */
		uint64_t used_pages; /* pages LMDB uses (last page number + 1) */
		uint64_t codes;      /* codes stored (storage format 5), one per vector */
		uint32_t code_bytes; /* bytes of one code, 0 when the index has no codes */
		uint32_t quantizer;  /* kind of the codes: 0 none, 1 8-bit scalar, 2 1-bit (format 6) */
		uint64_t quantizer_bytes; /* bytes of the quantizer record (mean, offsets, scales) */
		bool     heap_rerank;     /* format 7: no vectors stored; scans re-rank from the heap */
	} HannoyStats;

	/* How an environment is opened. */
	typedef struct HannoyEnvConfig
	{
		uint32_t max_readers; /* LMDB reader slots (all backends together) */
		uint64_t map_room;    /* bytes the memory map keeps beyond the data (0: 64 MiB); the
		                         map is sized from the file and grows with it */
		uint32_t file_mode;   /* mode of files the core creates, e.g. 0600 */
		uint32_t dir_mode;    /* mode of directories the core creates */
		bool     durable;     /* false when fsync = off: never sync */
	} HannoyEnvConfig;

	/*
	 * Creates a fresh environment in directory 'path', replacing any earlier one
	 * there, and writes 'meta'.  The parent directory must exist.
	 */
	extern HannoyStatus hannoy_env_create(const char *path, const HannoyEnvConfig *config,
	                                      const HannoyMeta *meta, HannoyEnv **env,
	                                      HannoyError *err);

	/*
	 * Opens an existing environment.  Never creates one: a missing environment
	 * is HANNOY_ERR_NOT_FOUND.  Clears reader slots of dead processes.
	 */
	extern HannoyStatus hannoy_env_open(const char *path, const HannoyEnvConfig *config,
	                                    HannoyEnv **env, HannoyError *err);

	/* Closes an environment; all its scans must be freed or detached first. */
	extern void hannoy_env_close(HannoyEnv *env);

	/* Removes the environment's files and its directory (missing is fine). */
	extern HannoyStatus hannoy_env_remove(const char *path, HannoyError *err);

	/*
	 * Reads the OID of the index that created the environment at 'path' (kept
	 * in a small file beside LMDB's); false when there is none.
	 */
	extern bool hannoy_env_owner(const char *path, uint32_t *index_oid);

	/* True when 'path' holds an environment. */
	extern bool hannoy_env_exists(const char *path);
	/* The device and inode of the data file 'env' has open (0, 0 if unknown). */
	extern void hannoy_env_file_id(HannoyEnv *env, uint64_t *dev, uint64_t *ino);

	/* Reads the meta record as last committed. */
	extern HannoyStatus hannoy_env_meta(HannoyEnv *env, HannoyMeta *meta, HannoyError *err);

	/* Reads the counters as last committed. */
	extern HannoyStatus hannoy_env_stats(HannoyEnv *env, HannoyStats *stats, HannoyError *err);

	/*
	 * Checks, before the environment is used, that data.mdb still holds what
	 * LMDB's meta pages say it does (it was not truncated, its meta pages are
	 * LMDB's) and that no earlier call found the sidecar damaged; damage is
	 * HANNOY_ERR_CORRUPT.  One fstat, no transaction: cheap enough for every
	 * scan.
	 */
	extern HannoyStatus hannoy_env_check(HannoyEnv *env, HannoyError *err);
	/*
	 * hannoy_env_check with the size of the open data file known already (a
	 * stat of the same file the caller made): no system call of its own.
	 */
	extern HannoyStatus hannoy_env_check_size(HannoyEnv *env, uint64_t size, HannoyError *err);

	/* Flushes committed transactions to disk (no-op when not durable). */
	extern HannoyStatus hannoy_env_sync(HannoyEnv *env, HannoyError *err);
	/*
	 * Tells the store that every transaction it committed is on disk (another
	 * process's sync covered them), so its dirty marker may go (DESIGN.md
	 * "The dirty marker").
	 */
	extern void hannoy_env_note_synced(HannoyEnv *env);
	/*
	 * True when the commits this process made to 'env' and has not synced
	 * are covered by its dirty marker, made less than a second ago, or the
	 * sidecar is never synced (fsync = off): a commit need not sync
	 * (DESIGN.md "The dirty marker").  False without a marker (the boot id
	 * could not be read) and once the marker is a second old.
	 */
	extern bool hannoy_env_marker_covers(HannoyEnv *env);
	/*
	 * Syncs the sidecar and removes this store's dirty marker, if it has one
	 * (a process about to exit); a failed sync leaves the marker.
	 */
	extern void hannoy_env_clear_dirty(HannoyEnv *env);
	/*
	 * *torn: the sidecar in 'path' has a dirty marker of another boot of the
	 * machine: the operating system stopped while commits to it may not have
	 * reached the disk, and it must be rebuilt.  Markers of this boot whose
	 * process is gone are cleared after a sync of the data file.
	 */
	extern HannoyStatus hannoy_env_torn(const char *path, bool *torn, HannoyError *err);
	/*
	 * Marks the sidecar in 'path' as one to rebuild, durably: a dirty marker
	 * "dirty.0.<why>" without a boot id, which hannoy_env_torn takes for
	 * another boot's (a copy made by a base backup or pg_rewind while it may
	 * have been written; a replica redo stopped trusting).
	 */
	extern HannoyStatus hannoy_env_mark_for_rebuild(const char *path, const char *why,
	                                                HannoyError *err);
	/*
	 * Removes this store's dirty marker if every write transaction of it has
	 * ended and was synced and the marker is a second old (a backend at the
	 * end of its transaction: a busy writer makes one a second, not one a
	 * transaction).
	 */
	extern void hannoy_env_release_marker(HannoyEnv *env);

	/*
	 * The id of the last committed LMDB transaction (every process sees the
	 * same): a sync that started after it was read covers that commit.
	 */
	extern HannoyStatus hannoy_env_last_commit(HannoyEnv *env, uint64_t *txnid, HannoyError *err);

	/*
	 * Sets the dimension count of an index created empty (dims == 0).  Fails
	 * with HANNOY_ERR_INVALID if it is already set to another value.
	 */
	extern HannoyStatus hannoy_env_set_dims(HannoyEnv *env, uint32_t dims, HannoyError *err);

	/* ---------------------------------------------------------------------
	 * Replicas: a sidecar that a standby's WAL redo made and fills with
	 * staged rows (DESIGN.md "Replication and recovery").  Redo calls these;
	 * scans of such a sidecar take its staged rows exactly.
	 * ---------------------------------------------------------------------
	 */

	/* One row a record of the primary added: 'vector' NULL for an unindexed row ('kind'). */
	typedef struct HannoyStagedRow
	{
		HannoyTid   tid;
		uint8_t     kind; /* HannoyUnindexedKind */
		const void *vector;
	} HannoyStagedRow;

	/*
	 * Creates a fresh replica sidecar in 'path' (replacing what is there)
	 * with 'meta', no graph, no staged row and WAL applied up to 'lsn',
	 * synced, and then its marker file, which says that redo made it.
	 */
	extern HannoyStatus hannoy_replica_create(const char *path, const HannoyEnvConfig *config,
	                                          const HannoyMeta *meta, uint64_t lsn,
	                                          HannoyError *err);
	/*
	 * Creates a fresh replica sidecar in 'path' as hannoy_replica_create
	 * does, with stamp 0, being rebuilt from its table (a standby's copy it
	 * cannot trust, DESIGN.md "Rebuilding a replica from the table"): until
	 * hannoy_replica_seed_end, a build (hannoy_build_*) makes its graph from
	 * the table's rows, redo stages rows into it and removes staged ones
	 * without touching that graph, recording the TIDs it removes, and
	 * nothing links, adopts or scans it.
	 */
	extern HannoyStatus hannoy_replica_create_seeding(const char            *path,
	                                                  const HannoyEnvConfig *config,
	                                                  const HannoyMeta *meta, HannoyError *err);
	/*
	 * Ends a rebuild once its build is done, in one synced write
	 * transaction: every TID redo staged or removed meanwhile leaves the
	 * built graph (newer than the table's copy), and the replica is an
	 * ordinary one whose staged rows are to be linked.
	 */
	extern HannoyStatus hannoy_replica_seed_end(HannoyEnv *env, HannoyError *err);
	/* *seeding: the replica is being rebuilt from its table (not usable yet). */
	extern HannoyStatus hannoy_replica_seeding(HannoyEnv *env, bool *seeding, HannoyError *err);
	/* True when 'path' holds a sidecar that redo made (its marker file is there). */
	extern bool hannoy_replica_marked(const char *path);
	/*
	 * Removes the marker file of 'path' durably: the sidecar is no longer
	 * trusted as a replica (a failed redo, a copied data directory).
	 */
	extern HannoyStatus hannoy_replica_unmark(const char *path, HannoyError *err);
	/*
	 * Stages 'count' rows (replacing staged rows of the same TIDs) and
	 * records WAL up to 'lsn' as applied, in one synced write transaction;
	 * nothing when the sidecar's stamp is at or past 'lsn' (*applied false).
	 * 'lsn' 0 (a primary's own rows, written to a replica it is rebuilding
	 * from the table) is always applied and leaves the stamp alone.
	 * 'dims' fixes the dimension count of a sidecar that has none yet.
	 */
	extern HannoyStatus hannoy_replica_stage(HannoyEnv *env, uint64_t lsn, uint32_t dims,
	                                         const HannoyStagedRow *rows, uint32_t count,
	                                         bool *applied, HannoyError *err);
	/* Removes the staged rows of 'count' TIDs, gated by 'lsn' as hannoy_replica_stage. */
	extern HannoyStatus hannoy_replica_unstage(HannoyEnv *env, uint64_t lsn, const HannoyTid *tids,
	                                           uint32_t count, bool *applied, HannoyError *err);
	/*
	 * Links staged rows into the replica's graph, for about 'budget_ms' (at
	 * least one row), in one synced write transaction that also removes them
	 * from the staged rows, so a scan finds each row in exactly one of the
	 * two.  *linked: rows linked; *staged: rows still staged.
	 */
	extern HannoyStatus hannoy_replica_link(HannoyEnv *env, uint32_t budget_ms, uint64_t *linked,
	                                        uint64_t *staged, HannoyError *err);
	/*
	 * Makes the replica in 'path', open as 'env', a primary's sidecar once
	 * the server left recovery (DESIGN.md "Promotion, PITR, crash
	 * recovery"): a meta record with timeline 0 whose applied-LSN stamp is
	 * at most 'replayed_to' (the end of the WAL this server replayed) takes
	 * 'timeline', in one synced write transaction; one that records
	 * 'timeline' already (adopted before a crash) counts as adopted too.
	 * Then the marker goes, durably, adopted or not: a replica that cannot be
	 * adopted is not trusted either.  *adopted tells which; staged rows stay
	 * staged (scans merge them; hannoy_replica_link links them), and a hint
	 * file (hannoy_replica_has_staged_hint) says so until the last is linked.
	 */
	extern HannoyStatus hannoy_replica_adopt(HannoyEnv *env, const char *path, uint32_t timeline,
	                                         uint64_t replayed_to, bool *adopted, HannoyError *err);
	/* True when 'path' is an adopted replica that had staged rows left (a hint, not trust). */
	extern bool hannoy_replica_has_staged_hint(const char *path);
	/* The number of staged rows and the applied-LSN stamp (0, 0 for a sidecar not from WAL). */
	extern HannoyStatus hannoy_replica_state(HannoyEnv *env, uint64_t *staged, uint64_t *lsn,
	                                         HannoyError *err);

	/* ---------------------------------------------------------------------
	 * Build: vectors are streamed into LMDB, then the graph is built by worker
	 * threads in time-bounded slices so the caller can check for interrupts
	 * between slices.
	 * ---------------------------------------------------------------------
	 */
	typedef struct HannoyBuilder HannoyBuilder;

	typedef enum HannoyBuildPhase
	{
		HANNOY_BUILD_LOADING = 1, /* hannoy_build_add is being called */
		HANNOY_BUILD_GRAPH = 2,   /* linking nodes */
		HANNOY_BUILD_WRITING = 3, /* writing links to LMDB */
		HANNOY_BUILD_DONE = 4
	} HannoyBuildPhase;

	typedef struct HannoyBuildProgress
	{
		HannoyBuildPhase phase;
		uint64_t         done;  /* units of the current phase done */
		uint64_t         total; /* units of the current phase in all */
	} HannoyBuildProgress;

	extern HannoyStatus hannoy_build_begin(HannoyEnv *env, uint32_t threads,
	                                       HannoyBuilder **builder, HannoyError *err);

	/*
	 * Chooses the codes the build gives the index (a HannoyQuantizerChoice;
	 * HANNOY_QUANTIZER_AUTO when never called).  A choice that does not fit
	 * the sidecar's metric is HANNOY_ERR_INVALID.  Call before the first row.
	 */
	extern HannoyStatus hannoy_build_set_quantizer(HannoyBuilder *builder, uint32_t choice,
	                                               HannoyError *err);

	/*
	 * Asks the build for an index that stores no float vectors (storage
	 * format 7, DESIGN.md "Heap re-ranking"): only codes, and scans hand
	 * their windows to the caller for exact distances from the heap
	 * (hannoy_scan_rerank_request).  Needs a quantizer chosen by name
	 * (scalar8 or binary) on a float metric, else HANNOY_ERR_INVALID.  Call
	 * after hannoy_build_set_quantizer, before the first row.
	 */
	extern HannoyStatus hannoy_build_set_heap_rerank(HannoyBuilder *builder, bool heap,
	                                                 HannoyError *err);
	/*
	 * Adds one heap row.  'vector' NULL means the row has no indexable vector
	 * (NULL, or a vector the metric gives no distance: 'unindexed_kind', a
	 * HannoyUnindexedKind); it is returned last by scans.  Vectors are written to LMDB in
	 * batches.
	 */
	extern HannoyStatus hannoy_build_add(HannoyBuilder *builder, HannoyTid tid, const void *vector,
	                                     uint8_t unindexed_kind, HannoyError *err);

	/*
	 * Runs the build for about 'budget_ms' milliseconds.  Sets *done when the
	 * whole graph is built, written and committed.
	 */
	extern HannoyStatus hannoy_build_step(HannoyBuilder *builder, uint32_t budget_ms,
	                                      HannoyBuildProgress *progress, bool *done,
	                                      HannoyError *err);

	/* Frees a builder; an unfinished build leaves a partial environment. */
	extern void hannoy_build_free(HannoyBuilder *builder);

	/* ---------------------------------------------------------------------
	 * Insert after the build.
	 * ---------------------------------------------------------------------
	 */

	/*
	 * Unflushed rows (DESIGN.md "WAL before sidecar"): an insert no longer
	 * waits for its heap rows' WAL to reach the disk before the sidecar
	 * records them, so a crash of PostgreSQL may lose a heap row the sidecar
	 * kept.  hannoy_env_set_unflushed sets this process's mode for the
	 * following hannoy_insert calls: each notes its TID with 'lifetime' (a
	 * number of this run of the server's shared memory, never 0) and 'lsn'
	 * (the end of the WAL inserted before the rows were), and the first one
	 * first forgets the notes of 'lifetime' up to 'flushed' (WAL known to be
	 * on disk; 0: none).  'lifetime' 0 ends the mode.
	 */
	extern HannoyStatus hannoy_env_set_unflushed(HannoyEnv *env, uint64_t lifetime, uint64_t lsn,
	                                             uint64_t flushed, HannoyError *err);
	/* A noted row of another lifetime: a crash may have lost its heap row. */
	typedef struct HannoyUnflushedRow
	{
		HannoyTid tid;
		uint64_t  lifetime;
		uint64_t  lsn;
	} HannoyUnflushedRow;
	/* Lists up to 'capacity' noted rows of lifetimes other than 'lifetime'. */
	extern HannoyStatus hannoy_env_unflushed_foreign(HannoyEnv *env, uint64_t lifetime,
	                                                 HannoyUnflushedRow *rows, uint32_t capacity,
	                                                 uint32_t *count, HannoyError *err);
	/*
	 * Settles listed rows in one write transaction: the entry of each row
	 * whose heap row is gone ('lost') is removed (a graph node becomes a
	 * tombstone), and the notes go; a row noted again since the listing (an
	 * insert of the TID) is left alone.  *retired counts the entries removed.
	 */
	extern HannoyStatus hannoy_env_unflushed_settle(HannoyEnv *env, const HannoyUnflushedRow *rows,
	                                                const bool *lost, uint32_t n, uint32_t *retired,
	                                                HannoyError *err);

	/*
	 * Inserts one row: 'vector' NULL records an unindexed row (see
	 * hannoy_build_add).  The neighbour search runs in a read transaction; only
	 * the linking takes LMDB's writer lock.
	 */
	extern HannoyStatus hannoy_insert(HannoyEnv *env, HannoyTid tid, const void *vector,
	                                  uint8_t unindexed_kind, HannoyError *err);

	/*
	 * Test only: ways for tests to slow the core down or watch it.  The shim
	 * sets them from its hannoy.test_* GUCs, the core's unit tests directly.
	 */
	typedef struct HannoyTestHooks
	{
		/* every insert pauses this long inside its read-phase neighbour search,
		   so tests can show that inserting backends overlap there */
		uint32_t insert_search_delay_ms;
		/* run, with no transaction open, after each write transaction a graph
		   repair commits, so a test can check each state a crash could leave */
		void (*repair_commit)(void *arg);
		void *repair_commit_arg;
		/* run by each insert's neighbour search in a graph that is not empty:
		   whether it walks on codes (DESIGN.md "Insert") or on the vectors */
		void (*insert_walk)(void *arg, bool on_codes);
		void *insert_walk_arg;
	} HannoyTestHooks;

	/* Replaces the test hooks (all zero: none). */
	extern void hannoy_test_set_hooks(const HannoyTestHooks *hooks);

	/* ---------------------------------------------------------------------
	 * Scans.
	 * ---------------------------------------------------------------------
	 */
	typedef struct HannoyScan HannoyScan;

	extern HannoyStatus hannoy_scan_create(HannoyEnv *env, HannoyScan **scan, HannoyError *err);

	/*
	 * Starts (or restarts) a scan in a new read transaction.  'query' has 'dims'
	 * dimensions (bits for hamming); another count than the index's is
	 * HANNOY_ERR_INVALID.  'query' NULL means
	 * every distance is NULL (or NaN when 'null_kind' is HANNOY_ROW_UNINDEXED_NAN): all rows are
	 * returned, in no particular order, with that distance.
	 */
	extern HannoyStatus hannoy_scan_start(HannoyScan *scan, const void *query, uint32_t dims,
	                                      uint32_t ef, uint8_t null_kind, HannoyError *err);

	/*
	 * Sets how many rows the first window of a scan on codes re-ranks by
	 * exact distance and returns (0: ef).  A window larger than ef widens
	 * the first round's search to it; a smaller one returns the rest of the
	 * round in later windows.  Takes effect at the next hannoy_scan_start.
	 */
	extern void hannoy_scan_set_rerank_window(HannoyScan *scan, uint32_t window);

	/*
	 * Returns the next row.  *found false means the scan is exhausted.  Rows
	 * come nearest first for the first ef; after that the search resumes from
	 * its frontier, then visits never-reached items, then unindexed rows
	 * (*isnull true for NULL vectors, NaN distance for zero vectors).
	 */
	extern HannoyStatus hannoy_scan_next(HannoyScan *scan, HannoyTid *tid, double *distance,
	                                     bool *isnull, bool *found, HannoyError *err);

	/*
	 * A scan of an index that re-ranks from the heap (format 7) needs exact
	 * distances it cannot compute: hannoy_scan_next then returns *found false
	 * with a request pending.  This returns the request's row count (0: none
	 * pending, the scan is really over) and its TIDs in *tids (owned by the
	 * scan, valid until the next call on it).  The caller computes each
	 * row's exact distance from its heap tuple, with the operator's own
	 * kernel (hannoy_distance), and hands them back in the same order with
	 * hannoy_scan_rerank_reply; a row the caller cannot see (or whose
	 * vector is NULL) may get any distance, since the executor drops it.
	 * Then hannoy_scan_next goes on.
	 */
	extern uint32_t     hannoy_scan_rerank_request(HannoyScan *scan, const HannoyTid **tids);
	extern HannoyStatus hannoy_scan_rerank_reply(HannoyScan *scan, const double *distances,
	                                             uint32_t count, HannoyError *err);
	/*
	 * The code of float vector 'vector' in the sidecar's quantizer, into
	 * 'out' (*code_bytes bytes; 0 when the sidecar has no quantizer or 'size'
	 * is too small, when nothing is written).  The heap check compares codes
	 * of an index without vectors with this.
	 */
	extern HannoyStatus hannoy_env_encode(HannoyEnv *env, const void *vector, uint8_t *out,
	                                      size_t size, size_t *code_bytes, HannoyError *err);
	/*
	 * Detaches a scan from its environment between calls: its read
	 * transaction (and reader slot) ends, and its position and pending
	 * results stay in memory, so the environment may be closed.  Then
	 * hannoy_scan_attach to an environment of the same sidecar (reopened)
	 * before the next hannoy_scan_next, which goes on in a new read
	 * transaction.  A scan also ends its read transaction on its own when
	 * the environment's map must grow; either way it returns no row twice.
	 */
	extern void         hannoy_scan_detach(HannoyScan *scan);
	extern HannoyStatus hannoy_scan_attach(HannoyScan *scan, HannoyEnv *env, HannoyError *err);

	/* Frees the scan and ends its read transaction (attached or not). */
	extern void hannoy_scan_free(HannoyScan *scan);

	/* ---------------------------------------------------------------------
	 * VACUUM: the caller walks the TIDs in batches, asks PostgreSQL which are
	 * dead, and hands those back.
	 * ---------------------------------------------------------------------
	 */

	/* One indexed row as seen by VACUUM. */
	typedef struct HannoyEntry
	{
		HannoyTid tid;
		uint32_t  id; /* item id, or UINT32_MAX for unindexed rows */
	} HannoyEntry;

	/* Which rows a walk over the indexed rows is at, in the order it visits them. */
	typedef enum HannoyEntrySource
	{
		HANNOY_ENTRIES_GRAPH = 0,     /* graph rows */
		HANNOY_ENTRIES_UNINDEXED = 1, /* unindexed rows */
		HANNOY_ENTRIES_DONE = 2       /* the walk is over */
	} HannoyEntrySource;

	/* Where a walk over the indexed rows stands; zero-initialise to start. */
	typedef struct HannoyEntryPosition
	{
		uint32_t  source;  /* HannoyEntrySource */
		bool      started; /* 'after' is valid */
		HannoyTid after;   /* last TID returned from 'source' */
	} HannoyEntryPosition;

	/*
	 * Fills up to 'capacity' entries after 'pos' and advances it, graph rows
	 * first, then unindexed rows, each in TID order.  *count 0 means the end.
	 */
	extern HannoyStatus hannoy_entries_next(HannoyEnv *env, HannoyEntryPosition *pos,
	                                        HannoyEntry *entries, uint32_t capacity,
	                                        uint32_t *count, HannoyError *err);

	/*
	 * Removes rows.  Graph nodes become tombstones: their TID is gone so scans
	 * never return them, but searches still walk through them.
	 */
	extern HannoyStatus hannoy_delete_entries(HannoyEnv *env, const HannoyEntry *entries,
	                                          uint32_t count, HannoyError *err);

	/*
	 * Graph repair after hannoy_delete_entries: every neighbour list that
	 * names a tombstone is rebuilt around it, then the tombstones are
	 * deleted and their ids freed for reuse.  Runs in steps of about
	 * 'budget_ms' (each made of write transactions of at most ~20 ms);
	 * *done when finished.  A repair freed before it is done leaves the
	 * rest to the next one.
	 */
	typedef struct HannoyRepair HannoyRepair;

	extern HannoyStatus hannoy_repair_begin(HannoyEnv *env, HannoyRepair **repair,
	                                        HannoyError *err);
	extern HannoyStatus hannoy_repair_step(HannoyRepair *repair, uint32_t budget_ms, bool *done,
	                                       uint64_t *repaired, HannoyError *err);
	extern void         hannoy_repair_free(HannoyRepair *repair);

	/* ---------------------------------------------------------------------
	 * Inspection: one walk over the whole sidecar in a single read transaction
	 * (never a write transaction), run in time-bounded slices so the caller can
	 * check for interrupts between them.  It gathers graph statistics and, when
	 * asked to verify, checks the sidecar's invariants and reports each problem.
	 * ---------------------------------------------------------------------
	 */
	typedef struct HannoyInspect HannoyInspect;

/* Layers a node can have (levels 0 to 15). */
#define HANNOY_MAX_LAYERS 16

	/* What a reported problem is about.  The numbers are not stored anywhere. */
	typedef enum HannoyProblemKind
	{
		HANNOY_PROBLEM_UNREACHABLE = 1, /* live item not reachable from the entry point */
		HANNOY_PROBLEM_DANGLING_LINK,   /* neighbour with no vector, or id >= next_id */
		HANNOY_PROBLEM_DEGREE,          /* more than m neighbours (m0 at layer 0) */
		HANNOY_PROBLEM_SELF_LINK,       /* a node lists itself */
		HANNOY_PROBLEM_MISSING_LAYER,   /* a node lacks a layer it has links at or above */
		HANNOY_PROBLEM_ORPHAN_LINKS,    /* a neighbour list of an item with no vector */
		HANNOY_PROBLEM_TID_MAP,         /* tids and items are not inverse, or a vector has
		                                   neither a TID nor a tombstone */
		HANNOY_PROBLEM_COUNTER,         /* the state record disagrees with the contents */
		HANNOY_PROBLEM_ENTRY_POINT,     /* entry point missing or not on the top layer */
		HANNOY_PROBLEM_MALFORMED,       /* a record that cannot be decoded */
		HANNOY_PROBLEM_SIDECAR_MISSING, /* reported by the shim: no sidecar */
		HANNOY_PROBLEM_META_MISMATCH    /* reported by the shim: metapage vs sidecar */
	} HannoyProblemKind;

	/* One problem found by a verifying walk. */
	typedef struct HannoyProblem
	{
		HannoyProblemKind kind;
		int64_t           item; /* item id it is about, -1 when none */
		char              detail[256];
	} HannoyProblem;

	/* What a walk saw, in its own read transaction. */
	typedef struct HannoyInspectSummary
	{
		HannoyStats stats;                    /* the state record, file and page sizes */
		uint32_t    layers;                   /* layers holding a neighbour list */
		uint64_t    lists[HANNOY_MAX_LAYERS]; /* neighbour lists (nodes) per layer */
		uint64_t    edges[HANNOY_MAX_LAYERS]; /* neighbour-list entries per layer */
	} HannoyInspectSummary;

	/*
	 * Starts a walk in a new read transaction, held until hannoy_inspect_free.
	 * With 'verify' false it only gathers the summary (one pass over the
	 * neighbour lists).
	 */
	extern HannoyStatus hannoy_inspect_begin(HannoyEnv *env, bool verify, HannoyInspect **inspect,
	                                         HannoyError *err);

	/*
	 * Runs the walk for about 'budget_ms' milliseconds and hands out up to
	 * 'capacity' problems found so far into 'problems' (*count of them).  Sets
	 * *done when the walk is over and every problem has been handed out.
	 */
	extern HannoyStatus hannoy_inspect_step(HannoyInspect *inspect, uint32_t budget_ms,
	                                        HannoyProblem *problems, uint32_t capacity,
	                                        uint32_t *count, bool *done, HannoyError *err);

	/* Fills the summary (complete once the walk is done). */
	extern HannoyStatus hannoy_inspect_summary(HannoyInspect        *inspect,
	                                           HannoyInspectSummary *summary, HannoyError *err);

	/* Ends the walk's read transaction and frees it. */
	extern void hannoy_inspect_free(HannoyInspect *inspect);

	/*
	 * One part of a sidecar's bytes (hannoy_env_space): a database of the
	 * environment ('entries' its records), or one of LMDB's own parts ("lmdb
	 * meta pages", "lmdb names", "lmdb free list", "lmdb free pages") or of
	 * its files ("file tail": data.mdb beyond its last page, "lock file").
	 */
	typedef struct HannoySpacePart
	{
		char     name[24];
		uint64_t entries; /* records in a database; 0 for the other parts */
		uint64_t pages;   /* LMDB pages (branch, leaf and overflow); 0 for the lock file */
		uint64_t bytes;   /* the part's bytes on disk */
	} HannoySpacePart;

	/* The most parts hannoy_env_space returns. */
#define HANNOY_SPACE_PARTS 24

	/*
	 * Splits the sidecar's bytes into its parts, read in one snapshot:
	 * 'parts' has room for HANNOY_SPACE_PARTS.  Their pages add up to the
	 * pages LMDB uses, their bytes to the data and lock files' sizes.
	 */
	extern HannoyStatus hannoy_env_space(HannoyEnv *env, HannoySpacePart *parts, uint32_t *count,
	                                     HannoyError *err);

	/* Name of a problem kind as hannoy_verify() shows it ("dangling link"...). */
	extern const char *hannoy_problem_name(HannoyProblemKind kind);

	/* ---------------------------------------------------------------------
	 * Rows for a comparison with the heap: the live graph rows and the
	 * unindexed rows merged in TID order, each call one bounded batch in its
	 * own short read transaction, so the caller reads the heap and checks
	 * for interrupts between calls while writers go on.
	 * ---------------------------------------------------------------------
	 */

	/* Where a pass over the stored rows stands; zero-initialise to start. */
	typedef struct HannoyRowPosition
	{
		bool      started; /* 'after' is valid */
		bool      done;    /* every row has been handed out */
		HannoyTid after;   /* last TID handed out */
	} HannoyRowPosition;

	/* One row the sidecar holds. */
	typedef struct HannoyStoredRow
	{
		HannoyTid tid;
		uint32_t  id;             /* item id, UINT32_MAX for an unindexed row */
		uint8_t   unindexed_kind; /* 0 for a graph row, else as in hannoy_build_add */
		bool      vector_missing; /* nothing to compare: a graph row without a vector or
		                             whose id the tids database maps to another TID, or
		                             a malformed unindexed record (the walk reports it) */
	} HannoyStoredRow;

	/*
	 * Fills up to 'capacity' rows with TIDs after 'pos' and advances it.  The
	 * vector of row i (a graph row) is copied to 'vectors' + i * *vector_bytes,
	 * the size of one stored vector (set even when no row is returned); no
	 * more rows are returned than 'vectors_size' bytes hold.  *count 0 with
	 * pos->done false means 'vectors' cannot hold one vector: call again with
	 * a larger buffer.  A TID in both the graph and the unindexed rows (a
	 * corruption the walk reports) is returned once or twice.  An index
	 * without vectors (rerank = 'heap', format 7) hands out each row's code
	 * instead, and *vector_bytes is the code's size: compare it with
	 * hannoy_env_encode of the heap's vector.
	 */
	extern HannoyStatus hannoy_stored_rows_next(HannoyEnv *env, HannoyRowPosition *pos,
	                                            HannoyStoredRow *rows, uint32_t capacity,
	                                            void *vectors, size_t vectors_size, uint32_t *count,
	                                            size_t *vector_bytes, HannoyError *err);

#ifdef __cplusplus
}
#endif

#endif /* HANNOY_HANNOY_H */
