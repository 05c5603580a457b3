/*
 * hannoy.c
 *	  The hannoy access method: module start-up, GUCs, reloptions, the
 *	  handler, cost estimation and validation.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>
#include <unistd.h>

#include "access/amapi.h"
#include "access/reloptions.h"
#include "access/xact.h"
#include "catalog/pg_opclass.h"
#include "commands/progress.h"
#include "commands/vacuum.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/selfuncs.h"
#include "utils/syscache.h"

#include "hannoy_am.h"

PG_MODULE_MAGIC;

static ExecutorStart_hook_type prev_executor_start = NULL;

/*
 * hannoy_executor_start applies queued inserts before a parallel plan
 * starts: workers read the sidecar and cannot see this backend's queue.
 */
static void
hannoy_executor_start(QueryDesc *queryDesc, int eflags)
{
	if (queryDesc->plannedstmt && queryDesc->plannedstmt->parallelModeNeeded)
		HannoyFlushAllQueues();
	if (prev_executor_start)
		prev_executor_start(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

/*
 * _PG_init defines the GUCs and reloptions and installs the transaction
 * callbacks and hooks.
 */
void
_PG_init(void)
{
	HannoyDefineGucs();
	HannoyDefineOptions();

	HannoyLifecycleInit();
	HannoySyncInit();
	/*
	 * In the postmaster at start-up: no temporary relation survives a
	 * restart, and a background worker sweeps what else nothing owns once
	 * recovery has finished (not while pg_upgrade runs the server).
	 */
	if (hannoy_preloaded && !IsUnderPostmaster)
	{
		HannoyRemoveTempSidecarsAtStart();
		HannoyDistrustCopiedReplicas();
	}
	/* every process that may replay WAL must know hannoy's records */
	if (hannoy_preloaded)
		HannoyRegisterRmgr();
	if (hannoy_preloaded && !IsBinaryUpgrade)
	{
		HannoyRegisterSweeper();
		HannoyRegisterLinker();
	}

	RegisterXactCallback(HannoyXactCallback, NULL);
	CacheRegisterRelcacheCallback(HannoyRelcacheCallback, (Datum) 0);
	RegisterSubXactCallback(HannoySubXactCallback, NULL);
	prev_executor_start = ExecutorStart_hook;
	ExecutorStart_hook = hannoy_executor_start;
}

/*
 * hannoycostestimate makes the planner choose the index only for an ORDER
 * BY on its operator, and never when its sidecar is unusable (DESIGN.md "Never silently wrong").
 * The startup cost is the search (about ef distance computations per layer); each further row costs
 * little.
 */
static void
hannoycostestimate(PlannerInfo *root, IndexPath *path, double loop_count, Cost *indexStartupCost,
                   Cost *indexTotalCost, Selectivity *indexSelectivity, double *indexCorrelation,
                   double *indexPages)
{
	GenericCosts costs;
	Relation     index;
	bool         usable;
	double       tuples;
	double       search;
	double       first;
	double       beyond;

	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	index = index_open(path->indexinfo->indexoid, NoLock);
	usable = HannoyIndexUsable(index, NULL);
	index_close(index, NoLock);
	if (!usable)
	{
		/*
		 * Dearer than any real plan, but cheaper than a disabled one: the
		 * planner never chooses the index unless told to avoid every
		 * alternative (enable_seqscan = off), and then the scan reports
		 * why it cannot run.
		 */
		*indexStartupCost = disable_cost / 10;
		*indexTotalCost = disable_cost / 10;
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	MemSet(&costs, 0, sizeof(costs));
	genericcostestimate(root, path, loop_count, &costs);

	tuples = Max(path->indexinfo->tuples, 1);
	/* a search visits about ef * log(n) nodes, each a distance computation */
	search = (double) hannoy_ef_search * Max(log(tuples), 1.0) * 4 * cpu_operator_cost;
	*indexStartupCost = search + costs.indexStartupCost;
	/*
	 * The first ef rows come in exact order.  Rows beyond them come from
	 * resumed rounds in relaxed order, so they are charged more than sorting
	 * them would cost: a plan that needs every row in order (no LIMIT, a
	 * window function) then prefers a sequential scan and an exact sort.
	 */
	first = Min(tuples, (double) hannoy_ef_search);
	beyond = 2 * (cpu_operator_cost * (2 * log2(tuples) + 1)) + cpu_tuple_cost;
	*indexTotalCost = *indexStartupCost + first * (cpu_index_tuple_cost + cpu_operator_cost) +
	                  (tuples - first) * beyond + costs.indexTotalCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}

/*
 * hannoyvalidate checks an operator class: one ordering operator and one
 * distance support function, both on the opclass's type.
 */
static bool
hannoyvalidate(Oid opclassoid)
{
	HeapTuple       tup;
	Form_pg_opclass form;
	bool            ok = true;

	tup = SearchSysCache1(CLAOID, ObjectIdGetDatum(opclassoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator class %u", opclassoid);
	form = (Form_pg_opclass) GETSTRUCT(tup);
	if (!OidIsValid(get_opfamily_proc(form->opcfamily, form->opcintype, form->opcintype,
	                                  HANNOY_DISTANCE_PROC)))
	{
		ereport(INFO, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
		               errmsg("hannoy operator class \"%s\" has no distance support function",
		                      NameStr(form->opcname))));
		ok = false;
	}
	ReleaseSysCache(tup);
	return ok;
}

/*
 * hannoybuildphasename names the build phases shown in
 * pg_stat_progress_create_index.
 */
static char *
hannoybuildphasename(int64 phasenum)
{
	switch (phasenum)
	{
		case PROGRESS_CREATEIDX_SUBPHASE_INITIALIZE:
			return "initializing";
		case PROGRESS_HANNOY_PHASE_LOAD:
			return "loading vectors";
		case PROGRESS_HANNOY_PHASE_GRAPH:
			return "linking graph";
		case PROGRESS_HANNOY_PHASE_WRITE:
			return "writing links";
		default:
			return NULL;
	}
}

PG_FUNCTION_INFO_V1(hannoyhandler);

/*
 * hannoyhandler returns the access method's routine table.
 */
Datum
hannoyhandler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = makeNode(IndexAmRoutine);

	amroutine->amstrategies = 0;
	amroutine->amsupport = 1;
	amroutine->amoptsprocnum = 0;
	amroutine->amcanorder = false;
	amroutine->amcanorderbyop = true;
	amroutine->amcanbackward = false;
	amroutine->amcanunique = false;
	amroutine->amcanmulticol = false;
	amroutine->amoptionalkey = true;
	amroutine->amsearcharray = false;
	amroutine->amsearchnulls = false;
	amroutine->amstorage = false;
	amroutine->amclusterable = false;
	amroutine->ampredlocks = false;
	amroutine->amcanparallel = false;
	amroutine->amcaninclude = false;
	amroutine->amusemaintenanceworkmem = false;
	amroutine->amparallelvacuumoptions = VACUUM_OPTION_PARALLEL_BULKDEL;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = hannoybuild;
	amroutine->ambuildempty = hannoybuildempty;
	amroutine->aminsert = hannoyinsert;
	amroutine->ambulkdelete = hannoybulkdelete;
	amroutine->amvacuumcleanup = hannoyvacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = hannoycostestimate;
	amroutine->amoptions = HannoyParseOptions;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = hannoybuildphasename;
	amroutine->amvalidate = hannoyvalidate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = hannoybeginscan;
	amroutine->amrescan = hannoyrescan;
	amroutine->amgettuple = hannoygettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = hannoyendscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}

PG_FUNCTION_INFO_V1(hannoy_check_preloaded);

/*
 * hannoy_check_preloaded refuses CREATE EXTENSION unless the library is in
 * shared_preload_libraries (its transaction hooks must be in every backend).
 */
Datum
hannoy_check_preloaded(PG_FUNCTION_ARGS)
{
	if (!hannoy_preloaded)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("hannoy must be loaded via shared_preload_libraries"),
		                errhint("Add hannoy to shared_preload_libraries in postgresql.conf "
		                        "(ALTER SYSTEM SET shared_preload_libraries = 'hannoy') "
		                        "and restart the server.")));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(hannoy_simd);

/*
 * hannoy_simd names the distance kernels this server uses.
 */
Datum
hannoy_simd(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(hannoy_simd_name()));
}
