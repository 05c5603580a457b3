/*
 * hannoy_am.h
 *	  Declarations shared by the C shim files (src/am): the access method's
 *	  constants, the metapage, and each file's functions.
 */
#ifndef HANNOY_AM_H
#define HANNOY_AM_H

#ifdef __cplusplus
#error "hannoy shim files are C: C++ belongs in src/core behind include/hannoy/hannoy.h"
#endif

#include "postgres.h"

#include "access/amapi.h"
#include "access/genam.h"
#include "access/reloptions.h"
#include "access/xact.h"
#include "nodes/execnodes.h"
#include "nodes/pathnodes.h"
#include "utils/array.h"
#include "storage/lwlock.h"
#include "storage/relfilenode.h"
#include "utils/relcache.h"

#include "hannoy/hannoy.h"

/* Search width (GUC hannoy.ef_search) */
#define HANNOY_DEFAULT_EF_SEARCH 40
#define HANNOY_MIN_EF_SEARCH     1
#define HANNOY_MAX_EF_SEARCH     1000

/* Rows the first window of a scan on codes re-ranks (GUC hannoy.rerank_window; 0: ef_search) */
#define HANNOY_MAX_RERANK_WINDOW 65536

/* Build threads (GUC hannoy.build_threads) */
#define HANNOY_MAX_BUILD_THREADS 64

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

/*
 * The metapage's contents.  The options follow the option table
 * (HANNOY_OPTIONS): a new option changes this layout, and so
 * HANNOY_PAGE_VERSION.
 */
typedef struct HannoyMetaPageData
{
	uint32        magic;
	uint32        version;
	uint32        metric; /* HannoyMetric */
	uint32        dims;   /* 0 until the first vector */
	HannoyOptions options;
	uint64        generation; /* equals the sidecar's */
	uint32        flags;
} HannoyMetaPageData;

/* Metapage flags */
#define HANNOY_META_INIT_FORK 0x0001 /* written by ambuildempty: no sidecar yet */
#define HANNOY_META_BROKEN    0x0002 /* the sidecar was found unusable: REINDEX */

/* Detaches a scan from an environment about to close (HannoyEnvAttach). */
typedef void (*HannoyEnvDetachFn)(void *arg);

/* A function called for each sidecar directory (HannoyForEachSidecar). */
typedef void (*HannoySidecarVisitor)(void *arg, RelFileNodeBackend rnode, const char *path);

/* A problem the heap check reports (HannoyCheckHeap). */
typedef void (*HannoyProblemReport)(void *arg, const char *kind, int64 item, const char *detail);

/*
 * The shim's files, callbacks first, then the helpers they use; a helper
 * never calls a file listed above it.
 */

/* hannoy.c: the handler and module start-up */
extern void _PG_init(void);

/* hannoyxact.c: transaction callbacks */
extern void HannoyXactCallback(XactEvent event, void *arg);
extern void HannoySubXactCallback(SubXactEvent event, SubTransactionId mySubid,
                                  SubTransactionId parentSubid, void *arg);

/* hannoysweeper.c: the start-up sweep's background workers */
extern void HannoyRegisterSweeper(void);

/* hannoylinker.c: the background worker that links a hot standby's staged rows */
extern void HannoyRegisterLinker(void);

/* hannoyseed.c: the worker that rebuilds a hot standby's untrusted replicas from the table */
struct BackgroundWorkerHandle;
extern bool HannoyStartSeeder(Oid db, struct BackgroundWorkerHandle **handle);

/* hannoyinspect.c: hannoy_verify(), hannoy_index_stats(), hannoy_index_size() */

/* hannoyheapcheck.c: the sidecar's rows against the heap */
extern void HannoyCheckHeap(Relation index, Relation heap, HannoyEnv *env,
                            HannoyProblemReport report, void *report_arg);
extern void HannoySettleUnflushed(Relation index, HannoyEnv *env);

/* hannoybuild.c: ambuild, ambuildempty */
extern IndexBuildResult *hannoybuild(Relation heap, Relation index, IndexInfo *indexInfo);
extern void              hannoybuildempty(Relation index);

/* hannoyscan.c: ambeginscan, amrescan, amgettuple, amendscan */
extern IndexScanDesc hannoybeginscan(Relation index, int nkeys, int norderbys);
extern void          hannoyrescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys,
                                  int norderbys);
extern bool          hannoygettuple(IndexScanDesc scan, ScanDirection dir);
extern void          hannoyendscan(IndexScanDesc scan);

/* hannoyvacuum.c: ambulkdelete, amvacuumcleanup */
extern IndexBulkDeleteResult *hannoybulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
                                               IndexBulkDeleteCallback callback,
                                               void                   *callback_state);
extern IndexBulkDeleteResult *hannoyvacuumcleanup(IndexVacuumInfo       *info,
                                                  IndexBulkDeleteResult *stats);

/* hannoyinsert.c: aminsert and the per-backend insert queues */
extern bool hannoyinsert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
                         Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
                         IndexInfo *indexInfo);
extern void HannoyFlushQueue(Relation index);
extern void HannoyFlushAllQueues(void);
extern void HannoyDropQueue(RelFileNodeBackend rnode);
extern void HannoyQueueAtXactEnd(void);

/* hannoysync.c: grouped syncs of committed sidecar writes */
extern void    HannoySyncInit(void);
extern LWLock *HannoyReplicaPathsLock(void);
extern uint64  HannoyServerLifetime(void);
extern uint64  HannoySidecarChanges(void);
extern void    HannoyNoteSidecarChange(void);
extern void    HannoyRedoWriting(bool writing);
extern void    HannoyYieldToRedo(int max_ms);
extern void    HannoySyncCommitted(Relation index, HannoyEnv *env, uint64 generation);

/* hannoylifecycle.c: sidecars live and die with their relation files */
extern void HannoyLifecycleInit(void);
extern void HannoyRegisterCreatedSidecar(RelFileNodeBackend rnode);
extern void HannoyLifecyclePreCommit(void);
extern void HannoyLifecycleAtEnd(bool committed, bool forget_all);
extern void HannoyLifecycleSubXact(SubXactEvent event, SubTransactionId mySubid,
                                   SubTransactionId parentSubid);
extern int  HannoySweep(void);
extern void HannoySweepDroppedDatabase(Oid db);
extern void HannoyRemoveTempSidecarsAtStart(void);

/* hannoywal.c: the WAL resource manager: row-set records and their redo */
typedef struct HannoyWalRows HannoyWalRows;
extern void                  HannoyRegisterRmgr(void);
extern bool                  HannoyWalLogs(Relation index);
extern void                  HannoyLogCreate(Relation index, const HannoyMetaPageData *meta);
extern HannoyWalRows        *HannoyWalRowsBegin(Relation index, uint64 generation);
extern void HannoyWalRowsAdd(HannoyWalRows *rows, HannoyTid tid, uint8 kind, const void *vector,
                             uint32 dims, uint32 bytes);
extern void HannoyWalRowsEnd(HannoyWalRows *rows);
extern XLogRecPtr HannoyWalInsertEnd(void);
extern void       HannoyLogRemove(Relation index, uint64 generation, const HannoyEntry *entries,
                                  uint32 count);
extern void       HannoyLogDrop(RelFileNodeBackend rnode, bool whole_database);
extern void       HannoyLogDistrust(Relation index);
extern void       HannoyDistrustCopiedReplicas(void);

/* hannoyenv.c: sidecar names, creation, the environment cache, usability */
extern char           *HannoySidecarRoot(void);
extern char           *HannoySidecarPath(RelFileNodeBackend rnode);
extern bool            HannoyParseSidecarName(const char *name, RelFileNodeBackend *rnode);
extern void            HannoyForEachSidecar(int elevel, HannoySidecarVisitor fn, void *arg);
extern HannoyEnvConfig HannoyDefaultEnvConfig(void);
extern HannoyStatus    HannoyAdoptReplica(HannoyEnv *env, const char *path, bool *adopted,
                                          HannoyError *err);
extern void            HannoyLinkStaged(Relation index, HannoyEnv *env);
extern HannoyEnv      *HannoyCreateSidecar(Relation index, HannoyMetaPageData *meta, uint32 dims,
                                           bool new_page);
extern HannoyEnv      *HannoyRecreateSidecar(Relation index, HannoyMetaPageData *meta);
extern HannoyEnv      *HannoyOpenEnv(Relation index, HannoyMetaPageData *meta, bool missing_ok,
                                     const char **why);
extern HannoyEnv *HannoyOpenEnvForWrite(Relation index, HannoyMetaPageData *meta, bool *rebuilding,
                                        const char **why);
extern void       HannoyForgetEnv(RelFileNodeBackend rnode);
extern void       HannoyEnvPin(HannoyEnv *env);
extern void       HannoyEnvUnpin(HannoyEnv *env);
extern void       HannoyEnvAttach(HannoyEnv *env, HannoyEnvDetachFn detach, void *arg);
extern void       HannoyEnvDetach(HannoyEnv *env, void *arg);
extern void       HannoyEnvTouch(HannoyEnv *env);
extern void       HannoyEnvFile(HannoyEnv *env, uint64 *dev, uint64 *ino);
extern void       HannoyReleaseDirtyMarkers(void);
extern void       HannoyRelcacheCallback(Datum arg, Oid relid);
extern void       HannoyMarkBroken(Relation index, const char *why);
extern bool       HannoyIndexUsable(Relation index, const char **why);
extern void       HannoyRemoveSidecar(RelFileNodeBackend rnode);
extern HannoyStatus HannoyRemoveSidecarDir(const char *path, HannoyError *err);

/* hannoymeta.c: the metric, the options and the metapage of an index */
extern void          HannoyDefineOptions(void);
extern bytea        *HannoyParseOptions(Datum reloptions, bool validate);
extern HannoyOptions HannoyGetOptions(Relation index);
extern uint32        HannoyGetQuantizer(Relation index);
extern bool          HannoyGetRerankHeap(Relation index);
extern HannoyMetric  HannoyIndexMetric(Relation index);
extern void HannoyInitMetaPage(Relation index, HannoyMetaPageData *meta, uint32 dims, uint32 flags);
extern bool HannoyReadMetaPage(Relation index, HannoyMetaPageData *meta);
extern void HannoyForgetMetaPageBlock(Relation index);
extern void HannoyWriteMetaPage(Relation index, ForkNumber fork, const HannoyMetaPageData *meta,
                                bool new_page);
extern bool HannoyAwaitsSidecar(const HannoyMetaPageData *meta);

/* hannoyvector.c: SQL values to vectors */
extern void  HannoyCheckVectorArray(ArrayType *array, const char *what);
extern void *HannoyDatumToVector(Relation index, Datum value, HannoyMetric metric,
                                 uint32 expected_dims, bool query, uint32 *dims, bool *is_zero);

/* hannoyerror.c: core statuses and unusable indexes as ereports */
extern void HannoyReportError(HannoyStatus status, const HannoyError *err, Relation index);
extern void HannoyReportUnusable(Relation index, const char *why, int elevel,
                                 const char *consequence);

/* hannoyguc.c: GUCs */
extern int  hannoy_ef_search;
extern int  hannoy_rerank_window;
extern int  hannoy_build_threads;
extern bool hannoy_preloaded;
extern int  hannoy_test_search_delay;
extern int  hannoy_test_verify_delay;
extern bool hannoy_test_fail_redo;
extern bool hannoy_test_pause_linker;
extern int  hannoy_test_rebuild_delay;
extern void HannoyDefineGucs(void);

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
