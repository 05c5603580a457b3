/*
 * hannoyheapcheck.c
 *	  hannoy_verify's comparison of the sidecar with the heap.
 *
 *	  The core hands out the rows the sidecar holds in heap TID order, in
 *	  bounded batches, each read in its own short LMDB read transaction
 *	  (hannoy_stored_rows_next).  For each row the shim reads the heap tuple
 *	  at its TID, following the HOT chain from the root line pointer, forms
 *	  the index key the way aminsert receives it (FormIndexDatum, so
 *	  expression indexes are covered), converts it as the insert path does
 *	  (HannoyDatumToVector; NULL and, under cosine, zero vectors have no
 *	  vector) and compares it with what the sidecar stored, bit for bit:
 *
 *	  - a TID whose line pointer is unused or was never valid, or that holds
 *	    a heap-only tuple, is a stale mapping (DESIGN.md "WAL before sidecar"): "heap tuple
 *missing";
 *	  - a stored vector (or its absence) that no member of the HOT chain
 *	    still present agrees with: "vector differs from heap tuple".
 *
 *	  A dead line pointer, or a chain whose tuples were all deleted before
 *	  the check's snapshot (or never committed), is fine: VACUUM has not
 *	  reached it yet, and such tuples are not compared (their TOAST data
 *	  may already be gone).  Meanwhile, block by
 *	  block, live heap tuples committed before the check began must have the
 *	  root of their HOT chain in the sidecar (rows of an index that is not
 *	  yet valid, and rows a partial index's predicate excludes, need not):
 *	  "heap tuple not indexed".
 *
 *	  Writers go on during the check, so before a problem is reported the
 *	  sidecar's row for that TID is read again: a row VACUUM removed, or one
 *	  that changed meanwhile, is looked at again rather than reported.  No
 *	  core frame is on the stack while the heap is read or interrupts are
 *	  checked (DESIGN.md "The C / C++ boundary").
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "catalog/index.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "hannoy_am.h"

/* Rows the core hands over per batch, and the most vector bytes per batch. */
#define HANNOY_HEAPCHECK_ROWS  256
#define HANNOY_HEAPCHECK_BYTES (4 * 1024 * 1024)

/* Times a problem is looked at again because the sidecar changed meanwhile. */
#define HANNOY_HEAPCHECK_RETRIES 3

/* Names of the problems this check reports, as hannoy_verify shows them. */
static const char HANNOY_PROBLEM_HEAP_MISSING[] = "heap tuple missing";
static const char HANNOY_PROBLEM_HEAP_DIFFERS[] = "vector differs from heap tuple";
static const char HANNOY_PROBLEM_HEAP_UNINDEXED[] = "heap tuple not indexed";

/* What the comparison of one stored row with the heap found. */
typedef enum HeapRowResult
{
	HEAP_ROW_OK,      /* agrees, or nothing left to compare with (dead) */
	HEAP_ROW_MISSING, /* no tuple may be at that TID */
	HEAP_ROW_DIFFERS  /* no tuple of the chain has the stored key */
} HeapRowResult;

typedef struct HeapCheckState
{
	Relation            index;
	Relation            heap;
	HannoyEnv          *env;
	HannoyMetric        metric;
	HannoyProblemReport report;
	void               *report_arg;

	/* where the rows come from */
	HannoyRowPosition pos;
	HannoyStoredRow  *rows;
	char             *vectors;
	size_t            vectors_size;
	size_t            stride; /* bytes of one stored vector (of one code, when 'codes') */
	uint32            dims;   /* dimensions (bits) of the stored vectors */
	bool              codes;  /* no vectors (rerank = 'heap'): the sidecar hands out codes */

	/* the check's snapshot's xmin: tuples deleted before it are not compared */
	TransactionId horizon;
	/* live tuples inserted before this must be in the sidecar */
	bool                 check_unindexed;
	BufferAccessStrategy strategy;
	BlockNumber          nblocks;

	/* forming index keys */
	IndexInfo      *info;
	EState         *estate;
	ExprContext    *econtext;
	TupleTableSlot *slot;
	ExprState      *predicate;

	/* the block whose sidecar rows are being gathered, for the reverse check */
	BlockNumber cur_block;
	BlockNumber next_unchecked; /* blocks before it have had their reverse check */
	bool        present[MaxHeapTuplesPerPage + 1];

	char detail[256];
} HeapCheckState;

/* Formats a heap TID the way PostgreSQL prints a ctid. */
static const char *
tid_text(BlockNumber block, OffsetNumber offset)
{
	return psprintf("(%u,%u)", block, (unsigned) offset);
}

/*
 * fetch_batch reads the next batch of stored rows after 'pos' (or a single
 * row when 'capacity' is 1), growing the vector buffer when one vector does
 * not fit; returns how many rows came.
 */
static uint32
fetch_batch(HeapCheckState *hc, HannoyRowPosition *pos, uint32 capacity)
{
	for (;;)
	{
		HannoyError  err;
		HannoyStatus st;
		uint32       n = 0;
		size_t       stride = 0;

		st = hannoy_stored_rows_next(hc->env, pos, hc->rows, capacity, hc->vectors,
		                             hc->vectors_size, &n, &stride, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, hc->index);
		if (stride != hc->stride)
		{
			HannoyMeta smeta;

			/* set once, by the first vector of an index built empty */
			st = hannoy_env_meta(hc->env, &smeta, &err);
			if (st != HANNOY_OK)
				HannoyReportError(st, &err, hc->index);
			hc->dims = smeta.dims;
			hc->stride = stride;
			hc->codes = stride != hannoy_vector_bytes(hc->metric, smeta.dims);
		}
		if (n > 0 || pos->done || stride == 0)
			return n;
		/* an index built empty learnt its dimension count meanwhile */
		hc->vectors_size = Max(stride * HANNOY_HEAPCHECK_ROWS, stride);
		hc->vectors_size = Min(hc->vectors_size, Max((size_t) HANNOY_HEAPCHECK_BYTES, stride));
		hc->vectors = repalloc(hc->vectors, hc->vectors_size);
	}
}

/*
 * stored_key_differs compares the key the insert path would derive from a
 * heap value with a stored row; returns NULL when they agree, and what
 * differs otherwise.  Runs in the per-tuple memory context.
 */
static const char *
stored_key_differs(HeapCheckState *hc, const HannoyStoredRow *row, const void *stored, Datum value,
                   bool isnull)
{
	uint32      dims;
	bool        is_zero;
	const void *vec;
	bool        bits = hannoy_metric_info(hc->metric).element == HANNOY_ELEMENT_BIT;

	if (isnull)
		return row->unindexed_kind == HANNOY_ROW_UNINDEXED_NULL ? NULL
		                                                        : "the heap tuple's value is NULL";
	vec = HannoyDatumToVector(hc->index, value, hc->metric, 0, false, &dims, &is_zero);
	if (is_zero)
		return row->unindexed_kind == HANNOY_ROW_UNINDEXED_NAN
		           ? NULL
		           : "the heap tuple's vector is a zero vector";
	if (row->unindexed_kind == HANNOY_ROW_UNINDEXED_NULL)
		return "stored as a NULL value, but the heap tuple has a vector";
	if (row->unindexed_kind != HANNOY_ROW_INDEXED)
		return "stored as a zero vector, but the heap tuple's vector is not zero";
	if (hc->codes && dims == hc->dims)
	{
		/* an index without vectors: its code must be the encoding of the heap's vector */
		uint8       *code = palloc(hc->stride);
		size_t       bytes;
		HannoyError  err;
		HannoyStatus st = hannoy_env_encode(hc->env, vec, code, hc->stride, &bytes, &err);

		if (st != HANNOY_OK)
			HannoyReportError(st, &err, hc->index);
		if (bytes == hc->stride && memcmp(code, stored, bytes) == 0)
			return NULL;
		for (size_t i = 0; i < hc->stride; i++)
			if (code[i] != ((const uint8 *) stored)[i])
				return psprintf("the code differs from the heap tuple's vector's at byte %zu",
				                i + 1);
		return "the code differs from the heap tuple's vector's";
	}
	if (dims != hc->dims || hannoy_vector_bytes(hc->metric, dims) != hc->stride)
		return psprintf("the heap tuple's %s has %u %s, the index's %u",
		                bits ? "bit string" : "vector", dims, bits ? "bits" : "dimensions",
		                hc->dims);
	if (memcmp(vec, stored, hc->stride) == 0)
		return NULL;
	if (bits)
	{
		const uint8 *a = vec;
		const uint8 *b = stored;

		for (uint32 i = 0; i < dims; i++)
			if (((a[i / 8] ^ b[i / 8]) >> (7 - i % 8)) & 1)
				return psprintf("bit %u differs", i + 1);
		return "the padding bits differ";
	}
	for (uint32 i = 0; i < dims; i++)
	{
		float4 a, b;

		memcpy(&a, (const char *) vec + i * sizeof(float4), sizeof(float4));
		memcpy(&b, (const char *) stored + i * sizeof(float4), sizeof(float4));
		if (memcmp(&a, &b, sizeof(float4)) != 0)
			return psprintf("element %u is %g in the heap tuple, %g in the sidecar", i + 1, a, b);
	}
	return "the vectors differ";
}

/*
 * tuple_key_differs forms the index key of one heap tuple (copied, so no
 * buffer lock is held while it is detoasted or an expression runs) and
 * compares it with the stored row; NULL when they agree.
 */
static const char *
tuple_key_differs(HeapCheckState *hc, HeapTuple tuple, const HannoyStoredRow *row,
                  const void *stored)
{
	Datum values[INDEX_MAX_KEYS];
	bool  isnull[INDEX_MAX_KEYS];

	ExecStoreHeapTuple(tuple, hc->slot, false);
	FormIndexDatum(hc->info, hc->slot, hc->estate, values, isnull);
	return stored_key_differs(hc, row, stored, values[0], isnull[0]);
}

/*
 * slot_without_row says why no index entry may point to line pointer
 * 'offset' of heap page 'page' (locked by the caller): it does not exist,
 * is unused, or holds a heap-only tuple; NULL when one may.  Palloc's the
 * reason when it names a count.
 */
static const char *
slot_without_row(Page page, OffsetNumber offset)
{
	ItemId lp;

	if (offset < FirstOffsetNumber || offset > PageGetMaxOffsetNumber(page))
		return psprintf("its page has only %u line pointers",
		                (unsigned) PageGetMaxOffsetNumber(page));
	lp = PageGetItemId(page, offset);
	if (!ItemIdIsUsed(lp))
		return "its line pointer is unused";
	if (ItemIdIsNormal(lp) && HeapTupleHeaderIsHeapOnly((HeapTupleHeader) PageGetItem(page, lp)))
		return "it holds a tuple of a HOT chain, which no index entry may point to";
	return NULL;
}

/*
 * compare_row reads the heap at a stored row's TID and compares.  Every
 * member of the HOT chain not deleted before the check's snapshot is a
 * candidate: they normally share one key, but a chain that was already
 * broken when the index was built (a HOT update of the indexed column
 * before the index existed) holds older keys too.  Palloc's in the
 * per-tuple memory context.
 */
static HeapRowResult
compare_row(HeapCheckState *hc, const HannoyStoredRow *row, const void *stored)
{
	BlockNumber   block = (BlockNumber) (row->tid >> 16);
	OffsetNumber  offset = (OffsetNumber) (row->tid & 0xFFFF);
	Buffer        buf;
	Page          page;
	ItemId        lp;
	HeapTuple     chain[MaxHeapTuplesPerPage + 1];
	int           nchain = 0;
	TransactionId prior_xmax = InvalidTransactionId;
	const char   *why = NULL;

	if (block >= hc->nblocks)
		hc->nblocks = RelationGetNumberOfBlocks(hc->heap);
	if (block >= hc->nblocks)
	{
		snprintf(hc->detail, sizeof(hc->detail), "TID %s: the table has only %u blocks",
		         tid_text(block, offset), hc->nblocks);
		return HEAP_ROW_MISSING;
	}
	buf = ReadBufferExtended(hc->heap, MAIN_FORKNUM, block, RBM_NORMAL, hc->strategy);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	why = slot_without_row(page, offset);
	/* follow the chain: a redirect first, then t_ctid links within the page */
	for (int steps = 0; why == NULL && steps <= MaxHeapTuplesPerPage; steps++)
	{
		HeapTupleData tuple;

		lp = PageGetItemId(page, offset);
		if (ItemIdIsRedirected(lp))
		{
			if (steps > 0)
				break;
			offset = ItemIdGetRedirect(lp);
			if (offset < FirstOffsetNumber || offset > PageGetMaxOffsetNumber(page))
				break;
			continue;
		}
		if (!ItemIdIsNormal(lp))
			break; /* dead: nothing left to compare with */
		tuple.t_data = (HeapTupleHeader) PageGetItem(page, lp);
		tuple.t_len = ItemIdGetLength(lp);
		tuple.t_tableOid = RelationGetRelid(hc->heap);
		ItemPointerSet(&tuple.t_self, block, offset);
		if (TransactionIdIsValid(prior_xmax) &&
		    !TransactionIdEquals(prior_xmax, HeapTupleHeaderGetXmin(tuple.t_data)))
			break;
		if (HeapTupleSatisfiesVacuum(&tuple, hc->horizon, buf) != HEAPTUPLE_DEAD)
			chain[nchain++] = heap_copytuple(&tuple);
		if (!HeapTupleHeaderIsHotUpdated(tuple.t_data))
			break;
		if (ItemPointerGetBlockNumber(&tuple.t_data->t_ctid) != block)
			break;
		prior_xmax = HeapTupleHeaderGetUpdateXid(tuple.t_data);
		offset = ItemPointerGetOffsetNumber(&tuple.t_data->t_ctid);
		if (offset < FirstOffsetNumber || offset > PageGetMaxOffsetNumber(page))
			break;
	}
	UnlockReleaseBuffer(buf);
	offset = (OffsetNumber) (row->tid & 0xFFFF);
	if (why != NULL)
	{
		snprintf(hc->detail, sizeof(hc->detail), "TID %s: %s", tid_text(block, offset), why);
		return HEAP_ROW_MISSING;
	}
	for (int i = 0; i < nchain; i++)
	{
		why = tuple_key_differs(hc, chain[i], row, stored);
		ExecClearTuple(hc->slot);
		if (why == NULL)
			return HEAP_ROW_OK;
	}
	if (nchain == 0)
		return HEAP_ROW_OK;
	snprintf(hc->detail, sizeof(hc->detail), "TID %s: %s", tid_text(block, offset), why);
	return HEAP_ROW_DIFFERS;
}

/* True when two reads of a stored row found the same row. */
static bool
same_row(const HeapCheckState *hc, const HannoyStoredRow *a, const void *va,
         const HannoyStoredRow *b, const void *vb)
{
	return a->tid == b->tid && a->id == b->id && a->unindexed_kind == b->unindexed_kind &&
	       a->vector_missing == b->vector_missing &&
	       (a->unindexed_kind != HANNOY_ROW_INDEXED || a->vector_missing ||
	        memcmp(va, vb, hc->stride) == 0);
}

/*
 * check_row compares one stored row with the heap and reports a problem
 * that persists: before reporting, the sidecar's row for that TID is read
 * again, and a row that is gone (VACUUM removed it, then freed the line
 * pointer) or changed (the TID was reused) is not reported but compared
 * afresh.  A problem seen with the same stored row before and after the
 * heap was read is real: a legitimately stored row always has its tuple.
 */
static void
check_row(HeapCheckState *hc, const HannoyStoredRow *first, const void *first_vector, size_t stride)
{
	HannoyStoredRow row = *first;
	void           *vector = palloc(Max(stride, 1));
	MemoryContext   old;

	/* 'stride' differs from hc->stride only when it is 0: no row then has a vector */
	memcpy(vector, first_vector, stride);
	for (int attempt = 0;; attempt++)
	{
		HannoyRowPosition again;
		HeapRowResult     result;
		uint32            n;

		if (row.vector_missing)
			break; /* the walk reports it */
		old = MemoryContextSwitchTo(GetPerTupleExprContext(hc->estate)->ecxt_per_tuple_memory);
		result = compare_row(hc, &row, vector);
		MemoryContextSwitchTo(old);
		ResetExprContext(hc->econtext);
		if (result == HEAP_ROW_OK)
			break;

		memset(&again, 0, sizeof(again));
		again.started = true;
		again.after = row.tid - 1;
		n = fetch_batch(hc, &again, 1);
		if (n == 0 || hc->rows[0].tid != row.tid)
		{
			elog(DEBUG1, "hannoy_verify: %s; the sidecar no longer holds that TID", hc->detail);
			break;
		}
		if ((stride == hc->stride && same_row(hc, &row, vector, &hc->rows[0], hc->vectors)) ||
		    attempt + 1 == HANNOY_HEAPCHECK_RETRIES)
		{
			hc->report(hc->report_arg,
			           result == HEAP_ROW_MISSING ? HANNOY_PROBLEM_HEAP_MISSING
			                                      : HANNOY_PROBLEM_HEAP_DIFFERS,
			           row.id == UINT32_MAX ? -1 : (int64) row.id, hc->detail);
			break;
		}
		elog(DEBUG1, "hannoy_verify: %s; the sidecar's row for that TID changed, looking again",
		     hc->detail);
		row = hc->rows[0];
		stride = hc->stride;
		vector = repalloc(vector, Max(stride, 1));
		memcpy(vector, hc->vectors, stride);
	}
	pfree(vector);
}

/*
 * check_block_indexed reports the live tuples of one heap block, committed
 * before the check began, whose HOT chain's root the sidecar does not hold
 * ('present' flags the offsets it holds).
 */
static void
check_block_indexed(HeapCheckState *hc, BlockNumber block, const bool *present)
{
	OffsetNumber roots[MaxHeapTuplesPerPage];
	HeapTuple    missing[MaxHeapTuplesPerPage];
	OffsetNumber missing_root[MaxHeapTuplesPerPage];
	int          nmissing = 0;
	Buffer       buf;
	Page         page;
	OffsetNumber maxoff;

	CHECK_FOR_INTERRUPTS();
	if (block >= hc->nblocks)
		hc->nblocks = RelationGetNumberOfBlocks(hc->heap);
	if (block >= hc->nblocks)
		return; /* a stale TID beyond the end of the table */
	buf = ReadBufferExtended(hc->heap, MAIN_FORKNUM, block, RBM_NORMAL, hc->strategy);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (PageIsNew(page))
	{
		UnlockReleaseBuffer(buf);
		return;
	}
	heap_get_root_tuples(page, roots);
	maxoff = PageGetMaxOffsetNumber(page);
	for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
	{
		ItemId        lp = PageGetItemId(page, off);
		HeapTupleData tuple;
		TransactionId xmin;

		if (!ItemIdIsNormal(lp) || roots[off - 1] == InvalidOffsetNumber || present[roots[off - 1]])
			continue;
		tuple.t_data = (HeapTupleHeader) PageGetItem(page, lp);
		tuple.t_len = ItemIdGetLength(lp);
		tuple.t_tableOid = RelationGetRelid(hc->heap);
		ItemPointerSet(&tuple.t_self, block, off);
		if (HeapTupleSatisfiesVacuum(&tuple, hc->horizon, buf) != HEAPTUPLE_LIVE)
			continue;
		xmin = HeapTupleHeaderGetXmin(tuple.t_data);
		if (!HeapTupleHeaderXminFrozen(tuple.t_data) && !TransactionIdPrecedes(xmin, hc->horizon))
			continue;
		missing_root[nmissing] = roots[off - 1];
		missing[nmissing++] = heap_copytuple(&tuple);
	}
	UnlockReleaseBuffer(buf);

	for (int i = 0; i < nmissing; i++)
	{
		MemoryContext old =
		    MemoryContextSwitchTo(GetPerTupleExprContext(hc->estate)->ecxt_per_tuple_memory);
		bool excluded = false;

		if (hc->predicate != NULL)
		{
			ExecStoreHeapTuple(missing[i], hc->slot, false);
			excluded = !ExecQual(hc->predicate, hc->econtext);
			ExecClearTuple(hc->slot);
		}
		if (!excluded)
		{
			OffsetNumber off = ItemPointerGetOffsetNumber(&missing[i]->t_self);

			if (off == missing_root[i])
				snprintf(hc->detail, sizeof(hc->detail), "TID %s: a live row the index lacks",
				         tid_text(block, off));
			else
				snprintf(hc->detail, sizeof(hc->detail),
				         "TID %s: a live row the index lacks (its HOT chain starts at %s)",
				         tid_text(block, off), tid_text(block, missing_root[i]));
			hc->report(hc->report_arg, HANNOY_PROBLEM_HEAP_UNINDEXED, -1, hc->detail);
		}
		MemoryContextSwitchTo(old);
		ResetExprContext(hc->econtext);
		heap_freetuple(missing[i]);
	}
}

/*
 * move_to_block finishes the reverse check of every block before 'block'
 * (all of the table when 'block' is InvalidBlockNumber): the sidecar's rows
 * of those blocks have all been read.
 */
static void
move_to_block(HeapCheckState *hc, BlockNumber block)
{
	static const bool none[MaxHeapTuplesPerPage + 1] = {false};
	BlockNumber       end = block;

	if (block == hc->cur_block)
		return;
	if (hc->check_unindexed)
	{
		if (hc->cur_block != InvalidBlockNumber)
			check_block_indexed(hc, hc->cur_block, hc->present);
		if (end > hc->nblocks)
		{
			hc->nblocks = RelationGetNumberOfBlocks(hc->heap);
			end = Min(end, hc->nblocks);
		}
		for (BlockNumber b = hc->next_unchecked; b < end; b++)
			check_block_indexed(hc, b, none);
	}
	if (block != InvalidBlockNumber)
		hc->next_unchecked = block + 1;
	hc->cur_block = block;
	memset(hc->present, 0, sizeof(hc->present));
}

/*
 * HannoyCheckHeap compares every row the index's sidecar holds with the
 * heap tuple at its TID, and the heap's live rows with the sidecar's, and
 * reports each problem through 'report' (see the file's comment).  Tables
 * of other access methods than heap are not checked.  The caller keeps
 * 'env' pinned, and runs this as the table's owner in a security-restricted
 * operation: the index's expressions and predicate are that owner's code.
 */
void
HannoyCheckHeap(Relation index, Relation heap, HannoyEnv *env, HannoyProblemReport report,
                void *report_arg)
{
	HeapCheckState hc;
	Snapshot       snapshot;

	if (heap->rd_tableam != GetHeapamTableAmRoutine())
		return;

	memset(&hc, 0, sizeof(hc));
	hc.index = index;
	hc.heap = heap;
	hc.env = env;
	hc.metric = HannoyIndexMetric(index);
	hc.report = report;
	hc.report_arg = report_arg;
	hc.rows = palloc(sizeof(HannoyStoredRow) * HANNOY_HEAPCHECK_ROWS);
	hc.vectors_size = 0;
	hc.vectors = palloc(1);
	hc.cur_block = InvalidBlockNumber;
	hc.strategy = GetAccessStrategy(BAS_BULKREAD);
	hc.nblocks = RelationGetNumberOfBlocks(heap);

	/*
	 * The registered snapshot keeps this backend's xmin, so no tuple whose
	 * deleter committed after the snapshot's xmin can be removed (nor its
	 * TOAST data) while the check reads it; and every transaction before
	 * that xmin had ended, its rows applied to the sidecar, before the
	 * check read anything.
	 */
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	hc.horizon = snapshot->xmin;
	hc.check_unindexed = index->rd_index->indisvalid;

	hc.info = BuildIndexInfo(index);
	hc.estate = CreateExecutorState();
	hc.econtext = GetPerTupleExprContext(hc.estate);
	hc.slot = MakeSingleTupleTableSlot(RelationGetDescr(heap), &TTSOpsHeapTuple);
	hc.econtext->ecxt_scantuple = hc.slot;
	if (hc.info->ii_Predicate != NIL)
		hc.predicate = ExecPrepareQual(hc.info->ii_Predicate, hc.estate);

	for (;;)
	{
		uint32 n;

		CHECK_FOR_INTERRUPTS();
		n = fetch_batch(&hc, &hc.pos, HANNOY_HEAPCHECK_ROWS);
		if (n == 0)
			break;
		/* test only: widen the window in which rows change under the check */
		if (hannoy_test_verify_delay > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
			                 hannoy_test_verify_delay, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		/* check_row reuses the batch buffers: keep this batch aside */
		{
			HannoyStoredRow *rows = palloc(sizeof(HannoyStoredRow) * n);
			char            *vectors = palloc(Max(hc.stride * n, 1));
			size_t           stride = hc.stride;

			memcpy(rows, hc.rows, sizeof(HannoyStoredRow) * n);
			memcpy(vectors, hc.vectors, stride * n);
			for (uint32 i = 0; i < n; i++)
			{
				BlockNumber  block = (BlockNumber) (rows[i].tid >> 16);
				OffsetNumber offset = (OffsetNumber) (rows[i].tid & 0xFFFF);

				CHECK_FOR_INTERRUPTS();
				move_to_block(&hc, block);
				if (offset <= MaxHeapTuplesPerPage)
					hc.present[offset] = true;
				check_row(&hc, &rows[i], vectors + i * stride, stride);
			}
			pfree(rows);
			pfree(vectors);
		}
		if (hc.pos.done)
			break;
	}
	move_to_block(&hc, InvalidBlockNumber);

	ExecDropSingleTupleTableSlot(hc.slot);
	FreeExecutorState(hc.estate);
	FreeAccessStrategy(hc.strategy);
	UnregisterSnapshot(snapshot);
	pfree(hc.rows);
	pfree(hc.vectors);
}

/*
 * heap_row_lost tells whether the heap can no longer hold the row an
 * insert recorded at 'tid': its block or line pointer does not exist, the
 * line pointer is unused, or it holds a heap-only tuple (which no index
 * entry may point to).  A slot holding a tuple is not lost: either the row
 * is there, or a later row took the slot, whose own insert replaces the
 * entry (or, if that row dies, VACUUM removes it).
 */
static bool
heap_row_lost(Relation heap, BlockNumber *nblocks, HannoyTid tid)
{
	BlockNumber  block = (BlockNumber) (tid >> 16);
	OffsetNumber offset = (OffsetNumber) (tid & 0xFFFF);
	Buffer       buf;
	bool         lost;

	if (block >= *nblocks)
		*nblocks = RelationGetNumberOfBlocks(heap);
	if (block >= *nblocks)
		return true;
	buf = ReadBufferExtended(heap, MAIN_FORKNUM, block, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	lost = slot_without_row(BufferGetPage(buf), offset) != NULL;
	UnlockReleaseBuffer(buf);
	return lost;
}

/*
 * HannoySettleUnflushed removes from the sidecar 'env' of 'index' the rows
 * whose heap rows a crash of PostgreSQL lost (DESIGN.md "WAL before
 * sidecar"): rows an insert recorded in an earlier run of the server before
 * their WAL was on disk are looked up in the heap; the entries of those
 * whose slot is gone are removed, and the notes of all of them dropped.
 * Called once per process and sidecar, out of recovery, before anything
 * reads it; cheap when the sidecar notes no row of an earlier run.  The
 * caller keeps 'env' pinned (opening the heap may run invalidations).
 */
void
HannoySettleUnflushed(Relation index, HannoyEnv *env)
{
#define HANNOY_SETTLE_BATCH 1024
	uint64              lifetime = HannoyServerLifetime();
	HannoyUnflushedRow *rows;
	bool               *lost;
	uint32              n, retired, total = 0;
	HannoyError         err;
	HannoyStatus        st;
	Relation            heap = NULL;
	BlockNumber         nblocks = 0;

	if (lifetime == 0)
		return;
	rows = palloc(sizeof(HannoyUnflushedRow) * HANNOY_SETTLE_BATCH);
	lost = palloc(sizeof(bool) * HANNOY_SETTLE_BATCH);
	for (;;)
	{
		st = hannoy_env_unflushed_foreign(env, lifetime, rows, HANNOY_SETTLE_BATCH, &n, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
		if (n == 0)
			break;
		if (heap == NULL)
		{
			heap = table_open(index->rd_index->indrelid, AccessShareLock);
			nblocks = RelationGetNumberOfBlocks(heap);
		}
		for (uint32 i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			/* tables of other access methods: no heap to ask; none is noted (hannoyinsert.c) */
			lost[i] = heap->rd_tableam == GetHeapamTableAmRoutine() &&
			          heap_row_lost(heap, &nblocks, rows[i].tid);
		}
		st = hannoy_env_unflushed_settle(env, rows, lost, n, &retired, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
		total += retired;
		if (n < HANNOY_SETTLE_BATCH)
			break;
	}
	if (heap != NULL)
		table_close(heap, AccessShareLock);
	if (total > 0)
		ereport(LOG, (errmsg("hannoy index \"%s\": removed %u entries whose heap rows a crash lost",
		                     RelationGetRelationName(index), total)));
	pfree(rows);
	pfree(lost);
}
