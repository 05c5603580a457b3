/*
 * hannoyscan.c
 *	  Ordered index scans (DESIGN.md "Scan"): each scan has its own LMDB
 *	  read transaction, taken in amrescan after the scan's snapshot, and
 *	  keeps its environment only until the cache closes it (a scan is
 *	  detached then, and reattaches for its next row); rows
 *	  come with exact distances (DESIGN.md "Exact distances") and the scan never stops early
 *(DESIGN.md "Complete scans"). A memory-context callback releases the core scan when a query errors
 *	  and amendscan is never called (DESIGN.md "Nothing leaks on error").
 */
#include "postgres.h"

#include "access/relscan.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/float.h"

#include "hannoy_am.h"

typedef struct HannoyScanOpaqueData
{
	HannoyEnv            *env; /* the environment 'core' is attached to; NULL while detached */
	HannoyScan           *core;
	HannoyMetaPageData    meta;
	bool                  empty; /* index without a sidecar yet: no rows */
	MemoryContextCallback cleanup;
	/*
	 * Re-ranking from the heap (DESIGN.md "Heap re-ranking"): the query
	 * (a copy), the index's key definition and a context reset per window.
	 */
	MemoryContext scan_cxt;
	MemoryContext rerank_cxt;
	void         *query;
	uint32        dims;
	IndexInfo    *info;
	/*
	 * The heap's size at the rescan: no row the scan's snapshot sees lies
	 * beyond it, and a TID there (a row a standby's rebuild from the table
	 * took while its transaction was in progress, which then aborted and
	 * was truncated away) is never fetched.
	 */
	BlockNumber heap_blocks;
	/* the data file the scan began on (in recovery, see attach_scan) */
	uint64 file_dev;
	uint64 file_ino;
} HannoyScanOpaqueData;

typedef HannoyScanOpaqueData *HannoyScanOpaque;

/*
 * Detaches the core scan from an environment the cache is closing; the
 * next call reopens it (HannoyEnvAttach).
 */
static void
detach_scan(void *arg)
{
	HannoyScanOpaque so = (HannoyScanOpaque) arg;

	hannoy_scan_detach(so->core);
	so->env = NULL;
}

/* Frees the core scan and leaves its environment; safe to call twice. */
static void
release_scan(void *arg)
{
	HannoyScanOpaque so = (HannoyScanOpaque) arg;

	if (so->core != NULL)
	{
		if (so->env != NULL)
			HannoyEnvDetach(so->env, so);
		hannoy_scan_free(so->core);
		so->core = NULL;
		so->env = NULL;
	}
}

/*
 * attach_scan makes sure the scan's core is attached to an open
 * environment of its sidecar, creating the core scan on first use; false
 * for an index with no sidecar yet (no rows).  A scan whose environment
 * the cache closed reopens it here: its sidecar must be the one it began
 * with (the index's lock keeps REINDEX away, so this is a safeguard).
 */
static bool
attach_scan(IndexScanDesc scan)
{
	HannoyScanOpaque   so = (HannoyScanOpaque) scan->opaque;
	Relation           index = scan->indexRelation;
	HannoyMetaPageData meta;
	const char        *why = NULL;
	HannoyEnv         *env;
	HannoyError        err;
	HannoyStatus       st;
	uint64             dev;
	uint64             ino;

	if (so->env != NULL)
	{
		HannoyEnvTouch(so->env);
		return true;
	}
	env = HannoyOpenEnv(index, &meta, true, &why);
	if (env == NULL)
	{
		if (so->core == NULL && HannoyAwaitsSidecar(&meta))
		{
			so->meta = meta;
			return false;
		}
		HannoyReportUnusable(index, why, ERROR, NULL);
	}
	HannoyEnvFile(env, &dev, &ino);
	if (so->core == NULL)
	{
		so->meta = meta;
		so->file_dev = dev;
		so->file_ino = ino;
		st = hannoy_scan_create(env, &so->core, &err);
	}
	/* a standby's rebuild from the table replaces a replica, keeping its generation */
	else if (meta.generation != so->meta.generation || dev != so->file_dev || ino != so->file_ino)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("hannoy index \"%s\" was rebuilt during the scan",
		                       RelationGetRelationName(index))));
	else
		st = hannoy_scan_attach(so->core, env, &err);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
	HannoyEnvAttach(env, detach_scan, so);
	so->env = env;
	return true;
}

/*
 * hannoybeginscan prepares a scan; the sidecar is opened at the first
 * rescan.
 */
IndexScanDesc
hannoybeginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc    scan = RelationGetIndexScan(index, nkeys, norderbys);
	HannoyScanOpaque so = palloc0(sizeof(HannoyScanOpaqueData));

	so->cleanup.func = release_scan;
	so->cleanup.arg = so;
	so->scan_cxt = CurrentMemoryContext;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &so->cleanup);
	scan->opaque = so;
	/* an ordering AM allocates the slots for its ORDER BY values itself */
	scan->xs_orderbyvals = palloc0(sizeof(Datum) * Max(norderbys, 1));
	scan->xs_orderbynulls = palloc(sizeof(bool) * Max(norderbys, 1));
	memset(scan->xs_orderbynulls, true, sizeof(bool) * Max(norderbys, 1));
	return scan;
}

/*
 * hannoyrescan starts the search for the ORDER BY argument in a new read
 * transaction.  A NULL query (or a zero vector under cosine) makes every
 * distance NULL (NaN): all rows are returned in no particular order.
 */
void
hannoyrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	HannoyScanOpaque so = (HannoyScanOpaque) scan->opaque;
	Relation         index = scan->indexRelation;
	HannoyError      err;
	HannoyStatus     st;
	const void      *query = NULL;
	uint32           dims = 0;
	uint8            null_kind = HANNOY_ROW_UNINDEXED_NULL;

	if (norderbys < 1)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("hannoy index scans need an ORDER BY on a distance operator")));

	/* this backend's own queued rows must be visible to its scans */
	HannoyFlushQueue(index);

	if (!so->empty && !attach_scan(scan))
		so->empty = true;
	if (so->empty)
		return;

	/* dimensions may have been set by a first insert since the scan began */
	if (so->meta.dims == 0)
		HannoyReadMetaPage(index, &so->meta);
	so->heap_blocks = scan->heapRelation != NULL ? RelationGetNumberOfBlocks(scan->heapRelation)
	                                             : InvalidBlockNumber;

	if (!(orderbys[0].sk_flags & SK_ISNULL))
	{
		bool        is_zero;
		const void *vec;

		vec = HannoyDatumToVector(index, orderbys[0].sk_argument, (HannoyMetric) so->meta.metric,
		                          so->meta.dims, true, &dims, &is_zero);
		/* with no vector indexed yet (dims 0) the graph is empty: any query will do */
		if (is_zero)
			null_kind = HANNOY_ROW_UNINDEXED_NAN;
		else
			query = vec;
	}
	/* kept for the windows the core hands back for exact distances */
	if (so->query != NULL)
		pfree(so->query);
	so->query = NULL;
	so->dims = dims;
	if (query != NULL)
	{
		size_t bytes = hannoy_vector_bytes(so->meta.metric, dims);

		so->query = MemoryContextAlloc(so->scan_cxt, Max(bytes, 1));
		memcpy(so->query, query, bytes);
	}
	hannoy_scan_set_rerank_window(so->core, (uint32) hannoy_rerank_window);
	st = hannoy_scan_start(so->core, query, dims, (uint32) hannoy_ef_search, null_kind, &err);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
}

/* True when 'tid' lies within the heap's size at the rescan (HannoyScanOpaqueData). */
static inline bool
tid_in_heap(HannoyScanOpaque so, HannoyTid tid)
{
	return so->heap_blocks == InvalidBlockNumber || (BlockNumber) (tid >> 16) < so->heap_blocks;
}

/*
 * window_distance measures one row of a window from its heap tuple: the
 * tuple the scan's snapshot sees at 'tid' (following a HOT chain, whose
 * members share the indexed value), its key formed as an insert forms it
 * (expression indexes too), the distance by the operator's own kernel.  A
 * row the snapshot cannot see is never read further (its TOAST may be
 * gone) and gets +Infinity: the executor would drop it anyway.
 */
static double
window_distance(IndexScanDesc scan, IndexFetchTableData *fetch, TupleTableSlot *slot,
                EState *estate, HannoyTid tid)
{
	HannoyScanOpaque so = (HannoyScanOpaque) scan->opaque;
	ItemPointerData  ctid;
	bool             call_again = false;
	bool             all_dead = false;
	Datum            values[INDEX_MAX_KEYS];
	bool             isnull[INDEX_MAX_KEYS];
	uint32           dims;
	bool             is_zero;
	const void      *vec;
	double           d;

	HannoyTidToItemPointer(tid, &ctid);
	if (!tid_in_heap(so, tid) ||
	    !table_index_fetch_tuple(fetch, &ctid, scan->xs_snapshot, slot, &call_again, &all_dead))
		return get_float8_infinity();
	if (estate != NULL)
		GetPerTupleExprContext(estate)->ecxt_scantuple = slot;
	FormIndexDatum(so->info, slot, estate, values, isnull);
	if (isnull[0])
		d = get_float8_infinity();
	else
	{
		vec = HannoyDatumToVector(scan->indexRelation, values[0], (HannoyMetric) so->meta.metric, 0,
		                          false, &dims, &is_zero);
		/* a visible row in the graph has the index's length and no zero vector under cosine */
		d = dims == so->dims && !is_zero
		        ? hannoy_distance((HannoyMetric) so->meta.metric, vec, so->query, dims)
		        : get_float8_infinity();
	}
	ExecClearTuple(slot);
	if (estate != NULL)
		ResetPerTupleExprContext(estate);
	return d;
}

/*
 * rerank_window answers the core's request for the exact distances of a
 * window (DESIGN.md "Heap re-ranking"): no core frame is on the stack
 * while the heap is read.
 */
static void
rerank_window(IndexScanDesc scan, const HannoyTid *tids, uint32 count)
{
	HannoyScanOpaque     so = (HannoyScanOpaque) scan->opaque;
	MemoryContext        old;
	IndexFetchTableData *fetch;
	TupleTableSlot      *slot;
	EState              *estate = NULL;
	double              *distances;
	HannoyTid           *copy;
	HannoyError          err;
	HannoyStatus         st;

	if (scan->heapRelation == NULL || so->query == NULL)
		elog(ERROR, "hannoy index \"%s\" re-ranks from the heap, but the scan has no heap",
		     RelationGetRelationName(scan->indexRelation));
	if (so->rerank_cxt == NULL)
		so->rerank_cxt =
		    AllocSetContextCreate(so->scan_cxt, "hannoy re-rank", ALLOCSET_DEFAULT_SIZES);
	if (so->info == NULL)
	{
		old = MemoryContextSwitchTo(so->scan_cxt);
		so->info = BuildIndexInfo(scan->indexRelation);
		MemoryContextSwitchTo(old);
	}
	old = MemoryContextSwitchTo(so->rerank_cxt);
	/* the request belongs to the core: copy it before anything can call the core again */
	copy = palloc(sizeof(HannoyTid) * count);
	memcpy(copy, tids, sizeof(HannoyTid) * count);
	distances = palloc(sizeof(double) * count);
	if (so->info->ii_Expressions != NIL)
		estate = CreateExecutorState();
	slot = table_slot_create(scan->heapRelation, NULL);
	fetch = table_index_fetch_begin(scan->heapRelation);
	for (uint32 i = 0; i < count; i++)
	{
		CHECK_FOR_INTERRUPTS();
		distances[i] = window_distance(scan, fetch, slot, estate, copy[i]);
	}
	table_index_fetch_end(fetch);
	ExecDropSingleTupleTableSlot(slot);
	if (estate != NULL)
	{
		FreeExecutorState(estate);
		/* FormIndexDatum prepared the expressions in the executor state just freed */
		so->info->ii_ExpressionsState = NIL;
	}
	MemoryContextSwitchTo(old);
	st = hannoy_scan_rerank_reply(so->core, distances, count, &err);
	MemoryContextReset(so->rerank_cxt);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, scan->indexRelation);
}

/*
 * hannoygettuple returns the next row with its exact distance.
 */
bool
hannoygettuple(IndexScanDesc scan, ScanDirection dir)
{
	HannoyScanOpaque so = (HannoyScanOpaque) scan->opaque;
	HannoyTid        tid;
	double           distance;
	bool             isnull;
	bool             found;
	HannoyError      err;
	HannoyStatus     st;

	if (so->empty || so->core == NULL)
		return false;
	/* the cache may have closed the environment since the last row */
	for (;;)
	{
		const HannoyTid *tids;
		uint32           count;

		attach_scan(scan);
		st = hannoy_scan_next(so->core, &tid, &distance, &isnull, &found, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, scan->indexRelation);
		if (found && tid_in_heap(so, tid))
			break;
		if (found)
			continue;
		/* an index without vectors: the window waits for exact distances from the heap */
		count = hannoy_scan_rerank_request(so->core, &tids);
		if (count == 0)
			return false;
		rerank_window(scan, tids, count);
	}
	HannoyTidToItemPointer(tid, &scan->xs_heaptid);
	scan->xs_recheck = false;
	scan->xs_recheckorderby = false;
	scan->xs_orderbyvals[0] = Float8GetDatum(distance);
	scan->xs_orderbynulls[0] = isnull;
	return true;
}

/*
 * hannoyendscan releases the scan's read transaction.
 */
void
hannoyendscan(IndexScanDesc scan)
{
	HannoyScanOpaque so = (HannoyScanOpaque) scan->opaque;

	release_scan(so);
	so->empty = false;
}
