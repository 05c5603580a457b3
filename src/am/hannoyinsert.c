/*
 * hannoyinsert.c
 *	  aminsert: rows are checked at once and queued per backend and index,
 *	  then applied to the sidecar together (DESIGN.md "Insert") before commit
 *	  or prepare, before a scan of that index in this backend, before a
 *	  parallel plan starts, and when the queue grows past a bound.  Applying
 *	  a queue notes its rows as unflushed (a partial index: flushes WAL
 *	  first; DESIGN.md "WAL before sidecar") and syncs the sidecar when this
 *	  process's dirty marker is a second old (DESIGN.md "Insert").
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/pg_index.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/builtins.h"

#include "hannoy_am.h"

typedef struct HannoyQueuedRow
{
	HannoyTid tid;
	uint8     kind;       /* HannoyUnindexedKind when vector is NULL */
	bool      check_xmin; /* the row is this transaction's own (not CIC's) */
	void     *vector;
} HannoyQueuedRow;

typedef struct HannoyInsertQueue
{
	Oid                indexoid;
	RelFileNodeBackend rnode;
	HannoyQueuedRow   *rows;
	int                nrows;
	int                capacity;
	Size               bytes; /* vector bytes queued */
} HannoyInsertQueue;

/* Queues of the current transaction, allocated in TopTransactionContext. */
static List *insert_queues = NIL;

/* Finds (or creates) the queue of an index. */
static HannoyInsertQueue *
queue_for(Relation index, bool create)
{
	ListCell          *lc;
	HannoyInsertQueue *q;
	MemoryContext      old;

	foreach (lc, insert_queues)
	{
		q = lfirst(lc);
		if (RelFileNodeEquals(q->rnode.node, index->rd_node) &&
		    q->rnode.backend == index->rd_backend)
			return q;
	}
	if (!create)
		return NULL;
	old = MemoryContextSwitchTo(TopTransactionContext);
	q = palloc0(sizeof(HannoyInsertQueue));
	q->indexoid = RelationGetRelid(index);
	q->rnode.node = index->rd_node;
	q->rnode.backend = index->rd_backend;
	q->capacity = 64;
	q->rows = palloc(sizeof(HannoyQueuedRow) * q->capacity);
	insert_queues = lappend(insert_queues, q);
	MemoryContextSwitchTo(old);
	return q;
}

/*
 * set_index_dims records the dimension count of an index built empty, at
 * the first insert, under the metapage's page lock; returns the count the
 * index has afterwards.
 */
static uint32
set_index_dims(Relation index, uint32 dims)
{
	HannoyMetaPageData meta;

	LockPage(index, HANNOY_METAPAGE_BLKNO, ExclusiveLock);
	if (!HannoyReadMetaPage(index, &meta))
		elog(ERROR, "hannoy index \"%s\" has no valid metapage", RelationGetRelationName(index));
	if (meta.dims == 0)
	{
		meta.dims = dims;
		HannoyWriteMetaPage(index, MAIN_FORKNUM, &meta, false);
	}
	UnlockPage(index, HANNOY_METAPAGE_BLKNO, ExclusiveLock);
	return meta.dims;
}

/*
 * open_for_insert returns the sidecar to apply rows to: it creates a fresh
 * one for an unlogged index reset after a crash, and returns NULL with a
 * WARNING for an unusable index (DESIGN.md "Never silently wrong": writes never block on it).
 * *rebuilding: the sidecar is being rebuilt from the table, its rows are
 * staged; NULL with *rebuilding: it is to be rebuilt, its rows are only logged.
 */
static HannoyEnv *
open_for_insert(Relation index, HannoyMetaPageData *meta, bool *rebuilding)
{
	const char *why = NULL;
	HannoyEnv  *env = HannoyOpenEnvForWrite(index, meta, rebuilding, &why);

	if (env != NULL || *rebuilding)
		return env;
	if (HannoyAwaitsSidecar(meta))
	{
		LockPage(index, HANNOY_METAPAGE_BLKNO, ExclusiveLock);
		env = HannoyOpenEnv(index, meta, true, &why);
		if (env == NULL && (meta->flags & HANNOY_META_INIT_FORK))
			env = HannoyRecreateSidecar(index, meta);
		UnlockPage(index, HANNOY_METAPAGE_BLKNO, ExclusiveLock);
		if (env != NULL)
			return env;
	}
	HannoyMarkBroken(index, why);
	HannoyReportUnusable(index, why, WARNING, "new rows are not added to it");
	/* a standby's replica would lack the rows too, and answer without them */
	HannoyLogDistrust(index);
	return NULL;
}

/*
 * row_still_ours tells whether a queued row's heap tuple is still this
 * transaction's live row.  A row whose subtransaction aborted, or a
 * speculative insertion that lost its conflict check, is dead at once:
 * VACUUM may have freed its TID and another session reused it, and the
 * sidecar must never map that TID to this vector.
 */
static bool
row_still_ours(Relation heap, HannoyTid tid)
{
	HeapTupleData tuple;
	Buffer        buf;
	bool          ours;

	HannoyTidToItemPointer(tid, &tuple.t_self);
	if (!heap_fetch(heap, SnapshotAny, &tuple, &buf, false))
		return false;
	ours = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tuple.t_data));
	ReleaseBuffer(buf);
	return ours;
}

/*
 * Inserts the rows of queue 'q' still worth inserting (see row_still_ours;
 * 'heap' NULL: all) into 'env'.
 */
static void
insert_rows(Relation index, HannoyEnv *env, Relation heap, HannoyInsertQueue *q,
            const HannoyMetaPageData *meta)
{
	HannoyError    err;
	HannoyStatus   st;
	HannoyWalRows *wal = HannoyWalRowsBegin(index, meta->generation);
	uint32         dims = meta->dims;
	uint32         bytes = (uint32) hannoy_vector_bytes((HannoyMetric) meta->metric, dims);

	/* one write transaction per row, its search before the writer lock */
	for (int i = 0; i < q->nrows; i++)
	{
		HannoyQueuedRow *row = &q->rows[i];

		if ((i & 63) == 63)
			CHECK_FOR_INTERRUPTS();
		if (row->check_xmin && heap != NULL && !row_still_ours(heap, row->tid))
			continue;
		st = hannoy_insert(env, row->tid, row->vector, row->kind, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
		/* logged once the sidecar has it: a row it lacks must never reach a standby */
		HannoyWalRowsAdd(wal, row->tid, row->kind, row->vector, dims, bytes);
	}
	HannoyWalRowsEnd(wal);
}

/*
 * stage_rows stages the rows of queue 'q' still worth inserting into 'env',
 * a replica being rebuilt from the table (DESIGN.md "Rebuilding on a
 * primary"), in one synced write transaction, and logs them after.  'env'
 * NULL: a sidecar to be rebuilt that no rebuild has replaced yet; the rows
 * are only logged (the rebuild reads them from the table).
 */
static void
stage_rows(Relation index, HannoyEnv *env, Relation heap, HannoyInsertQueue *q,
           const HannoyMetaPageData *meta)
{
	HannoyStagedRow *rows = palloc(sizeof(HannoyStagedRow) * q->nrows);
	HannoyWalRows   *wal;
	uint32           n = 0;
	uint32           bytes = (uint32) hannoy_vector_bytes((HannoyMetric) meta->metric, meta->dims);
	HannoyError      err;
	HannoyStatus     st;
	bool             applied;

	for (int i = 0; i < q->nrows; i++)
	{
		HannoyQueuedRow *row = &q->rows[i];

		if ((i & 63) == 63)
			CHECK_FOR_INTERRUPTS();
		if (row->check_xmin && heap != NULL && !row_still_ours(heap, row->tid))
			continue;
		rows[n].tid = row->tid;
		rows[n].kind = row->kind;
		rows[n].vector = row->vector;
		n++;
	}
	if (n == 0)
	{
		pfree(rows);
		return;
	}
	if (env != NULL &&
	    (st = hannoy_replica_stage(env, 0, meta->dims, rows, n, &applied, &err)) != HANNOY_OK)
		HannoyReportError(st, &err, index);
	wal = HannoyWalRowsBegin(index, meta->generation);
	for (uint32 i = 0; i < n; i++)
		HannoyWalRowsAdd(wal, rows[i].tid, rows[i].kind, rows[i].vector, meta->dims, bytes);
	HannoyWalRowsEnd(wal);
	pfree(rows);
}

/* Applies one queue to its index's sidecar. */
static void
apply_queue(Relation index, HannoyInsertQueue *q)
{
	HannoyMetaPageData meta;
	HannoyMeta         smeta;
	HannoyEnv *volatile env;
	HannoyError  err;
	HannoyStatus st;
	Relation volatile heap = NULL;
	bool          rebuilding = false;
	volatile bool unflushed = false;

	if (q->nrows == 0)
		return;
	env = open_for_insert(index, &meta, &rebuilding);
	if (env == NULL && rebuilding)
	{
		heap = table_open(index->rd_index->indrelid, NoLock);
		stage_rows(index, NULL, heap->rd_tableam == GetHeapamTableAmRoutine() ? heap : NULL, q,
		           &meta);
		table_close(heap, NoLock);
	}
	if (env == NULL)
	{
		for (int i = 0; i < q->nrows; i++)
			if (q->rows[i].vector)
				pfree(q->rows[i].vector);
		q->nrows = 0;
		q->bytes = 0;
		return;
	}
	if (meta.dims != 0 && !rebuilding)
	{
		st = hannoy_env_meta(env, &smeta, &err);
		if (st == HANNOY_OK && smeta.dims != meta.dims)
			st = hannoy_env_set_dims(env, meta.dims, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
	}

	{
		HannoyTestHooks hooks = {0};

		hooks.insert_search_delay_ms = (uint32) hannoy_test_search_delay;
		hannoy_test_set_hooks(&hooks);
	}

	/* opening the heap may run invalidation callbacks: keep the handle pinned */
	HannoyEnvPin(env);
	PG_TRY();
	{
		/* the check reads heap tuples: only for heap tables (other AMs: trusted) */
		heap = table_open(index->rd_index->indrelid, NoLock);
		if (heap->rd_tableam != GetHeapamTableAmRoutine())
		{
			table_close(heap, NoLock);
			heap = NULL;
		}
		/*
		 * DESIGN.md "WAL before sidecar": the heap rows' WAL is on disk before
		 * the sidecar maps their TIDs, or the sidecar notes them as unflushed,
		 * so that a process that opens it after a crash removes those whose
		 * heap rows the crash lost.  A partial index flushes: a slot a lost row
		 * left may be taken by a row its predicate excludes, which never
		 * reaches the sidecar, before anyone looks.
		 */
		if (RelationNeedsWAL(index))
		{
			uint64 lifetime = HannoyServerLifetime();

			if (!rebuilding && heap != NULL && lifetime != 0 &&
			    heap_attisnull(index->rd_indextuple, Anum_pg_index_indpred, NULL))
			{
				unflushed = true;
				st = hannoy_env_set_unflushed(env, lifetime, HannoyWalInsertEnd(),
				                              GetFlushRecPtr(NULL), &err);
				if (st != HANNOY_OK)
					HannoyReportError(st, &err, index);
			}
			else
				XLogFlush(HannoyWalInsertEnd());
		}
		if (rebuilding)
			stage_rows(index, env, heap, q, &meta);
		else
			insert_rows(index, env, heap, q, &meta);
		if (unflushed)
		{
			unflushed = false;
			(void) hannoy_env_set_unflushed(env, 0, 0, 0, &err);
		}
		if (heap != NULL)
			table_close(heap, NoLock);
		HannoySyncCommitted(index, env, meta.generation);
	}
	PG_FINALLY();
	{
		if (unflushed)
			(void) hannoy_env_set_unflushed(env, 0, 0, 0, &err);
		HannoyEnvUnpin(env);
	}
	PG_END_TRY();
	for (int i = 0; i < q->nrows; i++)
		if (q->rows[i].vector)
			pfree(q->rows[i].vector);
	q->nrows = 0;
	q->bytes = 0;
}

/*
 * hannoyinsert checks the new row now, so bad input fails the statement
 * that brought it, and queues it.
 */
bool
hannoyinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid, Relation heap,
             IndexUniqueCheck checkUnique, bool indexUnchanged, IndexInfo *indexInfo)
{
	HannoyMetaPageData meta;
	HannoyInsertQueue *q;
	HannoyQueuedRow    row;
	MemoryContext      old;
	Size               queued_bytes = 0;

	if (!HannoyReadMetaPage(index, &meta))
		ereport(
		    ERROR,
		    (errcode(ERRCODE_INDEX_CORRUPTED),
		     errmsg("hannoy index \"%s\" has no valid metapage", RelationGetRelationName(index)),
		     errhint("REINDEX INDEX %s;", quote_identifier(RelationGetRelationName(index)))));

	row.tid = HannoyTidFromItemPointer(heap_tid);
	row.vector = NULL;
	row.kind = HANNOY_ROW_UNINDEXED_NULL;
	/* CREATE INDEX CONCURRENTLY's validation inserts other transactions' rows */
	row.check_xmin = !indexInfo->ii_Concurrent;
	if (!isnull[0])
	{
		uint32 dims;
		bool   is_zero;
		void  *vec;

		vec = HannoyDatumToVector(index, values[0], (HannoyMetric) meta.metric, meta.dims, false,
		                          &dims, &is_zero);
		/* the first vector fixes the length, a zero vector under cosine too */
		if (meta.dims == 0)
		{
			uint32 have = set_index_dims(index, dims);

			/* another backend set it first: check against its value */
			if (have != dims)
				HannoyDatumToVector(index, values[0], (HannoyMetric) meta.metric, have, false,
				                    &dims, &is_zero);
		}
		if (is_zero)
			row.kind = HANNOY_ROW_UNINDEXED_NAN;
		else
		{
			size_t bytes = hannoy_vector_bytes((HannoyMetric) meta.metric, dims);

			row.vector = MemoryContextAlloc(TopTransactionContext, bytes);
			memcpy(row.vector, vec, bytes);
			queued_bytes = bytes;
		}
	}

	q = queue_for(index, true);
	if (q->nrows == q->capacity)
	{
		old = MemoryContextSwitchTo(TopTransactionContext);
		q->capacity *= 2;
		q->rows = repalloc(q->rows, sizeof(HannoyQueuedRow) * q->capacity);
		MemoryContextSwitchTo(old);
	}
	q->rows[q->nrows++] = row;
	q->bytes += queued_bytes;
	if (q->nrows >= HANNOY_QUEUE_MAX_ROWS || q->bytes >= HANNOY_QUEUE_MAX_BYTES)
		apply_queue(index, q);
	return false;
}

/*
 * HannoyFlushQueue applies this backend's queued rows of one index (before
 * it is scanned).
 */
void
HannoyFlushQueue(Relation index)
{
	HannoyInsertQueue *q = queue_for(index, false);

	if (q != NULL)
		apply_queue(index, q);
}

/*
 * HannoyFlushAllQueues applies every queue of the transaction (at pre-commit,
 * pre-prepare and before parallel plans).  Queues of indexes dropped or
 * rebuilt since are skipped.
 */
void
HannoyFlushAllQueues(void)
{
	ListCell *lc;

	foreach (lc, insert_queues)
	{
		HannoyInsertQueue *q = lfirst(lc);
		Relation           index;

		if (q->nrows == 0)
			continue;
		index = try_relation_open(q->indexoid, NoLock);
		if (index == NULL)
		{
			q->nrows = 0;
			q->bytes = 0;
			continue;
		}
		if (RelFileNodeEquals(index->rd_node, q->rnode.node) &&
		    index->rd_backend == q->rnode.backend)
			apply_queue(index, q);
		else
			q->nrows = 0;
		relation_close(index, NoLock);
	}
}

/*
 * HannoyDropQueue forgets queued rows of a relation file being rebuilt.
 */
void
HannoyDropQueue(RelFileNodeBackend rnode)
{
	ListCell *lc;

	foreach (lc, insert_queues)
	{
		HannoyInsertQueue *q = lfirst(lc);

		if (RelFileNodeBackendEquals(q->rnode, rnode))
		{
			q->nrows = 0;
			q->bytes = 0;
		}
	}
}

/*
 * HannoyQueueAtXactEnd forgets the queues; their memory goes with
 * TopTransactionContext.
 */
void
HannoyQueueAtXactEnd(void)
{
	insert_queues = NIL;
}
