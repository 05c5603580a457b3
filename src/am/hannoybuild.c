/*
 * hannoybuild.c
 *	  ambuild and ambuildempty: the heap scan streams vectors into a fresh
 *	  sidecar, then the core links the graph in slices of at most
 *	  HANNOY_SLICE_MS, with interrupt checks and progress reports between
 *	  slices (DESIGN.md "Build").
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/xlog.h"
#include "access/xloginsert.h"
#include "catalog/index.h"
#include "commands/progress.h"
#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "storage/fd.h"
#include "storage/smgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hannoy_am.h"

typedef struct HannoyBuildState
{
	Relation           index;
	HannoyMetric       metric;
	HannoyEnv         *env;
	HannoyBuilder     *builder;
	HannoyMetaPageData meta;
	HannoyWalRows     *wal; /* the row set as logged for standbys (NULL: not logged) */
	double             heap_tuples;
	double             index_tuples;
	MemoryContext      tmpctx;
} HannoyBuildState;

/* Raises the core's error for a build, after freeing the builder. */
static void
build_fail(HannoyBuildState *state, HannoyStatus st, HannoyError *err)
{
	if (state->builder)
		hannoy_build_free(state->builder);
	state->builder = NULL;
	HannoyReportError(st, err, state->index);
}

/*
 * build_callback converts one heap row and hands it to the core, which
 * buffers rows and writes them to LMDB in batches.
 */
static void
build_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull, bool tupleIsAlive,
               void *arg)
{
	HannoyBuildState *state = (HannoyBuildState *) arg;
	MemoryContext     old = MemoryContextSwitchTo(state->tmpctx);
	HannoyError       err;
	HannoyStatus      st;
	const void       *vec = NULL;
	uint8             kind = 1;

	state->heap_tuples++;
	if (!isnull[0])
	{
		uint32 dims;
		bool   is_zero;

		vec = HannoyDatumToVector(state->index, values[0], state->metric, state->meta.dims, false,
		                          &dims, &is_zero);
		/* the first vector fixes the length, a zero vector under cosine too */
		if (state->meta.dims == 0)
		{
			state->meta.dims = dims;
			st = hannoy_env_set_dims(state->env, dims, &err);
			if (st != HANNOY_OK)
				build_fail(state, st, &err);
		}
		if (is_zero)
		{
			vec = NULL;
			kind = 2;
		}
	}
	st = hannoy_build_add(state->builder, HannoyTidFromItemPointer(tid), vec, kind, &err);
	if (st != HANNOY_OK)
		build_fail(state, st, &err);
	HannoyWalRowsAdd(state->wal, HannoyTidFromItemPointer(tid), kind, vec, state->meta.dims,
	                 (uint32) hannoy_vector_bytes(state->metric, state->meta.dims));
	state->index_tuples++;
	if ((uint64) state->index_tuples % 1024 == 0)
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) state->index_tuples);
	MemoryContextSwitchTo(old);
	MemoryContextReset(state->tmpctx);
}

/*
 * new_sidecar gives the index being built a fresh sidecar and its first
 * metapage.  Rows this backend queued for an earlier sidecar of the same
 * relation file are dropped; the sidecar of a relation file new in this
 * transaction is removed if the transaction aborts (an in-place rebuild of
 * an older file, as ON COMMIT DELETE ROWS does, keeps it).
 */
static HannoyEnv *
new_sidecar(Relation index, HannoyMetaPageData *meta)
{
	RelFileNodeBackend rnode;

	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	HannoyDropQueue(rnode);
	if (index->rd_createSubid != InvalidSubTransactionId ||
	    index->rd_firstRelfilenodeSubid != InvalidSubTransactionId)
		HannoyRegisterCreatedSidecar(rnode);
	return HannoyCreateSidecar(index, meta, 0, true);
}

/*
 * hannoybuild builds a new index: metapage and sidecar first, then the heap
 * scan, then the graph in interruptible slices.
 */
IndexBuildResult *
hannoybuild(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IndexBuildResult   *result;
	HannoyBuildState    state;
	HannoyError         err;
	HannoyStatus        st;
	HannoyBuildProgress progress;
	bool                done = false;
	uint32              quantizer;
	bool                rerank_heap;

	HannoyForgetMetaPageBlock(index);
	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));

	/* a build is a good moment to remove sidecars nothing owns any more */
	HannoySweep();

	memset(&state, 0, sizeof(state));
	state.index = index;
	state.metric = HannoyIndexMetric(index);
	quantizer = HannoyGetQuantizer(index);
	if ((quantizer == HANNOY_QUANTIZER_SCALAR8 || quantizer == HANNOY_QUANTIZER_BINARY) &&
	    hannoy_metric_info(state.metric).element != HANNOY_ELEMENT_FLOAT4)
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		         errmsg("quantizer \"%s\" does not fit type %s of index \"%s\"",
		                quantizer == HANNOY_QUANTIZER_BINARY ? "binary" : "scalar8",
		                format_type_be(index->rd_opcintype[0]), RelationGetRelationName(index)),
		         errdetail("Only float vectors (real[], vector) have codes; bit strings are "
		                   "compared whole."),
		         errhint("Use quantizer = 'none' or 'auto', or a float operator class.")));
	rerank_heap = HannoyGetRerankHeap(index);
	if (rerank_heap &&
	    (quantizer != HANNOY_QUANTIZER_SCALAR8 && quantizer != HANNOY_QUANTIZER_BINARY))
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		         errmsg("rerank = 'heap' needs quantizer 'scalar8' or 'binary' on index \"%s\"",
		                RelationGetRelationName(index)),
		         errdetail("Without codes of its own the index would have nothing to walk on."),
		         errhint("Add quantizer = 'binary' or quantizer = 'scalar8' to the WITH clause, "
		                 "or use rerank = 'sidecar'.")));
	state.tmpctx =
	    AllocSetContextCreate(CurrentMemoryContext, "hannoy build row", ALLOCSET_DEFAULT_SIZES);
	state.env = new_sidecar(index, &state.meta);
	/* a standby rebuilds the row set from WAL: DESIGN.md "Replication and recovery" */
	HannoyLogCreate(index, &state.meta);
	state.wal = HannoyWalRowsBegin(index, state.meta.generation);

	st = hannoy_build_begin(state.env, (uint32) hannoy_build_threads, &state.builder, &err);
	if (st == HANNOY_OK &&
	    ((st = hannoy_build_set_quantizer(state.builder, quantizer, &err)) != HANNOY_OK ||
	     (st = hannoy_build_set_heap_rerank(state.builder, rerank_heap, &err)) != HANNOY_OK))
	{
		hannoy_build_free(state.builder);
		state.builder = NULL;
	}
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);

	/* keep the handle open even if index expressions open other hannoy indexes */
	HannoyEnvPin(state.env);
	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, PROGRESS_HANNOY_PHASE_LOAD);
	PG_TRY();
	{
		table_index_build_scan(heap, index, indexInfo, true, true, build_callback, &state, NULL);
		HannoyWalRowsEnd(state.wal);
		state.wal = NULL;

		while (!done)
		{
			CHECK_FOR_INTERRUPTS();
			st = hannoy_build_step(state.builder, HANNOY_SLICE_MS, &progress, &done, &err);
			if (st != HANNOY_OK)
				build_fail(&state, st, &err);
			if (progress.phase == HANNOY_BUILD_GRAPH)
			{
				pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE,
				                             PROGRESS_HANNOY_PHASE_GRAPH);
				pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL,
				                             (int64) progress.total);
				pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) progress.done);
			}
			else if (progress.phase == HANNOY_BUILD_WRITING)
			{
				pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE,
				                             PROGRESS_HANNOY_PHASE_WRITE);
				pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, (int64) progress.done);
			}
		}
	}
	PG_CATCH();
	{
		/* joins no threads: the core joins them before each step returns */
		if (state.builder)
			hannoy_build_free(state.builder);
		state.builder = NULL;
		HannoyEnvUnpin(state.env);
		PG_RE_THROW();
	}
	PG_END_TRY();
	hannoy_build_free(state.builder);
	state.builder = NULL;
	HannoyEnvUnpin(state.env);

	/* the dimension count is known now: record it in the metapage */
	HannoyWriteMetaPage(index, MAIN_FORKNUM, &state.meta, false);
	MemoryContextDelete(state.tmpctx);

	result = (IndexBuildResult *) palloc(sizeof(IndexBuildResult));
	result->heap_tuples = state.heap_tuples;
	result->index_tuples = state.index_tuples;
	return result;
}

/*
 * hannoybuildempty writes the init fork of an unlogged index: a metapage
 * that says the index has no sidecar yet, WAL-logged and synced.  After a
 * crash the main fork is reset to it and the first insert creates a fresh
 * sidecar.
 */
void
hannoybuildempty(Relation index)
{
	HannoyMetaPageData meta;

	HannoyInitMetaPage(index, &meta, 0, HANNOY_META_INIT_FORK);
	HannoyWriteMetaPage(index, INIT_FORKNUM, &meta, true);
	/* generic WAL does not log the init fork of an unlogged relation: do it */
	log_newpage_range(index, INIT_FORKNUM, 0, 1, true);
	smgrimmedsync(RelationGetSmgr(index), INIT_FORKNUM);
}
