/*
 * hannoylifecycle.c
 *	  Sidecars live and die with their relation files, transactionally
 *	  (DESIGN I5).
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
#include "hannoy/shim_guard.h"

#include "postgres.h"

#include <dirent.h>
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

#include "hannoy/am.h"

typedef struct HannoyRemoval
{
	RelFileNodeBackend rnode;    /* the sidecar's relation file */
	bool               whole_db; /* DROP DATABASE: every sidecar of rnode.node.dbNode */
	SubTransactionId   subid;    /* who asked; InvalidSubTransactionId at pre-commit */
} HannoyRemoval;

/* Removals waiting for the current transaction's commit, in TopMemoryContext. */
static List *pending_removals = NIL;

static object_access_hook_type prev_object_access_hook = NULL;

/* Adds a removal to the list. */
static void
schedule_removal(RelFileNodeBackend rnode, bool whole_db, SubTransactionId subid)
{
	MemoryContext  old = MemoryContextSwitchTo(TopMemoryContext);
	HannoyRemoval *r = palloc(sizeof(HannoyRemoval));

	r->rnode = rnode;
	r->whole_db = whole_db;
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
				schedule_removal(rnode, false, GetCurrentSubTransactionId());
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
		schedule_removal(rnode, true, GetCurrentSubTransactionId());
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

		if (!r->whole_db && r->rnode.node.dbNode == MyDatabaseId && relation_file_in_use(r->rnode))
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
			schedule_removal(rnode, false, InvalidSubTransactionId);
		pfree(path);
	}
	if (n > 0)
		pfree(rels);
}

static void remove_orphan(RelFileNodeBackend rnode, const char *path, const char *why);

/*
 * Removes every sidecar of database 'db' (after DROP DATABASE committed, or
 * found by the start-up sweep); logs each removal with 'why' unless NULL.
 */
static void
remove_database_sidecars(Oid db, const char *why)
{
	char          *root = HannoySidecarRoot();
	DIR           *dir = AllocateDir(root);
	struct dirent *de;

	if (dir == NULL)
	{
		pfree(root);
		return;
	}
	while ((de = ReadDirExtended(dir, root, WARNING)) != NULL)
	{
		RelFileNodeBackend rnode;
		char              *path;

		if (!HannoyParseSidecarName(de->d_name, &rnode) || rnode.node.dbNode != db)
			continue;
		if (why == NULL)
		{
			HannoyRemoveSidecar(rnode);
			continue;
		}
		path = psprintf("%s/%s", root, de->d_name);
		remove_orphan(rnode, path, why);
		pfree(path);
	}
	FreeDir(dir);
	pfree(root);
}

/*
 * HannoyLifecycleAtCommit removes the sidecars whose relation files the
 * committed transaction deleted.  Failures are WARNINGs: the transaction
 * has committed.
 */
void
HannoyLifecycleAtCommit(void)
{
	ListCell *lc;

	foreach (lc, pending_removals)
	{
		HannoyRemoval *r = lfirst(lc);

		if (r->whole_db)
			remove_database_sidecars(r->rnode.node.dbNode, NULL);
		else
			HannoyRemoveSidecar(r->rnode);
	}
	list_free_deep(pending_removals);
	pending_removals = NIL;
}

/*
 * HannoyLifecycleAtAbort forgets pending removals: the relation files stay.
 * A prepared transaction forgets them too; its sidecars are swept later.
 */
void
HannoyLifecycleAtAbort(void)
{
	list_free_deep(pending_removals);
	pending_removals = NIL;
}

/*
 * HannoyLifecycleSubXact undoes the removals of an aborted subtransaction
 * (ROLLBACK TO SAVEPOINT) and hands a committed one's to its parent.
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
 * HannoySweep removes the sidecars of the current database that no index
 * owns, and those of databases that no longer exist; returns how many.
 * Each removal is logged.
 */
int
HannoySweep(void)
{
	char          *root = HannoySidecarRoot();
	DIR           *dir = AllocateDir(root);
	struct dirent *de;
	int            removed = 0;

	if (dir == NULL)
	{
		pfree(root);
		return 0;
	}
	while ((de = ReadDirExtended(dir, root, WARNING)) != NULL)
	{
		RelFileNodeBackend rnode;
		char              *path;
		bool               orphan;

		if (!HannoyParseSidecarName(de->d_name, &rnode))
			continue;
		path = psprintf("%s/%s", root, de->d_name);
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
			removed++;
		pfree(path);
	}
	FreeDir(dir);
	pfree(root);
	return removed;
}

/*
 * HannoyRemoveTempSidecarsAtStart removes every temporary relation's
 * sidecar when the server starts: temporary relations never survive a
 * restart.  Runs in the postmaster, before any backend exists.
 */
void
HannoyRemoveTempSidecarsAtStart(void)
{
	char          *root = psprintf("%s/hannoy", DataDir);
	DIR           *dir = AllocateDir(root);
	struct dirent *de;

	if (dir != NULL)
	{
		while ((de = ReadDirExtended(dir, root, LOG)) != NULL)
		{
			RelFileNodeBackend rnode;
			HannoyError        err;
			char              *path;

			if (!HannoyParseSidecarName(de->d_name, &rnode) || rnode.backend == InvalidBackendId)
				continue;
			path = psprintf("%s/%s", root, de->d_name);
			if (hannoy_env_remove(path, &err) != HANNOY_OK)
				ereport(LOG,
				        (errmsg("could not remove hannoy sidecar \"%s\": %s", path, err.message)));
			pfree(path);
		}
		FreeDir(dir);
	}
	pfree(root);
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
