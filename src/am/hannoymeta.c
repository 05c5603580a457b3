/*
 * hannoymeta.c
 *	  What an index is: its metric (from its operator class and the metric
 *	  table), its options (from the option table) and the metapage that
 *	  records both with the sidecar's generation (DESIGN.md "Storage format").
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "access/reloptions.h"
#include "common/pg_prng.h"
#include "storage/bufmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "hannoy_am.h"

/* The reloptions of an index as build_reloptions fills them, one field per option. */
typedef struct HannoyRelOptions
{
	int32 vl_len_; /* varlena header (do not touch directly!) */
#define HANNOY_RELOPTION_FIELD(NAME, DEFAULT, MIN, MAX, DESCRIPTION) int NAME;
	HANNOY_OPTIONS(HANNOY_RELOPTION_FIELD)
#undef HANNOY_RELOPTION_FIELD
	int quantizer; /* HannoyQuantizerChoice */
	int rerank;    /* HannoyRerankChoice */
} HannoyRelOptions;

static relopt_kind hannoy_relopt_kind;

/* The values of the option "quantizer", from the quantizer table. */
static relopt_enum_elt_def hannoy_quantizer_values[] = {
#define HANNOY_QUANTIZER_VALUE(NAME, KEY, ID, FLOAT_ONLY) {#KEY, HANNOY_QUANTIZER_##NAME},
    HANNOY_QUANTIZERS(HANNOY_QUANTIZER_VALUE)
#undef HANNOY_QUANTIZER_VALUE
        {(const char *) NULL}};

/* The values of the option "rerank": where exact distances come from. */
static relopt_enum_elt_def hannoy_rerank_values[] = {
    {"sidecar", HANNOY_RERANK_SIDECAR}, {"heap", HANNOY_RERANK_HEAP}, {(const char *) NULL}};

/* HannoyDefineOptions registers one reloption per row of the option table. */
void
HannoyDefineOptions(void)
{
	hannoy_relopt_kind = add_reloption_kind();
#define HANNOY_RELOPTION_ADD(NAME, DEFAULT, MIN, MAX, DESCRIPTION)                                 \
	add_int_reloption(hannoy_relopt_kind, #NAME, DESCRIPTION, DEFAULT, MIN, MAX,                   \
	                  AccessExclusiveLock);
	HANNOY_OPTIONS(HANNOY_RELOPTION_ADD)
#undef HANNOY_RELOPTION_ADD
	add_enum_reloption(hannoy_relopt_kind, "quantizer",
	                   "Codes the graph walk reads: auto, none, scalar8 (8 bits per dimension) "
	                   "or binary (1 bit per rotated dimension)",
	                   hannoy_quantizer_values, HANNOY_QUANTIZER_AUTO,
	                   "Valid values are \"auto\", \"none\", \"scalar8\" and \"binary\".",
	                   AccessExclusiveLock);
	add_enum_reloption(hannoy_relopt_kind, "rerank",
	                   "Where scans read exact distances: sidecar (float vectors kept in the "
	                   "index) or heap (the table's rows; the index keeps only codes)",
	                   hannoy_rerank_values, HANNOY_RERANK_SIDECAR,
	                   "Valid values are \"sidecar\" and \"heap\".", AccessExclusiveLock);
}

/*
 * HannoyParseOptions parses and validates the reloptions of an index
 * (amoptions).
 */
bytea *
HannoyParseOptions(Datum reloptions, bool validate)
{
	static const relopt_parse_elt tab[] = {
#define HANNOY_RELOPTION_PARSE(NAME, DEFAULT, MIN, MAX, DESCRIPTION)                               \
	{#NAME, RELOPT_TYPE_INT, offsetof(HannoyRelOptions, NAME)},
	    HANNOY_OPTIONS(HANNOY_RELOPTION_PARSE)
#undef HANNOY_RELOPTION_PARSE
	        {"quantizer", RELOPT_TYPE_ENUM, offsetof(HannoyRelOptions, quantizer)},
	    {"rerank", RELOPT_TYPE_ENUM, offsetof(HannoyRelOptions, rerank)},
	};
	HannoyRelOptions *opts;

	opts = (HannoyRelOptions *) build_reloptions(reloptions, validate, hannoy_relopt_kind,
	                                             sizeof(HannoyRelOptions), tab, lengthof(tab));
	if (validate && opts && opts->ef_construction != 0 && opts->ef_construction < 2 * opts->m)
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		         errmsg("ef_construction must be at least 2 * m"),
		         errdetail("ef_construction is %d and m is %d.", opts->ef_construction, opts->m)));
	if (validate && opts && opts->rerank == HANNOY_RERANK_HEAP &&
	    opts->quantizer != HANNOY_QUANTIZER_SCALAR8 && opts->quantizer != HANNOY_QUANTIZER_BINARY)
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		         errmsg("rerank = 'heap' needs quantizer 'scalar8' or 'binary'"),
		         errdetail("Without codes of its own the index would have nothing to walk on."),
		         errhint("Add quantizer = 'binary' or quantizer = 'scalar8' to the WITH clause, "
		                 "or use rerank = 'sidecar'.")));
	return (bytea *) opts;
}

/*
 * HannoyGetOptions returns the options of an index, each its default when
 * not set, with the derived ones resolved (ef_construction: max(64, 2m)).
 */
HannoyOptions
HannoyGetOptions(Relation index)
{
	HannoyRelOptions *opts = (HannoyRelOptions *) index->rd_options;
	HannoyOptions     options;

#define HANNOY_OPTION_GET(NAME, DEFAULT, MIN, MAX, DESCRIPTION)                                    \
	options.NAME = (uint32) (opts ? opts->NAME : DEFAULT);
	HANNOY_OPTIONS(HANNOY_OPTION_GET)
#undef HANNOY_OPTION_GET
	if (options.ef_construction == 0)
		options.ef_construction = Max(HANNOY_MIN_DEFAULT_EF_CONSTRUCTION, 2 * options.m);
	return options;
}

/*
 * HannoyGetQuantizer returns the index option "quantizer" (a
 * HannoyQuantizerChoice): which codes a build gives the index.  It is read
 * by builds only; the sidecar's quantizer record says what a build made.
 */
uint32
HannoyGetQuantizer(Relation index)
{
	HannoyRelOptions *opts = (HannoyRelOptions *) index->rd_options;

	return (uint32) (opts ? opts->quantizer : HANNOY_QUANTIZER_AUTO);
}

/*
 * HannoyGetRerankHeap says whether the index option "rerank" is 'heap':
 * the build gives the index no float vectors (storage format 7).  Read by
 * builds only; the sidecar's quantizer record says what a build made.
 */
bool
HannoyGetRerankHeap(Relation index)
{
	HannoyRelOptions *opts = (HannoyRelOptions *) index->rd_options;

	return opts != NULL && opts->rerank == HANNOY_RERANK_HEAP;
}

/*
 * HannoyIndexMetric finds the metric of an index: the row of the metric
 * table whose strategy number names an ordering operator of the index's
 * operator family.
 */
HannoyMetric
HannoyIndexMetric(Relation index)
{
	Oid opfamily = index->rd_opfamily[0];
	Oid type = index->rd_opcintype[0];

#define HANNOY_METRIC_BY_STRATEGY(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)       \
	if (OidIsValid(get_opfamily_member(opfamily, type, type, STRATEGY)))                           \
		return HANNOY_METRIC_##NAME;
	HANNOY_METRICS(HANNOY_METRIC_BY_STRATEGY)
#undef HANNOY_METRIC_BY_STRATEGY
	ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
	                errmsg("operator family of index \"%s\" has no hannoy ordering operator",
	                       RelationGetRelationName(index))));
	pg_unreachable();
}

/*
 * HannoyInitMetaPage describes a new index in 'meta': its metric and
 * options, 'dims' and 'flags', and, unless the index has no sidecar yet
 * (HANNOY_META_INIT_FORK), a fresh non-zero generation for its sidecar.
 */
void
HannoyInitMetaPage(Relation index, HannoyMetaPageData *meta, uint32 dims, uint32 flags)
{
	memset(meta, 0, sizeof(*meta));
	meta->magic = HANNOY_MAGIC;
	meta->version = HANNOY_PAGE_VERSION;
	meta->metric = HannoyIndexMetric(index);
	meta->dims = dims;
	meta->options = HannoyGetOptions(index);
	meta->flags = flags;
	if (!(flags & HANNOY_META_INIT_FORK))
	{
		do
		{
			meta->generation = pg_prng_uint64(&pg_global_prng_state);
		} while (meta->generation == 0);
	}
}

/*
 * HannoyReadMetaPage copies the metapage; false when the index has none or
 * it is not a hannoy metapage.
 */
/*
 * What index->rd_amcache holds: that the relation file 'node' has its
 * metapage block, so reading it needs no look at the file's size (a system
 * call per scan).  An index's file loses blocks only to a truncation in
 * place (TRUNCATE of a table created in the same transaction), which a
 * build follows at once: hannoybuild forgets it first.  The relation cache
 * drops rd_amcache whenever it rebuilds the entry.
 */
typedef struct HannoyRelCache
{
	RelFileNode node;
	bool        has_metapage;
} HannoyRelCache;

/* True when the index's relation file has its metapage block. */
static bool
has_metapage(Relation index)
{
	HannoyRelCache *c = (HannoyRelCache *) index->rd_amcache;

	if (c != NULL && c->has_metapage && RelFileNodeEquals(c->node, index->rd_node))
		return true;
	if (RelationGetNumberOfBlocks(index) == 0)
		return false;
	if (c == NULL)
	{
		c = MemoryContextAllocZero(index->rd_indexcxt, sizeof(HannoyRelCache));
		index->rd_amcache = c;
	}
	c->node = index->rd_node;
	c->has_metapage = true;
	return true;
}

/* HannoyForgetMetaPageBlock: a build of the index's file may follow a truncation in place. */
void
HannoyForgetMetaPageBlock(Relation index)
{
	if (index->rd_amcache != NULL)
		((HannoyRelCache *) index->rd_amcache)->has_metapage = false;
}

bool
HannoyReadMetaPage(Relation index, HannoyMetaPageData *meta)
{
	Buffer buf;
	Page   page;
	bool   ok;

	if (!has_metapage(index))
		return false;
	buf = ReadBuffer(index, HANNOY_METAPAGE_BLKNO);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	memcpy(meta, PageGetContents(page), sizeof(HannoyMetaPageData));
	UnlockReleaseBuffer(buf);
	ok = meta->magic == HANNOY_MAGIC && meta->version == HANNOY_PAGE_VERSION;
	return ok;
}

/*
 * HannoyWriteMetaPage writes the metapage of 'fork', WAL-logged through
 * generic WAL (skipped by generic WAL itself for unlogged relations).
 */
void
HannoyWriteMetaPage(Relation index, ForkNumber fork, const HannoyMetaPageData *meta, bool new_page)
{
	Buffer            buf;
	Page              page;
	GenericXLogState *state;

	if (new_page)
	{
		buf = ReadBufferExtended(index, fork, P_NEW, RBM_NORMAL, NULL);
		Assert(BufferGetBlockNumber(buf) == HANNOY_METAPAGE_BLKNO);
	}
	else
		buf = ReadBufferExtended(index, fork, HANNOY_METAPAGE_BLKNO, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);
	PageInit(page, BLCKSZ, 0);
	memcpy(PageGetContents(page), meta, sizeof(HannoyMetaPageData));
	((PageHeader) page)->pd_lower =
	    (char *) PageGetContents(page) + sizeof(HannoyMetaPageData) - (char *) page;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/*
 * HannoyAwaitsSidecar tells whether the metapage says the index has no
 * sidecar yet, legitimately (an unlogged index reset after a crash): such an
 * index is empty, and its first insert creates the sidecar.
 */
bool
HannoyAwaitsSidecar(const HannoyMetaPageData *meta)
{
	return meta->magic == HANNOY_MAGIC && (meta->flags & HANNOY_META_INIT_FORK) &&
	       !RecoveryInProgress();
}
