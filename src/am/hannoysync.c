/*
 * hannoysync.c
 *	  Group commit for sidecar syncs.  A transaction's sidecar commits need
 *	  not be on disk before its commit record: a process crash keeps them in
 *	  the page cache, and the writer's dirty marker, on disk before its first
 *	  unsynced commit, has a sidecar rebuilt after an operating system crash
 *	  (DESIGN.md "The dirty marker").  So a commit syncs only once its
 *	  process's marker is a second old, and the sync lets the marker go.
 *	  Backends inserting into the same index at the same time share that
 *	  sync: the first takes the index's sync lock and syncs everything
 *	  committed so far; the others wait on the lock, then find their commit
 *	  covered and return, as PostgreSQL's own WAL flushes do.  The lock is an
 *	  LWLock held only across the fsync, never while an LMDB write
 *	  transaction is open (DESIGN.md "Short write transactions").
 *
 *	  Slots live in shared memory (with the lock of replica directories,
 *	  HannoyReplicaPathsLock), so this needs hannoy in
 *	  shared_preload_libraries (as everything does); without it every
 *	  backend syncs on its own.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "hannoy_am.h"

/* Sync slots: indexes hashing to one slot share its lock (still correct). */
#define HANNOY_SYNC_SLOTS 64

typedef struct HannoySyncSlot
{
	LWLock             lock;
	RelFileNodeBackend rnode;      /* the index whose sync state this is */
	uint64             generation; /* its sidecar's generation */
	uint64             synced;     /* LMDB transactions up to this one are on disk */
	uint64             dev;        /* its data file (a rebuild from the table replaces it, */
	uint64             ino;        /* and the new file numbers its transactions afresh) */
} HannoySyncSlot;

static HannoySyncSlot *sync_slots = NULL;
/* Serializes replacing or removing a replica's directory (HannoyReplicaPathsLock). */
static LWLock *replica_paths_lock = NULL;
/* Set while redo applies a hannoy record (HannoyRedoWriting). */
static pg_atomic_uint32 *redo_writing = NULL;
/* A random number of this run of shared memory (HannoyServerLifetime). */
static uint64 *server_lifetime = NULL;
/* Sidecar directories made or removed since shared memory was made (HannoySidecarChanges). */
static pg_atomic_uint64 *sidecar_changes = NULL;

/*
 * Bytes of shared memory: the slots, the lock of replica directories, the
 * redo flag, the lifetime, the count of sidecar changes.
 */
#define HANNOY_SYNC_SHMEM_BYTES                                                                    \
	(MAXALIGN(sizeof(HannoySyncSlot) * HANNOY_SYNC_SLOTS) + MAXALIGN(sizeof(LWLock)) +             \
	 MAXALIGN(sizeof(pg_atomic_uint32)) + MAXALIGN(sizeof(uint64)) +                               \
	 MAXALIGN(sizeof(pg_atomic_uint64)))
static shmem_request_hook_type prev_shmem_request = NULL;
static shmem_startup_hook_type prev_shmem_startup = NULL;

/* Reserves the slots' shared memory. */
static void
hannoy_sync_shmem_request(void)
{
	if (prev_shmem_request)
		prev_shmem_request();
	RequestAddinShmemSpace(HANNOY_SYNC_SHMEM_BYTES);
}

/* Creates (in the postmaster) or attaches to the slots. */
static void
hannoy_sync_shmem_startup(void)
{
	bool found;

	if (prev_shmem_startup)
		prev_shmem_startup();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sync_slots = ShmemInitStruct("hannoy sidecar syncs", HANNOY_SYNC_SHMEM_BYTES, &found);
	replica_paths_lock =
	    (LWLock *) ((char *) sync_slots + MAXALIGN(sizeof(HannoySyncSlot) * HANNOY_SYNC_SLOTS));
	redo_writing = (pg_atomic_uint32 *) ((char *) replica_paths_lock + MAXALIGN(sizeof(LWLock)));
	server_lifetime = (uint64 *) ((char *) redo_writing + MAXALIGN(sizeof(pg_atomic_uint32)));
	sidecar_changes = (pg_atomic_uint64 *) ((char *) server_lifetime + MAXALIGN(sizeof(uint64)));
	if (!found)
	{
		/* a new number after every start and crash-restart: never 0 */
		uint64 lifetime = 0;
		int    tranche = LWLockNewTrancheId();

		while (lifetime == 0)
			if (!pg_strong_random(&lifetime, sizeof(lifetime)))
				lifetime = (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 40) ^ 1;
		*server_lifetime = lifetime;

		for (int i = 0; i < HANNOY_SYNC_SLOTS; i++)
		{
			LWLockInitialize(&sync_slots[i].lock, tranche);
			memset(&sync_slots[i].rnode, 0, sizeof(RelFileNodeBackend));
			sync_slots[i].generation = 0;
			sync_slots[i].synced = 0;
		}
		LWLockInitialize(replica_paths_lock, tranche);
		pg_atomic_init_u32(redo_writing, 0);
		pg_atomic_init_u64(sidecar_changes, 1);
		LWLockRegisterTranche(tranche, "hannoy_sync");
	}
	else
		LWLockRegisterTranche(sync_slots[0].lock.tranche, "hannoy_sync");
	LWLockRelease(AddinShmemInitLock);
}

/*
 * HannoySyncInit installs the shared memory hooks; called from _PG_init
 * while the library is preloaded.
 */
void
HannoySyncInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request = shmem_request_hook;
	shmem_request_hook = hannoy_sync_shmem_request;
	prev_shmem_startup = shmem_startup_hook;
	shmem_startup_hook = hannoy_sync_shmem_startup;
}

/*
 * HannoyReplicaPathsLock is the lock that the startup process holds while
 * redo creates, distrusts or removes a replica's directory, and the worker
 * rebuilding replicas from the table while it decides on and replaces one
 * (DESIGN.md "Rebuilding a replica from the table"), so a rebuild never
 * brings back a sidecar redo removed.  NULL without shared memory.
 */
LWLock *
HannoyReplicaPathsLock(void)
{
	return replica_paths_lock;
}

/*
 * HannoyServerLifetime returns a number of this run of the server's shared
 * memory: it changes at every start and crash-restart, so rows noted with
 * another one may have lost their heap rows' WAL in a crash (DESIGN.md
 * "WAL before sidecar").  0 without shared memory.
 */
uint64
HannoyServerLifetime(void)
{
	return server_lifetime != NULL ? *server_lifetime : 0;
}

/*
 * HannoySidecarChanges returns how many times a process of this server made
 * or removed a sidecar directory (plus one), read with a barrier, so a look
 * at the files after the call sees every change counted before it.  A
 * handle cached while the count was N needs no look at its path while the
 * count is still N: nothing replaced the file it is on.  0 without shared
 * memory (look every time).
 */
uint64
HannoySidecarChanges(void)
{
	uint64 changes;

	if (sidecar_changes == NULL)
		return 0;
	changes = pg_atomic_read_u64(sidecar_changes);
	/* the looks at the files that follow read what was there when it was counted, or later */
	pg_read_barrier();
	return changes;
}

/*
 * HannoyNoteSidecarChange counts a sidecar directory made or removed; called
 * after the change is complete on disk (and after the failure of one
 * attempted: what it left is looked at again).
 */
void
HannoyNoteSidecarChange(void)
{
	if (sidecar_changes != NULL)
		pg_atomic_fetch_add_u64(sidecar_changes, 1);
}

/*
 * HannoyRedoWriting records (in the startup process) whether redo is
 * applying a hannoy record, which takes LMDB's writer lock of a replica.
 */
void
HannoyRedoWriting(bool writing)
{
	if (redo_writing != NULL)
		pg_atomic_write_u32(redo_writing, writing ? 1 : 0);
}

/*
 * HannoyYieldToRedo is called by the replica linker and the rebuild worker
 * before each of their write transactions: while redo applies a record it
 * waits (up to 'max_ms'), so redo, which may be blocked on LMDB's writer
 * lock (a mutex that favours no waiter), takes it before their next batch.
 */
void
HannoyYieldToRedo(int max_ms)
{
	for (int waited = 0;
	     redo_writing != NULL && pg_atomic_read_u32(redo_writing) != 0 && waited < max_ms * 10;
	     waited++)
		pg_usleep(100);
}

/*
 * HannoySyncCommitted returns once every LMDB transaction this backend
 * committed to 'env' (the sidecar of 'index', of metapage generation
 * 'generation') is on disk or covered by this process's dirty marker, made
 * less than a second ago; it syncs only if neither that nor another
 * backend's sync has covered them.
 */
void
HannoySyncCommitted(Relation index, HannoyEnv *env, uint64 generation)
{
	RelFileNodeBackend rnode;
	HannoySyncSlot    *slot;
	HannoyError        err;
	HannoyStatus       st;
	uint64             mine, target;
	uint64             dev, ino;
	bool               covered;

	/* commits under a young dirty marker wait for the sync that removes it */
	if (hannoy_env_marker_covers(env))
		return;
	if (sync_slots == NULL)
	{
		st = hannoy_env_sync(env, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
		return;
	}
	memset(&rnode, 0, sizeof(rnode));
	rnode.node = index->rd_node;
	rnode.backend = index->rd_backend;
	/* our commits are at or before the last one committed now */
	st = hannoy_env_last_commit(env, &mine, &err);
	if (st != HANNOY_OK)
		HannoyReportError(st, &err, index);
	hannoy_env_file_id(env, &dev, &ino);
	slot =
	    &sync_slots[hash_bytes((const unsigned char *) &rnode, sizeof(rnode)) % HANNOY_SYNC_SLOTS];

	LWLockAcquire(&slot->lock, LW_EXCLUSIVE);
	covered = RelFileNodeBackendEquals(slot->rnode, rnode) && slot->generation == generation &&
	          slot->dev == dev && slot->ino == ino && dev != 0 && slot->synced >= mine;
	if (!covered)
	{
		/* everything committed before the sync starts is covered by it */
		st = hannoy_env_last_commit(env, &target, &err);
		if (st == HANNOY_OK)
			st = hannoy_env_sync(env, &err);
		if (st != HANNOY_OK)
		{
			LWLockRelease(&slot->lock);
			HannoyReportError(st, &err, index);
		}
		slot->rnode = rnode;
		slot->generation = generation;
		slot->dev = dev;
		slot->ino = ino;
		slot->synced = target;
	}
	LWLockRelease(&slot->lock);
	/* another backend's sync covered ours: our dirty marker may go (our own sync took it) */
	if (covered)
		hannoy_env_note_synced(env);
}
