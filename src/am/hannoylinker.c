/*
 * hannoylinker.c
 *	  The replica linker (DESIGN.md "Replication and recovery", "Linking on
 *	  a hot standby"): a background worker that, on a hot standby, moves the
 *	  rows WAL redo staged in replica sidecars into their graphs, and repairs
 *	  the graphs around the rows redo removed.
 *
 *	  The postmaster starts it once the standby is consistent.  It connects
 *	  to no database: it walks the sidecar directories, and for each replica
 *	  links staged rows in write transactions of about
 *	  HANNOY_LINKER_BATCH_MS each (the core's hannoy_replica_link), so the
 *	  startup process, the only other writer, never waits longer than one
 *	  batch for LMDB's writer lock.  When no replica has staged rows it
 *	  sleeps.  On the way it removes the sidecars whose relation file redo
 *	  has unlinked without a hannoy drop record (the sweep of a hot
 *	  standby: sweep_orphan).  When recovery ends (a promotion, the end of
 *	  a PITR, or a former standby started as a primary) it adopts every
 *	  replica (the server's own sidecar from then on: DESIGN.md "Promotion,
 *	  PITR, crash recovery") and goes on linking what they still have
 *	  staged, without repairs (VACUUM repairs a primary's graph); it leaves
 *	  with status 0 once nothing is left, at once on a primary that never
 *	  was a standby, and on SIGTERM.  The postmaster starts it again after a
 *	  crash-restart while it runs.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/xlog.h"
#include "catalog/pg_tablespace_d.h"
#include "common/relpath.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "hannoy_am.h"

/* Milliseconds of linking per write transaction (the writer lock is held that long). */
#define HANNOY_LINKER_BATCH_MS 20

/* Milliseconds one replica gets per round before the linker moves on to the next. */
#define HANNOY_LINKER_ROUND_MS 1000

/* Milliseconds the linker sleeps when no replica had work. */
#define HANNOY_LINKER_NAP_MS 250

/* Seconds before the postmaster starts the linker again after it failed. */
#define HANNOY_LINKER_RESTART_S 5

/* Milliseconds before a replica whose linking or repair failed is tried again. */
#define HANNOY_LINKER_RETRY_MS 60000

/* Milliseconds after which an idle replica is opened again although its file looks unchanged. */
#define HANNOY_LINKER_RECHECK_MS 10000

/*
 * Milliseconds before a sidecar whose rebuild from the table was asked for
 * is asked for again; the wait doubles with each ask that leaves it
 * untrusted, up to the maximum.
 */
#define HANNOY_LINKER_REBUILD_RETRY_MS     30000
#define HANNOY_LINKER_REBUILD_RETRY_MAX_MS 600000

/*
 * What the linker remembers of a replica between rounds, so that an idle
 * replica costs a stat() per round rather than opening its environment,
 * and a failing one is not retried (and logged) every round.
 */
typedef struct LinkerReplica
{
	char        path[MAXPGPATH]; /* the hash key */
	bool        idle;            /* nothing staged and no tombstone, as of 'file' */
	struct stat file;            /* data.mdb when it was last found idle */
	TimestampTz checked;         /* when it was last opened */
	TimestampTz retry_at;        /* after a failure: not before then */
	TimestampTz rebuild_asked;   /* when a rebuild from the table was last asked for */
	int         rebuild_wait_ms; /* how long to wait before asking again */
	bool        torn;            /* a dirty marker of another boot was found (to rebuild) */
} LinkerReplica;

/* What one round over the sidecars found (the visitors' argument). */
typedef struct LinkerRound
{
	bool busy;        /* some work was done: no nap */
	bool in_recovery; /* the server was in recovery when the round began */
	bool left;        /* out of recovery: a replica still has staged rows or failed */
	Oid  rebuild_db;  /* a database with a sidecar to rebuild from the table */
	bool cut;         /* some sidecar was not visited (the round stopped) */
} LinkerRound;

static HTAB *linker_replicas = NULL;

/*
 * Until the first round has ended, every sidecar is looked at for a dirty
 * marker of another boot (only a start of the server can find one).
 */
static bool linker_first_round = true;

/* The worker rebuilding replicas from the table (hannoyseed.c), while there is one. */
static BackgroundWorkerHandle *linker_seeder = NULL;

PGDLLEXPORT void HannoyLinkerMain(Datum arg);

/*
 * HannoyRegisterLinker registers the linker; called from _PG_init while
 * shared_preload_libraries is being processed.
 */
void
HannoyRegisterLinker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = HANNOY_LINKER_RESTART_S;
	strlcpy(worker.bgw_library_name, "hannoy", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "HannoyLinkerMain", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "hannoy replica linker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "hannoy replica linker", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/*
 * True when the linker should stop its current work: a shutdown, the test
 * setting that pauses it, or (for work begun in recovery: a repair, a
 * round's linking) the end of recovery, after which the round starts
 * afresh with adoption.
 */
static bool
linker_should_stop_in(bool in_recovery)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	return ShutdownRequestPending || hannoy_test_pause_linker ||
	       (in_recovery && !RecoveryInProgress());
}

/* linker_should_stop_in for work that runs in recovery only. */
static bool
linker_should_stop(void)
{
	return linker_should_stop_in(true);
}

/*
 * repair_replica repairs the graph of a replica around the rows redo
 * removed, in steps of one batch, for at most 'budget_ms' in all; a repair
 * cut short leaves the rest to the next round.  False when it failed.
 */
static bool
repair_replica(HannoyEnv *env, const char *path, long budget_ms)
{
	HannoyRepair *repair;
	HannoyError   err;
	TimestampTz   start = GetCurrentTimestamp();
	bool          done = false;
	uint64_t      repaired;

	if (hannoy_repair_begin(env, &repair, &err) != HANNOY_OK)
	{
		ereport(LOG,
		        (errmsg("hannoy could not repair replica sidecar \"%s\": %s", path, err.message)));
		return false;
	}
	while (!done && !linker_should_stop())
	{
		HannoyYieldToRedo(HANNOY_LINKER_BATCH_MS * 5);
		if (hannoy_repair_step(repair, HANNOY_LINKER_BATCH_MS, &done, &repaired, &err) != HANNOY_OK)
		{
			ereport(LOG, (errmsg("hannoy could not repair replica sidecar \"%s\": %s", path,
			                     err.message)));
			hannoy_repair_free(repair);
			return false;
		}
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), (int) budget_ms))
			break;
	}
	hannoy_repair_free(repair);
	return true;
}

/* True while the worker rebuilding replicas from the table runs. */
static bool
seeder_running(void)
{
	pid_t pid;

	if (linker_seeder == NULL)
		return false;
	if (GetBackgroundWorkerPid(linker_seeder, &pid) == BGWH_STOPPED)
	{
		pfree(linker_seeder);
		linker_seeder = NULL;
		return false;
	}
	return true;
}

/*
 * ask_rebuild notes that the sidecar of 'entry', in database 'db', is to be
 * rebuilt from the table: the round starts a worker for the first such
 * database, unless one runs.  A sidecar still untrusted after that (a
 * rebuild that failed, or one the worker leaves alone: a partial index, an
 * index the primary marked broken, a copy of an unlogged index) is asked
 * for again after HANNOY_LINKER_REBUILD_RETRY_MS, then after twice as long
 * each time, up to HANNOY_LINKER_REBUILD_RETRY_MAX_MS.
 */
static void
ask_rebuild(LinkerRound *round, LinkerReplica *entry, Oid db, TimestampTz now)
{
	if (seeder_running() ||
	    (entry->rebuild_asked != 0 &&
	     !TimestampDifferenceExceeds(entry->rebuild_asked, now, entry->rebuild_wait_ms)))
		return;
	if (!OidIsValid(round->rebuild_db))
		round->rebuild_db = db;
	if (round->rebuild_db != db)
		return;
	entry->rebuild_wait_ms = entry->rebuild_asked == 0 ? HANNOY_LINKER_REBUILD_RETRY_MS
	                                                   : Min(entry->rebuild_wait_ms * 2,
	                                                         HANNOY_LINKER_REBUILD_RETRY_MAX_MS);
	entry->rebuild_asked = now;
}

/* True when stat() results 'a' and 'b' describe the same, unchanged file. */
static bool
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * note_idle records whether 'entry' is idle: nothing staged and no
 * tombstone.  Its data file is stat()ed before the counters are read, so a
 * redo write after that changes the file again; since the file time's
 * granularity may hide a write of the same instant, an idle replica is
 * opened again every HANNOY_LINKER_RECHECK_MS anyway.
 */
static void
note_idle(LinkerReplica *entry, HannoyEnv *env)
{
	char        file[MAXPGPATH];
	struct stat st;
	uint64_t    staged;
	uint64_t    lsn;
	HannoyStats stats;
	HannoyError err;

	snprintf(file, sizeof(file), "%s/data.mdb", entry->path);
	entry->idle = stat(file, &st) == 0 &&
	              hannoy_replica_state(env, &staged, &lsn, &err) == HANNOY_OK && staged == 0 &&
	              hannoy_env_stats(env, &stats, &err) == HANNOY_OK && stats.deleted == 0;
	if (entry->idle)
		entry->file = st;
}

/*
 * replica_entry returns what the linker remembers of the sidecar at 'path',
 * made afresh the first time.
 */
static LinkerReplica *
replica_entry(const char *path)
{
	bool           found;
	LinkerReplica *entry = hash_search(linker_replicas, path, HASH_ENTER, &found);

	if (!found)
	{
		entry->idle = false;
		entry->checked = 0;
		entry->retry_at = 0;
		entry->rebuild_asked = 0;
		entry->rebuild_wait_ms = HANNOY_LINKER_REBUILD_RETRY_MS;
		entry->torn = false;
	}
	return entry;
}

/*
 * relation_files_gone says whether a relation file is surely gone: neither
 * its main fork nor its init fork (all an unlogged index has on a standby)
 * exists, while the directory of its tablespace ('spc_dir', NULL for the
 * data directory's own) does: a tablespace whose link or mount is missing
 * tells nothing.  Any answer of stat() but "no such file" counts as
 * present.
 */
static bool
relation_files_gone(const char *main_fork, const char *init_fork, const char *spc_dir)
{
	struct stat st;

	if (spc_dir != NULL && stat(spc_dir, &st) != 0)
		return false;
	return stat(main_fork, &st) != 0 && errno == ENOENT && stat(init_fork, &st) != 0 &&
	       errno == ENOENT;
}

/*
 * sweep_orphan removes, in recovery, the sidecar at 'path' when its
 * relation file is gone, and says whether it did (or tried, and waits to
 * try again).  Redo unlinks a relation file when it replays the commit or
 * abort that drops it, but runs no hannoy code for a drop the primary
 * logged no hannoy record for: a COMMIT PREPARED or ROLLBACK PREPARED, or
 * a primary that crashed between a commit and its drop record.  The
 * relation file (main fork) comes before the sidecar in WAL (redo creates a
 * replica at hannoy's create record, after the relation's own), so a file
 * found gone under the lock redo takes to create or remove a replica
 * belongs to no index redo can still replay into; a later relation with
 * the same file number creates its file first, and its create record then
 * waits for the lock.  A removal that fails is logged and tried again
 * after HANNOY_LINKER_RETRY_MS.
 */
static bool
sweep_orphan(RelFileNodeBackend rnode, const char *path, TimestampTz now)
{
	LWLock        *lock = HannoyReplicaPathsLock();
	LinkerReplica *entry = hash_search(linker_replicas, path, HASH_FIND, NULL);
	char          *main_fork;
	char          *init_fork;
	char          *spc_dir = NULL;
	HannoyError    err;
	HannoyStatus   st = HANNOY_OK;
	bool           gone = false;

	if (lock == NULL || (entry != NULL && now < entry->retry_at))
		return false;
	main_fork = relpathbackend(rnode.node, InvalidBackendId, MAIN_FORKNUM);
	init_fork = relpathbackend(rnode.node, InvalidBackendId, INIT_FORKNUM);
	if (rnode.node.spcNode != DEFAULTTABLESPACE_OID && rnode.node.spcNode != GLOBALTABLESPACE_OID)
		spc_dir = psprintf("pg_tblspc/%u/%s", rnode.node.spcNode, TABLESPACE_VERSION_DIRECTORY);
	if (relation_files_gone(main_fork, init_fork, spc_dir))
	{
		LWLockAcquire(lock, LW_EXCLUSIVE);
		gone = relation_files_gone(main_fork, init_fork, spc_dir);
		if (gone)
		{
			st = HannoyRemoveSidecarDir(path, &err);
		}
		LWLockRelease(lock);
	}
	pfree(main_fork);
	pfree(init_fork);
	if (spc_dir != NULL)
		pfree(spc_dir);
	if (!gone)
		return false;
	if (st != HANNOY_OK)
	{
		ereport(LOG, (errmsg("could not remove hannoy sidecar \"%s\": %s", path, err.message)));
		replica_entry(path)->retry_at = TimestampTzPlusMilliseconds(now, HANNOY_LINKER_RETRY_MS);
		return true;
	}
	ereport(LOG,
	        (errmsg("removed hannoy sidecar \"%s\": its relation file no longer exists", path)));
	hash_search(linker_replicas, path, HASH_REMOVE, NULL);
	return true;
}

/*
 * link_replica links the staged rows of one sidecar (a visitor of
 * HannoyForEachSidecar), if it is a replica, for at most
 * HANNOY_LINKER_ROUND_MS, then repairs around removed rows; sets *arg
 * (bool) when it did any work.  A replica found idle before and unchanged
 * since, or one that failed recently, is passed over.
 */
static void
link_replica(void *arg, RelFileNodeBackend rnode, const char *path)
{
	LinkerRound    *round = arg;
	bool            marked;
	HannoyEnvConfig config;
	HannoyEnv      *env;
	HannoyError     err;
	HannoyStats     stats;
	TimestampTz     start = GetCurrentTimestamp();
	uint64_t        linked = 0;
	uint64_t        staged = 1;
	bool            failed = false;
	LinkerReplica  *entry;
	char            file[MAXPGPATH];
	struct stat     st;
	bool            torn = false;

	if (rnode.backend != InvalidBackendId || strlen(path) >= MAXPGPATH)
		return;
	if (linker_should_stop_in(round->in_recovery))
	{
		round->cut = true;
		return;
	}
	/* the sweep of a hot standby (out of recovery, the sweep workers') */
	if (round->in_recovery && sweep_orphan(rnode, path, start))
		return;
	marked = hannoy_replica_marked(path);
	entry = hash_search(linker_replicas, path, HASH_FIND, NULL);
	/* a sidecar an operating system crash may have torn is rebuilt from the table */
	if (linker_first_round || (entry != NULL && entry->torn))
	{
		if (hannoy_env_torn(path, &torn, &err) != HANNOY_OK)
		{
			ereport(LOG, (errmsg("hannoy could not look for dirty markers in \"%s\": %s", path,
			                     err.message)));
			torn = false;
		}
	}
	if (entry != NULL)
		entry->torn = torn;
	/* after recovery: replicas to adopt, and adopted ones whose hint says rows are staged */
	if (!torn && !marked && !round->in_recovery && !hannoy_replica_has_staged_hint(path))
		return;
	entry = replica_entry(path);
	entry->torn = torn;
	if (torn)
	{
		ask_rebuild(round, entry, rnode.node.dbNode, start);
		if (!round->in_recovery)
			round->left = true;
		return;
	}
	/* in recovery, a sidecar this server does not trust is rebuilt from the table */
	if (!marked && round->in_recovery)
	{
		ask_rebuild(round, entry, rnode.node.dbNode, start);
		return;
	}
	snprintf(file, sizeof(file), "%s/data.mdb", path);
	if (stat(file, &st) != 0)
		return;
	if (start < entry->retry_at)
	{
		round->left = true;
		return;
	}
	if (round->in_recovery && entry->idle && same_file(&entry->file, &st) &&
	    !TimestampDifferenceExceeds(entry->checked, start, HANNOY_LINKER_RECHECK_MS))
		return;
	entry->idle = false;
	entry->checked = start;

	config = HannoyDefaultEnvConfig();
	if (hannoy_env_open(path, &config, &env, &err) != HANNOY_OK)
	{
		/* redo may have dropped it meanwhile */
		ereport(DEBUG1,
		        (errmsg("hannoy could not open replica sidecar \"%s\": %s", path, err.message)));
		return;
	}
	if (round->in_recovery || marked)
	{
		bool seeding = false;

		/*
		 * A rebuild from the table under way, or one cut short (asked for
		 * again); after recovery too, where it is adopted once it ends.
		 */
		if (hannoy_replica_seeding(env, &seeding, &err) != HANNOY_OK || seeding)
		{
			ask_rebuild(round, entry, rnode.node.dbNode, start);
			if (!round->in_recovery)
				round->left = true;
			hannoy_env_close(env);
			return;
		}
		/* a trusted replica: should it be rebuilt again later, that is asked for at once */
		entry->rebuild_asked = 0;
	}
	if (!round->in_recovery && marked)
	{
		bool adopted;

		if (HannoyAdoptReplica(env, path, &adopted, &err) != HANNOY_OK)
		{
			ereport(LOG, (errmsg("hannoy could not adopt replica sidecar \"%s\": %s", path,
			                     err.message)));
			entry->retry_at =
			    TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HANNOY_LINKER_RETRY_MS);
			round->left = true;
			hannoy_env_close(env);
			return;
		}
		round->busy = true;
		/* refused (not this history): untrusted from now on, nothing to link */
		if (!adopted)
		{
			hannoy_env_close(env);
			return;
		}
	}

	while (staged > 0 && !linker_should_stop_in(round->in_recovery) &&
	       !TimestampDifferenceExceeds(start, GetCurrentTimestamp(), HANNOY_LINKER_ROUND_MS))
	{
		uint64_t batch;

		HannoyYieldToRedo(HANNOY_LINKER_BATCH_MS * 5);
		if (hannoy_replica_link(env, HANNOY_LINKER_BATCH_MS, &batch, &staged, &err) != HANNOY_OK)
		{
			ereport(LOG, (errmsg("hannoy could not link the staged rows of replica sidecar "
			                     "\"%s\": %s",
			                     path, err.message)));
			failed = true;
			break;
		}
		linked += batch;
	}
	if (linked > 0)
		round->busy = true;
	/* busy only when tombstones went: a repair that cannot finish never spins */
	if (round->in_recovery && !failed && !linker_should_stop() &&
	    hannoy_env_stats(env, &stats, &err) == HANNOY_OK && stats.deleted > 0)
	{
		uint64_t before = stats.deleted;

		if (!repair_replica(env, path, HANNOY_LINKER_ROUND_MS))
			failed = true;
		else if (hannoy_env_stats(env, &stats, &err) == HANNOY_OK && stats.deleted < before)
			round->busy = true;
	}
	if (failed)
		entry->retry_at =
		    TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HANNOY_LINKER_RETRY_MS);
	else if (round->in_recovery)
		note_idle(entry, env);
	/* an adopted sidecar is the linker's until nothing is staged (its hint went then) */
	if (!round->in_recovery && (failed || staged > 0))
		round->left = true;
	hannoy_env_close(env);
}

/*
 * HannoyLinkerMain is the linker's entry point: rounds over every replica
 * while the server is in recovery, a nap after a round without work.
 */
void
HannoyLinkerMain(Datum arg)
{
	MemoryContext round_cxt;
	HASHCTL       ctl;

	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	round_cxt =
	    AllocSetContextCreate(TopMemoryContext, "hannoy linker round", ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = MAXPGPATH;
	ctl.entrysize = sizeof(LinkerReplica);
	linker_replicas = hash_create("hannoy linker replicas", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	pgstat_report_activity(STATE_RUNNING, "hannoy replica linker");
	for (;;)
	{
		LinkerRound   round;
		MemoryContext old;

		round.busy = false;
		round.in_recovery = RecoveryInProgress();
		round.left = false;
		round.rebuild_db = InvalidOid;
		round.cut = false;
		if (linker_should_stop_in(false))
		{
			if (ShutdownRequestPending)
				break;
			/* paused (a test): nothing is done, nothing is left behind */
			round.left = true;
		}
		else
		{
			old = MemoryContextSwitchTo(round_cxt);
			HannoyForEachSidecar(DEBUG1, link_replica, &round);
			MemoryContextSwitchTo(old);
			MemoryContextReset(round_cxt);
			/* every sidecar looked at for markers of another boot */
			if (!round.cut)
				linker_first_round = false;
		}
		if (OidIsValid(round.rebuild_db) && !HannoyStartSeeder(round.rebuild_db, &linker_seeder))
		{
			linker_seeder = NULL;
			ereport(LOG, (errmsg("hannoy could not start a worker to rebuild replicas from the "
			                     "table: no background worker slot is free"),
			              errhint("Raise max_worker_processes.")));
		}
		/* out of recovery, a round that adopted and left nothing ends the linker's work */
		if (!round.in_recovery && !round.busy && !round.left)
			break;
		if (round.busy)
			continue;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
		                 HANNOY_LINKER_NAP_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	proc_exit(0);
}
