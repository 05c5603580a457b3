/*
 * insert.cpp
 *	  Inserting one row into a built index.  The neighbour search (the
 *	  expensive part) runs in a read transaction, so inserting backends
 *	  overlap; only linking the node takes LMDB's writer lock.
 */
#include "hannoy/core_guard.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "hannoy/graph.hpp"
#include "hannoy/guarded.hpp"
#include "hannoy/hannoy.h"
#include "hannoy/storage.hpp"

namespace
{

/* Neighbours chosen for the new node at each of its layers, nearest first. */
struct Plan
{
	int                                level = 0;
	std::vector<std::vector<uint32_t>> neighbors;                 /* [layer] */
	bool                               searched_nonempty = false; /* the graph had an entry point */
};

/* Test-only pause inside the read-phase search (hannoy.test_search_delay). */
std::atomic<uint32_t> search_delay_ms{0};

/* Finds the new node's neighbours at each layer up to 'level' (Alg. 1, search part). */
void
plan_links(const hannoy::Store &s, MDB_txn *txn, const void *q, int level, Plan &plan)
{
	hannoy::GraphState state = s.read_state(txn);
	plan.level = level;
	plan.neighbors.assign(level + 1, {});
	plan.searched_nonempty = state.max_level >= 0;
	if (uint32_t delay = search_delay_ms.load())
		std::this_thread::sleep_for(std::chrono::milliseconds(delay));
	if (state.max_level < 0)
		return;
	hannoy::StoredGraph   g(s, txn);
	std::vector<uint32_t> scratch;
	hannoy::Candidate     ep{g.distance(q, state.entry_point), state.entry_point};
	if (level < state.max_level)
		ep = hannoy::greedy_descend(g, q, ep, state.max_level, level, scratch);
	std::vector<hannoy::Candidate> entries{ep}, found;
	hannoy::VisitedSet             visited;
	for (int layer = std::min(level, state.max_level); layer >= 0; layer--)
	{
		visited.reset(state.next_id);
		hannoy::search_layer(g, q, entries, s.meta().ef_construction, layer, visited, found,
		                     scratch);
		/* never link to a tombstone: VACUUM is about to free its id */
		found.erase(std::remove_if(found.begin(), found.end(),
		                           [&](const hannoy::Candidate &c)
		                           { return s.is_deleted(txn, c.id); }),
		            found.end());
		hannoy::select_neighbors(g, found, s.max_links(layer), plan.neighbors[layer]);
		entries.swap(found);
	}
}

/*
 * Adds 'id' to the neighbour list of 'n' at 'layer', pruning only that list
 * on overflow; appends the nodes the pruning dropped to 'dropped'.
 */
void
add_backlink(const hannoy::Store &s, MDB_txn *txn, uint32_t n, uint32_t id, int layer, bool nearest,
             std::vector<uint32_t> &dropped)
{
	std::vector<uint32_t> list;
	s.links(txn, n, layer, list);
	if (std::find(list.begin(), list.end(), id) != list.end())
		return;
	list.push_back(id);
	size_t max_links = s.max_links(layer);
	if (list.size() > max_links)
	{
		hannoy::StoredGraph            g(s, txn);
		std::vector<hannoy::Candidate> cands;
		cands.reserve(list.size());
		for (uint32_t x : list)
			cands.push_back(hannoy::Candidate{g.distance_between(n, x), x});
		std::sort(cands.begin(), cands.end());
		hannoy::select_neighbors(g, cands, max_links, list, max_links / 2);
		hannoy::keep_link(list, id, nearest);
		for (const hannoy::Candidate &c : cands)
			if (c.id != id && std::find(list.begin(), list.end(), c.id) == list.end())
				dropped.push_back(c.id);
	}
	s.put_links(txn, n, layer, list);
}

/* Removes the graph or unindexed entry a reused TID still points to. */
void
forget_tid(hannoy::Store &s, MDB_txn *txn, HannoyTid tid, hannoy::GraphState &state)
{
	hannoy::TidKey tkey(tid);
	MDB_val        data;
	if (hannoy::get(txn, s.dbi_items, tkey.val(), data))
	{
		uint32_t      old = hannoy::decode_id(data);
		hannoy::IdKey okey(old);
		hannoy::del(txn, s.dbi_tids, okey.val());
		hannoy::del(txn, s.dbi_items, tkey.val());
		hannoy::put(txn, s.dbi_deleted, okey.val(), MDB_val{0, nullptr});
		state.items--;
		state.deleted++;
	}
	if (hannoy::del(txn, s.dbi_unindexed, tkey.val()))
		state.unindexed--;
}

/*
 * Records a row without an indexable vector, in write transaction 'txn'
 * with the graph state 'state'.
 */
void
record_unindexed(hannoy::Store &s, MDB_txn *txn, hannoy::GraphState &state, HannoyTid tid,
                 uint8_t unindexed_kind)
{
	forget_tid(s, txn, tid, state);
	hannoy::TidKey tkey(tid);
	hannoy::put(txn, s.dbi_unindexed, tkey.val(), MDB_val{1, &unindexed_kind});
	state.unindexed++;
}

/*
 * Links a new node for row 'tid' with the neighbours of 'plan', in write
 * transaction 'txn' with the graph state 'state' (Alg. 1, linking part).
 */
void
link_row(hannoy::Store &s, MDB_txn *txn, hannoy::GraphState &state, HannoyTid tid,
         const void *vector, Plan &plan)
{
	int level = plan.level;
	forget_tid(s, txn, tid, state);
	/* reuse an id VACUUM freed, else take a new one */
	uint32_t id;
	unsigned append = MDB_APPEND;
	{
		hannoy::Cursor cur(txn, s.dbi_free);
		MDB_val        fkey, fdata;
		if (cur.get(fkey, fdata, MDB_FIRST))
		{
			id = hannoy::decode_id(fkey);
			append = 0;
		}
		else
		{
			if (state.next_id >= HANNOY_MAX_ITEMS)
				throw hannoy::Error(HANNOY_ERR_LIMIT, "an index holds at most 4294967295 vectors");
			id = static_cast<uint32_t>(state.next_id++);
		}
	}
	hannoy::IdKey  key(id);
	hannoy::TidKey tkey(tid);
	if (append == 0)
		hannoy::del(txn, s.dbi_free, key.val());
	s.put_vector(txn, id, vector, append != 0);
	hannoy::put(txn, s.dbi_tids, key.val(), tkey.val(), append);
	hannoy::put(txn, s.dbi_items, tkey.val(), key.val());

	for (int layer = 0; layer <= level; layer++)
	{
		std::vector<uint32_t> &mine = plan.neighbors[layer];
		std::vector<uint32_t>  dropped;
		/*
		 * A neighbour VACUUM removed since the search is dropped: a tombstone,
		 * or an id VACUUM freed meanwhile (no vector, or the id this node took).
		 */
		auto gone = [&](uint32_t n)
		{ return n == id || s.is_deleted(txn, n) || s.vector(txn, n) == nullptr; };
		mine.erase(std::remove_if(mine.begin(), mine.end(), gone), mine.end());
		for (size_t k = 0; k < mine.size(); k++)
			add_backlink(s, txn, mine[k], id, layer, k == 0, dropped);
		/* nodes dropped by the pruning may have lost their only incoming link */
		for (uint32_t d : dropped)
			if (mine.size() < s.max_links(layer) &&
			    std::find(mine.begin(), mine.end(), d) == mine.end() && !gone(d))
				mine.push_back(d);
		s.put_links(txn, id, layer, mine);
	}
	if (level > state.max_level)
	{
		state.max_level = level;
		state.entry_point = id;
	}
	state.items++;
}

/* Inserts one row; see hannoy_insert. */
void
insert_row(hannoy::Store &s, HannoyTid tid, const void *vector, uint8_t unindexed_kind)
{
	if (vector == nullptr)
	{
		hannoy::Txn        txn(s.env(), false);
		hannoy::GraphState state = s.read_state(txn.get());
		record_unindexed(s, txn.get(), state, tid, unindexed_kind);
		s.write_state(txn.get(), state);
		txn.commit();
		return;
	}

	int  level = hannoy::draw_level(s.meta().seed, tid, s.meta().m);
	Plan plan;
	{
		hannoy::Txn read(s.env(), true);
		plan_links(s, read.get(), vector, level, plan);
	}

	hannoy::Txn        txn(s.env(), false);
	hannoy::GraphState state = s.read_state(txn.get());
	if (!plan.searched_nonempty && state.max_level >= 0)
	{
		/* Another backend linked the first node meanwhile: search again, here. */
		plan_links(s, txn.get(), vector, level, plan);
	}
	link_row(s, txn.get(), state, tid, vector, plan);
	s.write_state(txn.get(), state);
	txn.commit();
}

} // namespace

extern "C" HannoyStatus
hannoy_insert(HannoyEnv *env, HannoyTid tid, const void *vector, uint8_t unindexed_kind,
              HannoyError *err)
{
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
		    if (vector != nullptr && s.meta().dims == 0)
			    throw hannoy::Error(HANNOY_ERR_INVALID, "dimensions must be set before inserting");
		    insert_row(s, tid, vector, unindexed_kind);
	    });
}

extern "C" void
hannoy_test_set_search_delay(uint32_t ms)
{
	search_delay_ms.store(ms);
}
