/*
 * hannoyinspect.c
 *	  SQL functions that look inside a hannoy index: hannoy_index_size (the
 *	  sidecar's files, which pg_relation_size cannot see), hannoy_index_stats
 *	  (counters and the shape of the graph), hannoy_index_space (the parts
 *	  of the sidecar's bytes) and hannoy_verify (one row per problem, none
 *	  when the index is healthy).
 *
 *	  Only the index's owner or a superuser may call them.  They hold
 *	  AccessShareLock on the index and its table.  The walk over the graph
 *	  runs in the core in slices of at most HANNOY_SLICE_MS, with interrupt
 *	  checks between them and no core frame on the stack then (DESIGN.md
 *	  "The C / C++ boundary"); it keeps one LMDB read transaction across
 *	  slices (never a write transaction), released on ERROR by PG_FINALLY
 *	  (DESIGN.md "Nothing leaks on error").
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/relation.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type_d.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

#include "hannoy_am.h"

/* Problems the core hands over per slice. */
#define HANNOY_INSPECT_BATCH 64

/* Columns of hannoy_index_stats and hannoy_verify. */
#define HANNOY_STATS_COLS  18
#define HANNOY_VERIFY_COLS 3

/* Where hannoy_verify's rows go. */
typedef struct HannoyProblemSink
{
	Tuplestorestate *tupstore;
	TupleDesc        tupdesc;
} HannoyProblemSink;

/*
 * open_index opens a hannoy index for inspection after checking that the
 * caller owns it (or is a superuser), with AccessShareLock on its table
 * first and then on the index, the order the rest of PostgreSQL uses.
 * Temporary indexes of other sessions are refused unless 'other_temp_ok'.
 */
static Relation
open_index(Oid indexoid, bool other_temp_ok, Relation *heap)
{
	Oid      heapid = IndexGetRelation(indexoid, true);
	Relation index;

	*heap = OidIsValid(heapid) ? try_table_open(heapid, AccessShareLock) : NULL;
	index = try_relation_open(indexoid, AccessShareLock);
	if (index == NULL)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
		                errmsg("relation with OID %u does not exist", indexoid)));
	if (!pg_class_ownercheck(indexoid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(index->rd_rel->relkind),
		               RelationGetRelationName(index));
	if ((index->rd_rel->relkind != RELKIND_INDEX &&
	     index->rd_rel->relkind != RELKIND_PARTITIONED_INDEX) ||
	    index->rd_indam == NULL || index->rd_indam->ambuild != hannoybuild)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not a hannoy index", RelationGetRelationName(index))));
	if (index->rd_rel->relkind == RELKIND_PARTITIONED_INDEX)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is a partitioned index", RelationGetRelationName(index)),
		                errdetail("A partitioned index has no sidecar of its own; inspect the "
		                          "index of each partition.")));
	/* the index may have been dropped and its OID reused meanwhile */
	if (*heap == NULL || heapid != IndexGetRelation(indexoid, false))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
		                errmsg("could not open the table of index \"%s\"",
		                       RelationGetRelationName(index))));
	if (!other_temp_ok && RELATION_IS_OTHER_TEMP(index))
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
		                errmsg("cannot inspect temporary indexes of other sessions")));
	return index;
}

/* close_index releases what open_index took. */
static void
close_index(Relation index, Relation heap)
{
	relation_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
}

/*
 * sidecar_bytes adds up the sizes of the sidecar's data and lock files,
 * found with stat: opening them would drop LMDB's locks.  A missing sidecar
 * takes 0 bytes.
 */
static int64
sidecar_bytes(Relation index)
{
	static const char *const files[] = {"data.mdb", "lock.mdb"};
	RelFileNodeBackend       rnode;
	char                    *dir;
	int64                    total = 0;

	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	dir = HannoySidecarPath(rnode);
	for (int i = 0; i < lengthof(files); i++)
	{
		char       *path = psprintf("%s/%s", dir, files[i]);
		struct stat st;

		if (stat(path, &st) == 0)
			total += (int64) st.st_size;
		else if (errno != ENOENT)
			ereport(ERROR,
			        (errcode_for_file_access(), errmsg("could not stat file \"%s\": %m", path)));
		pfree(path);
	}
	pfree(dir);
	return total;
}

/*
 * put_named_problem adds one row to hannoy_verify's result; 'item' -1 shows
 * as NULL.  Its signature is HannoyProblemReport's, for the heap check.
 */
static void
put_named_problem(void *arg, const char *kind, int64 item, const char *detail)
{
	HannoyProblemSink *sink = arg;
	Datum              values[HANNOY_VERIFY_COLS];
	bool               nulls[HANNOY_VERIFY_COLS] = {false};

	values[0] = CStringGetTextDatum(kind);
	values[1] = Int64GetDatum(item);
	nulls[1] = item < 0;
	values[2] = CStringGetTextDatum(detail);
	tuplestore_putvalues(sink->tupstore, sink->tupdesc, values, nulls);
}

/* Adds one row about a problem the core or the shim names by its kind. */
static void
put_problem(HannoyProblemSink *sink, HannoyProblemKind kind, int64 item, const char *detail)
{
	put_named_problem(sink, hannoy_problem_name(kind), item, detail);
}

/*
 * run_walk walks the sidecar in slices, checking for interrupts between
 * them; with a sink it verifies and stores each problem, and it fills
 * 'summary' when given.  The walk's read transaction and the environment's
 * pin are released however the loop ends.
 */
static void
run_walk(Relation index, HannoyEnv *env, HannoyProblemSink *sink, HannoyInspectSummary *summary)
{
	HannoyInspect *volatile walk = NULL;
	HannoyProblem *problems = palloc(sizeof(HannoyProblem) * HANNOY_INSPECT_BATCH);
	HannoyError    err;
	HannoyStatus   st;

	HannoyEnvPin(env);
	PG_TRY();
	{
		HannoyInspect *w = NULL;
		bool           done = false;

		st = hannoy_inspect_begin(env, sink != NULL, &w, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
		walk = w;
		while (!done)
		{
			uint32 n = 0;

			CHECK_FOR_INTERRUPTS();
			st = hannoy_inspect_step(w, HANNOY_SLICE_MS, problems, HANNOY_INSPECT_BATCH, &n, &done,
			                         &err);
			if (st != HANNOY_OK)
				HannoyReportError(st, &err, index);
			for (uint32 i = 0; i < n && sink != NULL; i++)
				put_problem(sink, problems[i].kind, problems[i].item, problems[i].detail);
		}
		if (summary != NULL)
		{
			st = hannoy_inspect_summary(w, summary, &err);
			if (st != HANNOY_OK)
				HannoyReportError(st, &err, index);
		}
	}
	PG_FINALLY();
	{
		if (walk != NULL)
			hannoy_inspect_free(walk);
		HannoyEnvUnpin(env);
	}
	PG_END_TRY();
	pfree(problems);
}

/*
 * check_meta compares the graph parameters of the metapage with those the
 * sidecar recorded (identity, metric, system and timeline were checked by
 * HannoyOpenEnv).  A dimension count the sidecar has not learnt yet (the
 * first insert into an empty index is still queued, or aborted) is fine.
 */
static void
check_meta(Relation index, HannoyEnv *env, const HannoyMetaPageData *meta, HannoyProblemSink *sink)
{
	HannoyMeta   smeta;
	HannoyError  err;
	HannoyStatus st = hannoy_env_meta(env, &smeta, &err);

	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
	if (smeta.dims != 0 && smeta.dims != meta->dims)
		put_problem(
		    sink, HANNOY_PROBLEM_META_MISMATCH, -1,
		    psprintf("the metapage has %u dimensions, the sidecar %u", meta->dims, smeta.dims));
#define HANNOY_OPTION_CHECK(NAME, DEFAULT, MIN, MAX, DESCRIPTION)                                  \
	if (smeta.options.NAME != meta->options.NAME)                                                  \
		put_problem(sink, HANNOY_PROBLEM_META_MISMATCH, -1,                                        \
		            psprintf("the metapage has " #NAME " = %u, the sidecar %u",                    \
		                     meta->options.NAME, smeta.options.NAME));
	HANNOY_OPTIONS(HANNOY_OPTION_CHECK)
#undef HANNOY_OPTION_CHECK
	if (smeta.m0 != 2 * smeta.options.m)
		put_problem(
		    sink, HANNOY_PROBLEM_META_MISMATCH, -1,
		    psprintf("the sidecar has m = %u and m0 = %u, not 2m", smeta.options.m, smeta.m0));
}

/*
 * verify_usable runs hannoy_verify's checks on an index whose sidecar
 * could be opened: the metapage against the sidecar, the core's walk, and
 * the comparison with the heap.  The environment stays pinned throughout,
 * so invalidations (a VACUUM's new statistics) cannot close it meanwhile.
 */
static void
verify_usable(Relation index, Relation heap, HannoyEnv *env, const HannoyMetaPageData *meta,
              HannoyProblemSink *sink)
{
	HannoyEnvPin(env);
	PG_TRY();
	{
		/* a promoted replica's staged rows join the graph first: walk and heap check read it */
		HannoyLinkStaged(index, env);
		check_meta(index, env, meta, sink);
		run_walk(index, env, sink, NULL);
		HannoyCheckHeap(index, heap, env, put_named_problem, sink);
	}
	PG_FINALLY();
	{
		HannoyEnvUnpin(env);
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(hannoy_index_size);

/*
 * open_for_inspection opens the index's sidecar as HannoyOpenEnv does,
 * except for a verification while the server is in recovery: a standby's
 * sidecar holds staged rows that the walk and the heap check do not read
 * yet, so it is reported as unusable for verification rather than as
 * damaged.  The counters (no 'verify') are read in recovery too.
 */
static HannoyEnv *
open_for_inspection(Relation index, HannoyMetaPageData *meta, bool verify, const char **why)
{
	if (verify && RecoveryInProgress())
	{
		HannoyReadMetaPage(index, meta);
		*why = "hannoy cannot inspect a sidecar while the server is in recovery";
		return NULL;
	}
	return HannoyOpenEnv(index, meta, true, why);
}

/*
 * hannoy_index_size returns the bytes the index's sidecar takes on disk
 * (its data and lock files; 0 when it has none).  The metapage in the
 * relation file itself is what pg_relation_size reports.
 */
Datum
hannoy_index_size(PG_FUNCTION_ARGS)
{
	Relation heap;
	Relation index = open_index(PG_GETARG_OID(0), true, &heap);
	int64    bytes = sidecar_bytes(index);

	close_index(index, heap);
	PG_RETURN_INT64(bytes);
}

PG_FUNCTION_INFO_V1(hannoy_index_stats);

/*
 * hannoy_index_stats returns the counters of the index and the shape of
 * its graph, read in one LMDB snapshot.  This backend's queued rows are
 * applied first, as before a scan.  An unusable index (DESIGN.md "Never silently wrong") is an
 * error with a REINDEX hint.
 */
Datum
hannoy_index_stats(PG_FUNCTION_ARGS)
{
	Relation             heap;
	Relation             index = open_index(PG_GETARG_OID(0), false, &heap);
	TupleDesc            tupdesc;
	HannoyMetaPageData   meta;
	HannoyInspectSummary summary;
	HannoyEnv           *env;
	const char          *why = NULL;
	Datum                values[HANNOY_STATS_COLS];
	bool                 nulls[HANNOY_STATS_COLS] = {false};
	Datum               *edges;
	uint32               layers;
	uint64               staged = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	HannoyFlushQueue(index);
	memset(&summary, 0, sizeof(summary));
	summary.stats.max_level = -1;
	env = open_for_inspection(index, &meta, false, &why);
	if (env != NULL)
	{
		uint64       lsn;
		HannoyError  err;
		HannoyStatus st;

		run_walk(index, env, NULL, &summary);
		st = hannoy_replica_state(env, &staged, &lsn, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
	}
	else if (!HannoyAwaitsSidecar(&meta))
		HannoyReportUnusable(index, why, ERROR, NULL);

	layers = Min(summary.layers, HANNOY_MAX_LAYERS);
	edges = palloc(sizeof(Datum) * Max(layers, 1));
	for (uint32 i = 0; i < layers; i++)
		edges[i] = Int64GetDatum((int64) summary.edges[i]);

	values[0] = Int64GetDatum((int64) summary.stats.items);
	values[1] = Int64GetDatum((int64) summary.stats.unindexed);
	values[2] = Int64GetDatum((int64) summary.stats.deleted);
	values[3] = Int64GetDatum((int64) summary.stats.free_ids);
	values[4] = Int64GetDatum((int64) summary.stats.next_id);
	values[5] = Int32GetDatum(summary.stats.max_level + 1);
	values[6] = Int64GetDatum((int64) summary.stats.entry_point);
	nulls[6] = summary.stats.max_level < 0;
	values[7] = PointerGetDatum(construct_array(edges, (int) layers, INT8OID, sizeof(int64),
	                                            FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[8] = Float8GetDatum(
	    summary.lists[0] > 0 ? (double) summary.edges[0] / (double) summary.lists[0] : 0.0);
	nulls[8] = summary.lists[0] == 0;
	values[9] = Int64GetDatum(sidecar_bytes(index));
	values[10] = Int64GetDatum((int64) summary.stats.used_pages);
	values[11] = Int64GetDatum((int64) summary.stats.codes);
	values[12] = Int32GetDatum((int32) summary.stats.code_bytes);
	values[13] = CStringGetTextDatum(summary.stats.quantizer == 2   ? "binary"
	                                 : summary.stats.quantizer == 1 ? "scalar8"
	                                                                : "none");
	values[14] = Int64GetDatum((int64) summary.stats.quantizer_bytes);
	values[15] = Float8GetDatum(summary.stats.items > 0
	                                ? (double) sidecar_bytes(index) / (double) summary.stats.items
	                                : 0.0);
	nulls[15] = summary.stats.items == 0;
	values[16] = Int64GetDatum((int64) staged);
	/* where scans read exact distances: the sidecar's vectors or the heap (format 7) */
	values[17] = CStringGetTextDatum(summary.stats.heap_rerank ? "heap" : "sidecar");

	close_index(index, heap);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(hannoy_index_space);

/*
 * hannoy_index_space returns the parts of the sidecar's bytes, one row each
 * (a database of the sidecar, LMDB's own pages, the files' remainder), read
 * in one LMDB snapshot: their bytes add up to hannoy_index_size.  An index
 * without a sidecar yet has no rows; an unusable one is an error, as in
 * hannoy_index_stats.
 */
Datum
hannoy_index_space(PG_FUNCTION_ARGS)
{
	ReturnSetInfo     *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation           heap;
	Relation           index;
	HannoyMetaPageData meta;
	HannoyEnv         *env;
	const char        *why = NULL;
	HannoySpacePart    parts[HANNOY_SPACE_PARTS];
	uint32             count = 0;

	InitMaterializedSRF(fcinfo, 0);
	index = open_index(PG_GETARG_OID(0), false, &heap);
	HannoyFlushQueue(index);
	env = open_for_inspection(index, &meta, false, &why);
	if (env != NULL)
	{
		HannoyError  err;
		HannoyStatus st = hannoy_env_space(env, parts, &count, &err);

		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
	}
	else if (!HannoyAwaitsSidecar(&meta))
		HannoyReportUnusable(index, why, ERROR, NULL);

	for (uint32 i = 0; i < count; i++)
	{
		Datum values[4];
		bool  nulls[4] = {false};

		values[0] = CStringGetTextDatum(parts[i].name);
		values[1] = Int64GetDatum((int64) parts[i].entries);
		values[2] = Int64GetDatum((int64) parts[i].pages);
		values[3] = Int64GetDatum((int64) parts[i].bytes);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	close_index(index, heap);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(hannoy_verify);

/*
 * hannoy_verify checks the index and returns one row per problem, none
 * when it is healthy: first the sidecar on its own (the core's walk), then
 * against the heap (HannoyCheckHeap).  An index whose sidecar is unusable (DESIGN.md "Never
 * silently wrong") is reported as a row, not an error; one with no sidecar yet (an unlogged index
 * reset after a crash) is healthy and empty.
 */
Datum
hannoy_verify(PG_FUNCTION_ARGS)
{
	ReturnSetInfo     *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Relation           heap;
	Relation           index;
	HannoyMetaPageData meta;
	HannoyProblemSink  sink;
	HannoyEnv         *env;
	const char        *why = NULL;
	Oid                save_userid;
	int                save_sec_context;
	int                save_nestlevel;

	InitMaterializedSRF(fcinfo, 0);
	sink.tupstore = rsinfo->setResult;
	sink.tupdesc = rsinfo->setDesc;

	index = open_index(PG_GETARG_OID(0), false, &heap);

	/*
	 * The heap check runs the index's expressions and predicate, which are
	 * the table owner's code: run everything from here on as the owner in a
	 * security-restricted operation, as REINDEX does, so that the rights of
	 * a caller with more (a superuser) are lent to nobody.  The caller's
	 * ownership was checked as the caller.  An ERROR restores both.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(heap->rd_rel->relowner,
	                       save_sec_context | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();

	HannoyFlushQueue(index);
	env = open_for_inspection(index, &meta, true, &why);
	if (env != NULL)
	{
		verify_usable(index, heap, env, &meta, &sink);
	}
	else if (!HannoyAwaitsSidecar(&meta))
	{
		RelFileNodeBackend rnode;
		char              *path;
		bool               missing;

		rnode.node = index->rd_node;
		rnode.backend = index->rd_backend;
		path = HannoySidecarPath(rnode);
		missing =
		    HannoyReadMetaPage(index, &meta) && !RecoveryInProgress() && !hannoy_env_exists(path);
		put_problem(&sink, missing ? HANNOY_PROBLEM_SIDECAR_MISSING : HANNOY_PROBLEM_META_MISMATCH,
		            -1, why ? why : "the index cannot be used");
		pfree(path);
	}

	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	close_index(index, heap);
	return (Datum) 0;
}
