/*
 * hannoyutils.c
 *	  Shared shim helpers: sidecar paths and the per-backend environment
 *	  cache, the metapage, usability checks (DESIGN I4, I6), conversion of
 *	  SQL values to vectors, error reporting, and transaction callbacks that
 *	  remove the sidecars of aborted builds.
 */
#include "hannoy/shim_guard.h"

#include "postgres.h"

#include <math.h>
#include <sys/stat.h>

#include "access/generic_xlog.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type_d.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/builtins.h"
#include "utils/varbit.h"

#include "hannoy/am.h"

/* Environments one backend keeps open at once. */
#define HANNOY_ENV_CACHE_SIZE 32
/* File descriptors LMDB uses per environment (data, lock, meta writes). */
#define HANNOY_FDS_PER_ENV 3
/* Address space reserved per environment; the file grows only as needed. */
#define HANNOY_MAP_SIZE ((uint64) 1 << 40)

typedef struct HannoyEnvCacheEntry
{
	RelFileNodeBackend rnode;
	Oid                indexoid;
	HannoyEnv         *env;
	uint64             generation;
	TimeLineID         checked_tli; /* timeline its sidecar was last checked on, 0: never */
	int                pins;        /* open scans using it */
	uint64             last_used;
} HannoyEnvCacheEntry;

/*
 * Open environments.  At most HANNOY_ENV_CACHE_SIZE stay open while idle;
 * the array grows past that only while scans pin them all (a query over
 * many partitions).
 */
/* Reasons an index is unusable for good (compared by address). */
static const char HANNOY_REASON_MISSING[] = "its sidecar is missing";
static const char HANNOY_REASON_OTHER_BUILD[] = "its sidecar belongs to another build";
static const char HANNOY_REASON_OTHER_SYSTEM[] =
    "its sidecar was written by another database system";
static const char HANNOY_REASON_OTHER_TIMELINE[] = "its sidecar was written on another timeline";
static const char HANNOY_REASON_BROKEN[] =
    "it was marked broken when its sidecar was found unusable";

static HannoyEnvCacheEntry *env_cache = NULL;
static int                  env_cache_used = 0;
static int                  env_cache_capacity = 0;
static uint64               env_cache_clock = 0;

/* Sidecars created by the current transaction, removed if it aborts. */
typedef struct HannoyCreatedSidecar
{
	RelFileNodeBackend rnode;
	SubTransactionId   subid;
} HannoyCreatedSidecar;

static List *created_sidecars = NIL; /* in TopMemoryContext */

/*
 * HannoyReportError turns a core status into an ereport(ERROR) with a
 * SQLSTATE that says what kind of failure it was.
 */
void
HannoyReportError(HannoyStatus status, const HannoyError *err, Relation index)
{
	int         code;
	const char *hint = NULL;
	char        message[sizeof(err->message)];

	strlcpy(message, err->message, sizeof(message));
	switch (status)
	{
		case HANNOY_ERR_NOMEM:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		case HANNOY_ERR_STORAGE:
			code = ERRCODE_IO_ERROR;
			break;
		case HANNOY_ERR_MAP_FULL:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			hint = "The sidecar reached its reserved map size.";
			break;
		case HANNOY_ERR_CORRUPT:
		case HANNOY_ERR_NOT_FOUND:
			code = ERRCODE_INDEX_CORRUPTED;
			hint = "REINDEX the index to rebuild its sidecar.";
			break;
		case HANNOY_ERR_INVALID:
			code = ERRCODE_DATA_EXCEPTION;
			break;
		case HANNOY_ERR_LIMIT:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			break;
		default:
			code = ERRCODE_INTERNAL_ERROR;
			break;
	}
	if (index != NULL)
		ereport(ERROR, (errcode(code),
		                errmsg("hannoy index \"%s\": %s", RelationGetRelationName(index), message),
		                hint ? errhint("%s", hint) : 0));
	ereport(ERROR, (errcode(code), errmsg("hannoy: %s", message), hint ? errhint("%s", hint) : 0));
}

/*
 * HannoyIndexMetric finds the metric of an index from the strategy number of
 * the ordering operator its operator family provides.
 */
HannoyMetric
HannoyIndexMetric(Relation index)
{
	Oid opfamily = index->rd_opfamily[0];
	Oid type = index->rd_opcintype[0];
	static const struct
	{
		int          strategy;
		HannoyMetric metric;
	} map[] = {
	    {HANNOY_STRATEGY_L2, HANNOY_METRIC_L2},
	    {HANNOY_STRATEGY_COSINE, HANNOY_METRIC_COSINE},
	    {HANNOY_STRATEGY_IP, HANNOY_METRIC_IP},
	    {HANNOY_STRATEGY_L1, HANNOY_METRIC_L1},
	    {HANNOY_STRATEGY_HAMMING, HANNOY_METRIC_HAMMING},
	};

	for (int i = 0; i < lengthof(map); i++)
	{
		if (OidIsValid(get_opfamily_member(opfamily, type, type, map[i].strategy)))
			return map[i].metric;
	}
	ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
	                errmsg("operator family of index \"%s\" has no hannoy ordering operator",
	                       RelationGetRelationName(index))));
	pg_unreachable();
}

/*
 * HannoyGetOptions returns m and the effective ef_construction of an index
 * (max(64, 2m) when not set).
 */
void
HannoyGetOptions(Relation index, int *m, int *ef_construction)
{
	HannoyRelOptions *opts = (HannoyRelOptions *) index->rd_options;

	*m = opts ? opts->m : HANNOY_DEFAULT_M;
	*ef_construction = opts ? opts->ef_construction : 0;
	if (*ef_construction == 0)
		*ef_construction = Max(HANNOY_MIN_DEFAULT_EF_CONSTRUCTION, 2 * *m);
}

/*
 * HannoySidecarRoot returns the directory under the data directory that
 * holds every sidecar.
 */
char *
HannoySidecarRoot(void)
{
	return psprintf("%s/hannoy", DataDir);
}

/*
 * HannoySidecarPath names the sidecar of a relation file the way
 * PostgreSQL names relation files: tablespace, database, relfilenode, and
 * the backend of a temporary relation.
 */
char *
HannoySidecarPath(RelFileNodeBackend rnode)
{
	if (rnode.backend == InvalidBackendId)
		return psprintf("%s/hannoy/%u_%u_%u", DataDir, rnode.node.spcNode, rnode.node.dbNode,
		                rnode.node.relNode);
	return psprintf("%s/hannoy/t%d_%u_%u_%u", DataDir, rnode.backend, rnode.node.spcNode,
	                rnode.node.dbNode, rnode.node.relNode);
}

/*
 * HannoyDefaultEnvConfig returns how this backend opens environments.
 */
HannoyEnvConfig
HannoyDefaultEnvConfig(void)
{
	HannoyEnvConfig config;

	/* every backend may hold several scans of one index at once */
	config.max_readers = (uint32) Max(126, (MaxBackends + max_prepared_xacts + 8) * 4);
	config.map_size = HANNOY_MAP_SIZE;
	config.file_mode = pg_file_create_mode;
	config.dir_mode = pg_dir_create_mode;
	config.durable = enableFsync;
	return config;
}

/*
 * HannoyReadMetaPage copies the metapage; false when the index has none or
 * it is not a hannoy metapage.
 */
bool
HannoyReadMetaPage(Relation index, HannoyMetaPageData *meta)
{
	Buffer buf;
	Page   page;
	bool   ok;

	if (RelationGetNumberOfBlocks(index) == 0)
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

/* Closes the cache entry at 'i' and compacts the cache. */
static void
env_cache_drop(int i)
{
	hannoy_env_close(env_cache[i].env);
	for (int fds = 0; fds < HANNOY_FDS_PER_ENV; fds++)
		ReleaseExternalFD();
	env_cache[i] = env_cache[--env_cache_used];
}

/*
 * HannoyRelcacheCallback closes idle handles on the sidecar of an index
 * whose relcache entry was invalidated (DROP, REINDEX, TRUNCATE...): a
 * handle on a removed sidecar would keep its deleted files, and their disk
 * space, alive.  The next use reopens it.
 */
void
HannoyRelcacheCallback(Datum arg, Oid relid)
{
	for (int i = env_cache_used - 1; i >= 0; i--)
	{
		if (env_cache[i].pins == 0 && (relid == InvalidOid || env_cache[i].indexoid == relid))
			env_cache_drop(i);
	}
}

/*
 * HannoyForgetEnv closes this backend's handle on a relation file's sidecar
 * (before the sidecar is rebuilt or removed).
 */
void
HannoyForgetEnv(RelFileNodeBackend rnode)
{
	for (int i = 0; i < env_cache_used; i++)
	{
		if (RelFileNodeBackendEquals(env_cache[i].rnode, rnode))
		{
			if (env_cache[i].pins > 0)
				elog(ERROR, "hannoy sidecar is still in use by a scan");
			env_cache_drop(i);
			return;
		}
	}
}

/* Finds the cache entry of an open environment. */
static HannoyEnvCacheEntry *
env_cache_entry(HannoyEnv *env)
{
	for (int i = 0; i < env_cache_used; i++)
		if (env_cache[i].env == env)
			return &env_cache[i];
	elog(ERROR, "hannoy environment is not in the cache");
	pg_unreachable();
}

/* HannoyEnvPin keeps an environment open while a scan uses it. */
void
HannoyEnvPin(HannoyEnv *env)
{
	env_cache_entry(env)->pins++;
}

/* HannoyEnvUnpin releases HannoyEnvPin (safe during abort cleanup). */
void
HannoyEnvUnpin(HannoyEnv *env)
{
	for (int i = 0; i < env_cache_used; i++)
		if (env_cache[i].env == env && env_cache[i].pins > 0)
			env_cache[i].pins--;
}

/*
 * HannoyOpenEnv returns this backend's handle on the index's sidecar,
 * opening it on first use (never creating one), and checks that it belongs
 * to this index, this build, this system and this timeline (I6).  When it is
 * unusable it returns NULL with the reason in *why if missing_ok, and
 * raises an error otherwise.
 */
HannoyEnv *
HannoyOpenEnv(Relation index, HannoyMetaPageData *meta, bool missing_ok, const char **why)
{
	RelFileNodeBackend   rnode;
	HannoyEnvCacheEntry *entry = NULL;
	HannoyMeta           smeta;
	HannoyError          err;
	HannoyStatus         st;
	const char          *reason = NULL;

	if (!HannoyReadMetaPage(index, meta))
		reason = "its metapage is missing or invalid";
	else if (meta->flags & HANNOY_META_BROKEN)
		reason = HANNOY_REASON_BROKEN;
	else if (RecoveryInProgress())
		reason = "its sidecar cannot be read while the server is in recovery";
	else if (meta->flags & HANNOY_META_INIT_FORK)
		reason = "it has no sidecar yet";

	if (reason == NULL)
	{
		rnode.node = index->rd_node;
		rnode.backend = index->rd_backend;
		for (int i = 0; i < env_cache_used; i++)
		{
			if (RelFileNodeBackendEquals(env_cache[i].rnode, rnode))
			{
				entry = &env_cache[i];
				break;
			}
		}
		/* a handle on an older sidecar of a reused relfilenode is stale */
		if (entry != NULL && entry->generation != meta->generation && entry->pins == 0)
		{
			env_cache_drop((int) (entry - env_cache));
			entry = NULL;
		}
		if (entry == NULL)
		{
			char           *path = HannoySidecarPath(rnode);
			HannoyEnvConfig config = HannoyDefaultEnvConfig();
			HannoyEnv      *env;

			if (env_cache_used >= HANNOY_ENV_CACHE_SIZE)
			{
				int victim = -1;

				for (int i = 0; i < env_cache_used; i++)
					if (env_cache[i].pins == 0 &&
					    (victim < 0 || env_cache[i].last_used < env_cache[victim].last_used))
						victim = i;
				if (victim >= 0)
					env_cache_drop(victim);
			}
			if (env_cache_used == env_cache_capacity)
			{
				int newcap = Max(HANNOY_ENV_CACHE_SIZE, env_cache_capacity * 2);

				if (env_cache == NULL)
					env_cache =
					    MemoryContextAlloc(TopMemoryContext, sizeof(HannoyEnvCacheEntry) * newcap);
				else
					env_cache = repalloc(env_cache, sizeof(HannoyEnvCacheEntry) * newcap);
				env_cache_capacity = newcap;
			}
			for (int fds = 0; fds < HANNOY_FDS_PER_ENV; fds++)
			{
				if (!AcquireExternalFD())
				{
					while (fds-- > 0)
						ReleaseExternalFD();
					ereport(ERROR,
					        (errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					         errmsg("out of file descriptors for hannoy sidecars"),
					         errhint("Raise max_files_per_process or use fewer hannoy indexes "
					                 "in one query.")));
				}
			}
			st = hannoy_env_open(path, &config, &env, &err);
			if (st != HANNOY_OK)
			{
				for (int fds = 0; fds < HANNOY_FDS_PER_ENV; fds++)
					ReleaseExternalFD();
				if (st != HANNOY_ERR_NOT_FOUND && !missing_ok)
					HannoyReportError(st, &err, index);
				reason = st == HANNOY_ERR_NOT_FOUND ? HANNOY_REASON_MISSING
				                                    : "its sidecar cannot be opened";
			}
			else
			{
				entry = &env_cache[env_cache_used++];
				entry->rnode = rnode;
				entry->indexoid = RelationGetRelid(index);
				entry->env = env;
				entry->pins = 0;
				entry->generation = 0;
				entry->checked_tli = 0;
			}
			pfree(path);
		}
	}

	/*
	 * The sidecar's identity was checked against this metapage generation on
	 * this timeline already: nothing but a REINDEX (another generation) or a
	 * promotion (another timeline) changes it, so a scan need not read it.
	 */
	if (reason == NULL && entry->generation == meta->generation &&
	    entry->checked_tli == GetWALInsertionTimeLine())
	{
		entry->last_used = ++env_cache_clock;
		return entry->env;
	}

	if (reason == NULL)
	{
		st = hannoy_env_meta(entry->env, &smeta, &err);
		if (st != HANNOY_OK)
		{
			if (!missing_ok)
				HannoyReportError(st, &err, index);
			reason = "its sidecar cannot be read";
		}
		else if (smeta.generation != meta->generation)
			reason = HANNOY_REASON_OTHER_BUILD;
		else if (smeta.system_id != GetSystemIdentifier())
			reason = HANNOY_REASON_OTHER_SYSTEM;
		else if (smeta.timeline != GetWALInsertionTimeLine())
			reason = HANNOY_REASON_OTHER_TIMELINE;
		else if (smeta.metric != meta->metric)
			reason = "its sidecar uses another metric";
		else
		{
			entry->generation = meta->generation;
			entry->checked_tli = smeta.timeline;
			entry->last_used = ++env_cache_clock;
			return entry->env;
		}
	}

	if (why)
		*why = reason;
	if (missing_ok)
		return NULL;
	ereport(
	    ERROR,
	    (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
	     errmsg("hannoy index \"%s\" cannot be used: %s", RelationGetRelationName(index), reason),
	     errhint("REINDEX INDEX %s;", quote_identifier(RelationGetRelationName(index)))));
	pg_unreachable();
}

/*
 * HannoyMarkBroken records in the metapage that the index's sidecar is
 * unusable for good ('why' one of the permanent reasons: missing, another
 * build, system or timeline), so every backend stops trusting it until
 * REINDEX writes a new metapage.  Nothing happens during recovery or for a
 * passing reason (such as running out of file descriptors).
 */
void
HannoyMarkBroken(Relation index, const char *why)
{
	HannoyMetaPageData meta;

	if (RecoveryInProgress() ||
	    (why != HANNOY_REASON_MISSING && why != HANNOY_REASON_OTHER_BUILD &&
	     why != HANNOY_REASON_OTHER_SYSTEM && why != HANNOY_REASON_OTHER_TIMELINE))
		return;
	LockPage(index, HANNOY_METAPAGE_BLKNO, ExclusiveLock);
	if (HannoyReadMetaPage(index, &meta) && !(meta.flags & HANNOY_META_BROKEN))
	{
		meta.flags |= HANNOY_META_BROKEN;
		HannoyWriteMetaPage(index, MAIN_FORKNUM, &meta, false);
	}
	UnlockPage(index, HANNOY_METAPAGE_BLKNO, ExclusiveLock);
}

/*
 * HannoyIndexUsable tells whether scans of the index can be trusted (I6);
 * an index whose metapage says it is empty and has no sidecar yet is
 * usable.
 */
bool
HannoyIndexUsable(Relation index, const char **why)
{
	HannoyMetaPageData meta;
	const char        *reason = NULL;

	if (HannoyOpenEnv(index, &meta, true, &reason) != NULL)
		return true;
	if (why)
		*why = reason;
	return meta.magic == HANNOY_MAGIC && (meta.flags & HANNOY_META_INIT_FORK) &&
	       !RecoveryInProgress();
}

/*
 * HannoyCheckVectorArray checks that a real[] is a usable vector: one
 * dimension, not empty, no NULL elements, finite values, at most
 * HANNOY_MAX_DIMS elements.
 */
void
HannoyCheckVectorArray(ArrayType *array, const char *what)
{
	int     n;
	float4 *v;

	if (ARR_ELEMTYPE(array) != FLOAT4OID)
		ereport(ERROR,
		        (errcode(ERRCODE_DATATYPE_MISMATCH), errmsg("%s must be a real[] array", what)));
	if (ARR_NDIM(array) == 0)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION), errmsg("%s must not be empty", what)));
	if (ARR_NDIM(array) != 1)
		ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
		                errmsg("%s must be a one-dimensional array", what),
		                errdetail("The array has %d subscripts.", ARR_NDIM(array))));
	if (ARR_HASNULL(array) && array_contains_nulls(array))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
		                errmsg("%s must not contain NULL elements", what)));
	n = ARR_DIMS(array)[0];
	if (n > HANNOY_MAX_DIMS)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("%s has %d dimensions, more than the maximum of %d", what, n,
		                       HANNOY_MAX_DIMS)));
	v = (float4 *) ARR_DATA_PTR(array);
	for (int i = 0; i < n; i++)
	{
		if (isnan(v[i]))
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("%s must not contain NaN (element %d)", what, i + 1)));
		if (isinf(v[i]))
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("%s must not contain infinity (element %d)", what, i + 1)));
	}
}

/*
 * HannoyDatumToVector checks an indexed value (query false) or an ORDER BY
 * argument (query true) of 'index' and returns a pointer to its raw vector
 * (float4 elements or bit bytes), valid as long as the detoasted value.
 * 'expected_dims' 0 accepts any length.  A wrong length is reported the way
 * the operator reports it for queries, and against the index for rows.
 */
void *
HannoyDatumToVector(Relation index, Datum value, HannoyMetric metric, uint32 expected_dims,
                    bool query, uint32 *dims, bool *is_zero)
{
	*is_zero = false;
	if (metric == HANNOY_METRIC_HAMMING)
	{
		VarBit *bits = DatumGetVarBitP(value);
		int     len = VARBITLEN(bits);

		if (len == 0)
			ereport(ERROR,
			        (errcode(ERRCODE_DATA_EXCEPTION), errmsg("bit string must not be empty")));
		if (len > HANNOY_MAX_BITS)
			ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			                errmsg("bit string has %d bits, more than the maximum of %d", len,
			                       HANNOY_MAX_BITS)));
		if (expected_dims != 0 && (uint32) len != expected_dims)
		{
			if (query)
				ereport(ERROR,
				        (errcode(ERRCODE_DATA_EXCEPTION),
				         errmsg("different bit string lengths %u and %d", expected_dims, len)));
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("expected %u bits, not %d", expected_dims, len),
			                errdetail("Index \"%s\" holds bit strings of %u bits.",
			                          RelationGetRelationName(index), expected_dims)));
		}
		*dims = (uint32) len;
		return VARBITS(bits);
	}
	else
	{
		ArrayType *array = DatumGetArrayTypeP(value);
		float4    *v;
		int        n;

		HannoyCheckVectorArray(array, "vector");
		n = ARR_DIMS(array)[0];
		if (expected_dims != 0 && (uint32) n != expected_dims)
		{
			if (query)
				ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
				                errmsg("different vector dimensions %u and %d", expected_dims, n)));
			ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
			                errmsg("expected %u dimensions, not %d", expected_dims, n),
			                errdetail("Index \"%s\" holds vectors of %u dimensions.",
			                          RelationGetRelationName(index), expected_dims)));
		}
		v = (float4 *) ARR_DATA_PTR(array);
		if (metric == HANNOY_METRIC_COSINE)
		{
			bool zero = true;

			for (int i = 0; i < n && zero; i++)
				zero = v[i] == 0.0f;
			*is_zero = zero;
		}
		*dims = (uint32) n;
		return v;
	}
}

/*
 * HannoyRegisterCreatedSidecar remembers a sidecar this transaction created
 * so that it is removed if the (sub)transaction aborts (I5).
 */
void
HannoyRegisterCreatedSidecar(RelFileNodeBackend rnode)
{
	MemoryContext         old = MemoryContextSwitchTo(TopMemoryContext);
	HannoyCreatedSidecar *c = palloc(sizeof(HannoyCreatedSidecar));

	c->rnode = rnode;
	c->subid = GetCurrentSubTransactionId();
	created_sidecars = lappend(created_sidecars, c);
	MemoryContextSwitchTo(old);
}

/*
 * HannoyRemoveSidecar removes a relation file's sidecar and this backend's
 * handle on it; failures are WARNINGs (it runs at commit and abort).
 */
void
HannoyRemoveSidecar(RelFileNodeBackend rnode)
{
	char       *path = HannoySidecarPath(rnode);
	HannoyError err;

	/*
	 * A scan of the aborting transaction may still hold a read transaction
	 * (its memory is freed after this callback): keep such a handle open on
	 * the unlinked files; the generation check retires it later.
	 */
	for (int i = 0; i < env_cache_used; i++)
	{
		if (RelFileNodeBackendEquals(env_cache[i].rnode, rnode))
		{
			if (env_cache[i].pins == 0)
				env_cache_drop(i);
			else
				env_cache[i].generation = 0;
			break;
		}
	}
	if (hannoy_env_remove(path, &err) != HANNOY_OK)
		ereport(WARNING, (errcode(ERRCODE_IO_ERROR),
		                  errmsg("could not remove hannoy sidecar \"%s\": %s", path, err.message)));
	pfree(path);
}

/*
 * HannoyXactCallback applies queued inserts before commit or prepare, and
 * removes sidecars created by a transaction that aborts.
 */
void
HannoyXactCallback(XactEvent event, void *arg)
{
	ListCell *lc;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			HannoyFlushAllQueues();
			HannoyLifecyclePreCommit();
			break;
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			HannoyFlushAllQueues();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			HannoyLifecycleAtAbort();
			foreach (lc, created_sidecars)
				HannoyRemoveSidecar(((HannoyCreatedSidecar *) lfirst(lc))->rnode);
			list_free_deep(created_sidecars);
			created_sidecars = NIL;
			HannoyQueueAtXactEnd();
			break;
		case XACT_EVENT_COMMIT:
			HannoyLifecycleAtCommit();
			list_free_deep(created_sidecars);
			created_sidecars = NIL;
			HannoyQueueAtXactEnd();
			break;
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			HannoyLifecycleAtAbort();
			list_free_deep(created_sidecars);
			created_sidecars = NIL;
			HannoyQueueAtXactEnd();
			break;
	}
}

/*
 * HannoySubXactCallback removes sidecars created inside a subtransaction
 * that aborts, and hands those of a committing one to its parent.
 */
void
HannoySubXactCallback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
                      void *arg)
{
	ListCell *lc;

	HannoyLifecycleSubXact(event, mySubid, parentSubid);
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach (lc, created_sidecars)
		{
			HannoyCreatedSidecar *c = lfirst(lc);

			if (c->subid == mySubid)
			{
				HannoyRemoveSidecar(c->rnode);
				created_sidecars = foreach_delete_current(created_sidecars, lc);
				pfree(c);
			}
		}
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach (lc, created_sidecars)
		{
			HannoyCreatedSidecar *c = lfirst(lc);

			if (c->subid == mySubid)
				c->subid = parentSubid;
		}
	}
}
