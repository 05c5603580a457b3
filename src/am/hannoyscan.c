/*
 * hannoyscan.c
 *	  Ordered index scans (DESIGN.md "Scan"): each scan has its own LMDB
 *	  read transaction, taken in amrescan after the scan's snapshot; rows
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
	HannoyEnv            *env; /* pinned while core != NULL */
	HannoyScan           *core;
	HannoyMetaPageData    meta;
	bool                  empty; /* index without a sidecar yet: no rows */
	MemoryContextCallback cleanup;
} HannoyScanOpaqueData;

typedef HannoyScanOpaqueData *HannoyScanOpaque;

/* Frees the core scan and unpins its environment; safe to call twice. */
static void
release_scan(void *arg)
{
	HannoyScanOpaque so = (HannoyScanOpaque) arg;

	if (so->core != NULL)
	{
		hannoy_scan_free(so->core);
		so->core = NULL;
		HannoyEnvUnpin(so->env);
		so->env = NULL;
	}
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

	if (so->core == NULL && !so->empty)
	{
		const char *why = NULL;
		HannoyEnv  *env = HannoyOpenEnv(index, &so->meta, true, &why);

		if (env == NULL)
		{
			if (HannoyAwaitsSidecar(&so->meta))
				so->empty = true;
			else
				HannoyReportUnusable(index, why, ERROR, NULL);
		}
		else
		{
			HannoyEnvPin(env);
			so->env = env;
			st = hannoy_scan_create(env, &so->core, &err);
			if (st != HANNOY_OK)
			{
				HannoyEnvUnpin(env);
				so->env = NULL;
				HannoyReportError(st, &err, index);
			}
		}
	}
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
