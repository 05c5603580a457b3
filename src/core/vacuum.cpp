/*
 * vacuum.cpp
 *	  Graph repair after VACUUM (DESIGN section 8).
 *
 *	  hannoy_delete_entries turns removed rows into tombstones: their TIDs are
 *	  gone at once, but searches still walk through them.  The repair then
 *	  walks every live node, in short write transactions, and rebuilds each
 *	  neighbour list that names a tombstone from its other neighbours and
 *	  the tombstone's own neighbours, with the same heuristic as the build
 *	  (reconnecting through the removed node).  When every list is clean the
 *	  tombstones' vectors and links are deleted, the entry point is replaced
 *	  if it was removed, and their ids go to the free list for inserts to
 *	  reuse.  A repair cut short leaves tombstones that the next one finishes.
 */
#include "hannoy/core_guard.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <unordered_set>
#include <vector>

#include "hannoy/graph.hpp"
#include "hannoy/guarded.hpp"
#include "hannoy/hannoy.h"
#include "hannoy/storage.hpp"

namespace
{

using Clock = std::chrono::steady_clock;

/* Longest a repair write transaction holds LMDB's writer lock. */
constexpr auto WRITE_SLICE = std::chrono::milliseconds(20);

} // namespace

struct HannoyRepair
{
	hannoy::Store               *store = nullptr;
	std::unordered_set<uint32_t> tombstones; /* the ones this repair removes */
	uint64_t                     next_id = 0;
	uint32_t                     position = 0; /* next node to examine */
	uint64_t                     repaired = 0; /* lists rebuilt */
	uint64_t                     orphans = 0;  /* unreachable nodes linked */
	bool                         done = false;
};

namespace
{

/* Reads the tombstones to remove and the id range to walk. */
void
start_repair(HannoyRepair *r)
{
	hannoy::Store &s = *r->store;
	hannoy::Txn    txn(s.env(), true);
	r->next_id = s.read_state(txn.get()).next_id;
	hannoy::Cursor cur(txn.get(), s.dbi_deleted);
	MDB_val        key, data;
	for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
		r->tombstones.insert(hannoy::decode_id(key));
}

/*
 * Rebuilds the list of 'id' at 'layer' without tombstones: its other
 * neighbours and the removed neighbours' neighbours are the candidates.
 */
bool
repair_list(HannoyRepair *r, MDB_txn *txn, uint32_t id, int layer, std::vector<uint32_t> &list)
{
	hannoy::Store &s = *r->store;
	bool           touched = false;
	for (uint32_t n : list)
		touched = touched || r->tombstones.count(n) > 0;
	if (!touched)
		return false;

	std::vector<uint32_t> pool, around;
	for (uint32_t n : list)
	{
		if (r->tombstones.count(n) == 0)
		{
			pool.push_back(n);
			continue;
		}
		s.links(txn, n, layer, around);
		for (uint32_t x : around)
			if (x != id && r->tombstones.count(x) == 0 && !s.is_deleted(txn, x))
				pool.push_back(x);
	}
	std::sort(pool.begin(), pool.end());
	pool.erase(std::unique(pool.begin(), pool.end()), pool.end());

	hannoy::StoredGraph            g(s, txn);
	std::vector<hannoy::Candidate> cands;
	cands.reserve(pool.size());
	for (uint32_t x : pool)
		if (s.vector(txn, x) != nullptr)
			cands.push_back(hannoy::Candidate{g.distance_between(id, x), x});
	std::sort(cands.begin(), cands.end());
	size_t max_links = s.max_links(layer);
	hannoy::select_neighbors(g, cands, max_links, list, s.fill_links(layer));
	s.put_links(txn, id, layer, list);
	return true;
}

/* Repairs the lists of the next nodes in one short write transaction. */
void
repair_slice(HannoyRepair *r)
{
	hannoy::Store        &s = *r->store;
	hannoy::Txn           txn(s.env(), false);
	auto                  deadline = Clock::now() + WRITE_SLICE;
	std::vector<uint32_t> list;
	while (r->position < r->next_id && Clock::now() < deadline)
	{
		uint32_t id = r->position++;
		if (r->tombstones.count(id) > 0 || s.vector(txn.get(), id) == nullptr)
			continue;
		for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
		{
			hannoy::LinkKey key(id, layer);
			MDB_val         data;
			if (!hannoy::get(txn.get(), s.dbi_links, key.val(), data))
				break;
			s.links(txn.get(), id, layer, list);
			if (repair_list(r, txn.get(), id, layer, list))
				r->repaired++;
		}
	}
	txn.commit();
}

/*
 * Links every live node that the layer-0 walk from the entry point cannot
 * reach (its last incoming links went with removed nodes, or pruning
 * dropped them) from its nearest reachable node; returns how many.
 */
uint64_t
link_orphans(hannoy::Store &s)
{
	std::vector<uint32_t> orphans;
	uint64_t              next_id;
	uint32_t              entry;
	int                   max_level;
	{
		hannoy::Txn        txn(s.env(), true);
		hannoy::GraphState st = s.read_state(txn.get());
		if (st.max_level < 0)
			return 0;
		next_id = st.next_id;
		entry = st.entry_point;
		max_level = st.max_level;
		std::vector<char>     reached(next_id, 0);
		std::vector<uint32_t> todo{entry}, list;
		reached[entry] = 1;
		while (!todo.empty())
		{
			uint32_t id = todo.back();
			todo.pop_back();
			s.links(txn.get(), id, 0, list);
			for (uint32_t n : list)
				if (n < next_id && !reached[n])
				{
					reached[n] = 1;
					todo.push_back(n);
				}
		}
		hannoy::Cursor cur(txn.get(), s.dbi_tids);
		MDB_val        key, data;
		for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
		{
			uint32_t id = hannoy::decode_id(key);
			if (id < next_id && !reached[id])
				orphans.push_back(id);
		}
	}

	/* a few orphans per write transaction keep each one short */
	for (size_t start = 0; start < orphans.size(); start += 64)
	{
		hannoy::Txn           txn(s.env(), false);
		hannoy::StoredGraph   g(s, txn.get());
		std::vector<uint32_t> scratch, list;
		hannoy::VisitedSet    visited;
		for (size_t k = start; k < std::min(orphans.size(), start + 64); k++)
		{
			uint32_t    u = orphans[k];
			const void *q = s.vector(txn.get(), u);
			if (q == nullptr)
				continue;
			/* the nearest nodes the graph reaches from the entry point */
			hannoy::Candidate ep{g.distance(q, entry), entry};
			ep = hannoy::greedy_descend(g, q, ep, max_level, 0, scratch);
			std::vector<hannoy::Candidate> found, entries{ep};
			visited.reset(next_id);
			hannoy::search_layer(g, q, entries, s.meta().ef_construction, 0, visited, found,
			                     scratch);
			for (const hannoy::Candidate &c : found)
			{
				if (c.id == u || s.is_deleted(txn.get(), c.id))
					continue;
				/* link u from it, keeping u through the pruning */
				s.links(txn.get(), c.id, 0, list);
				if (std::find(list.begin(), list.end(), u) == list.end())
				{
					list.push_back(u);
					size_t max_links = s.max_links(0);
					if (list.size() > max_links)
					{
						std::vector<hannoy::Candidate> cands;
						for (uint32_t x : list)
							cands.push_back(hannoy::Candidate{g.distance_between(c.id, x), x});
						std::sort(cands.begin(), cands.end());
						hannoy::select_neighbors(g, cands, max_links, list, s.fill_links(0));
						hannoy::keep_link(list, u, true);
					}
					s.put_links(txn.get(), c.id, 0, list);
				}
				break;
			}
		}
		txn.commit();
	}
	return orphans.size();
}

/*
 * Deletes the repaired tombstones, frees their ids and replaces the entry
 * point if it was one of them.
 */
void
finish_repair(HannoyRepair *r)
{
	hannoy::Store     &s = *r->store;
	hannoy::Txn        txn(s.env(), false);
	hannoy::GraphState state = s.read_state(txn.get());
	uint64_t           freed = 0;
	for (uint32_t d : r->tombstones)
	{
		hannoy::IdKey key(d);
		if (!hannoy::del(txn.get(), s.dbi_deleted, key.val()))
			continue;
		s.delete_vector(txn.get(), d);
		for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
		{
			hannoy::LinkKey lkey(d, layer);
			if (!hannoy::del(txn.get(), s.dbi_links, lkey.val()))
				break;
		}
		hannoy::put(txn.get(), s.dbi_free, key.val(), MDB_val{0, nullptr});
		freed++;
	}
	state.deleted -= std::min(state.deleted, freed);

	if (state.max_level >= 0 && r->tombstones.count(state.entry_point) > 0)
	{
		/* the new entry point: a live node on the highest layer that has one */
		state.max_level = -1;
		hannoy::Cursor cur(txn.get(), s.dbi_links);
		MDB_val        key, data;
		for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
		{
			int layer = static_cast<const unsigned char *>(key.mv_data)[4];
			if (layer > state.max_level)
			{
				state.max_level = layer;
				state.entry_point = hannoy::decode_id(key);
			}
		}
		if (state.max_level < 0)
			state.entry_point = 0;
	}
	s.write_state(txn.get(), state);
	txn.commit();
	r->orphans = link_orphans(s);
	s.sync(true);
	r->done = true;
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
		                           auto deadline =
		                               Clock::now() + std::chrono::milliseconds(budget_ms);
		                           while (!r->done && Clock::now() < deadline)
		                           {
			                           if (r->position < r->next_id)
				                           repair_slice(r);
			                           else
				                           finish_repair(r);
		                           }
		                           *done = r->done;
		                           *repaired = r->repaired;
	                           });
}

extern "C" void
hannoy_repair_free(HannoyRepair *r)
{
	delete r;
}
