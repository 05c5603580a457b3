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
#include "miscadmin.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/builtins.h"

#include "hannoy_am.h"

typedef struct HannoyScanOpaqueData
{
	HannoyEnv            *env; /* the environment 'core' is attached to; NULL while detached */
	HannoyScan           *core;
	HannoyMetaPageData    meta;
	bool                  empty; /* index without a sidecar yet: no rows */
	MemoryContextCallback cleanup;
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
	if (so->core == NULL)
	{
		so->meta = meta;
		st = hannoy_scan_create(env, &so->core, &err);
	}
	else if (meta.generation != so->meta.generation)
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
	hannoy_scan_set_rerank_window(so->core, (uint32) hannoy_rerank_window);
	st = hannoy_scan_start(so->core, query, dims, (uint32) hannoy_ef_search, null_kind, &err);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
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
	attach_scan(scan);
	st = hannoy_scan_next(so->core, &tid, &distance, &isnull, &found, &err);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, scan->indexRelation);
	if (!found)
		return false;
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
