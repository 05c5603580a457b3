/*
 * insert.cpp
 *	  Inserting one row into a built index.  The neighbour search (the
 *	  expensive part) runs in a read transaction, so inserting backends
 *	  overlap; only linking the node takes LMDB's writer lock.
 */
#include "core_guard.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <memory>
#include <vector>

#include "edit.hpp"
#include "graph.hpp"
#include "guarded.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "testing.hpp"

namespace
{

/* Neighbours chosen for the new node at each of its layers, nearest first. */
struct Plan
{
	int                                level = 0;
	std::vector<std::vector<uint32_t>> neighbors;                 /* [layer] */
	bool                               searched_nonempty = false; /* the graph had an entry point */
	/* the neighbours were chosen on decoded codes: the linking prunes on them too */
	bool choose_on_codes = false;
	/* the new row's codes do not describe it, where a choice could be made on codes */
	bool                far_code = false;
	hannoy::SeenVectors seen; /* the vectors the search read (StoredGraph::remember_in) */
};

/* True when 8-bit quantizer 'quant' encodes float vector 'v' without loss. */
bool
codes_hold_exactly(const hannoy::Quantizer &quant, const void *v)
{
	if (quant.kind() != hannoy::QUANTIZER_SCALAR8)
		return false;
	std::vector<uint8_t> code(quant.code_bytes());
	std::vector<float>   back(quant.dims());
	quant.encode(v, code.data());
	quant.decode(code.data(), back.data());
	return std::memcmp(back.data(), v, back.size() * sizeof(float)) == 0;
}

/*
 * The largest Quantizer::code_error of a row that walks on codes it does
 * not hold exactly.  Fashion-MNIST rows with uniform noise of width 16
 * (clamped where a pixel was near 0 or 255) measured at most 0.0007 and
 * walked on codes at the recall of a walk on vectors (DESIGN.md "Insert");
 * nothing beyond was measured.
 */
constexpr double WALK_CODE_ERROR = 0.01;

/*
 * Whether an insert of float vector 'v' into an index with vectors walks on
 * codes of 'quant': 8-bit codes that hold it exactly, or, from
 * CODES_MIN_DIMS dimensions on, that describe it closely (a quantizer
 * fitted to other data, or to too few rows, clamps it far).
 */
bool
walk_on_codes(const hannoy::Quantizer &quant, const void *v)
{
	if (quant.kind() != hannoy::QUANTIZER_SCALAR8)
		return false;
	if (codes_hold_exactly(quant, v))
		return true;
	return quant.dims() >= hannoy::CODES_MIN_DIMS && quant.code_error(v) <= WALK_CODE_ERROR;
}

/*
 * Whether an insert that walks on the 8-bit codes of 'quant' in an index
 * with vectors also ranks, chooses and prunes on them: from
 * CODES_MIN_DIMS dimensions on, where rounding errors average out, and
 * for float vectors (DecodedCodes).
 */
bool
choose_on_codes(const hannoy::Store &s, const hannoy::Quantizer &quant)
{
	return !s.heap_rerank() && quant.kind() == hannoy::QUANTIZER_SCALAR8 &&
	       quant.dims() >= hannoy::CODES_MIN_DIMS &&
	       s.vector_bytes() == size_t(quant.dims()) * sizeof(float);
}

/*
 * Finds the new node's neighbours at each layer up to 'level' (Alg. 1,
 * search part).  'copies': read transaction 'txn' may use the store's
 * vector and code copies (insert_row's search; never a write transaction's).
 */
void
plan_links(const hannoy::Store &s, MDB_txn *txn, const void *q, int level, Plan &plan, bool copies)
{
	/* an index without vectors measures decoded codes: the quantizer must be known */
	s.refresh_quantizer(txn);
	hannoy::GraphState state = s.read_state(txn);
	plan.level = level;
	plan.neighbors.assign(level + 1, {});
	plan.searched_nonempty = state.max_level >= 0;
	plan.choose_on_codes = false;
	std::shared_ptr<const hannoy::Quantizer> quant = s.quantizer();
	bool described = quant && !s.heap_rerank() && walk_on_codes(*quant, q);
	/* counted by the linking (Store::add_far_code): its code misleads a choice on codes */
	plan.far_code = quant && choose_on_codes(s, *quant) && !described;
	hannoy::test_pause_insert_search();
	if (state.max_level < 0)
		return;
	hannoy::StoredGraph g(s, txn);
	g.keep_decoded(true); /* no code changes while the plan is made */
	plan.seen.clear();
	g.remember_in(&plan.seen);
	if (copies)
		g.use_copies(s.vector_copies(txn, state));
	/*
	 * An index without vectors walks on its codes, as scans do (8-bit: the
	 * code kernel, the distance to the decoded vector; 1-bit: the estimate),
	 * and measures what each layer's search found against decoded codes
	 * before choosing (DESIGN.md "Heap re-ranking"): decoding a 1-bit code
	 * at every step of the walk would cost three inverse rotations each.
	 * An index with vectors walks on its 8-bit codes when they hold the new
	 * row exactly (pixels), or when it has CODES_MIN_DIMS dimensions or more
	 * and the codes describe the row closely (rounding errors average out
	 * over so many; DESIGN.md "Insert"): a code is one B-tree read where a
	 * vector is several.  Other rows' codes
	 * may be inexact (clamped inserts), so below CODES_MIN_DIMS what each
	 * layer found is measured against the vectors before choosing.
	 */
	if (quant && !s.heap_rerank() && !described)
		quant = nullptr;
	hannoy::test_insert_walk(quant != nullptr);
	hannoy::QueryForm form;
	if (quant)
		quant->prepare(q, form);
	std::unique_ptr<hannoy::CodedGraph>   coded;
	std::unique_ptr<hannoy::DecodedCodes> decoded;
	if (quant)
	{
		hannoy::VectorCopies *code_copies = copies ? s.code_copies(txn, state) : nullptr;
		coded = std::make_unique<hannoy::CodedGraph>(s, txn, *quant, form);
		coded->use_copies(code_copies);
		/*
		 * From CODES_MIN_DIMS dimensions on, what the walk found is ranked
		 * and chosen on the codes too, and the linking prunes on them
		 * (DESIGN.md "Insert"): measuring it again read each candidate's
		 * vector (four B-tree records of 784 floats' pieces on
		 * Fashion-MNIST).  Not once a row its codes do not describe came
		 * in: its clamped code would mislead the choice.
		 */
		if (choose_on_codes(s, *quant) && s.read_far_codes(txn) == 0)
		{
			plan.choose_on_codes = true;
			decoded = std::make_unique<hannoy::DecodedCodes>(s, txn, *quant);
			decoded->use_copies(code_copies);
		}
	}
	std::vector<uint32_t> scratch;
	hannoy::Candidate     ep{coded ? coded->distance(q, state.entry_point)
	                               : g.distance(q, state.entry_point),
	                     state.entry_point};
	if (level < state.max_level)
		ep = coded ? hannoy::greedy_descend(*coded, q, ep, state.max_level, level, scratch)
		           : hannoy::greedy_descend(g, q, ep, state.max_level, level, scratch);
	std::vector<hannoy::Candidate> entries{ep}, found, live, measured;
	hannoy::VisitedSet             visited;
	for (int layer = std::min(level, state.max_level); layer >= 0; layer--)
	{
		visited.reset(state.next_id);
		if (coded)
		{
			hannoy::search_layer(*coded, q, entries, s.meta().options.ef_construction, layer,
			                     visited, found, scratch);
			/* the next layer's search goes on from the code-ranked candidates */
			if (!decoded)
			{
				measured = found;
				for (hannoy::Candidate &c : measured)
					c.dist = g.distance(q, c.id);
				std::sort(measured.begin(), measured.end());
			}
		}
		else
			hannoy::search_layer(g, q, entries, s.meta().options.ef_construction, layer, visited,
			                     found, scratch);
		const std::vector<hannoy::Candidate> &ranked = coded && !decoded ? measured : found;
		/*
		 * Never link to a tombstone (VACUUM is about to free its id), but
		 * walk on from it: tombstones still navigate, and a search of the
		 * next layer from live nodes only could have nowhere to start (a
		 * tombstone entry point whose upper lists are empty).
		 */
		const std::vector<hannoy::Candidate> *choice = &ranked;
		if (state.deleted > 0)
		{
			live.clear();
			for (const hannoy::Candidate &c : ranked)
				if (!s.is_deleted(txn, c.id))
					live.push_back(c);
			choice = &live;
		}
		/*
		 * The heuristic's choice topped up with the nearest candidates it
		 * passed over, as the build's lists are: the choice alone keeps few
		 * links where rows crowd along a common direction (a mean degree of
		 * 8 of 32 at layer 0 on bench/make_synthetic.py's angular set), and later
		 * inserts then search a graph too sparse to find their neighbours.
		 */
		if (decoded)
			hannoy::select_neighbors(*decoded, *choice, s.max_links(layer), plan.neighbors[layer],
			                         s.fill_links(layer));
		else
			hannoy::select_neighbors(g, *choice, s.max_links(layer), plan.neighbors[layer],
			                         s.fill_links(layer));
		entries.swap(found);
	}
}

/*
 * Links the new node 'id' into 'layer' (Alg. 1, linking part): its own
 * list is 'mine', and each neighbour links back to it.  A neighbour's list
 * that overflows is pruned without stranding anyone (see
 * prune_keeping_reach): what it drops stays one hop away, if need be
 * through the new node, which may give up entries of its own for that.  A
 * neighbour whose list cannot be pruned so keeps it.  If in the end none
 * links to the new node, the nearest one gives it a place anyway
 * (splice_link), so it is never left unreachable.  'keep' (NO_NODE: none)
 * must stay in the new node's list.
 */
void
link_new_node(hannoy::StoredEditor &g, uint32_t id, int layer, const std::vector<uint32_t> &mine,
              uint32_t keep)
{
	g.set_links(id, layer, mine);
	g.new_node(id, layer);
	if (keep != hannoy::NO_NODE)
		g.relies(id, layer, keep);
	hannoy::CoverCache             cover;
	std::vector<hannoy::Candidate> cands;
	std::vector<uint32_t>          list, out;
	bool                           linked = false;
	for (size_t k = 0; k < mine.size(); k++)
	{
		uint32_t n = mine[k];
		g.peek(n, layer, list);
		if (list.size() < g.max_links(layer))
		{
			list.push_back(id);
			g.set_links(n, layer, list);
			linked = true;
			continue;
		}
		hannoy::candidates_of(g, n, list, cands);
		cands.push_back(hannoy::Candidate{g.distance_between(n, id), id});
		std::sort(cands.begin(), cands.end());
		hannoy::PruneRules rules;
		rules.added = id;
		rules.keep_added = k == 0;
		if (!hannoy::prune_keeping_reach(g, layer, cands, list, rules, cover, out))
			continue;
		g.set_links(n, layer, out);
		linked = linked || hannoy::holds(out, id);
	}
	for (size_t k = 0; k < mine.size() && !linked; k++)
		linked = hannoy::link_keeping_reach(g, mine[k], layer, id, cover, cands, list, out);
	uint32_t dropped;
	for (int force = 0; force < 2 && !linked; force++)
		for (size_t k = 0; k < mine.size() && !linked; k++)
			linked =
			    hannoy::splice_link(g, mine[k], layer, id, keep, force == 1, cands, list, dropped);
}

/*
 * The first live node (not a tombstone) a walk over layer 0 from 'entry'
 * meets, NO_NODE when there is none: a node to link a new one from when
 * everything its search found has been removed.
 */
uint32_t
first_live_node(const hannoy::Store &s, MDB_txn *txn, uint32_t entry, uint64_t next_id)
{
	std::vector<char>     seen(next_id, 0);
	std::vector<uint32_t> todo{entry}, list;
	seen[entry] = 1;
	for (size_t i = 0; i < todo.size(); i++)
	{
		uint32_t id = todo[i];
		if (!s.is_deleted(txn, id) && s.has_vector(txn, id))
			return id;
		s.links(txn, id, 0, list);
		for (uint32_t n : list)
			if (n < next_id && !seen[n])
			{
				seen[n] = 1;
				todo.push_back(n);
			}
	}
	return hannoy::NO_NODE;
}

/*
 * Removes the graph or unindexed entry a reused TID still points to, and
 * its staged row unless 'keep_staged'.
 */
void
forget_tid(hannoy::Store &s, MDB_txn *txn, HannoyTid tid, hannoy::GraphState &state,
           bool keep_staged = false)
{
	hannoy::TidKey tkey(tid);
	MDB_val        data;
	if (hannoy::get(txn, s.dbi_items, tkey.val(), data))
		s.tombstone(txn, tid, hannoy::decode_id(data), state);
	if (hannoy::del(txn, s.dbi_unindexed, tkey.val()))
		state.unindexed--;
	/* a promoted replica's staged row of the TID: never one row twice */
	if (s.has_staged() && !keep_staged)
		hannoy::del(txn, s.dbi_staged, tkey.val());
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
 * transaction 'txn' with the graph state 'state' (Alg. 1, linking part),
 * and updates the entry point.  Every live node stays reachable from the
 * entry point at layer 0: a new top node becomes the entry point and lists
 * the old one; while the entry point is a tombstone (VACUUM has not
 * replaced it yet) nothing may link to it, so the new node stays below, or,
 * when no live node is left, takes its place.  'own_txn': the transaction
 * links this row only, and wrote nothing before (insert_row), so the
 * vectors its search read may stand in for B-tree reads when no commit came
 * between (StoredEditor::trust_seen).
 */
void
link_row(hannoy::Store &s, MDB_txn *txn, hannoy::GraphState &state, HannoyTid tid,
         const void *vector, Plan &plan, bool own_txn)
{
	int level = plan.level;
	/* made to serve this transaction before it takes an id */
	hannoy::VectorCopies *copies = own_txn ? s.vector_copies(txn, state) : nullptr;
	hannoy::VectorCopies *code_copies =
	    own_txn && plan.choose_on_codes ? s.code_copies(txn, state) : nullptr;
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
			s.note_id(id); /* lists written in this transaction name it before the state does */
		}
	}
	hannoy::IdKey  key(id);
	hannoy::TidKey tkey(tid);
	if (append == 0)
		hannoy::del(txn, s.dbi_free, key.val());
	/* a build committed the quantizer after this handle read the meta database */
	s.refresh_quantizer(txn);
	s.put_vector(txn, id, vector, append != 0); /* nothing in an index without vectors */
	if (std::shared_ptr<const hannoy::Quantizer> q = s.quantizer())
	{
		std::vector<uint8_t> code(q->code_bytes());
		q->encode(vector, code.data());
		s.put_code(txn, id, code.data(), append != 0);
	}
	hannoy::put(txn, s.dbi_tids, key.val(), tkey.val(), append);
	hannoy::put(txn, s.dbi_items, tkey.val(), key.val());
	if (plan.far_code)
		s.add_far_code(txn);

	bool     entry_removed = state.max_level >= 0 && s.is_deleted(txn, state.entry_point);
	uint32_t old_entry = hannoy::NO_NODE;
	if (entry_removed && state.items == 0)
		level = state.max_level; /* the only live node: the new entry point */
	else if (entry_removed && level > state.max_level)
		level = state.max_level;
	else if (level > state.max_level && state.max_level >= 0)
		old_entry = state.entry_point;
	if (plan.neighbors.size() < static_cast<size_t>(level) + 1)
		plan.neighbors.resize(level + 1);

	hannoy::StoredEditor g(s, txn);
	g.may_have_tombstones(state.deleted > 0);
	g.cache_vectors(true); /* linking writes lists only */
	if (plan.choose_on_codes)
		g.measure_codes(s.quantizer());
	if (own_txn)
	{
		g.trust_seen(&plan.seen, id); /* the one vector the transaction wrote */
		g.use_copies(copies);
	}
	for (int layer = 0; layer <= level; layer++)
	{
		std::vector<uint32_t> &mine = plan.neighbors[layer];
		/*
		 * A neighbour VACUUM removed since the search is dropped: a tombstone,
		 * or an id VACUUM freed meanwhile (no vector, or the id this node took).
		 */
		auto gone = [&](uint32_t n)
		{
			/*
			 * A kept copy of its vector or code says the row is there:
			 * removing one counts a freed id.
			 */
			bool has = (copies != nullptr && copies->find(n) != nullptr) ||
			           (code_copies != nullptr && code_copies->find(n) != nullptr) ||
			           s.has_vector(txn, n);
			return n == id || s.is_deleted(txn, n) || !has;
		};
		mine.erase(std::remove_if(mine.begin(), mine.end(), gone), mine.end());
		if (layer == 0 && mine.empty() && state.items > 0)
		{
			/* everything the search found was removed: link from a live node */
			uint32_t live = first_live_node(s, txn, state.entry_point, state.next_id);
			if (live != hannoy::NO_NODE && live != id)
				mine.push_back(live);
		}
		uint32_t keep = layer == 0 ? old_entry : hannoy::NO_NODE;
		if (keep != hannoy::NO_NODE && !hannoy::holds(mine, keep))
		{
			if (mine.size() < s.max_links(layer))
				mine.push_back(keep);
			else
				mine.back() = keep;
		}
		link_new_node(g, id, layer, mine, keep);
	}
	if (level > state.max_level || (entry_removed && state.items == 0))
	{
		state.max_level = level;
		state.entry_point = id;
	}
	state.items++;
}

/* Notes a trim walks at any time; longer lists at most once per UNFLUSHED_TRIM_EVERY. */
constexpr size_t UNFLUSHED_SHORT = 256;
constexpr auto   UNFLUSHED_TRIM_EVERY = std::chrono::milliseconds(100);

/* An unflushed row's record: the server lifetime and the WAL position. */
struct UnflushedValue
{
	uint64_t lifetime;
	uint64_t lsn;
};

/* Reads the unflushed row record 'data' (false when it is malformed). */
bool
read_unflushed(const MDB_val &data, UnflushedValue &v)
{
	if (data.mv_size != sizeof(v))
		return false;
	std::memcpy(&v, data.mv_data, sizeof(v));
	return true;
}

/*
 * Under the insert mode of hannoy_env_set_unflushed, notes row 'tid' in
 * the unflushed rows, in write transaction 'txn' (DESIGN.md "WAL before
 * sidecar"); the first row after the mode was set first removes the rows
 * of this lifetime whose WAL is flushed since.
 */
void
note_unflushed(hannoy::Store &s, MDB_txn *txn, HannoyTid tid)
{
	if (s.unflushed_lifetime == 0 || s.dbi_unflushed == 0)
		return;
	/*
	 * Notes pile up only while WAL lags (asynchronous commits): a long list
	 * is walked at most every 100 ms by one process, not under every
	 * commit's writer lock.
	 */
	if (s.unflushed_flushed != 0)
	{
		MDB_stat stat;
		auto     now = std::chrono::steady_clock::now();
		if (mdb_stat(txn, s.dbi_unflushed, &stat) == 0 && stat.ms_entries > UNFLUSHED_SHORT &&
		    now - s.unflushed_trimmed < UNFLUSHED_TRIM_EVERY)
			s.unflushed_flushed = 0;
		else
			s.unflushed_trimmed = now;
	}
	if (s.unflushed_flushed != 0)
	{
		std::vector<HannoyTid> done;
		{
			hannoy::Cursor cur(txn, s.dbi_unflushed);
			MDB_val        key, data;
			UnflushedValue v;
			for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
				if (read_unflushed(data, v) && v.lifetime == s.unflushed_lifetime &&
				    v.lsn <= s.unflushed_flushed)
					done.push_back(hannoy::decode_tid(key));
		}
		for (HannoyTid t : done)
		{
			hannoy::TidKey tkey(t);
			hannoy::del(txn, s.dbi_unflushed, tkey.val());
		}
		s.unflushed_flushed = 0;
	}
	hannoy::TidKey tkey(tid);
	UnflushedValue v{s.unflushed_lifetime, s.unflushed_lsn};
	hannoy::put(txn, s.dbi_unflushed, tkey.val(), MDB_val{sizeof(v), &v});
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
		note_unflushed(s, txn.get(), tid);
		s.write_state(txn.get(), state);
		txn.commit();
		return;
	}

	int  level = hannoy::draw_level(s.meta().seed, tid, s.meta().options.m);
	Plan plan;
	{
		hannoy::Txn read(s.env(), true);
		plan_links(s, read.get(), vector, level, plan, true);
		/* the linking may read the vectors the search read from there (link_row) */
		plan.seen.taken_in(s, read.get());
	}

	hannoy::Txn        txn(s.env(), false);
	hannoy::GraphState state = s.read_state(txn.get());
	if (!plan.searched_nonempty && state.max_level >= 0)
	{
		/* Another backend linked the first node meanwhile: search again, here. */
		plan_links(s, txn.get(), vector, level, plan, false);
	}
	link_row(s, txn.get(), state, tid, vector, plan, true);
	note_unflushed(s, txn.get(), tid);
	s.write_state(txn.get(), state);
	txn.commit();
}

} // namespace

void
hannoy::insert_in_txn(Store &s, MDB_txn *txn, GraphState &state, HannoyTid tid, const void *vector,
                      uint8_t unindexed_kind)
{
	if (vector == nullptr)
	{
		record_unindexed(s, txn, state, tid, unindexed_kind);
		return;
	}
	Plan plan;
	plan_links(s, txn, vector, hannoy::draw_level(s.meta().seed, tid, s.meta().options.m), plan,
	           false);
	link_row(s, txn, state, tid, vector, plan, false);
}

void
hannoy::forget_row(Store &s, MDB_txn *txn, HannoyTid tid, GraphState &state)
{
	forget_tid(s, txn, tid, state);
}

void
hannoy::forget_graph_row(Store &s, MDB_txn *txn, HannoyTid tid, GraphState &state)
{
	forget_tid(s, txn, tid, state, true);
}

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

extern "C" HannoyStatus
hannoy_env_set_unflushed(HannoyEnv *env, uint64_t lifetime, uint64_t lsn, uint64_t flushed,
                         HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
		                           s.unflushed_lifetime = 0;
		                           if (lifetime == 0)
			                           return;
		                           s.unflushed_db(true);
		                           s.unflushed_lifetime = lifetime;
		                           s.unflushed_lsn = lsn;
		                           s.unflushed_flushed = flushed;
	                           });
}

extern "C" HannoyStatus
hannoy_env_unflushed_foreign(HannoyEnv *env, uint64_t lifetime, HannoyUnflushedRow *rows,
                             uint32_t capacity, uint32_t *count, HannoyError *err)
{
	*count = 0;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
		                           if (!s.unflushed_db(false))
			                           return;
		                           hannoy::Txn    txn(s.env(), true);
		                           hannoy::Cursor cur(txn.get(), s.dbi_unflushed);
		                           MDB_val        key, data;
		                           UnflushedValue v;
		                           for (bool ok = cur.get(key, data, MDB_FIRST);
		                                ok && *count < capacity; ok = cur.get(key, data, MDB_NEXT))
		                           {
			                           if (!read_unflushed(data, v))
				                           throw hannoy::Error(HANNOY_ERR_CORRUPT,
				                                               "an unflushed row record has " +
				                                                   std::to_string(data.mv_size) +
				                                                   " bytes, not 16");
			                           if (v.lifetime == lifetime)
				                           continue;
			                           rows[*count].tid = hannoy::decode_tid(key);
			                           rows[*count].lifetime = v.lifetime;
			                           rows[*count].lsn = v.lsn;
			                           (*count)++;
		                           }
	                           });
}

extern "C" HannoyStatus
hannoy_env_unflushed_settle(HannoyEnv *env, const HannoyUnflushedRow *rows, const bool *lost,
                            uint32_t n, uint32_t *retired, HannoyError *err)
{
	*retired = 0;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
		    if (n == 0 || !s.unflushed_db(false))
			    return;
		    hannoy::Txn        txn(s.env(), false);
		    hannoy::GraphState state = s.read_state(txn.get());
		    MDB_val            data;
		    UnflushedValue     v;
		    for (uint32_t i = 0; i < n; i++)
		    {
			    hannoy::TidKey tkey(rows[i].tid);
			    /* an insert of the TID since the look replaced the record: the row is its own */
			    if (!hannoy::get(txn.get(), s.dbi_unflushed, tkey.val(), data) ||
			        !read_unflushed(data, v) || v.lifetime != rows[i].lifetime ||
			        v.lsn != rows[i].lsn)
				    continue;
			    if (lost[i])
			    {
				    MDB_val item;
				    if (hannoy::get(txn.get(), s.dbi_items, tkey.val(), item) ||
				        hannoy::get(txn.get(), s.dbi_unindexed, tkey.val(), item))
					    (*retired)++;
				    forget_tid(s, txn.get(), rows[i].tid, state);
			    }
			    hannoy::del(txn.get(), s.dbi_unflushed, tkey.val());
		    }
		    s.write_state(txn.get(), state);
		    txn.commit();
	    });
}
