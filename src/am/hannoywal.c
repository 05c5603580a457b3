/*
 * hannoywal.c
 *	  hannoy's WAL resource manager (DESIGN.md "Replication and recovery"):
 *	  the primary logs each index's row set logically (created, rows added,
 *	  rows removed, sidecar dropped), and a standby's redo stages those rows
 *	  in a replica sidecar that its scans read exactly.  Links are never
 *	  logged.  Redo never raises an ERROR: a record it cannot apply makes the
 *	  sidecar untrusted (unusable on this server) instead.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/parallel.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogreader.h"
#include "common/file_perm.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/fd.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hannoy_am.h"

/*
 * The resource manager's id.  128 is PostgreSQL's experimental id: a
 * released hannoy must use an id registered on the PostgreSQL wiki's list
 * of custom WAL resource managers (DESIGN.md "Replication and recovery").
 */
#define HANNOY_RMGR_ID RM_EXPERIMENTAL_ID

/* Record types (the high four bits of xl_info). */
#define XLOG_HANNOY_CREATE 0x00 /* a sidecar was created: the index is empty */
#define XLOG_HANNOY_ROWS   0x10 /* rows were added */
#define XLOG_HANNOY_REMOVE 0x20 /* rows were removed by VACUUM */
#define XLOG_HANNOY_DROP   0x30 /* a sidecar (or a database's sidecars) was removed */

/* A rows record is logged once it holds this many bytes (or at the end). */
#define HANNOY_WAL_ROWS_BYTES (256 * 1024)

/* Bytes of a packed TID in a record. */
#define HANNOY_WAL_TID_BYTES 6

/* Flags of a drop record. */
#define HANNOY_WAL_DROP_DATABASE 0x1 /* every sidecar of the database */

/* XLOG_HANNOY_CREATE: the new sidecar's identity and shape. */
typedef struct xl_hannoy_create
{
	RelFileNode   node;
	Oid           index_oid;
	uint64        generation;
	uint32        metric;
	uint32        dims;
	HannoyOptions options;
} xl_hannoy_create;

/*
 * XLOG_HANNOY_ROWS: 'count' rows follow, each a packed TID (6 bytes,
 * big-endian), a kind byte (HannoyUnindexedKind) and, for kind 0, the
 * vector ('vector_bytes').
 */
typedef struct xl_hannoy_rows
{
	RelFileNode node;
	uint32      dims;
	uint64      generation;
	uint32      vector_bytes;
	uint32      count;
} xl_hannoy_rows;

/* XLOG_HANNOY_REMOVE: 'count' packed TIDs (6 bytes each) follow. */
typedef struct xl_hannoy_remove
{
	RelFileNode node;
	uint32      count;
	uint64      generation;
} xl_hannoy_remove;

/* XLOG_HANNOY_DROP */
typedef struct xl_hannoy_drop
{
	RelFileNode node;
	uint32      flags;
} xl_hannoy_drop;

/* Rows being collected for one rows record (HannoyWalRowsBegin). */
struct HannoyWalRows
{
	Relation       index;
	xl_hannoy_rows header;
	StringInfoData data;
};

/* The startup process's one open replica (redo), and its memory. */
static HannoyEnv    *redo_env = NULL;
static bool          redo_exit_hooked = false;
static RelFileNode   redo_node;
static struct stat   redo_file; /* its data file when it was opened */
static MemoryContext redo_cxt = NULL;

static void        hannoy_redo(XLogReaderState *record);
static void        hannoy_desc(StringInfo buf, XLogReaderState *record);
static const char *hannoy_identify(uint8 info);
static void        hannoy_redo_cleanup(void);

static RmgrData hannoy_rmgr = {
    .rm_name = "hannoy",
    .rm_redo = hannoy_redo,
    .rm_desc = hannoy_desc,
    .rm_identify = hannoy_identify,
    .rm_startup = NULL,
    .rm_cleanup = hannoy_redo_cleanup,
    .rm_mask = NULL,
    .rm_decode = NULL,
};

/*
 * HannoyRegisterRmgr registers the resource manager (from _PG_init while
 * shared_preload_libraries is loaded): a server that replays hannoy
 * records without it stops at the first one.
 */
void
HannoyRegisterRmgr(void)
{
	RegisterCustomRmgr(HANNOY_RMGR_ID, &hannoy_rmgr);
}

/* Packs a TID into a record's 6 bytes. */
static void
put_tid(char *out, HannoyTid tid)
{
	for (int i = 0; i < HANNOY_WAL_TID_BYTES; i++)
		out[i] = (char) ((tid >> (8 * (HANNOY_WAL_TID_BYTES - 1 - i))) & 0xFF);
}

/* Unpacks a TID from a record's 6 bytes. */
static HannoyTid
get_tid(const char *in)
{
	HannoyTid tid = 0;

	for (int i = 0; i < HANNOY_WAL_TID_BYTES; i++)
		tid = (tid << 8) | (unsigned char) in[i];
	return tid;
}

/*
 * HannoyWalLogs tells whether changes to the index's row set go to WAL: a
 * WAL-logged relation on a server whose WAL a standby or an archive may
 * read.
 */
bool
HannoyWalLogs(Relation index)
{
	return RelationNeedsWAL(index) && XLogIsNeeded();
}

/*
 * HannoyLogCreate logs that the index got a fresh, empty sidecar described
 * by 'meta' (before any of its rows is logged).
 */
void
HannoyLogCreate(Relation index, const HannoyMetaPageData *meta)
{
	xl_hannoy_create xlrec;

	if (!HannoyWalLogs(index))
		return;
	memset(&xlrec, 0, sizeof(xlrec));
	xlrec.node = index->rd_node;
	xlrec.index_oid = RelationGetRelid(index);
	xlrec.generation = meta->generation;
	xlrec.metric = meta->metric;
	xlrec.dims = meta->dims;
	xlrec.options = meta->options;
	XLogBeginInsert();
	XLogRegisterData((char *) &xlrec, sizeof(xlrec));
	XLogInsert(HANNOY_RMGR_ID, XLOG_HANNOY_CREATE);
}

/*
 * HannoyWalRowsBegin starts collecting the rows the index's sidecar with
 * 'generation' gets; NULL when the index is not WAL-logged.
 */
HannoyWalRows *
HannoyWalRowsBegin(Relation index, uint64 generation)
{
	HannoyWalRows *rows;

	if (!HannoyWalLogs(index))
		return NULL;
	rows = palloc0(sizeof(HannoyWalRows));
	rows->index = index;
	rows->header.node = index->rd_node;
	rows->header.generation = generation;
	initStringInfo(&rows->data);
	return rows;
}

/* Logs the rows collected so far as one record. */
static void
log_rows(HannoyWalRows *rows)
{
	if (rows->header.count == 0)
		return;
	XLogBeginInsert();
	XLogRegisterData((char *) &rows->header, sizeof(rows->header));
	XLogRegisterData(rows->data.data, rows->data.len);
	XLogInsert(HANNOY_RMGR_ID, XLOG_HANNOY_ROWS);
	rows->header.count = 0;
	rows->header.dims = 0;
	rows->header.vector_bytes = 0;
	resetStringInfo(&rows->data);
}

/*
 * HannoyWalRowsAdd adds one row the sidecar now holds ('vector' NULL: an
 * unindexed row of 'kind'; else 'dims' dimensions, 'bytes' bytes), logging
 * a record when enough are collected.
 */
void
HannoyWalRowsAdd(HannoyWalRows *rows, HannoyTid tid, uint8 kind, const void *vector, uint32 dims,
                 uint32 bytes)
{
	char head[HANNOY_WAL_TID_BYTES + 1];

	if (rows == NULL)
		return;
	/* one record has vectors of one length */
	if (vector != NULL && rows->header.dims != 0 && rows->header.dims != dims)
		log_rows(rows);
	put_tid(head, tid);
	head[HANNOY_WAL_TID_BYTES] = (char) (vector != NULL ? HANNOY_ROW_INDEXED : kind);
	appendBinaryStringInfo(&rows->data, head, sizeof(head));
	if (vector != NULL)
	{
		appendBinaryStringInfo(&rows->data, vector, bytes);
		rows->header.dims = dims;
		rows->header.vector_bytes = bytes;
	}
	rows->header.count++;
	if (rows->data.len >= HANNOY_WAL_ROWS_BYTES)
		log_rows(rows);
}

/* HannoyWalRowsEnd logs the rows still collected and frees the collection. */
void
HannoyWalRowsEnd(HannoyWalRows *rows)
{
	if (rows == NULL)
		return;
	log_rows(rows);
	pfree(rows->data.data);
	pfree(rows);
}

/*
 * HannoyWalInsertEnd returns the end of all WAL inserted so far, as a
 * position XLogFlush accepts.  GetXLogInsertRecPtr() points past the header
 * of the next page when the insert position sits on a page boundary, a
 * position not yet written; the end of the data is then the page start.
 */
XLogRecPtr
HannoyWalInsertEnd(void)
{
	XLogRecPtr ptr = GetXLogInsertRecPtr();

	if (XLogSegmentOffset(ptr, wal_segment_size) == SizeOfXLogLongPHD)
		ptr -= SizeOfXLogLongPHD;
	else if (ptr % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		ptr -= SizeOfXLogShortPHD;
	return ptr;
}

/*
 * HannoyLogRemove logs that VACUUM removes 'count' rows from the sidecar
 * with 'generation', and flushes the record: it must be on disk before the
 * sidecar loses the rows, or a crash could leave the standby with rows the
 * primary no longer names (DESIGN.md "Replication and recovery").  Where
 * nothing is logged (wal_level = minimal) it flushes the WAL inserted so
 * far: the commits of the transactions that deleted the rows must be on
 * disk before their entries go, or a crash could bring a row back without
 * its entry (DESIGN.md "Durable removal").
 */
void
HannoyLogRemove(Relation index, uint64 generation, const HannoyEntry *entries, uint32 count)
{
	xl_hannoy_remove xlrec;
	char            *tids;
	XLogRecPtr       end;

	if (count == 0)
		return;
	if (!HannoyWalLogs(index))
	{
		if (RelationNeedsWAL(index))
			XLogFlush(HannoyWalInsertEnd());
		return;
	}
	memset(&xlrec, 0, sizeof(xlrec));
	xlrec.node = index->rd_node;
	xlrec.generation = generation;
	xlrec.count = count;
	tids = palloc((Size) count * HANNOY_WAL_TID_BYTES);
	for (uint32 i = 0; i < count; i++)
		put_tid(tids + (Size) i * HANNOY_WAL_TID_BYTES, entries[i].tid);
	XLogBeginInsert();
	XLogRegisterData((char *) &xlrec, sizeof(xlrec));
	XLogRegisterData(tids, (int) count * HANNOY_WAL_TID_BYTES);
	end = XLogInsert(HANNOY_RMGR_ID, XLOG_HANNOY_REMOVE);
	XLogFlush(end);
	pfree(tids);
}

/*
 * HannoyLogDrop logs that the sidecar of a permanent relation file (or,
 * with 'whole_database', every sidecar of its database) was removed.  It
 * runs after a transaction ended, so a failure is a WARNING.
 */
void
HannoyLogDrop(RelFileNodeBackend rnode, bool whole_database)
{
	xl_hannoy_drop xlrec;
	MemoryContext  cxt = CurrentMemoryContext;

	if (rnode.backend != InvalidBackendId || !XLogIsNeeded() || RecoveryInProgress() ||
	    IsParallelWorker())
		return;
	memset(&xlrec, 0, sizeof(xlrec));
	xlrec.node = rnode.node;
	xlrec.flags = whole_database ? HANNOY_WAL_DROP_DATABASE : 0;
	PG_TRY();
	{
		XLogBeginInsert();
		XLogRegisterData((char *) &xlrec, sizeof(xlrec));
		/* flushed: a standby learns of the removal with the transaction's end */
		XLogFlush(XLogInsert(HANNOY_RMGR_ID, XLOG_HANNOY_DROP));
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING,
		        (errmsg("could not log the removal of a hannoy sidecar: %s", edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * HannoyLogDistrust logs that a standby must not trust its replica of the
 * index any more: an insert or VACUUM skipped the primary's sidecar, so
 * rows the replica would need are not logged.  It is a drop record: the
 * standby removes the replica, and the index is unusable there (missing
 * sidecar) until a REINDEX on the primary logs a new one.
 */
void
HannoyLogDistrust(Relation index)
{
	RelFileNodeBackend rnode;
	HannoyMetaPageData meta;

	/* a metapage marked broken (WAL-logged) tells standbys already */
	if (!HannoyWalLogs(index) ||
	    (HannoyReadMetaPage(index, &meta) && (meta.flags & HANNOY_META_BROKEN)))
		return;
	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	HannoyLogDrop(rnode, false);
}

/* ---------------------------------------------------------------------
 * Redo
 * ---------------------------------------------------------------------
 */

/* Closes the startup process's open replica. */
static void
redo_close(void)
{
	if (redo_env != NULL)
		hannoy_env_close(redo_env);
	redo_env = NULL;
}

/* At exit the open replica is closed, so its dirty marker goes (DESIGN.md "The dirty marker"). */
static void
redo_at_exit(int code, Datum arg)
{
	redo_close();
}

/*
 * Takes the lock of replica directories (HannoyReplicaPathsLock) around a
 * change of one; only core calls run under it, which never raise an
 * ERROR (hannoy_redo releases it should one come anyway).
 */
static void
paths_lock(LWLockMode mode)
{
	LWLock *lock = HannoyReplicaPathsLock();

	if (lock != NULL)
		LWLockAcquire(lock, mode);
}

/* Releases the lock paths_lock took, if this process holds it. */
static void
paths_unlock(void)
{
	LWLock *lock = HannoyReplicaPathsLock();

	if (lock != NULL && LWLockHeldByMe(lock))
		LWLockRelease(lock);
}

/*
 * Makes the replica of 'node' untrusted after a record could not be
 * applied: its index is unusable on this server from now on.
 */
static void
redo_distrust(RelFileNode node, const char *why)
{
	RelFileNodeBackend rnode;
	char              *path;
	HannoyError        err;
	HannoyStatus       st;

	if (redo_env != NULL && RelFileNodeEquals(redo_node, node))
		redo_close();
	rnode.node = node;
	rnode.backend = InvalidBackendId;
	path = HannoySidecarPath(rnode);
	paths_lock(LW_EXCLUSIVE);
	st = hannoy_replica_unmark(path, &err);
	/* so that it is rebuilt after a promotion too, not only while in recovery */
	if (st == HANNOY_OK && hannoy_env_exists(path))
		st = hannoy_env_mark_for_rebuild(path, "distrusted", &err);
	paths_unlock();
	if (st != HANNOY_OK)
		ereport(WARNING,
		        (errmsg("could not mark hannoy sidecar \"%s\" untrusted: %s", path, err.message)));
	ereport(WARNING,
	        (errmsg("hannoy sidecar \"%s\" is no longer kept from WAL: %s", path, why),
	         errdetail("Its index cannot be used on this server until the replica linker has "
	                   "rebuilt it from the table.")));
	pfree(path);
}

/*
 * Opens the replica of 'node' for redo; NULL when there is none (an index
 * this server did not see created: its sidecar is not trusted anyway) or
 * it belongs to another generation.
 */
static HannoyEnv *
redo_open(RelFileNode node, uint64 generation)
{
	RelFileNodeBackend rnode;
	char              *path;
	char               data[MAXPGPATH];
	struct stat        file;
	HannoyEnvConfig    config;
	HannoyMeta         smeta;
	HannoyError        err;
	HannoyStatus       st;

	rnode.node = node;
	rnode.backend = InvalidBackendId;
	path = HannoySidecarPath(rnode);
	snprintf(data, sizeof(data), "%s/data.mdb", path);
	/* the open replica, unless a rebuild from the table replaced it meanwhile */
	if (redo_env != NULL && RelFileNodeEquals(redo_node, node) && stat(data, &file) == 0 &&
	    file.st_dev == redo_file.st_dev && file.st_ino == redo_file.st_ino)
	{
		pfree(path);
		if (hannoy_env_meta(redo_env, &smeta, &err) == HANNOY_OK && smeta.generation == generation)
			return redo_env;
		redo_close();
		return NULL;
	}
	redo_close();
	/* a rebuild from the table does not replace the directory between the look and the open */
	config = HannoyDefaultEnvConfig();
	paths_lock(LW_SHARED);
	if (!hannoy_replica_marked(path) || stat(data, &redo_file) != 0)
		st = HANNOY_ERR_NOT_FOUND;
	else
		st = hannoy_env_open(path, &config, &redo_env, &err);
	paths_unlock();
	if (!redo_exit_hooked)
	{
		on_proc_exit(redo_at_exit, (Datum) 0);
		redo_exit_hooked = true;
	}
	if (st == HANNOY_ERR_NOT_FOUND)
	{
		redo_env = NULL;
		pfree(path);
		return NULL;
	}
	if (st != HANNOY_OK)
	{
		redo_env = NULL;
		pfree(path);
		redo_distrust(node, err.message);
		return NULL;
	}
	pfree(path);
	redo_node = node;
	/* timeline 0: still a replica (one adopted before a crash took its marker along is not) */
	if (hannoy_env_meta(redo_env, &smeta, &err) != HANNOY_OK || smeta.generation != generation ||
	    smeta.timeline != 0)
	{
		redo_close();
		return NULL;
	}
	return redo_env;
}

/* Replays a create record: a fresh replica, unless redo made this one already. */
static void
redo_create(XLogReaderState *record, const xl_hannoy_create *xlrec)
{
	RelFileNodeBackend rnode;
	char              *root = HannoySidecarRoot();
	char              *path;
	HannoyEnvConfig    config = HannoyDefaultEnvConfig();
	HannoyMeta         smeta;
	HannoyError        err;
	HannoyStatus       st;

	/* a restart replays the record again: keep what redo staged since */
	if (redo_open(xlrec->node, xlrec->generation) != NULL)
		return;
	redo_close();
	rnode.node = xlrec->node;
	rnode.backend = InvalidBackendId;
	path = HannoySidecarPath(rnode);
	if (MakePGDirectory(root) != 0 && errno != EEXIST)
	{
		redo_distrust(xlrec->node, "could not create the sidecar directory");
		return;
	}
	memset(&smeta, 0, sizeof(smeta));
	smeta.format_version = HANNOY_FORMAT_VERSION;
	smeta.metric = xlrec->metric;
	smeta.dims = xlrec->dims;
	smeta.options = xlrec->options;
	smeta.m0 = 2 * xlrec->options.m;
	smeta.generation = xlrec->generation;
	smeta.system_id = GetSystemIdentifier();
	smeta.timeline = 0; /* staged from WAL: trusted only while in recovery */
	smeta.index_oid = xlrec->index_oid;
	smeta.seed = xlrec->generation;
	paths_lock(LW_EXCLUSIVE);
	st = hannoy_replica_create(path, &config, &smeta, record->EndRecPtr, &err);
	HannoyNoteSidecarChange();
	paths_unlock();
	if (st != HANNOY_OK)
		redo_distrust(xlrec->node, err.message);
}

/* Replays a rows record: the rows are staged in the replica. */
static void
redo_rows(XLogReaderState *record, const xl_hannoy_rows *xlrec, const char *payload, Size len)
{
	HannoyEnv       *env = redo_open(xlrec->node, xlrec->generation);
	HannoyStagedRow *rows;
	Size             pos = 0;
	HannoyError      err;
	bool             applied;

	if (env == NULL)
		return;
	if (hannoy_test_fail_redo)
		elog(ERROR, "hannoy.test_fail_redo is set");
	rows = palloc(sizeof(HannoyStagedRow) * Max(xlrec->count, 1));
	for (uint32 i = 0; i < xlrec->count; i++)
	{
		if (pos + HANNOY_WAL_TID_BYTES + 1 > len)
		{
			redo_distrust(xlrec->node, "a rows record is shorter than its rows");
			return;
		}
		rows[i].tid = get_tid(payload + pos);
		rows[i].kind = (uint8) payload[pos + HANNOY_WAL_TID_BYTES];
		rows[i].vector = NULL;
		pos += HANNOY_WAL_TID_BYTES + 1;
		if (rows[i].kind == HANNOY_ROW_INDEXED)
		{
			if (pos + xlrec->vector_bytes > len)
			{
				redo_distrust(xlrec->node, "a rows record is shorter than its rows");
				return;
			}
			rows[i].vector = payload + pos;
			pos += xlrec->vector_bytes;
		}
	}
	if (hannoy_replica_stage(env, record->EndRecPtr, xlrec->dims, rows, xlrec->count, &applied,
	                         &err) != HANNOY_OK)
		redo_distrust(xlrec->node, err.message);
}

/* Replays a remove record: the rows leave the replica. */
static void
redo_remove(XLogReaderState *record, const xl_hannoy_remove *xlrec, const char *payload, Size len)
{
	HannoyEnv  *env = redo_open(xlrec->node, xlrec->generation);
	HannoyTid  *tids;
	HannoyError err;
	bool        applied;

	if (env == NULL)
		return;
	if ((Size) xlrec->count * HANNOY_WAL_TID_BYTES > len)
	{
		redo_distrust(xlrec->node, "a remove record is shorter than its rows");
		return;
	}
	tids = palloc(sizeof(HannoyTid) * Max(xlrec->count, 1));
	for (uint32 i = 0; i < xlrec->count; i++)
		tids[i] = get_tid(payload + (Size) i * HANNOY_WAL_TID_BYTES);
	if (hannoy_replica_unstage(env, record->EndRecPtr, tids, xlrec->count, &applied, &err) !=
	    HANNOY_OK)
		redo_distrust(xlrec->node, err.message);
}

/* Removes the sidecar at 'path' under the lock of replica directories; a failure is a WARNING. */
static void
redo_remove_sidecar(const char *path)
{
	HannoyError  err;
	HannoyStatus st;

	paths_lock(LW_EXCLUSIVE);
	st = HannoyRemoveSidecarDir(path, &err);
	paths_unlock();
	if (st != HANNOY_OK)
		ereport(WARNING, (errmsg("could not remove hannoy sidecar \"%s\": %s", path, err.message)));
}

/* Removes one sidecar of the database a drop record names. */
static void
redo_drop_one(void *arg, RelFileNodeBackend rnode, const char *path)
{
	Oid *db = arg;

	if (rnode.backend == InvalidBackendId && rnode.node.dbNode == *db)
		redo_remove_sidecar(path);
}

/* Replays a drop record: the sidecar (or the database's sidecars) goes. */
static void
redo_drop(const xl_hannoy_drop *xlrec)
{
	RelFileNodeBackend rnode;
	char              *path;

	redo_close();
	if (xlrec->flags & HANNOY_WAL_DROP_DATABASE)
	{
		Oid db = xlrec->node.dbNode;

		HannoyForEachSidecar(WARNING, redo_drop_one, &db);
		return;
	}
	rnode.node = xlrec->node;
	rnode.backend = InvalidBackendId;
	path = HannoySidecarPath(rnode);
	redo_remove_sidecar(path);
	pfree(path);
}

/*
 * Crash recovery creates no replica: a create record whose replica is not
 * there (a standby started without standby.signal that had not replayed
 * it) makes whatever replica is at that path untrusted, since it is of
 * another build.
 */
static void
redo_forget(RelFileNode node)
{
	RelFileNodeBackend rnode;
	char              *path;

	rnode.node = node;
	rnode.backend = InvalidBackendId;
	path = HannoySidecarPath(rnode);
	if (hannoy_replica_marked(path))
		redo_distrust(node, "the server replayed its WAL without being a standby");
	pfree(path);
}

/* Applies one record; see hannoy_redo. */
static void
redo_record(XLogReaderState *record)
{
	uint8       info = XLogRecGetInfo(record) & XLR_RMGR_INFO_MASK;
	const char *data = XLogRecGetData(record);
	Size        len = XLogRecGetDataLen(record);

	switch (info)
	{
		case XLOG_HANNOY_CREATE:
		{
			xl_hannoy_create xlrec;

			if (len < sizeof(xlrec))
				elog(ERROR, "hannoy create record too short");
			memcpy(&xlrec, data, sizeof(xlrec));
			if (ArchiveRecoveryRequested)
				redo_create(record, &xlrec);
			else if (redo_open(xlrec.node, xlrec.generation) == NULL)
				redo_forget(xlrec.node);
			break;
		}
		case XLOG_HANNOY_ROWS:
		{
			xl_hannoy_rows xlrec;

			if (len < sizeof(xlrec))
				elog(ERROR, "hannoy rows record too short");
			memcpy(&xlrec, data, sizeof(xlrec));
			/* crash recovery too: a replica not yet adopted stays in step (see hannoy_redo) */
			redo_rows(record, &xlrec, data + sizeof(xlrec), len - sizeof(xlrec));
			break;
		}
		case XLOG_HANNOY_REMOVE:
		{
			xl_hannoy_remove xlrec;

			if (len < sizeof(xlrec))
				elog(ERROR, "hannoy remove record too short");
			memcpy(&xlrec, data, sizeof(xlrec));
			redo_remove(record, &xlrec, data + sizeof(xlrec), len - sizeof(xlrec));
			break;
		}
		case XLOG_HANNOY_DROP:
		{
			xl_hannoy_drop xlrec;

			if (len < sizeof(xlrec))
				elog(ERROR, "hannoy drop record too short");
			memcpy(&xlrec, data, sizeof(xlrec));
			/* crash recovery leaves the primary's sidecars to the sweep */
			if (ArchiveRecoveryRequested)
				redo_drop(&xlrec);
			break;
		}
		default:
			elog(ERROR, "unknown hannoy WAL record type %u", info);
	}
}

/*
 * hannoy_redo applies a hannoy record on a server replaying WAL.  It never
 * raises an ERROR, which would stop the startup process and the server:
 * what fails is reported as a WARNING and the replica concerned is no
 * longer trusted.  Only standbys and archive recovery create replicas.
 * Crash recovery leaves the primary's own sidecars alone, and goes on
 * staging rows into replicas not adopted yet (a crash right after a
 * promotion, a standby started without standby.signal), which the stamp
 * gates as on a standby, so they are adopted complete when recovery ends
 * (DESIGN.md "Replication and recovery", "Promotion, PITR, crash
 * recovery").
 */
static void
hannoy_redo(XLogReaderState *record)
{
	MemoryContext old;

	if (redo_cxt == NULL)
		redo_cxt = AllocSetContextCreate(TopMemoryContext, "hannoy redo", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(redo_cxt);
	/* the linker and a rebuild let redo take LMDB's writer lock before their next batch */
	HannoyRedoWriting(true);
	PG_TRY();
	{
		redo_record(record);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(redo_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		paths_unlock();
		redo_close();
		ereport(WARNING, (errmsg("could not replay a hannoy WAL record at %X/%X: %s",
		                         LSN_FORMAT_ARGS(record->ReadRecPtr), edata->message)));
		/* the replica the record names, when it can be read, is untrusted */
		if (XLogRecGetDataLen(record) >= sizeof(RelFileNode))
		{
			RelFileNode node;

			memcpy(&node, XLogRecGetData(record), sizeof(node));
			if ((XLogRecGetInfo(record) & XLR_RMGR_INFO_MASK) != XLOG_HANNOY_DROP)
				redo_distrust(node, edata->message);
		}
	}
	PG_END_TRY();
	HannoyRedoWriting(false);
	MemoryContextSwitchTo(old);
	MemoryContextReset(redo_cxt);
}

/* hannoy_redo_cleanup closes the replica redo kept open, at the end of recovery. */
static void
hannoy_redo_cleanup(void)
{
	redo_close();
}

/* hannoy_identify names a record type (pg_walinspect, pg_waldump with the module). */
static const char *
hannoy_identify(uint8 info)
{
	switch (info & XLR_RMGR_INFO_MASK)
	{
		case XLOG_HANNOY_CREATE:
			return "CREATE";
		case XLOG_HANNOY_ROWS:
			return "ROWS";
		case XLOG_HANNOY_REMOVE:
			return "REMOVE";
		case XLOG_HANNOY_DROP:
			return "DROP";
	}
	return NULL;
}

/* hannoy_desc describes a record: its relation file, generation and row count. */
static void
hannoy_desc(StringInfo buf, XLogReaderState *record)
{
	uint8       info = XLogRecGetInfo(record) & XLR_RMGR_INFO_MASK;
	const char *data = XLogRecGetData(record);
	Size        len = XLogRecGetDataLen(record);

	switch (info)
	{
		case XLOG_HANNOY_CREATE:
			if (len >= sizeof(xl_hannoy_create))
			{
				xl_hannoy_create x;

				memcpy(&x, data, sizeof(x));
				appendStringInfo(buf,
				                 "rel %u/%u/%u; index %u; generation " UINT64_FORMAT
				                 "; metric %u; dims %u; m %u; ef_construction %u",
				                 x.node.spcNode, x.node.dbNode, x.node.relNode, x.index_oid,
				                 x.generation, x.metric, x.dims, x.options.m,
				                 x.options.ef_construction);
			}
			break;
		case XLOG_HANNOY_ROWS:
			if (len >= sizeof(xl_hannoy_rows))
			{
				xl_hannoy_rows x;

				memcpy(&x, data, sizeof(x));
				appendStringInfo(
				    buf, "rel %u/%u/%u; generation " UINT64_FORMAT "; rows %u; dims %u",
				    x.node.spcNode, x.node.dbNode, x.node.relNode, x.generation, x.count, x.dims);
			}
			break;
		case XLOG_HANNOY_REMOVE:
			if (len >= sizeof(xl_hannoy_remove))
			{
				xl_hannoy_remove x;

				memcpy(&x, data, sizeof(x));
				appendStringInfo(buf, "rel %u/%u/%u; generation " UINT64_FORMAT "; rows %u",
				                 x.node.spcNode, x.node.dbNode, x.node.relNode, x.generation,
				                 x.count);
			}
			break;
		case XLOG_HANNOY_DROP:
			if (len >= sizeof(xl_hannoy_drop))
			{
				xl_hannoy_drop x;

				memcpy(&x, data, sizeof(x));
				if (x.flags & HANNOY_WAL_DROP_DATABASE)
					appendStringInfo(buf, "database %u", x.node.dbNode);
				else
					appendStringInfo(buf, "rel %u/%u/%u", x.node.spcNode, x.node.dbNode,
					                 x.node.relNode);
			}
			break;
	}
}

/*
 * Removes the replica marker of one sidecar and marks it as a copy to
 * rebuild (HannoyDistrustCopiedReplicas).
 */
static void
distrust_copy(void *arg, RelFileNodeBackend rnode, const char *path)
{
	HannoyError err;

	if ((hannoy_replica_marked(path) && hannoy_replica_unmark(path, &err) != HANNOY_OK) ||
	    hannoy_env_mark_for_rebuild(path, "copied", &err) != HANNOY_OK)
		ereport(FATAL,
		        (errmsg("could not mark hannoy sidecar \"%s\" untrusted: %s", path, err.message)));
}

/*
 * HannoyDistrustCopiedReplicas runs in the postmaster at start-up: a data
 * directory with a backup_label came from a base backup or pg_rewind, and
 * a sidecar in it was copied while it may have been written, so no
 * sidecar in it is trusted: each loses its replica marker and gets a dirty
 * marker of no boot, so it is rebuilt from the table whether the server
 * then stays in recovery, is promoted before the rebuild ran, or replays
 * the backup as a crash recovery (no recovery.signal).  This happens
 * before the startup process renames the label, durably, so a restart
 * never trusts the copy again.
 */
void
HannoyDistrustCopiedReplicas(void)
{
	char        label[MAXPGPATH];
	struct stat st;

	snprintf(label, sizeof(label), "%s/%s", DataDir, BACKUP_LABEL_FILE);
	if (stat(label, &st) != 0)
		return;
	HannoyForEachSidecar(LOG, distrust_copy, NULL);
}
