/*
 * hannoylifecycle.c
 *	  Sidecars live and die with their relation files, transactionally
 *	  (DESIGN.md "Sidecar follows the relation file").
 *
 *	  At pre-commit, the relation files PostgreSQL will delete when this
 *	  transaction commits (DROP of an index, table or schema; the old file
 *	  after TRUNCATE, REINDEX, VACUUM FULL, CLUSTER, SET TABLESPACE; the last
 *	  step of DROP INDEX CONCURRENTLY) name the sidecars to remove; they are
 *	  removed once the transaction has committed.  Temporary indexes (which
 *	  that list leaves out) and DROP DATABASE are caught by the object access
 *	  hook.  An abort forgets everything, ROLLBACK TO SAVEPOINT what its
 *	  subtransaction added.  Whatever escapes (a crash, a prepared
 *	  transaction committed elsewhere) is removed by hannoy_sweep(), which
 *	  also runs at the start of every build and, through background workers
 *	  (hannoysweeper.c), in every database once the server has started.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/storage.h"
#include "commands/defrem.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/relfilenodemap.h"
#include "utils/syscache.h"

#include "hannoy_am.h"

/*
 * A sidecar removal waiting for the end of the current transaction: at its
 * commit (the relation file is dropped) or at its abort (the sidecar was
 * created by it).
 */
typedef struct HannoyRemoval
{
	RelFileNodeBackend rnode;     /* the sidecar's relation file */
	bool               whole_db;  /* DROP DATABASE: every sidecar of rnode.node.dbNode */
	bool               at_commit; /* removed if the transaction commits, else if it aborts */
	SubTransactionId   subid;     /* who asked; InvalidSubTransactionId at pre-commit */
} HannoyRemoval;

/* Removals waiting for the current transaction's end, in TopMemoryContext. */
static List *pending_removals = NIL;

static object_access_hook_type prev_object_access_hook = NULL;

/* Adds a removal to the list. */
static void
schedule_removal(RelFileNodeBackend rnode, bool whole_db, bool at_commit, SubTransactionId subid)
{
	MemoryContext  old = MemoryContextSwitchTo(TopMemoryContext);
	HannoyRemoval *r = palloc(sizeof(HannoyRemoval));

	r->rnode = rnode;
	r->whole_db = whole_db;
	r->at_commit = at_commit;
	r->subid = subid;
	pending_removals = lappend(pending_removals, r);
	MemoryContextSwitchTo(old);
}

/* OID of the hannoy access method, or InvalidOid before CREATE EXTENSION. */
static Oid
hannoy_am_oid(void)
{
	return get_index_am_oid("hannoy", true);
}

/* True when some relation of this database uses the relation file 'rnode'. */
static bool
relation_file_in_use(RelFileNodeBackend rnode)
{
	return OidIsValid(RelidByRelfilenode(
	    rnode.node.spcNode == MyDatabaseTableSpace ? InvalidOid : rnode.node.spcNode,
	    rnode.node.relNode));
}

/*
 * hannoy_object_access records the sidecars of temporary hannoy indexes and
 * of databases being dropped.
 */
static void
hannoy_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access != OAT_DROP || !hannoy_preloaded)
		return;

	if (classId == RelationRelationId && subId == 0)
	{
		HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(objectId));

		if (HeapTupleIsValid(tuple))
		{
			Form_pg_class form = (Form_pg_class) GETSTRUCT(tuple);
			Oid           am = hannoy_am_oid();

			if (form->relkind == RELKIND_INDEX && OidIsValid(am) && form->relam == am &&
			    form->relpersistence == RELPERSISTENCE_TEMP)
			{
				RelFileNodeBackend rnode;

				rnode.node.spcNode =
				    OidIsValid(form->reltablespace) ? form->reltablespace : MyDatabaseTableSpace;
				rnode.node.dbNode = MyDatabaseId;
				rnode.node.relNode = form->relfilenode;
				rnode.backend = GetTempNamespaceBackendId(form->relnamespace);
				if (rnode.backend == InvalidBackendId)
					rnode.backend = MyBackendId;
				schedule_removal(rnode, false, true, GetCurrentSubTransactionId());
			}
			ReleaseSysCache(tuple);
		}
	}
	else if (classId == DatabaseRelationId)
	{
		RelFileNodeBackend rnode;

		memset(&rnode, 0, sizeof(rnode));
		rnode.node.dbNode = objectId;
		rnode.backend = InvalidBackendId;
		schedule_removal(rnode, true, true, GetCurrentSubTransactionId());
	}
}

/*
 * HannoyLifecyclePreCommit schedules the removal of the sidecar of every
 * relation file this transaction deletes at commit.
 */
void
HannoyLifecyclePreCommit(void)
{
	RelFileNode *rels;
	int          n;
	ListCell    *lc;

	/* a dropped temporary index whose file another index now uses keeps its sidecar */
	foreach (lc, pending_removals)
	{
		HannoyRemoval *r = lfirst(lc);

		if (r->at_commit && !r->whole_db && r->rnode.node.dbNode == MyDatabaseId &&
		    relation_file_in_use(r->rnode))
		{
			pending_removals = foreach_delete_current(pending_removals, lc);
			pfree(r);
		}
	}

	n = smgrGetPendingDeletes(true, &rels);

	for (int i = 0; i < n; i++)
	{
		RelFileNodeBackend rnode;
		char              *path;

		rnode.node = rels[i];
		rnode.backend = InvalidBackendId;
		path = HannoySidecarPath(rnode);
		if (hannoy_env_exists(path))
			schedule_removal(rnode, false, true, InvalidSubTransactionId);
		pfree(path);
	}
	if (n > 0)
		pfree(rels);
}

/*
 * remove_orphan removes a sidecar nothing owns and logs it (the removal
 * itself warns when it fails).
 */
static void
remove_orphan(RelFileNodeBackend rnode, const char *path, const char *why)
{
	struct stat st;

	HannoyRemoveSidecar(rnode);
	if (stat(path, &st) != 0 && errno == ENOENT)
		ereport(LOG, (errmsg("removed hannoy sidecar \"%s\": %s", path, why)));
}

/* What a walk over the sidecars of one database is for. */
typedef struct DatabaseRemoval
{
	Oid         db;
	const char *why; /* logged with each removal; NULL: removed without a log line */
} DatabaseRemoval;

/* Removes one sidecar of the database a DatabaseRemoval names. */
static void
remove_database_sidecar(void *arg, RelFileNodeBackend rnode, const char *path)
{
	DatabaseRemoval *dr = arg;

	if (rnode.node.dbNode != dr->db)
		return;
	if (dr->why == NULL)
		HannoyRemoveSidecar(rnode);
	else
		remove_orphan(rnode, path, dr->why);
}

/*
 * Removes every sidecar of database 'db' (after DROP DATABASE committed, or
 * found by the start-up sweep); logs each removal with 'why' unless NULL.
 */
static void
remove_database_sidecars(Oid db, const char *why)
{
	DatabaseRemoval dr = {db, why};

	HannoyForEachSidecar(WARNING, remove_database_sidecar, &dr);
}

/*
 * HannoyRegisterCreatedSidecar remembers a sidecar this transaction creates
 * so that it is removed if the (sub)transaction aborts.
 */
void
HannoyRegisterCreatedSidecar(RelFileNodeBackend rnode)
{
	schedule_removal(rnode, false, false, GetCurrentSubTransactionId());
}

/* Removes the sidecar (or, for DROP DATABASE, the sidecars) a removal names. */
static void
run_removal(const HannoyRemoval *r)
{
	if (r->whole_db)
		remove_database_sidecars(r->rnode.node.dbNode, NULL);
	else
		HannoyRemoveSidecar(r->rnode);
	/* a standby's replica goes too (DESIGN.md "Replication and recovery") */
	HannoyLogDrop(r->rnode, r->whole_db);
}

/*
 * HannoyLifecycleAtEnd carries out the removals that wait for the way the
 * transaction ended ('committed' or not) and forgets the rest; with
 * 'forget_all' (PREPARE, a parallel worker's commit) it carries out none:
 * sidecars a prepared transaction drops are swept later.  Failures are
 * WARNINGs: the transaction has ended.
 */
void
HannoyLifecycleAtEnd(bool committed, bool forget_all)
{
	ListCell *lc;

	if (!forget_all)
	{
		foreach (lc, pending_removals)
		{
			HannoyRemoval *r = lfirst(lc);

			if (r->at_commit == committed)
				run_removal(r);
		}
	}
	list_free_deep(pending_removals);
	pending_removals = NIL;
}

/*
 * HannoyLifecycleSubXact ends the removals of a subtransaction: when it
 * aborts (ROLLBACK TO SAVEPOINT) the sidecars it created are removed and
 * the drops it asked for are forgotten; when it commits its parent takes
 * them over.
 */
void
HannoyLifecycleSubXact(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid)
{
	ListCell *lc;

	foreach (lc, pending_removals)
	{
		HannoyRemoval *r = lfirst(lc);

		if (r->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			if (!r->at_commit)
				run_removal(r);
			pending_removals = foreach_delete_current(pending_removals, lc);
			pfree(r);
		}
		else if (event == SUBXACT_EVENT_COMMIT_SUB)
			r->subid = parentSubid;
	}
}

/* True when this backend holds any lock on relation 'relid'. */
static bool
owner_locked_by_me(Oid relid)
{
	LOCKTAG tag;

	SET_LOCKTAG_RELATION(tag, MyDatabaseId, relid);
	for (LOCKMODE mode = AccessShareLock; mode <= AccessExclusiveLock; mode++)
		if (LockHeldByMe(&tag, mode))
			return true;
	return false;
}

/*
 * Decides whether the sidecar 'rnode' of this database is an orphan: its
 * recorded index no longer exists or uses another relation file.  An index
 * someone holds a lock on (a build or REINDEX in progress) is never one.
 */
static bool
sidecar_is_orphan(RelFileNodeBackend rnode, const char *path)
{
	uint32    owner;
	HeapTuple tuple;
	bool      orphan;

	if (!hannoy_env_owner(path, &owner))
	{
		/* an empty directory left by a crash, or a sidecar older than owner files */
		if (!hannoy_env_exists(path))
			return true;
		return !relation_file_in_use(rnode);
	}
	/* ALTER COLUMN TYPE can rebuild an index under a new OID on the same file */
	if (relation_file_in_use(rnode))
		return false;
	/* this transaction is changing that index (REINDEX, DROP): its commit decides */
	if (owner_locked_by_me(owner))
		return false;
	if (!ConditionalLockRelationOid(owner, AccessExclusiveLock))
		return false;
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(owner));
	if (!HeapTupleIsValid(tuple))
		orphan = true;
	else
	{
		Form_pg_class form = (Form_pg_class) GETSTRUCT(tuple);
		Oid spc = OidIsValid(form->reltablespace) ? form->reltablespace : MyDatabaseTableSpace;

		orphan =
		    form->relfilenode != rnode.node.relNode || spc != rnode.node.spcNode ||
		    (rnode.backend != InvalidBackendId) != (form->relpersistence == RELPERSISTENCE_TEMP);
		ReleaseSysCache(tuple);
	}
	UnlockRelationOid(owner, AccessExclusiveLock);
	return orphan;
}

/*
 * HannoySweepDroppedDatabase removes the sidecars of database 'db', which
 * no longer exists (no hannoy index can be built in a database before its
 * creation commits).
 */
void
HannoySweepDroppedDatabase(Oid db)
{
	remove_database_sidecars(db, "its database no longer exists");
}

/*
 * Removes one sidecar if it is an orphan: of this database and no index
 * owns it, or of a database that no longer exists.  Counts removals in
 * *(int *) arg.
 */
static void
sweep_sidecar(void *arg, RelFileNodeBackend rnode, const char *path)
{
	bool orphan;

	if (rnode.node.dbNode == MyDatabaseId)
	{
		orphan = sidecar_is_orphan(rnode, path);
		if (orphan)
			remove_orphan(rnode, path, "no index owns it");
	}
	else
	{
		orphan = !SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(rnode.node.dbNode));
		if (orphan)
			remove_orphan(rnode, path, "its database no longer exists");
	}
	if (orphan)
		(*(int *) arg)++;
}

/*
 * HannoySweep removes the sidecars of the current database that no index
 * owns, and those of databases that no longer exist; returns how many.
 * Each removal is logged.
 */
int
HannoySweep(void)
{
	int removed = 0;

	HannoyForEachSidecar(WARNING, sweep_sidecar, &removed);
	return removed;
}

/* Removes one sidecar if it belongs to a temporary relation. */
static void
remove_temp_sidecar(void *arg, RelFileNodeBackend rnode, const char *path)
{
	HannoyError err;

	if (rnode.backend == InvalidBackendId)
		return;
	/* in the postmaster before any backend: no handle to tell (HannoySidecarChanges) */
	if (hannoy_env_remove(path, &err) != HANNOY_OK)
		ereport(LOG, (errmsg("could not remove hannoy sidecar \"%s\": %s", path, err.message)));
}

/*
 * HannoyRemoveTempSidecarsAtStart removes every temporary relation's
 * sidecar when the server starts: temporary relations never survive a
 * restart.  Runs in the postmaster, before any backend exists.
 */
void
HannoyRemoveTempSidecarsAtStart(void)
{
	HannoyForEachSidecar(LOG, remove_temp_sidecar, NULL);
}

/* HannoyLifecycleInit installs the object access hook. */
void
HannoyLifecycleInit(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = hannoy_object_access;
}

PG_FUNCTION_INFO_V1(hannoy_sweep);

/*
 * hannoy_sweep() removes sidecars no index owns (see HannoySweep).
 */
Datum
hannoy_sweep(PG_FUNCTION_ARGS)
{
	if (!superuser())
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
		                errmsg("only superusers may call hannoy_sweep()")));
	PG_RETURN_INT32(HannoySweep());
}
