/*
 * am.h
 *	  Declarations shared by the C shim files (src/am): the access method's
 *	  constants, options, metapage, and helpers around the core's C ABI.
 */
#ifndef HANNOY_AM_H
#define HANNOY_AM_H

#include "hannoy/shim_guard.h"

#include "postgres.h"

#include "access/amapi.h"
#include "access/genam.h"
#include "access/reloptions.h"
#include "access/xact.h"
#include "nodes/execnodes.h"
#include "nodes/pathnodes.h"
#include "utils/array.h"
#include "storage/relfilenode.h"
#include "utils/relcache.h"

#include "hannoy/hannoy.h"

/* Graph parameters (reloptions) */
#define HANNOY_DEFAULT_M                   16
#define HANNOY_MIN_M                       2
#define HANNOY_MAX_M                       100
#define HANNOY_MIN_EF_CONSTRUCTION         4
#define HANNOY_MAX_EF_CONSTRUCTION         1000
#define HANNOY_MIN_DEFAULT_EF_CONSTRUCTION 64

/* Search width (GUC hannoy.ef_search) */
#define HANNOY_DEFAULT_EF_SEARCH 40
#define HANNOY_MIN_EF_SEARCH     1
#define HANNOY_MAX_EF_SEARCH     1000

/* Build threads (GUC hannoy.build_threads) */
#define HANNOY_MAX_BUILD_THREADS 64

/* Strategy numbers: one ordering operator per metric. */
#define HANNOY_STRATEGY_L2      1
#define HANNOY_STRATEGY_COSINE  2
#define HANNOY_STRATEGY_IP      3
#define HANNOY_STRATEGY_L1      4
#define HANNOY_STRATEGY_HAMMING 5

/* Support function 1: the distance function of the opclass. */
#define HANNOY_DISTANCE_PROC 1

/* Longest slice of core work between two interrupt checks. */
#define HANNOY_SLICE_MS 100

/* Rows, and vector bytes, an insert queue holds before it is applied. */
#define HANNOY_QUEUE_MAX_ROWS  10000
#define HANNOY_QUEUE_MAX_BYTES (64 * 1024 * 1024)

/* Build phases shown in pg_stat_progress_create_index. */
#define PROGRESS_HANNOY_PHASE_LOAD  2
#define PROGRESS_HANNOY_PHASE_GRAPH 3
#define PROGRESS_HANNOY_PHASE_WRITE 4

/* Metapage (block 0 of the main fork) */
#define HANNOY_METAPAGE_BLKNO 0
#define HANNOY_MAGIC          0x484E4E59 /* "HNNY" */
#define HANNOY_PAGE_VERSION   1

typedef struct HannoyMetaPageData
{
	uint32 magic;
	uint32 version;
	uint32 metric; /* HannoyMetric */
	uint32 dims;   /* 0 until the first vector */
	uint32 m;
	uint32 ef_construction;
	uint64 generation; /* equals the sidecar's */
	uint32 flags;
} HannoyMetaPageData;

typedef HannoyMetaPageData *HannoyMetaPage;

/* Metapage flags */
#define HANNOY_META_INIT_FORK 0x0001 /* written by ambuildempty: no sidecar yet */
#define HANNOY_META_BROKEN    0x0002 /* the sidecar was found unusable: REINDEX */

/* Reloptions */
typedef struct HannoyRelOptions
{
	int32 vl_len_; /* varlena header (do not touch directly!) */
	int   m;
	int   ef_construction; /* 0: not set */
} HannoyRelOptions;

/* GUCs */
extern int  hannoy_ef_search;
extern int  hannoy_build_threads;
extern bool hannoy_preloaded;
extern int  hannoy_test_search_delay;
extern int  hannoy_test_verify_delay;

/* hannoy.c */
extern void _PG_init(void);

/* hannoyutils.c */
extern void         HannoyReportError(HannoyStatus status, const HannoyError *err, Relation index);
extern HannoyMetric HannoyIndexMetric(Relation index);
extern void         HannoyGetOptions(Relation index, int *m, int *ef_construction);
extern char        *HannoySidecarPath(RelFileNodeBackend rnode);
extern char        *HannoySidecarRoot(void);
extern HannoyEnvConfig HannoyDefaultEnvConfig(void);
extern bool            HannoyReadMetaPage(Relation index, HannoyMetaPageData *meta);
extern void HannoyWriteMetaPage(Relation index, ForkNumber fork, const HannoyMetaPageData *meta,
                                bool new_page);
extern HannoyEnv *HannoyOpenEnv(Relation index, HannoyMetaPageData *meta, bool missing_ok,
                                const char **why);
extern void       HannoyForgetEnv(RelFileNodeBackend rnode);
extern void       HannoyEnvPin(HannoyEnv *env);
extern void       HannoyEnvUnpin(HannoyEnv *env);
extern void       HannoyMarkBroken(Relation index, const char *why);
extern bool       HannoyIndexUsable(Relation index, const char **why);
extern void      *HannoyDatumToVector(Relation index, Datum value, HannoyMetric metric,
                                      uint32 expected_dims, bool query, uint32 *dims, bool *is_zero);
extern void       HannoyCheckVectorArray(ArrayType *array, const char *what);
extern void       HannoyRegisterCreatedSidecar(RelFileNodeBackend rnode);
extern void       HannoyXactCallback(XactEvent event, void *arg);
extern void       HannoySubXactCallback(SubXactEvent event, SubTransactionId mySubid,
                                        SubTransactionId parentSubid, void *arg);

extern void HannoyRemoveSidecar(RelFileNodeBackend rnode);
extern void HannoyRelcacheCallback(Datum arg, Oid relid);

/* hannoylifecycle.c */
extern void HannoyLifecycleInit(void);
extern void HannoyLifecyclePreCommit(void);
extern void HannoyLifecycleAtCommit(void);
extern void HannoyLifecycleAtAbort(void);
extern void HannoyLifecycleSubXact(SubXactEvent event, SubTransactionId mySubid,
                                   SubTransactionId parentSubid);
extern int  HannoySweep(void);
extern void HannoySweepDroppedDatabase(Oid db);
extern bool HannoyParseSidecarName(const char *name, RelFileNodeBackend *rnode);
extern void HannoyRemoveTempSidecarsAtStart(void);

/* hannoysweeper.c */
extern void HannoyRegisterSweeper(void);

/* hannoyinsert.c */
extern bool hannoyinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
                         Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
                         IndexInfo *indexInfo);
extern void HannoySyncInit(void);
extern void HannoySyncCommitted(Relation index, HannoyEnv *env, uint64 generation);
extern void HannoyFlushQueue(Relation index);
extern void HannoyFlushAllQueues(void);
extern void HannoyDropQueue(RelFileNodeBackend rnode);
extern void HannoyQueueAtXactEnd(void);

/* hannoybuild.c */
extern IndexBuildResult *hannoybuild(Relation heap, Relation index, IndexInfo *indexInfo);
extern void              hannoybuildempty(Relation index);
extern HannoyEnv        *HannoyRecreateSidecar(Relation index, HannoyMetaPageData *meta);

/* hannoyscan.c */
extern IndexScanDesc hannoybeginscan(Relation index, int nkeys, int norderbys);
extern void          hannoyrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys,
                                  int norderbys);
extern bool          hannoygettuple(IndexScanDesc scan, ScanDirection dir);
extern void          hannoyendscan(IndexScanDesc scan);

/* hannoyheapcheck.c */
typedef void (*HannoyProblemReport)(void *arg, const char *kind, int64 item, const char *detail);
extern void HannoyCheckHeap(Relation index, Relation heap, HannoyEnv *env,
                            HannoyProblemReport report, void *report_arg);

/* hannoyvacuum.c */
extern IndexBulkDeleteResult *hannoybulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
                                               IndexBulkDeleteCallback callback,
                                               void                   *callback_state);
extern IndexBulkDeleteResult *hannoyvacuumcleanup(IndexVacuumInfo       *info,
                                                  IndexBulkDeleteResult *stats);

/* Packs an ItemPointer for the core. */
static inline HannoyTid
HannoyTidFromItemPointer(ItemPointer tid)
{
	return ((HannoyTid) ItemPointerGetBlockNumberNoCheck(tid) << 16) |
	       ItemPointerGetOffsetNumberNoCheck(tid);
}

/* Unpacks a core TID into an ItemPointer. */
static inline void
HannoyTidToItemPointer(HannoyTid tid, ItemPointer out)
{
	ItemPointerSet(out, (BlockNumber) (tid >> 16), (OffsetNumber) (tid & 0xFFFF));
}

#endif /* HANNOY_AM_H */
