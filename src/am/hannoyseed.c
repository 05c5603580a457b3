/*
 * hannoyseed.c
 *	  Rebuilding a hot standby's replica from the table (DESIGN.md
 *	  "Rebuilding a replica from the table"): the standby's own copy of an
 *	  index that it cannot trust (a sidecar copied by a base backup or
 *	  pg_rewind, or one whose redo failed) is made again from the standby's
 *	  own heap, with no REINDEX on the primary.
 *
 *	  The replica linker starts this background worker (one at a time) for
 *	  a database that has such sidecars.  For each, the worker replaces the
 *	  sidecar with an empty replica marked as being rebuilt; from then on
 *	  redo stages the primary's rows into it as into any replica, and
 *	  records the TIDs it removes, without touching its graph.  The worker
 *	  reads every row of the heap that a snapshot may still see (the index
 *	  build's scan, in its "any visible" mode, so rows of transactions in
 *	  progress count too) into the build CREATE INDEX runs; a row redo
 *	  skipped before the marker existed is in the heap already, and a row
 *	  VACUUM removed before that is dead there already (VACUUM prunes a row
 *	  before it logs its removal from the index).  When the build is done,
 *	  every TID redo staged or removed meanwhile leaves the built graph (the
 *	  staged row is newer), and the replica is an ordinary one: scans merge
 *	  its staged rows exactly and the linker links them.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "hannoy_am.h"

/* Milliseconds of build work between interrupt checks. */
#define HANNOY_SEED_SLICE_MS 100

/* One rebuild: the build it feeds, and what it counted. */
typedef struct SeedState
{
	Relation       index;
	HannoyEnv     *env;
	HannoyBuilder *builder;
	HannoyMetric   metric;
	uint32         dims;
	uint64         rows;
	MemoryContext  tmpctx;
	/* root offsets of the current heap page already built (a HOT chain's versions share one) */
	BlockNumber block;
	bool        seen[MaxHeapTuplesPerPage + 1];
} SeedState;

PGDLLEXPORT void HannoySeederMain(Datum arg);

/*
 * HannoyStartSeeder asks the postmaster for a worker rebuilding the
 * untrusted replicas of database 'db'; *handle lets the caller (the
 * linker) see when it ends.  False when no worker slot is free.
 */
bool
HannoyStartSeeder(Oid db, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "hannoy", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "HannoySeederMain", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "hannoy replica rebuild of database %u", db);
	strlcpy(worker.bgw_type, "hannoy replica rebuild", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(db);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/* Raises the core's error of a rebuild, after freeing its build. */
static void
seed_fail(SeedState *state, HannoyStatus st, HannoyError *err)
{
	if (state->builder != NULL)
		hannoy_build_free(state->builder);
	state->builder = NULL;
	HannoyReportError(st, err, state->index);
}

/* seed_callback hands one heap row of the index build's scan to the build. */
static void
seed_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull, bool tupleIsAlive,
              void *arg)
{
	SeedState    *state = (SeedState *) arg;
	MemoryContext old;
	const void   *vec = NULL;
	uint8         kind = HANNOY_ROW_UNINDEXED_NULL;
	BlockNumber   block = ItemPointerGetBlockNumber(tid);
	OffsetNumber  offset = ItemPointerGetOffsetNumber(tid);
	HannoyError   err;
	HannoyStatus  st;

	/* in "any visible" mode a HOT chain being updated comes twice under its root */
	if (block != state->block)
	{
		memset(state->seen, 0, sizeof(state->seen));
		state->block = block;
	}
	if (offset > MaxHeapTuplesPerPage || state->seen[offset])
		return;
	state->seen[offset] = true;
	old = MemoryContextSwitchTo(state->tmpctx);
	if (!isnull[0])
	{
		uint32 dims;
		bool   is_zero;

		vec = HannoyDatumToVector(index, values[0], state->metric, state->dims, false, &dims,
		                          &is_zero);
		/* the first vector fixes the length, as in the primary's sidecar */
		if (state->dims == 0)
		{
			state->dims = dims;
			st = hannoy_env_set_dims(state->env, dims, &err);
			if (st != HANNOY_OK)
				seed_fail(state, st, &err);
		}
		kind = HANNOY_ROW_INDEXED;
		if (is_zero)
		{
			vec = NULL;
			kind = HANNOY_ROW_UNINDEXED_NAN;
		}
	}
	st = hannoy_build_add(state->builder, HannoyTidFromItemPointer(tid), vec, kind, &err);
	if (st != HANNOY_OK)
		seed_fail(state, st, &err);
	MemoryContextSwitchTo(old);
	MemoryContextReset(state->tmpctx);
	if (++state->rows % 16384 == 0)
	{
		CHECK_FOR_INTERRUPTS();
		pgstat_report_activity(
		    STATE_RUNNING,
		    psprintf("rebuilding hannoy index \"%s\" from its table: " UINT64_FORMAT " rows read",
		             RelationGetRelationName(index), state->rows));
	}
}

/*
 * needs_rebuild tells whether the sidecar in 'path' is one to rebuild: there
 * and either torn (a dirty marker of another boot: DESIGN.md "The dirty
 * marker"), or, in recovery, not a replica this server trusts (no marker),
 * or a rebuild cut short (a crash, a cancellation).  Out of recovery a
 * sidecar without a marker is the primary's own.
 */
static bool
needs_rebuild(const char *path)
{
	struct stat     st;
	HannoyEnvConfig config = HannoyDefaultEnvConfig();
	HannoyEnv      *env;
	HannoyError     err;
	bool            seeding = false;
	bool            torn = false;

	if (stat(path, &st) != 0)
		return false;
	if (hannoy_env_torn(path, &torn, &err) == HANNOY_OK && torn)
		return true;
	if (!hannoy_replica_marked(path))
		return RecoveryInProgress();
	if (hannoy_env_open(path, &config, &env, &err) != HANNOY_OK)
		return false;
	if (hannoy_replica_seeding(env, &seeding, &err) != HANNOY_OK)
		seeding = false;
	hannoy_env_close(env);
	return seeding;
}

/* Raises the error of a rebuild outside its transaction (no relation to name it by). */
static void
seed_error(const char *name, HannoyError *err)
{
	ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
	                errmsg("hannoy could not rebuild index \"%s\" from its table: %s", name,
	                       err->message)));
}

/*
 * seed_build runs the build of 'state' and ends the rebuild, outside any
 * transaction (see seed_index); the builder and the environment go either
 * way.
 */
static void
seed_build(SeedState *state, const char *name)
{
	HannoyBuildProgress progress;
	HannoyError         err;
	HannoyStatus        st;
	bool                done = false;

	PG_TRY();
	{
		while (!done)
		{
			/* a test's window for ending recovery mid-build (read when the worker started) */
			if (hannoy_test_rebuild_delay > 0)
				pg_usleep((long) hannoy_test_rebuild_delay * 1000L);
			CHECK_FOR_INTERRUPTS();
			HannoyYieldToRedo(HANNOY_SEED_SLICE_MS);
			st = hannoy_build_step(state->builder, HANNOY_SEED_SLICE_MS, &progress, &done, &err);
			if (st != HANNOY_OK)
				seed_error(name, &err);
		}
		hannoy_build_free(state->builder);
		state->builder = NULL;
		st = hannoy_replica_seed_end(state->env, &err);
		if (st != HANNOY_OK)
			seed_error(name, &err);
	}
	PG_CATCH();
	{
		if (state->builder != NULL)
			hannoy_build_free(state->builder);
		state->builder = NULL;
		hannoy_env_close(state->env);
		PG_RE_THROW();
	}
	PG_END_TRY();
	hannoy_env_close(state->env);
}

/* Ends seed_index's transaction without a rebuild. */
static void
seed_skip(Relation heap, Relation index, char *path)
{
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pfree(path);
}

/*
 * seed_index rebuilds the replica of index 'indexoid' from its table if it
 * needs that.  The table is read in a transaction of its own, with a
 * snapshot (TOAST needs one) and the relations' locks; the graph is then
 * built outside any transaction, holding neither, so that a long build is
 * never cancelled for a conflict with the cleanup or the locks redo
 * replays.  A drop replayed meanwhile removes the directory under it: the
 * build then finishes on files nobody opens again.
 */
static pg_noinline void
seed_index(Oid indexoid)
{
	Oid                heapoid;
	Relation           heap;
	Relation           index;
	HannoyMetaPageData meta;
	RelFileNodeBackend rnode;
	char              *path;
	char               name[NAMEDATALEN];
	HannoyEnvConfig    config = HannoyDefaultEnvConfig();
	HannoyMeta         smeta;
	HannoyError        err;
	HannoyStatus       st;
	IndexInfo         *info;
	SeedState          state;
	TimestampTz        start = GetCurrentTimestamp();
	LWLock            *lock = HannoyReplicaPathsLock();
	long               secs;
	int                usecs;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	heapoid = IndexGetRelation(indexoid, true);
	if (!OidIsValid(heapoid))
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return;
	}
	heap = table_open(heapoid, AccessShareLock);
	index = index_open(indexoid, AccessShareLock);
	strlcpy(name, RelationGetRelationName(index), sizeof(name));
	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	path = MemoryContextStrdup(TopMemoryContext, HannoySidecarPath(rnode));
	/*
	 * An index the primary cannot use either stays as it is; so does a
	 * partial index in recovery: a row of a transaction in progress during
	 * the rebuild that then aborts stays in the index under its TID (the
	 * primary never had it, so nothing removes it), and a later row in its
	 * slot that the predicate leaves out (so never logged) would be
	 * returned with its vector.  (On a primary, VACUUM removes that row.)
	 */
	if (index->rd_rel->relpersistence != RELPERSISTENCE_PERMANENT ||
	    (RecoveryInProgress() && RelationGetIndexPredicate(index) != NIL) ||
	    !HannoyReadMetaPage(index, &meta) ||
	    (meta.flags & (HANNOY_META_BROKEN | HANNOY_META_INIT_FORK)) || !needs_rebuild(path))
	{
		seed_skip(heap, index, path);
		return;
	}
	memset(&smeta, 0, sizeof(smeta));
	smeta.format_version = HANNOY_FORMAT_VERSION;
	smeta.metric = meta.metric;
	smeta.dims = meta.dims;
	smeta.options = meta.options;
	smeta.m0 = 2 * meta.options.m;
	smeta.generation = meta.generation;
	smeta.system_id = GetSystemIdentifier();
	smeta.timeline = 0; /* a replica: trusted only while in recovery */
	smeta.index_oid = indexoid;
	smeta.seed = meta.generation;

	/*
	 * What is there is not trusted: replaced by a replica being rebuilt,
	 * marker last (redo stages into it from then on).  Decided again under
	 * the lock redo takes to remove a sidecar, so a sidecar redo removed
	 * (a drop, or the primary's word that its sidecar skipped rows) never
	 * comes back.
	 */
	if (lock != NULL)
		LWLockAcquire(lock, LW_EXCLUSIVE);
	if (!needs_rebuild(path))
		st = HANNOY_ERR_NOT_FOUND;
	else
	{
		st = HannoyRemoveSidecarDir(path, &err);
		if (st == HANNOY_OK)
			st = hannoy_replica_create_seeding(path, &config, &smeta, &err);
		HannoyNoteSidecarChange();
	}
	if (lock != NULL)
		LWLockRelease(lock);
	if (st == HANNOY_ERR_NOT_FOUND)
	{
		seed_skip(heap, index, path);
		return;
	}
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
	pgstat_report_activity(STATE_RUNNING,
	                       psprintf("rebuilding hannoy index \"%s\" from its table", name));
	ereport(LOG, (errmsg("hannoy is rebuilding index \"%s\" from its table%s", name,
	                     RecoveryInProgress() ? " during recovery" : ""),
	              errdetail("Its sidecar \"%s\" was not kept from this server's WAL, or its "
	                        "rebuild had not ended.",
	                        path)));

	memset(&state, 0, sizeof(state));
	st = hannoy_env_open(path, &config, &state.env, &err);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
	state.index = index;
	state.metric = meta.metric;
	state.dims = meta.dims;
	state.block = InvalidBlockNumber;
	state.tmpctx =
	    AllocSetContextCreate(CurrentMemoryContext, "hannoy rebuild row", ALLOCSET_DEFAULT_SIZES);
	/* the build CREATE INDEX runs, with the index's codes */
	st = hannoy_build_begin(state.env, (uint32) hannoy_build_threads, &state.builder, &err);
	if (st == HANNOY_OK &&
	    ((st = hannoy_build_set_quantizer(state.builder, HannoyGetQuantizer(index), &err)) !=
	         HANNOY_OK ||
	     (st = hannoy_build_set_heap_rerank(state.builder, HannoyGetRerankHeap(index), &err)) !=
	         HANNOY_OK))
	{
		hannoy_build_free(state.builder);
		state.builder = NULL;
	}
	if (st != HANNOY_OK)
	{
		hannoy_env_close(state.env);
		HannoyReportError(st, &err, index);
	}
	info = BuildIndexInfo(index);
	PG_TRY();
	{
		/*
		 * Every row some snapshot may still see: committed, in progress,
		 * recently dead ("any visible" mode, which also never waits for a
		 * transaction).  A HOT chain's versions share their vector (a HOT
		 * update changes no indexed column), so its root TID has one row.
		 */
		table_index_build_range_scan(heap, index, info, false, true, false, 0, InvalidBlockNumber,
		                             seed_callback, &state, NULL);
	}
	PG_CATCH();
	{
		if (state.builder != NULL)
			hannoy_build_free(state.builder);
		hannoy_env_close(state.env);
		PG_RE_THROW();
	}
	PG_END_TRY();
	/* the table is read: its locks and the snapshot go */
	state.index = NULL;
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();

	seed_build(&state, name);
	TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
	ereport(LOG,
	        (errmsg("hannoy rebuilt index \"%s\" from its table%s: " UINT64_FORMAT
	                " rows read in %ld.%03d s",
	                name, RecoveryInProgress() ? " during recovery" : "", state.rows, secs,
	                usecs / 1000),
	         errdetail("Rows written meanwhile are staged: scans measure them exactly until the "
	                   "replica linker has linked them.")));
	pfree(path);
}

/* The hannoy indexes of the database with a permanent relation. */
static pg_noinline List *
hannoy_indexes(void)
{
	List *oids = NIL;
	int   rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	rc = SPI_execute("SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_am a "
	                 "ON a.oid = c.relam WHERE a.amname = 'hannoy' AND c.relkind = 'i' "
	                 "AND c.relpersistence = 'p' ORDER BY c.oid",
	                 true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not list the hannoy indexes: SPI_execute returned %d", rc);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool          isnull;
		Datum         d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		if (!isnull)
			oids = lappend_oid(oids, DatumGetObjectId(d));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return oids;
}

/*
 * HannoySeederMain is the worker's entry point: every hannoy index of the
 * database whose replica needs it is rebuilt, each in its own transaction.
 * It leaves when done or on SIGTERM; a rebuild begun in recovery goes on
 * after a promotion (DESIGN.md "Rebuilding on a primary").
 */
void
HannoySeederMain(Datum arg)
{
	List         *oids;
	ListCell     *lc;
	volatile bool failed = false;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid,
	                                          BGWORKER_BYPASS_ALLOWCONN);
	oids = hannoy_indexes();
	foreach (lc, oids)
	{
		/* one index that fails (a conflict with recovery, say) does not hold the others back */
		PG_TRY();
		{
			seed_index(lfirst_oid(lc));
		}
		PG_CATCH();
		{
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			failed = true;
		}
		PG_END_TRY();
	}
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(failed ? 1 : 0);
}
