/*
 * hannoyvacuum.c
 *	  ambulkdelete and amvacuumcleanup (DESIGN.md "VACUUM").  The shim walks
 *	  the indexed rows in batches, asks VACUUM's callback about each one with
 *	  no core frame on the stack, and hands the dead ones back to the core,
 *	  which removes them in one short, synced write transaction per batch
 *	  (DESIGN.md "Durable removal", "Short write transactions").  Removed graph nodes stay as
 *tombstones that searches walk through but never return.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/rel.h"
#include "utils/builtins.h"

#include "hannoy_am.h"

#define HANNOY_VACUUM_BATCH 1024

/*
 * Opens the sidecar for VACUUM, or warns and returns NULL (DESIGN.md "Never silently wrong").
 * *rebuilding: it is being rebuilt from the table, or is to be (NULL), see
 * remove_while_rebuilt.
 */
static HannoyEnv *
open_for_vacuum(Relation index, HannoyMetaPageData *meta, bool *rebuilding)
{
	const char *why = NULL;
	HannoyEnv  *env = HannoyOpenEnvForWrite(index, meta, rebuilding, &why);

	if (env == NULL && !*rebuilding && !HannoyAwaitsSidecar(meta))
	{
		HannoyMarkBroken(index, why);
		HannoyReportUnusable(index, why, WARNING, "skipping it");
		/* a standby's replica would keep the dead rows, whose slots the heap may reuse */
		HannoyLogDistrust(index);
	}
	return env;
}

/*
 * repair_graph reconnects the graph around the removed nodes and frees
 * their ids, in slices with interrupt checks between them; a cancel leaves
 * the rest to the next VACUUM.
 */
static void
repair_graph(Relation index, HannoyEnv *env)
{
	HannoyRepair *volatile repair = NULL;
	HannoyError  err;
	HannoyStatus st;
	bool         done = false;
	uint64       repaired = 0;

	HannoyEnvPin(env);
	PG_TRY();
	{
		HannoyRepair *r;

		st = hannoy_repair_begin(env, &r, &err);
		if (st != HANNOY_OK)
			HannoyReportError(st, &err, index);
		repair = r;
		while (!done)
		{
			vacuum_delay_point();
			CHECK_FOR_INTERRUPTS();
			st = hannoy_repair_step(r, HANNOY_SLICE_MS, &done, &repaired, &err);
			if (st != HANNOY_OK)
				HannoyReportError(st, &err, index);
		}
	}
	PG_FINALLY();
	{
		if (repair != NULL)
			hannoy_repair_free(repair);
		HannoyEnvUnpin(env);
	}
	PG_END_TRY();
	ereport(DEBUG1, (errmsg("hannoy index \"%s\": rebuilt %llu neighbour lists around removed rows",
	                        RelationGetRelationName(index), (unsigned long long) repaired)));
}

/*
 * remove_while_rebuilt is hannoybulkdelete for a sidecar being rebuilt from
 * the table (DESIGN.md "Rebuilding on a primary"), whose rows are not all
 * in it yet: VACUUM's callback is asked about every TID the table's pages
 * can hold, and the dead ones are logged and recorded, so that the rebuild
 * drops them from its graph when it ends and no staged row keeps them.  No
 * repair: the graph is the rebuild's until then.  'env' NULL: a sidecar to
 * be rebuilt that no rebuild has replaced yet; the removals are only logged
 * (the rebuild never reads a removed row).
 */
static void
remove_while_rebuilt(Relation index, HannoyEnv *env, const HannoyMetaPageData *meta,
                     IndexBulkDeleteResult *stats, IndexBulkDeleteCallback callback,
                     void *callback_state)
{
	Relation     heap = table_open(index->rd_index->indrelid, NoLock);
	BlockNumber  nblocks = RelationGetNumberOfBlocks(heap);
	HannoyEntry *dead = palloc(sizeof(HannoyEntry) * HANNOY_VACUUM_BATCH);
	HannoyTid   *tids = palloc(sizeof(HannoyTid) * HANNOY_VACUUM_BATCH);
	uint32       ndead = 0;
	HannoyError  err;
	HannoyStatus st;
	bool         applied;

	table_close(heap, NoLock);
	for (BlockNumber block = 0; block <= nblocks; block++)
	{
		/* a full batch, or the last one */
		if (ndead > 0 && (block == nblocks || ndead > HANNOY_VACUUM_BATCH - MaxHeapTuplesPerPage))
		{
			for (uint32 i = 0; i < ndead; i++)
				tids[i] = dead[i].tid;
			HannoyLogRemove(index, meta->generation, dead, ndead);
			if (env != NULL &&
			    (st = hannoy_replica_unstage(env, 0, tids, ndead, &applied, &err)) != HANNOY_OK)
				HannoyReportError(st, &err, index);
			stats->tuples_removed += ndead;
			ndead = 0;
		}
		if (block == nblocks)
			break;
		vacuum_delay_point();
		for (OffsetNumber off = FirstOffsetNumber; off <= MaxHeapTuplesPerPage; off++)
		{
			ItemPointerData tid;

			ItemPointerSet(&tid, block, off);
			if (callback(&tid, callback_state))
			{
				dead[ndead].tid = HannoyTidFromItemPointer(&tid);
				dead[ndead].id = UINT32_MAX;
				ndead++;
			}
		}
	}
	stats->estimated_count = true;
	pfree(dead);
	pfree(tids);
}

/* remove_while_rebuilt with 'env' pinned meanwhile. */
static pg_noinline void
remove_pinned(Relation index, HannoyEnv *env, const HannoyMetaPageData *meta,
              IndexBulkDeleteResult *stats, IndexBulkDeleteCallback callback, void *callback_state)
{
	HannoyEnvPin(env);
	PG_TRY();
	{
		remove_while_rebuilt(index, env, meta, stats, callback, callback_state);
	}
	PG_FINALLY();
	{
		HannoyEnvUnpin(env);
	}
	PG_END_TRY();
}

/*
 * hannoybulkdelete removes the rows VACUUM's callback reports dead, then
 * repairs the graph around them.
 */
IndexBulkDeleteResult *
hannoybulkdelete(IndexVacuumInfo        *info, IndexBulkDeleteResult *volatile stats,
                 IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation            index = info->index;
	HannoyEnv          *env;
	HannoyEntryPosition pos;
	HannoyEntry        *entries;
	HannoyEntry        *dead;
	HannoyError         err;
	HannoyStatus        st;
	HannoyMetaPageData  meta;
	bool                rebuilding = false;

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	env = open_for_vacuum(index, &meta, &rebuilding);
	if (env == NULL && rebuilding)
		remove_while_rebuilt(index, NULL, &meta, stats, callback, callback_state);
	else if (rebuilding)
		remove_pinned(index, env, &meta, stats, callback, callback_state);
	if (rebuilding)
	{
		stats->num_pages = RelationGetNumberOfBlocks(index);
		return stats;
	}
	if (env == NULL)
		return stats;
	HannoyEnvPin(env);
	PG_TRY();
	{
		/* a promoted replica's staged rows join the graph first: the walk reads the graph */
		HannoyLinkStaged(index, env);
		memset(&pos, 0, sizeof(pos));
		entries = palloc(sizeof(HannoyEntry) * HANNOY_VACUUM_BATCH);
		dead = palloc(sizeof(HannoyEntry) * HANNOY_VACUUM_BATCH);
		stats->num_index_tuples = 0;
		for (;;)
		{
			uint32 n;
			uint32 ndead = 0;

			vacuum_delay_point();
			st = hannoy_entries_next(env, &pos, entries, HANNOY_VACUUM_BATCH, &n, &err);
			if (st != HANNOY_OK)
				HannoyReportError(st, &err, index);
			if (n == 0)
				break;
			for (uint32 i = 0; i < n; i++)
			{
				ItemPointerData tid;

				HannoyTidToItemPointer(entries[i].tid, &tid);
				if (callback(&tid, callback_state))
					dead[ndead++] = entries[i];
				else
					stats->num_index_tuples++;
			}
			if (ndead > 0)
			{
				/* on disk before the sidecar forgets them: DESIGN.md "Replication and recovery" */
				HannoyLogRemove(index, meta.generation, dead, ndead);
				st = hannoy_delete_entries(env, dead, ndead, &err);
				if (st != HANNOY_OK)
					HannoyReportError(st, &err, index);
				stats->tuples_removed += ndead;
			}
		}
	}
	PG_FINALLY();
	{
		HannoyEnvUnpin(env);
	}
	PG_END_TRY();
	repair_graph(index, env);
	stats->num_pages = RelationGetNumberOfBlocks(index);
	return stats;
}

/*
 * hannoyvacuumcleanup reports the index's row count.
 */
IndexBulkDeleteResult *
hannoyvacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	HannoyEnv         *env;
	HannoyStats        s;
	HannoyError        err;
	HannoyMetaPageData meta;
	const char        *why;

	if (info->analyze_only)
		return stats;
	if (stats == NULL)
	{
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
		env = HannoyOpenEnv(info->index, &meta, true, &why);
		if (env != NULL && hannoy_env_stats(env, &s, &err) == HANNOY_OK)
			stats->num_index_tuples = (double) (s.items + s.unindexed);
	}
	stats->num_pages = RelationGetNumberOfBlocks(info->index);
	return stats;
}
