/*
 * hannoysweeper.c
 *	  The sweep at server start (DESIGN.md "Sidecar follows the relation file"): a background worker
 *removes the sidecars that nothing owns any more, as hannoy_sweep() would in each database, without
 *waiting for someone to call it or to build an index.
 *
 *	  When hannoy is in shared_preload_libraries, the postmaster starts a
 *	  launcher once recovery has finished (never on a standby).  The launcher
 *	  connects to no database, lists the sidecar directories, removes those
 *	  of databases that no longer exist (a crash between DROP DATABASE's
 *	  commit and the removal of its sidecars), and starts one worker per
 *	  remaining database that has sidecars, one at a time.  Each worker runs
 *	  HannoySweep in its database: a sidecar goes only when the index it
 *	  records is gone, after a conditional lock on that index and a second
 *	  look at the catalog, so the sidecar of an uncommitted CREATE INDEX (a
 *	  prepared transaction's, too) is never removed.  Every removal is
 *	  logged.
 *
 *	  The sweep must run again after a crash-restart (a killed CREATE INDEX
 *	  leaves its sidecar behind), but the postmaster forgets a worker that
 *	  exited with status 0 and, at a crash-restart, every worker registered
 *	  with BGW_NEVER_RESTART.  So the launcher has a restart time, and after
 *	  its sweep it stays, idle on its latch: a crash-restart kills it like
 *	  every other process and the postmaster starts it again, at once, once
 *	  crash recovery has finished, and it sweeps again.  It leaves with
 *	  status 0 on SIGTERM (a shutdown).  The per-database workers are never
 *	  restarted.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "hannoy_am.h"

/* How long the launcher keeps trying when no worker slot is free. */
#define HANNOY_SWEEPER_RETRY_MS 1000
#define HANNOY_SWEEPER_RETRIES  60

/* Seconds before the postmaster starts the launcher again after an ERROR. */
#define HANNOY_SWEEPER_RESTART_S 60

/* Fills the fields every sweep worker shares. */
static void
init_worker(BackgroundWorker *worker, const char *function, Datum arg)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker->bgw_library_name, "hannoy", BGW_MAXLEN);
	strlcpy(worker->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker->bgw_type, "hannoy sweep", BGW_MAXLEN);
	worker->bgw_main_arg = arg;
}

/*
 * HannoyRegisterSweeper registers the launcher; called from _PG_init while
 * shared_preload_libraries is being processed.
 */
void
HannoyRegisterSweeper(void)
{
	BackgroundWorker worker;

	init_worker(&worker, "HannoySweeperLauncherMain", (Datum) 0);
	strlcpy(worker.bgw_name, "hannoy sweep launcher", BGW_MAXLEN);
	worker.bgw_restart_time = HANNOY_SWEEPER_RESTART_S;
	RegisterBackgroundWorker(&worker);
}

/*
 * Adds the database of one sidecar to the list at 'arg'.  On the way, the
 * dirty markers that processes of this boot left when they were killed (a
 * crash-restart) are cleared once the sidecar is synced, so that a reboot
 * later does not take them for an operating system crash's (DESIGN.md "The
 * dirty marker").
 */
static void
add_sidecar_database(void *arg, RelFileNodeBackend rnode, const char *path)
{
	List      **dbs = arg;
	bool        torn;
	HannoyError err;

	(void) hannoy_env_torn(path, &torn, &err);
	*dbs = list_append_unique_oid(*dbs, rnode.node.dbNode);
}

/*
 * sidecar_databases returns the OIDs of the databases that have at least
 * one sidecar directory.
 */
static List *
sidecar_databases(void)
{
	List *dbs = NIL;

	HannoyForEachSidecar(LOG, add_sidecar_database, &dbs);
	return dbs;
}

/*
 * run_database_worker starts the sweep worker of database 'db' and waits
 * for it to end; false when it could not be started.
 */
static bool
run_database_worker(Oid db)
{
	BackgroundWorker        worker;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus         status;

	init_worker(&worker, "HannoySweeperMain", ObjectIdGetDatum(db));
	snprintf(worker.bgw_name, BGW_MAXLEN, "hannoy sweep of database %u", db);
	worker.bgw_notify_pid = MyProcPid;
	for (int attempt = 0; !RegisterDynamicBackgroundWorker(&worker, &handle); attempt++)
	{
		if (attempt == HANNOY_SWEEPER_RETRIES)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
		                 HANNOY_SWEEPER_RETRY_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	status = WaitForBackgroundWorkerShutdown(handle);
	if (status == BGWH_POSTMASTER_DIED)
		proc_exit(1);
	pfree(handle);
	return true;
}

PGDLLEXPORT void HannoySweeperLauncherMain(Datum arg);
PGDLLEXPORT void HannoySweeperMain(Datum arg);

/*
 * sweep_all removes the sidecars of databases that no longer exist and
 * sweeps every other database that has sidecars, through one worker per
 * database.
 */
static void
sweep_all(void)
{
	List     *dbs;
	List     *live = NIL;
	ListCell *lc;

	dbs = sidecar_databases();
	if (dbs == NIL)
		return;

	StartTransactionCommand();
	foreach (lc, dbs)
	{
		Oid db = lfirst_oid(lc);

		if (SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(db)))
			live = lappend_oid(live, db);
		else
			HannoySweepDroppedDatabase(db);
	}
	CommitTransactionCommand();

	foreach (lc, live)
	{
		Oid db = lfirst_oid(lc);

		CHECK_FOR_INTERRUPTS();
		if (!run_database_worker(db))
			ereport(LOG, (errmsg("hannoy could not start the sidecar sweep of database %u", db),
			              errhint("Raise max_worker_processes, or call hannoy_sweep() in "
			                      "that database.")));
	}
}

/*
 * HannoySweeperLauncherMain is the launcher's entry point: it sweeps once
 * (never while recovery runs), then waits idle for a shutdown, so that the
 * postmaster keeps it registered and starts it again after a crash-restart.
 */
void
HannoySweeperLauncherMain(Datum arg)
{
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* shared catalogs only: pg_database */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	if (!RecoveryInProgress())
		sweep_all();

	/* idle: SIGTERM now only asks it to leave, with status 0 */
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	while (!ShutdownRequestPending)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH, -1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	proc_exit(0);
}

/*
 * HannoySweeperMain is the entry point of the worker of one database: it
 * runs the sweep hannoy_sweep() runs, logging each removal.
 */
void
HannoySweeperMain(Datum arg)
{
	Oid db = DatumGetObjectId(arg);

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, BGWORKER_BYPASS_ALLOWCONN);
	if (RecoveryInProgress())
		proc_exit(0);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "hannoy sidecar sweep");
	HannoySweep();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
