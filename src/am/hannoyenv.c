/*
 * hannoyenv.c
 *	  Sidecars as this backend sees them: their names under the data
 *	  directory, their creation, the per-backend cache of open environments
 *	  (DESIGN.md "Invariants: one open per process"), and whether an index's
 *	  sidecar can be trusted (DESIGN.md "Unusable sidecars").
 */
#include "postgres.h"

#include <dirent.h>
#include <sys/stat.h>

#include "access/twophase.h"
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "hannoy_am.h"

/*
 * Environments one backend keeps open at once, unless more are pinned (in
 * use by a build, an insert, VACUUM or an inspection right now): 32 take 96
 * descriptors.  Scans do not pin: they are detached when their
 * environment is closed and reattach when asked for the next row.
 */
#define HANNOY_ENV_CACHE_SIZE 32
/* File descriptors LMDB uses per environment (data, lock, meta writes). */
#define HANNOY_FDS_PER_ENV 3
/* Room each memory map keeps beyond the data; maps grow with their files. */
#define HANNOY_MAP_ROOM ((uint64) 64 << 20)

/* A scan attached to an environment: detached through 'detach' before it closes. */
typedef struct HannoyEnvUser
{
	HannoyEnvDetachFn detach;
	void             *arg;
} HannoyEnvUser;

typedef struct HannoyEnvCacheEntry
{
	RelFileNodeBackend rnode;
	Oid                indexoid;
	HannoyEnv         *env;
	uint64             generation;
	TimeLineID         checked_tli; /* timeline its sidecar was last checked on, 0: never */
	int                pins;        /* users that must not see it closed now */
	HannoyEnvUser     *users;       /* attached scans (TopMemoryContext) */
	int                nusers;
	int                maxusers;
	uint64             last_used;
	dev_t  dev; /* the data file it was opened on (a rebuild from the table replaces it) */
	ino_t  ino;
	uint64 changes; /* HannoySidecarChanges when the file at its path was last found to be it */
	bool   settled; /* rows an earlier run of the server lost were looked for */
} HannoyEnvCacheEntry;

/* A replica being rebuilt from its table: usable once that ends. */
static const char HANNOY_REASON_REBUILDING[] =
    "its sidecar is being rebuilt from the table on this server";

/* A sidecar with a dirty marker of another boot: DESIGN.md "The dirty marker". */
static const char HANNOY_REASON_TORN[] =
    "its sidecar may be torn (the operating system stopped while writes to it were not on "
    "disk); it is being rebuilt from the table on this server";

/* True when the replica 'env' is being rebuilt from its table (a failure to tell: true). */
static bool
replica_seeding(HannoyEnv *env)
{
	HannoyError err;
	bool        seeding;

	return hannoy_replica_seeding(env, &seeding, &err) != HANNOY_OK || seeding;
}

/* Reasons an index is unusable for good (compared by address). */
static const char HANNOY_REASON_MISSING[] = "its sidecar is missing";
static const char HANNOY_REASON_OTHER_BUILD[] = "its sidecar belongs to another build";
static const char HANNOY_REASON_OTHER_SYSTEM[] =
    "its sidecar was written by another database system";
static const char HANNOY_REASON_OTHER_TIMELINE[] = "its sidecar was written on another timeline";
static const char HANNOY_REASON_BROKEN[] =
    "it was marked broken when its sidecar was found unusable";
static const char HANNOY_REASON_STAGED[] =
    "its sidecar was staged from WAL while the server was a standby, and not adopted when it "
    "left recovery";

/*
 * Open environments.  At most HANNOY_ENV_CACHE_SIZE stay open; the array
 * grows past that only while more are pinned.
 */
static HannoyEnvCacheEntry *env_cache = NULL;
static int                  env_cache_used = 0;
static int                  env_cache_capacity = 0;
static uint64               env_cache_clock = 0;

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
 * HannoyParseSidecarName parses a sidecar directory name ("spc_db_rel" or
 * "tBACKEND_spc_db_rel"); false for anything else.
 */
bool
HannoyParseSidecarName(const char *name, RelFileNodeBackend *rnode)
{
	unsigned int spc, db, rel;
	int          backend;
	char         tail;

	if (name[0] == 't')
	{
		if (sscanf(name, "t%d_%u_%u_%u%c", &backend, &spc, &db, &rel, &tail) != 4)
			return false;
		rnode->backend = backend;
	}
	else
	{
		if (sscanf(name, "%u_%u_%u%c", &spc, &db, &rel, &tail) != 3)
			return false;
		rnode->backend = InvalidBackendId;
	}
	rnode->node.spcNode = spc;
	rnode->node.dbNode = db;
	rnode->node.relNode = rel;
	return true;
}

/*
 * HannoyForEachSidecar calls 'fn' for every sidecar directory under the data
 * directory, with its relation file and path; directory read errors are
 * reported at 'elevel'.  Nothing happens when no sidecar was ever made.
 */
void
HannoyForEachSidecar(int elevel, HannoySidecarVisitor fn, void *arg)
{
	char          *root = HannoySidecarRoot();
	DIR           *dir = AllocateDir(root);
	struct dirent *de;

	if (dir != NULL)
	{
		while ((de = ReadDirExtended(dir, root, elevel)) != NULL)
		{
			RelFileNodeBackend rnode;
			char              *path;

			if (!HannoyParseSidecarName(de->d_name, &rnode))
				continue;
			path = psprintf("%s/%s", root, de->d_name);
			fn(arg, rnode, path);
			pfree(path);
		}
		FreeDir(dir);
	}
	pfree(root);
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
	config.map_room = HANNOY_MAP_ROOM;
	config.file_mode = pg_file_create_mode;
	config.dir_mode = pg_dir_create_mode;
	config.durable = enableFsync;
	return config;
}

/*
 * Closes the cache entry at 'i', detaching its scans first (they reopen
 * it when they need it again), and compacts the cache.
 */
static void
env_cache_drop(int i)
{
	HannoyEnvCacheEntry *entry = &env_cache[i];

	/* a detach callback never reenters the cache */
	for (int u = 0; u < entry->nusers; u++)
		entry->users[u].detach(entry->users[u].arg);
	if (entry->users != NULL)
		pfree(entry->users);
	hannoy_env_close(entry->env);
	for (int fds = 0; fds < HANNOY_FDS_PER_ENV; fds++)
		ReleaseExternalFD();
	env_cache[i] = env_cache[--env_cache_used];
}

/*
 * HannoyReleaseDirtyMarkers removes, at the end of a transaction, the
 * dirty markers of this backend's sidecars whose writes are all synced (a
 * commit syncs them first), so an idle backend leaves none behind
 * (DESIGN.md "The dirty marker").
 */
void
HannoyReleaseDirtyMarkers(void)
{
	for (int i = 0; i < env_cache_used; i++)
		hannoy_env_release_marker(env_cache[i].env);
}

/*
 * At exit, this process's dirty markers go once the sidecars are synced
 * (DESIGN.md "The dirty marker"); the environments stay open, as a scan
 * may still hold a transaction.
 */
static void
env_cache_at_exit(int code, Datum arg)
{
	for (int i = 0; i < env_cache_used; i++)
		hannoy_env_clear_dirty(env_cache[i].env);
}

/*
 * Closes the least recently used environment nobody pins; false when every
 * open one is pinned.
 */
static bool
env_cache_evict(void)
{
	int victim = -1;

	for (int i = 0; i < env_cache_used; i++)
		if (env_cache[i].pins == 0 &&
		    (victim < 0 || env_cache[i].last_used < env_cache[victim].last_used))
			victim = i;
	if (victim < 0)
		return false;
	env_cache_drop(victim);
	return true;
}

/*
 * Takes the descriptors one more environment needs, closing idle
 * environments while PostgreSQL has none to spare; an error only when
 * every open environment is in use at once.
 */
static void
env_cache_acquire_fds(void)
{
	for (int fds = 0; fds < HANNOY_FDS_PER_ENV; fds++)
	{
		while (!AcquireExternalFD())
		{
			if (env_cache_evict())
				continue;
			while (fds-- > 0)
				ReleaseExternalFD();
			ereport(ERROR,
			        (errcode(ERRCODE_INSUFFICIENT_RESOURCES),
			         errmsg("out of file descriptors for hannoy sidecars: %d are in use at once, "
			                "%d descriptors each",
			                env_cache_used, HANNOY_FDS_PER_ENV),
			         errhint("Raise max_files_per_process (and the server's descriptor limit).")));
		}
	}
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
		if (i < env_cache_used && env_cache[i].pins == 0 &&
		    (relid == InvalidOid || env_cache[i].indexoid == relid))
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

/* HannoyEnvPin keeps an environment open while a caller uses it. */
void
HannoyEnvPin(HannoyEnv *env)
{
	env_cache_entry(env)->pins++;
}

/*
 * HannoyEnvAttach records that a scan uses 'env' between calls without
 * pinning it: before the environment closes, detach(arg) is called, and
 * the scan opens it again when it needs it.  It also marks the environment
 * as just used.
 */
void
HannoyEnvAttach(HannoyEnv *env, HannoyEnvDetachFn detach, void *arg)
{
	HannoyEnvCacheEntry *entry = env_cache_entry(env);

	if (entry->nusers == entry->maxusers)
	{
		int newmax = Max(4, entry->maxusers * 2);

		if (entry->users == NULL)
			entry->users = MemoryContextAlloc(TopMemoryContext, sizeof(HannoyEnvUser) * newmax);
		else
			entry->users = repalloc(entry->users, sizeof(HannoyEnvUser) * newmax);
		entry->maxusers = newmax;
	}
	entry->users[entry->nusers].detach = detach;
	entry->users[entry->nusers].arg = arg;
	entry->nusers++;
	entry->last_used = ++env_cache_clock;
}

/* HannoyEnvDetach forgets HannoyEnvAttach's 'arg' (safe during abort cleanup). */
void
HannoyEnvDetach(HannoyEnv *env, void *arg)
{
	for (int i = 0; i < env_cache_used; i++)
	{
		HannoyEnvCacheEntry *entry = &env_cache[i];

		if (entry->env != env)
			continue;
		for (int u = 0; u < entry->nusers; u++)
			if (entry->users[u].arg == arg)
			{
				entry->users[u] = entry->users[--entry->nusers];
				return;
			}
	}
}

/*
 * HannoyEnvFile gives the data file a cached environment was opened on (a
 * rebuild from the table replaces a sidecar with one of the same
 * generation); 0, 0 when unknown.
 */
void
HannoyEnvFile(HannoyEnv *env, uint64 *dev, uint64 *ino)
{
	*dev = 0;
	*ino = 0;
	for (int i = 0; i < env_cache_used; i++)
		if (env_cache[i].env == env)
		{
			*dev = (uint64) env_cache[i].dev;
			*ino = (uint64) env_cache[i].ino;
			return;
		}
}

/* HannoyEnvTouch marks an environment as just used (the cache closes the least recent first). */
void
HannoyEnvTouch(HannoyEnv *env)
{
	for (int i = 0; i < env_cache_used; i++)
		if (env_cache[i].env == env)
		{
			env_cache[i].last_used = ++env_cache_clock;
			return;
		}
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
 * Whether a failure to open or read a sidecar says something about the
 * sidecar (it is missing, or damaged: the index is unusable) rather than
 * about the system right now (EACCES, ENOSPC, EMFILE, ENOMEM, a full
 * reader table...), which is raised as the error it is and never costs the
 * index (DESIGN.md "Unusable sidecars").
 */
static bool
says_unusable(HannoyStatus st)
{
	return st == HANNOY_ERR_NOT_FOUND || st == HANNOY_ERR_CORRUPT;
}

/*
 * open_env is HannoyOpenEnv; 'quiet' (the planner's question) returns
 * NULL with a reason for a passing failure too, instead of raising it.
 * With 'rebuilding' (a writer's question, out of recovery), a replica
 * being rebuilt from the table is returned with *rebuilding set: its
 * writers stage rows into it (DESIGN.md "Rebuilding on a primary"); a
 * sidecar to be rebuilt that no rebuild has replaced yet (it may be torn)
 * returns NULL with *rebuilding set: its writers only log.  Unless 'quiet'
 * or not 'settle', the first open of a sidecar in this process removes the
 * entries whose heap rows a crash lost (HannoySettleUnflushed); otherwise
 * the handle is returned without that, and the next open does it.
 */
static HannoyEnv *
open_env_once(Relation index, HannoyMetaPageData *meta, bool missing_ok, bool quiet, bool settle,
              const char **why, bool *rebuilding)
{
	RelFileNodeBackend   rnode;
	HannoyEnvCacheEntry *entry = NULL;
	HannoyMeta           smeta;
	HannoyError          err;
	HannoyStatus         st;
	const char          *reason = NULL;
	bool                 in_recovery = RecoveryInProgress();
	/* a replica (staged from WAL) records timeline 0 and is trusted only in recovery */
	TimeLineID  tli = in_recovery ? 0 : GetWALInsertionTimeLine();
	struct stat file;
	bool        file_known = false;
	bool        seeding = false;
	/* read before any look at the files: a change counted later is looked for next time */
	uint64 changes = HannoySidecarChanges();

	if (rebuilding)
		*rebuilding = false;
	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	if (!HannoyReadMetaPage(index, meta))
		reason = "its metapage is missing or invalid";
	else if (meta->flags & HANNOY_META_BROKEN)
		reason = HANNOY_REASON_BROKEN;
	else if (meta->flags & HANNOY_META_INIT_FORK)
		reason = in_recovery ? "its sidecar cannot be read while the server is in recovery"
		                     : "it has no sidecar yet";
	else
	{
		char *path = HannoySidecarPath(rnode);
		char  data[MAXPGPATH];

		/* redo may have stopped trusting it since the last look: one stat */
		if (in_recovery && !hannoy_replica_marked(path))
			reason = "its sidecar cannot be read while the server is in recovery (it was not "
			         "staged from this server's WAL)";
		for (int i = 0; i < env_cache_used; i++)
		{
			if (RelFileNodeBackendEquals(env_cache[i].rnode, rnode))
			{
				entry = &env_cache[i];
				break;
			}
		}

		/*
		 * A rebuild from the table replaced the sidecar a cached handle is
		 * on: looked for with a stat of the path unless no process made or
		 * removed a sidecar since this handle's file was last found there
		 * (a path lookup is a good part of a short scan's fixed cost).  In
		 * recovery always: the marker just looked at may be a new replica's
		 * while the count does not show it yet (the rebuild counts once
		 * the replica is whole), and the handle must then be on its file.
		 */
		if (entry == NULL || changes == 0 || entry->changes != changes || in_recovery)
		{
			snprintf(data, sizeof(data), "%s/data.mdb", path);
			file_known = stat(data, &file) == 0;
		}
		pfree(path);
	}

	if (reason == NULL)
	{
		/* a handle on an older sidecar of a reused relfilenode, or on a replaced replica, is stale
		 */
		if (entry != NULL && entry->pins == 0 &&
		    (entry->generation != meta->generation ||
		     (file_known && (entry->dev != file.st_dev || entry->ino != file.st_ino))))
		{
			env_cache_drop((int) (entry - env_cache));
			entry = NULL;
		}
		/* the file at its path is the handle's (or was not looked at: unchanged since) */
		else if (entry != NULL && file_known && entry->dev == file.st_dev &&
		         entry->ino == file.st_ino)
			entry->changes = changes;
		if (entry == NULL)
		{
			char           *path = HannoySidecarPath(rnode);
			HannoyEnvConfig config = HannoyDefaultEnvConfig();
			HannoyEnv      *env;
			bool            torn = false;

			/* first use in this process: is it what an operating system crash left? */
			if ((st = hannoy_env_torn(path, &torn, &err)) != HANNOY_OK && !quiet)
				HannoyReportError(st, &err, index);
			if (torn)
			{
				pfree(path);
				if (why)
					*why = HANNOY_REASON_TORN;
				if (rebuilding != NULL && !in_recovery)
					*rebuilding = true;
				if (missing_ok || quiet)
					return NULL;
				HannoyReportUnusable(index, HANNOY_REASON_TORN, ERROR, NULL);
			}

			while (env_cache_used >= HANNOY_ENV_CACHE_SIZE && env_cache_evict())
				;
			if (env_cache_used == env_cache_capacity)
			{
				int newcap = Max(HANNOY_ENV_CACHE_SIZE, env_cache_capacity * 2);

				if (env_cache == NULL)
				{
					env_cache =
					    MemoryContextAlloc(TopMemoryContext, sizeof(HannoyEnvCacheEntry) * newcap);
					on_proc_exit(env_cache_at_exit, (Datum) 0);
				}
				else
					env_cache = repalloc(env_cache, sizeof(HannoyEnvCacheEntry) * newcap);
				env_cache_capacity = newcap;
			}
			env_cache_acquire_fds();
			for (;;)
			{
				st = hannoy_env_open(path, &config, &env, &err);
				/* out of descriptors or address space: close an idle environment and retry */
				if (st != HANNOY_OK &&
				    (st == HANNOY_ERR_NOMEM || err.sys_errno == EMFILE || err.sys_errno == ENFILE ||
				     err.sys_errno == ENOMEM) &&
				    env_cache_evict())
					continue;
				break;
			}
			if (st != HANNOY_OK)
			{
				for (int fds = 0; fds < HANNOY_FDS_PER_ENV; fds++)
					ReleaseExternalFD();
				if ((!missing_ok || !says_unusable(st)) && !quiet)
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
				entry->users = NULL;
				entry->nusers = 0;
				entry->maxusers = 0;
				entry->generation = 0;
				entry->checked_tli = 0;
				entry->settled = false;
				/* the file LMDB opened (the path may have been replaced since the stat above) */
				{
					uint64 dev, ino;

					hannoy_env_file_id(env, &dev, &ino);
					entry->dev = (dev_t) dev;
					entry->ino = (ino_t) ino;
					/* the path is looked at again next time unless the stat found this file */
					entry->changes =
					    file_known && entry->dev == file.st_dev && entry->ino == file.st_ino
					        ? changes
					        : 0;
				}
			}
			pfree(path);
		}
	}

	/*
	 * A damaged file is found before LMDB reads through its map, also when
	 * the handle is cached: DESIGN.md "Damaged sidecars".  A failure of the
	 * system instead (the file cannot be looked at) is raised as what it is.
	 */
	if (reason == NULL && (st = file_known && entry->dev == file.st_dev && entry->ino == file.st_ino
	                                ? hannoy_env_check_size(entry->env, (uint64) file.st_size, &err)
	                                : hannoy_env_check(entry->env, &err)) != HANNOY_OK)
	{
		if (entry->pins == 0)
			env_cache_drop((int) (entry - env_cache));
		if (!says_unusable(st) && !quiet)
			HannoyReportError(st, &err, index);
		reason = pstrdup(err.message);
	}

	/*
	 * The sidecar's identity was checked against this metapage generation on
	 * this timeline already: nothing but a REINDEX (another generation) or a
	 * promotion (another timeline) changes it, so a scan need not read it.
	 */
	if (reason == NULL && entry->generation == meta->generation && entry->checked_tli == tli)
	{
		entry->last_used = ++env_cache_clock;
		return entry->env;
	}

	/*
	 * Out of recovery, a replica this server's redo kept becomes its own
	 * sidecar before anything uses it (DESIGN.md "Promotion, PITR, crash
	 * recovery"); one that cannot be adopted loses its marker and fails the
	 * timeline check below.
	 */
	if (reason == NULL && !in_recovery)
	{
		char *path = HannoySidecarPath(rnode);
		bool  adopted;

		/* one being rebuilt from the table is adopted once that ends */
		if (hannoy_replica_marked(path))
		{
			if (replica_seeding(entry->env))
				seeding = true;
			else if ((st = HannoyAdoptReplica(entry->env, path, &adopted, &err)) != HANNOY_OK)
			{
				if (!quiet)
					HannoyReportError(st, &err, index);
				reason = "its sidecar could not be adopted after recovery";
			}
		}
		pfree(path);
	}

	if (reason == NULL)
	{
		st = hannoy_env_meta(entry->env, &smeta, &err);
		if (st != HANNOY_OK)
		{
			if ((!missing_ok || !says_unusable(st)) && !quiet)
				HannoyReportError(st, &err, index);
			reason = "its sidecar cannot be read";
		}
		else if (smeta.generation != meta->generation)
			reason = HANNOY_REASON_OTHER_BUILD;
		else if (smeta.system_id != GetSystemIdentifier())
			reason = HANNOY_REASON_OTHER_SYSTEM;
		else if (seeding)
		{
			/* a primary's replica being rebuilt: its writers stage, nothing else uses it */
			if (rebuilding == NULL)
				reason = HANNOY_REASON_REBUILDING;
			else
			{
				*rebuilding = true;
				entry->last_used = ++env_cache_clock;
				return entry->env;
			}
		}
		else if (smeta.timeline == 0 && !in_recovery)
			reason = HANNOY_REASON_STAGED;
		else if (smeta.timeline != tli)
			reason = HANNOY_REASON_OTHER_TIMELINE;
		else if (smeta.metric != meta->metric)
			reason = "its sidecar uses another metric";
		else if (in_recovery && replica_seeding(entry->env))
			reason = HANNOY_REASON_REBUILDING;
		else
		{
			/* before anything reads it: entries whose heap rows a crash lost go */
			if (!in_recovery && !entry->settled)
			{
				HannoyEnv *env = entry->env;

				/*
				 * The planner's look (quiet: it never fails because of the
				 * sidecar) and a look under HannoyReplicaPathsLock leave it to
				 * the next open, which checks the sidecar again.
				 */
				if (quiet || !settle)
				{
					entry->last_used = ++env_cache_clock;
					return env;
				}

				HannoyEnvPin(env);
				PG_TRY();
				{
					HannoySettleUnflushed(index, env);
				}
				PG_FINALLY();
				{
					HannoyEnvUnpin(env);
				}
				PG_END_TRY();
				entry = env_cache_entry(env);
				entry->settled = true;
			}
			entry->generation = meta->generation;
			entry->checked_tli = smeta.timeline;
			entry->last_used = ++env_cache_clock;
			return entry->env;
		}
	}

	if (why)
		*why = reason;
	if (missing_ok || quiet)
		return NULL;
	HannoyReportUnusable(index, reason, ERROR, NULL);
	pg_unreachable();
}

/*
 * open_env is open_env_once, decided again under HannoyReplicaPathsLock
 * when, out of recovery, the sidecar looked missing or like a replica not
 * adopted: a rebuild from the table may have been replacing it (it holds
 * that lock from the removal of the old directory to the marker of the
 * new one), and such a passing look must never mark the index broken.
 */
static HannoyEnv *
open_env(Relation index, HannoyMetaPageData *meta, bool missing_ok, bool quiet, const char **why,
         bool *rebuilding)
{
	const char *reason = NULL;
	HannoyEnv  *env = open_env_once(index, meta, missing_ok, quiet, true, &reason, rebuilding);
	LWLock     *lock;

	if (env == NULL && (missing_ok || quiet) && !RecoveryInProgress() &&
	    (reason == HANNOY_REASON_MISSING || reason == HANNOY_REASON_STAGED) &&
	    (lock = HannoyReplicaPathsLock()) != NULL)
	{
		LWLockAcquire(lock, LW_SHARED);
		env = open_env_once(index, meta, missing_ok, quiet, false, &reason, rebuilding);
		LWLockRelease(lock);
		/* no heap reads or sidecar writes under the lock: settle now, the handle cached */
		if (env != NULL && !quiet)
			env = open_env_once(index, meta, missing_ok, quiet, true, &reason, rebuilding);
	}
	if (why)
		*why = reason;
	return env;
}

/*
 * HannoyAdoptReplica makes the replica in 'path' (open as 'env') the
 * sidecar of this server, which has left recovery: stamped with the
 * current timeline if WAL redo applied to it nothing past what this server
 * replayed, its marker removed either way (DESIGN.md "Promotion, PITR,
 * crash recovery").  Staged rows stay staged: scans merge them, the linker
 * and VACUUM link them.  Logs the outcome, sets *adopted; returns the
 * core's status.
 */
HannoyStatus
HannoyAdoptReplica(HannoyEnv *env, const char *path, bool *adopted, HannoyError *err)
{
	TimeLineID   tli = GetWALInsertionTimeLine();
	XLogRecPtr   replayed = GetXLogReplayRecPtr(NULL);
	HannoyStatus st;

	st = hannoy_replica_adopt(env, path, tli, replayed, adopted, err);
	if (st != HANNOY_OK)
		return st;
	if (*adopted)
		ereport(LOG, (errmsg("hannoy sidecar \"%s\" kept from WAL is now this server's own "
		                     "(timeline %u)",
		                     path, tli)));
	else
		ereport(
		    WARNING,
		    (errmsg("hannoy sidecar \"%s\" kept from WAL cannot be adopted after recovery", path),
		     errdetail("WAL up to %X/%X was replayed; the sidecar says it holds more, it "
		               "was adopted on another timeline, or its rebuild from the table had not "
		               "ended.",
		               LSN_FORMAT_ARGS(replayed)),
		     errhint("REINDEX its index.")));
	return HANNOY_OK;
}

/*
 * HannoyLinkStaged links the rows still staged in an adopted replica of
 * 'index' (a promoted standby's, DESIGN.md "Promotion, PITR, crash
 * recovery") into its graph, in write transactions of about 20 ms with
 * interrupt checks between them.  VACUUM's walk and the heap check read the
 * graph's rows only, so they call it first; a sidecar that never was a
 * replica costs one read transaction.
 */
void
HannoyLinkStaged(Relation index, HannoyEnv *env)
{
	HannoyError  err;
	HannoyStatus st;
	uint64_t     staged = 0;
	uint64_t     lsn;
	uint64_t     linked;

	if (RecoveryInProgress())
		return;
	st = hannoy_replica_state(env, &staged, &lsn, &err);
	while (st == HANNOY_OK && staged > 0)
	{
		CHECK_FOR_INTERRUPTS();
		st = hannoy_replica_link(env, 20, &linked, &staged, &err);
	}
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
}

/*
 * HannoyOpenEnv returns this backend's handle on the index's sidecar,
 * opening it on first use (never creating one), and checks that it belongs
 * to this index, this build, this system and this timeline (DESIGN.md
 * "Never silently wrong").  When it is unusable it returns NULL with the
 * reason in *why if missing_ok, and raises an error otherwise.  A failure
 * of the system rather than of the sidecar (permissions, a full disk, out
 * of descriptors or memory) is always raised as what it is.
 */
HannoyEnv *
HannoyOpenEnv(Relation index, HannoyMetaPageData *meta, bool missing_ok, const char **why)
{
	return open_env(index, meta, missing_ok, false, why, NULL);
}

/*
 * HannoyOpenEnvForWrite is HannoyOpenEnv (missing_ok) for an insert or
 * VACUUM: out of recovery, a replica being rebuilt from the table is
 * returned too, with *rebuilding set; the caller then stages its rows or
 * records its removals (DESIGN.md "Rebuilding on a primary").
 */
HannoyEnv *
HannoyOpenEnvForWrite(Relation index, HannoyMetaPageData *meta, bool *rebuilding, const char **why)
{
	return open_env(index, meta, true, false, why, rebuilding);
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
	     why != HANNOY_REASON_OTHER_SYSTEM && why != HANNOY_REASON_OTHER_TIMELINE &&
	     why != HANNOY_REASON_STAGED))
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
 * HannoyIndexUsable tells whether scans of the index can be trusted (DESIGN.md "Never silently
 * wrong"); an index whose metapage says it is empty and has no sidecar yet is usable.
 */
bool
HannoyIndexUsable(Relation index, const char **why)
{
	HannoyMetaPageData meta;
	const char        *reason = NULL;

	/* planning never fails because of the sidecar: a passing failure is a reason too */
	if (open_env(index, &meta, true, true, &reason, NULL) != NULL)
		return true;
	if (why)
		*why = reason;
	return HannoyAwaitsSidecar(&meta);
}

/*
 * HannoyRemoveSidecarDir removes the sidecar directory at 'path' (the
 * core's hannoy_env_remove) and counts the change for other processes'
 * cached handles (HannoyNoteSidecarChange), also after a failure: what it
 * left is looked at again.  Every removal of a sidecar a handle may be on
 * goes through here.
 */
HannoyStatus
HannoyRemoveSidecarDir(const char *path, HannoyError *err)
{
	HannoyStatus st = hannoy_env_remove(path, err);

	HannoyNoteSidecarChange();
	return st;
}

/*
 * HannoyRemoveSidecar removes a relation file's sidecar and this backend's
 * handle on it; failures are WARNINGs (it runs at commit and abort).
 */
void
HannoyRemoveSidecar(RelFileNodeBackend rnode)
{
	char        *path = HannoySidecarPath(rnode);
	HannoyError  err;
	HannoyStatus st;

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
	st = HannoyRemoveSidecarDir(path, &err);
	if (st != HANNOY_OK)
		ereport(WARNING, (errcode(ERRCODE_IO_ERROR),
		                  errmsg("could not remove hannoy sidecar \"%s\": %s", path, err.message)));
	pfree(path);
}

/*
 * HannoyCreateSidecar gives 'index' a fresh sidecar (replacing any earlier
 * one of its relation file) described by a new metapage with 'dims', writes
 * that metapage (as a new block when 'new_page') and returns the sidecar
 * opened through this backend's cache, the handle later scans use.  The
 * caller has made sure that a sidecar new in this transaction is removed
 * if it aborts (HannoyRegisterCreatedSidecar).
 */
HannoyEnv *
HannoyCreateSidecar(Relation index, HannoyMetaPageData *meta, uint32 dims, bool new_page)
{
	RelFileNodeBackend rnode;
	char              *root = HannoySidecarRoot();
	char              *path;
	HannoyEnvConfig    config = HannoyDefaultEnvConfig();
	HannoyMetaPageData check;
	HannoyMeta         smeta;
	HannoyEnv         *env;
	HannoyError        err;
	HannoyStatus       st;

	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	if (MakePGDirectory(root) != 0 && errno != EEXIST)
		ereport(ERROR,
		        (errcode_for_file_access(), errmsg("could not create directory \"%s\": %m", root)));
	path = HannoySidecarPath(rnode);

	/* this backend may hold a handle on an earlier sidecar of the same file */
	HannoyForgetEnv(rnode);

	HannoyInitMetaPage(index, meta, dims, 0);
	memset(&smeta, 0, sizeof(smeta));
	smeta.format_version = HANNOY_FORMAT_VERSION;
	smeta.metric = meta->metric;
	smeta.dims = dims;
	smeta.options = meta->options;
	smeta.m0 = 2 * meta->options.m;
	smeta.generation = meta->generation;
	smeta.system_id = GetSystemIdentifier();
	smeta.timeline = GetWALInsertionTimeLine();
	smeta.index_oid = RelationGetRelid(index);
	smeta.seed = meta->generation;

	st = hannoy_env_create(path, &config, &smeta, &env, &err);
	HannoyNoteSidecarChange();
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
	hannoy_env_close(env);
	pfree(path);
	pfree(root);

	HannoyWriteMetaPage(index, MAIN_FORKNUM, meta, new_page);
	return HannoyOpenEnv(index, &check, false, NULL);
}

/*
 * HannoyRecreateSidecar gives an index whose metapage has no sidecar (an
 * unlogged index after a crash) a fresh, empty one, keeping a dimension
 * count a first insert has set.  The caller holds the metapage's page lock,
 * which serialises metapage updates.
 */
HannoyEnv *
HannoyRecreateSidecar(Relation index, HannoyMetaPageData *meta)
{
	HannoyMetaPageData fresh;
	HannoyEnv         *env = HannoyCreateSidecar(index, &fresh, meta->dims, false);

	*meta = fresh;
	return env;
}
