/*
 * vacuum.cpp
 *	  Graph repair after VACUUM (DESIGN.md "VACUUM").
 *
 *	  hannoy_delete_entries turns removed rows into tombstones: their TIDs are
 *	  gone at once, but searches still walk through them.  The repair then
 *	  removes them in many short write transactions, in an order that keeps
 *	  every live node reachable from the entry point at layer 0 in every
 *	  state it commits, so a crash or a cancel between any two of them leaves
 *	  a connected graph:
 *
 *	  1. Reach: a walk over layer 0 that never passes through a tombstone,
 *	     from the node that is to be the entry point (the entry point, or the
 *	     live node with the highest layer when the entry point was removed).
 *	  2. Relink: every live node that walk missed (its ways in all went
 *	     through tombstones) is linked from the nearest nodes it reached.
 *	     Tombstones are still in place meanwhile.  A removed entry point then
 *	     lists its successor.
 *	  3. Lists: every neighbour list that names a tombstone is rebuilt from
 *	     its other neighbours and the tombstones' neighbours with the build's
 *	     heuristic (reconnecting through the removed node).  Links to
 *	     tombstones can go (1 and 2 made them unnecessary); a live neighbour
 *	     a list drops must stay one hop away (see prune_keeping_reach).
 *	  4. Delete: the tombstones' vectors and lists are deleted and their ids
 *	     go to the free list for inserts to reuse.
 *	  5. Finish: a removed entry point goes last, in the transaction that
 *	     makes its successor the entry point.
 *
 *	  Inserts meanwhile keep what is reachable reachable and never link to a
 *	  tombstone.  A repair cut short leaves tombstones that the next one
 *	  removes, starting again at step 1.
 */
#include "core_guard.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <unordered_set>
#include <vector>

#include "edit.hpp"
#include "graph.hpp"
#include "guarded.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "testing.hpp"

namespace
{

using Clock = std::chrono::steady_clock;

/* Longest a repair write transaction holds LMDB's writer lock. */
constexpr auto WRITE_SLICE = std::chrono::milliseconds(20);

/* Nodes the walk expands between two looks at the clock. */
constexpr size_t WALK_CHECK_EVERY = 1024;

/* The steps of a repair, in order (see the file header). */
enum class Stage
{
	Reach,
	Relink,
	Lists,
	Delete,
	Finish,
	Done
};

/* Commits 'txn' and lets a test look at the state it left. */
void
commit(hannoy::Txn &txn)
{
	txn.commit();
	hannoy::test_after_repair_commit();
}

} // namespace

struct HannoyRepair
{
	hannoy::Store               *store = nullptr;
	std::unordered_set<uint32_t> tombstones; /* the ones this repair removes */
	std::vector<uint32_t>        doomed;     /* the same, in id order */
	uint64_t                     next_id = 0;
	Stage                        stage = Stage::Reach;

	/* the node to be the entry point, and the walk from it */
	uint32_t                     root = hannoy::NO_NODE;
	int                          root_level = -1;
	std::unique_ptr<hannoy::Txn> snapshot; /* the walk's read transaction */
	std::vector<char>            reached;
	std::vector<uint32_t>        stack, orphans;
	size_t                       orphan_pos = 0;
	hannoy::RelinkScratch        relink;

	uint32_t           position = 0;   /* next node whose lists are examined */
	size_t             delete_pos = 0; /* next tombstone to delete */
	hannoy::CoverCache cover;
	uint64_t           repaired = 0; /* lists rebuilt */
	uint64_t           relinked = 0; /* unreachable nodes linked */
};

namespace
{

/*
 * The node with the highest layer among those this repair keeps, preferring
 * 'prefer' among equals; NO_NODE when none is left.  Sets 'level'.
 */
uint32_t
highest_node(HannoyRepair *r, MDB_txn *txn, uint32_t prefer, int &level)
{
	hannoy::Store &s = *r->store;
	uint32_t       best = hannoy::NO_NODE;
	level = -1;
	hannoy::Cursor cur(txn, s.dbi_links);
	MDB_val        key, data;
	for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
	{
		if (key.mv_size != 5)
			throw hannoy::Error(HANNOY_ERR_CORRUPT, "links database has a malformed key");
		uint32_t id = hannoy::decode_id(key);
		int      layer = static_cast<const unsigned char *>(key.mv_data)[4];
		if (r->tombstones.count(id) > 0 || layer < level)
			continue;
		if (layer > level || id == prefer)
		{
			level = layer;
			best = id;
		}
	}
	return best;
}

/* Starts the walk (step 1) from 'root' in a new read transaction. */
void
start_walk(HannoyRepair *r, uint32_t root, int level)
{
	r->root = root;
	r->root_level = level;
	/* a restarted walk's root may be a node inserted after the repair began (id >= next_id) */
	r->reached.assign(root == hannoy::NO_NODE ? r->next_id
	                                          : std::max<uint64_t>(r->next_id, uint64_t(root) + 1),
	                  0);
	r->stack.clear();
	r->orphans.clear();
	r->orphan_pos = 0;
	if (root == hannoy::NO_NODE)
	{
		/* nothing live is left to connect */
		r->snapshot.reset();
		r->stage = r->tombstones.empty() ? Stage::Finish : Stage::Delete;
		return;
	}
	if (!r->snapshot)
		r->snapshot = std::make_unique<hannoy::Txn>(r->store->env(), true);
	r->reached[root] = 1;
	r->stack.push_back(root);
	r->stage = Stage::Reach;
}

/* Reads the tombstones to remove, the id range to walk, and where the walk starts. */
void
start_repair(HannoyRepair *r)
{
	hannoy::Store &s = *r->store;
	r->snapshot = std::make_unique<hannoy::Txn>(s.env(), true);
	MDB_txn *txn = r->snapshot->get();
	/* the tombstones' codes go with them (delete_tombstone) */
	s.refresh_quantizer(txn);
	hannoy::GraphState state = s.read_state(txn);
	r->next_id = state.next_id;
	{
		hannoy::Cursor cur(txn, s.dbi_deleted);
		MDB_val        key, data;
		for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
			r->doomed.push_back(hannoy::decode_id(key));
	}
	r->tombstones.insert(r->doomed.begin(), r->doomed.end());
	uint32_t root = hannoy::NO_NODE;
	int      level = -1;
	if (state.max_level >= 0 && r->tombstones.count(state.entry_point) == 0)
	{
		root = state.entry_point;
		level = state.max_level;
	}
	else if (state.max_level >= 0)
		root = highest_node(r, txn, hannoy::NO_NODE, level);
	start_walk(r, root, level);
}

/*
 * Step 1: walks layer 0 from the root without passing through tombstones
 * until the deadline; at the end, lists the live nodes it missed.
 */
void
reach_slice(HannoyRepair *r, Clock::time_point deadline)
{
	hannoy::Store       &s = *r->store;
	MDB_txn             *txn = r->snapshot->get();
	hannoy::StoredEditor g(s, txn, &r->tombstones);
	g.keep_decoded(true); /* the repair edits links only here, never codes */
	while (!hannoy::mark_reachable(g, r->stack, r->reached, r->relink.scratch, WALK_CHECK_EVERY))
		if (Clock::now() >= deadline)
			return;
	{
		hannoy::Cursor cur(txn, s.dbi_tids);
		MDB_val        key, data;
		for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
		{
			uint32_t id = hannoy::decode_id(key);
			if (id < r->reached.size() && !r->reached[id])
				r->orphans.push_back(id);
		}
	}
	r->snapshot.reset();
	r->stage = Stage::Relink;
}

/*
 * When the entry point is one of the tombstones (it goes last, see
 * finish_repair), rewrites its lists, which nothing live needs any more:
 * they lose the other tombstones, deleted before it, and lead to the root,
 * from which the walk reaches every live node.
 */
void
redirect_entry(HannoyRepair *r, MDB_txn *txn)
{
	hannoy::Store     &s = *r->store;
	hannoy::GraphState state = s.read_state(txn);
	uint32_t           entry = state.entry_point;
	if (state.max_level < 0 || entry == r->root || r->tombstones.count(entry) == 0)
		return;
	std::vector<uint32_t> list;
	for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
	{
		hannoy::LinkKey key(entry, layer);
		MDB_val         data;
		if (!hannoy::get(txn, s.dbi_links, key.val(), data))
			break;
		s.links(txn, entry, layer, list);
		list.erase(std::remove_if(list.begin(), list.end(),
		                          [r](uint32_t n) { return r->tombstones.count(n) > 0; }),
		           list.end());
		if (r->root != hannoy::NO_NODE && layer <= r->root_level && !hannoy::holds(list, r->root))
		{
			if (list.size() < s.max_links(layer))
				list.push_back(r->root);
			else
				list.back() = r->root;
		}
		s.put_links(txn, entry, layer, list);
	}
}

/*
 * Step 2: links the live nodes the walk missed, a short write transaction
 * at a time; each one linked also brings in what it leads to.  Then a
 * removed entry point leads to the root (redirect_entry), so the walk from
 * it reaches every live node while the lists are rebuilt.
 */
void
relink_slice(HannoyRepair *r)
{
	hannoy::Store       &s = *r->store;
	hannoy::Txn          txn(s.env(), false);
	hannoy::StoredEditor g(s, txn.get(), &r->tombstones);
	g.keep_decoded(true); /* the repair edits links only here, never codes */
	auto deadline = Clock::now() + WRITE_SLICE;
	while (r->orphan_pos < r->orphans.size() && Clock::now() < deadline)
	{
		uint32_t u = r->orphans[r->orphan_pos++];
		/* reached meanwhile, or no longer live (a reused TID made it a tombstone) */
		if ((u < r->reached.size() && r->reached[u]) || s.is_deleted(txn.get(), u) ||
		    !s.has_vector(txn.get(), u))
			continue;
		uint32_t dropped = hannoy::relink_orphan(
		    g, u, r->root, r->root_level, s.meta().options.ef_construction, r->reached, r->relink);
		r->relinked++;
		if (dropped != hannoy::NO_NODE && (dropped >= r->reached.size() || !r->reached[dropped]))
			r->orphans.push_back(dropped);
	}
	if (r->orphan_pos == r->orphans.size())
	{
		redirect_entry(r, txn.get());
		r->stage = r->tombstones.empty() ? Stage::Finish : Stage::Lists;
	}
	commit(txn);
}

/*
 * Rebuilds the list of 'id' at 'layer' without tombstones: its other
 * neighbours and the removed neighbours' neighbours are the candidates.
 * A live neighbour it drops stays one hop away; when the heuristic's
 * choice cannot ensure that, every live neighbour stays and the nearest
 * candidates take the tombstones' places.
 */
bool
repair_list(HannoyRepair *r, hannoy::StoredEditor &g, MDB_txn *txn, uint32_t id, int layer,
            std::vector<uint32_t> &list)
{
	hannoy::Store &s = *r->store;
	bool           touched = false;
	for (uint32_t n : list)
		touched = touched || r->tombstones.count(n) > 0;
	if (!touched)
		return false;

	std::vector<uint32_t> pool, around, live;
	for (uint32_t n : list)
	{
		if (r->tombstones.count(n) == 0)
		{
			pool.push_back(n);
			live.push_back(n);
			continue;
		}
		s.links(txn, n, layer, around);
		for (uint32_t x : around)
			if (x != id && r->tombstones.count(x) == 0 && !s.is_deleted(txn, x))
				pool.push_back(x);
	}
	std::sort(pool.begin(), pool.end());
	pool.erase(std::unique(pool.begin(), pool.end()), pool.end());

	std::vector<hannoy::Candidate> cands;
	cands.reserve(pool.size());
	for (uint32_t x : pool)
		if (s.has_vector(txn, x))
			cands.push_back(hannoy::Candidate{g.distance_between(id, x), x});
	std::sort(cands.begin(), cands.end());
	std::vector<uint32_t> out;
	hannoy::PruneRules    rules;
	rules.floor = s.fill_links(layer);
	if (!hannoy::prune_keeping_reach(g, layer, cands, live, rules, r->cover, out))
	{
		out = live;
		for (const hannoy::Candidate &c : cands)
			if (out.size() < s.max_links(layer) && !hannoy::holds(out, c.id))
				out.push_back(c.id);
	}
	s.put_links(txn, id, layer, out);
	return true;
}

/* Step 3: repairs the lists of the next nodes in one short write transaction. */
void
lists_slice(HannoyRepair *r)
{
	hannoy::Store       &s = *r->store;
	hannoy::Txn          txn(s.env(), false);
	hannoy::StoredEditor g(s, txn.get());
	g.keep_decoded(true); /* the repair edits links only here, never codes */
	auto                  deadline = Clock::now() + WRITE_SLICE;
	std::vector<uint32_t> list;
	while (r->position < r->next_id && Clock::now() < deadline)
	{
		uint32_t id = r->position++;
		if (r->tombstones.count(id) > 0 || !s.has_vector(txn.get(), id))
			continue;
		for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
		{
			hannoy::LinkKey key(id, layer);
			MDB_val         data;
			if (!hannoy::get(txn.get(), s.dbi_links, key.val(), data))
				break;
			s.links(txn.get(), id, layer, list);
			if (repair_list(r, g, txn.get(), id, layer, list))
				r->repaired++;
		}
	}
	if (r->position >= r->next_id)
		r->stage = Stage::Delete;
	commit(txn);
}

/*
 * Deletes tombstone 'd' (vector, lists) and frees its id; false when already
 * gone.  The caller counts the ids it freed (Store::add_frees) in the same
 * transaction: an id may come again with another vector, and copies of the
 * old one must go (VectorCopies).
 */
bool
delete_tombstone(hannoy::Store &s, MDB_txn *txn, uint32_t d)
{
	hannoy::IdKey key(d);
	if (!hannoy::del(txn, s.dbi_deleted, key.val()))
		return false;
	s.delete_vector(txn, d);
	s.delete_code(txn, d);
	for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
	{
		hannoy::LinkKey lkey(d, layer);
		if (!hannoy::del(txn, s.dbi_links, lkey.val()))
			break;
	}
	hannoy::put(txn, s.dbi_free, key.val(), MDB_val{0, nullptr});
	return true;
}

/*
 * Step 4: deletes the tombstones, a short write transaction at a time; the
 * entry point, if it is one, is left to step 5.
 */
void
delete_slice(HannoyRepair *r)
{
	hannoy::Store &s = *r->store;
	hannoy::Txn    txn(s.env(), false);
	if (r->delete_pos == 0)
		redirect_entry(r, txn.get());
	hannoy::GraphState state = s.read_state(txn.get());
	auto               deadline = Clock::now() + WRITE_SLICE;
	uint64_t           freed = 0;
	while (r->delete_pos < r->doomed.size() && Clock::now() < deadline)
	{
		uint32_t d = r->doomed[r->delete_pos++];
		if ((state.max_level < 0 || d != state.entry_point) && delete_tombstone(s, txn.get(), d))
			freed++;
	}
	state.deleted -= std::min(state.deleted, freed);
	s.write_state(txn.get(), state);
	if (freed > 0)
		s.add_frees(txn.get(), freed);
	if (r->delete_pos == r->doomed.size())
		r->stage = Stage::Finish;
	commit(txn);
}

/*
 * Step 5: deletes a removed entry point and makes the root the entry point,
 * in one transaction.  Should an insert have added a node above the root
 * meanwhile, that node is to be the entry point instead: the walk starts
 * again from it.
 */
void
finish_repair(HannoyRepair *r)
{
	hannoy::Store     &s = *r->store;
	hannoy::Txn        txn(s.env(), false);
	hannoy::GraphState state = s.read_state(txn.get());
	if (state.max_level >= 0 && r->tombstones.count(state.entry_point) > 0)
	{
		int      level;
		uint32_t top = highest_node(r, txn.get(), r->root, level);
		if (top != r->root)
		{
			txn.abort();
			start_walk(r, top, level);
			return;
		}
		if (delete_tombstone(s, txn.get(), state.entry_point))
		{
			state.deleted -= std::min<uint64_t>(state.deleted, 1);
			s.add_frees(txn.get(), 1);
		}
		state.max_level = top == hannoy::NO_NODE ? -1 : level;
		state.entry_point = top == hannoy::NO_NODE ? 0 : top;
		s.write_state(txn.get(), state);
	}
	commit(txn);
	s.sync(true);
	r->stage = Stage::Done;
}

/* Runs one unit of the repair: a slice of the walk or one write transaction. */
void
repair_unit(HannoyRepair *r, Clock::time_point deadline)
{
	switch (r->stage)
	{
		case Stage::Reach:
			reach_slice(r, deadline);
			break;
		case Stage::Relink:
			relink_slice(r);
			break;
		case Stage::Lists:
			lists_slice(r);
			break;
		case Stage::Delete:
			delete_slice(r);
			break;
		case Stage::Finish:
			finish_repair(r);
			break;
		case Stage::Done:
			break;
	}
}

} // namespace

extern "C" HannoyStatus
hannoy_repair_begin(HannoyEnv *env, HannoyRepair **repair, HannoyError *err)
{
	*repair = nullptr;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           auto r = std::make_unique<HannoyRepair>();
		                           r->store = reinterpret_cast<hannoy::Store *>(env);
		                           start_repair(r.get());
		                           *repair = r.release();
	                           });
}

extern "C" HannoyStatus
hannoy_repair_step(HannoyRepair *r, uint32_t budget_ms, bool *done, uint64_t *repaired,
                   HannoyError *err)
{
	*done = false;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           /* at least one unit per call, so every call makes progress */
		                           auto deadline =
		                               Clock::now() + std::chrono::milliseconds(budget_ms);
		                           do
			                           repair_unit(r, deadline);
		                           while (r->stage != Stage::Done && Clock::now() < deadline);
		                           *done = r->stage == Stage::Done;
		                           *repaired = r->repaired;
	                           });
}

extern "C" void
hannoy_repair_free(HannoyRepair *r)
{
	delete r;
}
