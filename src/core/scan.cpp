/*
 * scan.cpp
 *	  Ordered index scans that never stop early (DESIGN.md "Complete scans").
 *
 *	  A scan descends from the entry point to layer 0 and runs a best-first
 *	  search in rounds.  Round one is exactly HNSW's beam search with width
 *	  ef; its results are returned nearest first.  Every node ever discovered
 *	  stays either in the frontier (not yet expanded) or in 'pending' (not
 *	  yet returned), so a later round resumes where the last one stopped,
 *	  with a doubled window.  A node found farther than the whole window
 *	  cannot be expanded or returned in its round, so it waits in a plain
 *	  list and enters the heaps only if another round runs (most queries,
 *	  LIMIT k <= ef, never pay for those heap insertions).  When the graph
 *	  reachable from the entry point is exhausted, the scan seeds a new
 *	  search from the next item it never reached, and finally returns the
 *	  rows that have no graph node.
 */
#include "core_guard.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "graph.hpp"
#include "guarded.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"

namespace
{

/* Largest window a resumed round grows to. */
constexpr size_t MAX_WINDOW = 1u << 16;

enum class Phase
{
	Graph,         /* rounds of best-first search */
	Linear,        /* seeding from items the search never reached */
	UnindexedNan,  /* unindexed rows with a NaN distance */
	UnindexedNull, /* unindexed rows with a NULL distance */
	AllItems,      /* NULL query: every graph row, then the unindexed phases */
	Done
};

/*
 * A walk over one database that survives the end of its read transaction:
 * it remembers the last key it returned and, in a new transaction, goes on
 * after it.  The databases it walks are keyed by heap TID, so a row the
 * new snapshot adds or removes is either ahead of it or behind it, and no
 * row is returned twice.
 */
class ResumableWalk
{
  public:
	/* The next record of 'dbi' through 'txn'; false at the end. */
	bool
	step(MDB_txn *txn, MDB_dbi dbi, MDB_val &key, MDB_val &data)
	{
		bool ok;
		if (cursor_)
			ok = cursor_->get(key, data, MDB_NEXT);
		else
		{
			cursor_ = std::make_unique<hannoy::Cursor>(txn, dbi);
			if (last_.empty())
				ok = cursor_->get(key, data, MDB_FIRST);
			else
			{
				key = MDB_val{last_.size(), last_.data()};
				ok = cursor_->get(key, data, MDB_SET_RANGE);
				if (ok && key.mv_size == last_.size() &&
				    std::memcmp(key.mv_data, last_.data(), last_.size()) == 0)
					ok = cursor_->get(key, data, MDB_NEXT);
			}
		}
		if (ok)
			last_.assign(static_cast<const unsigned char *>(key.mv_data),
			             static_cast<const unsigned char *>(key.mv_data) + key.mv_size);
		return ok;
	}
	/* Closes the cursor (before its transaction ends), keeping the position. */
	void
	suspend()
	{
		cursor_.reset();
	}
	/* Starts over from the first record. */
	void
	reset()
	{
		cursor_.reset();
		last_.clear();
	}

  private:
	std::unique_ptr<hannoy::Cursor> cursor_;
	std::vector<unsigned char>      last_;
};

/*
 * A row in merge order: 'rank' 0 for a distance, 1 for NaN (a zero vector
 * under cosine), 2 for NULL, as PostgreSQL sorts float8 and NULL.
 */
struct StagedRow
{
	int       rank;
	double    dist;
	HannoyTid tid;
	bool
	operator<(const StagedRow &o) const
	{
		if (rank != o.rank)
			return rank < o.rank;
		if (rank == 0 && dist != o.dist)
			return dist < o.dist;
		return tid < o.tid;
	}
};

} // namespace

/*
 * A scan.  Between calls it holds only item ids, distances and walk
 * positions (never a pointer into the map), so it can end its read
 * transaction and go on in a new one (DESIGN.md "Scan"): when the map must
 * move (release_snapshot) and when the shim detaches it to close the
 * environment.
 */
struct HannoyScan final : hannoy::SnapshotHolder
{
	hannoy::Store *store = nullptr; /* nullptr while detached */
	MDB_txn       *txn = nullptr;   /* kept between rescans (reset/renew) */
	bool           txn_active = false;
	bool           started = false;
	ResumableWalk  walk; /* over the unindexed rows or the items */

	std::vector<unsigned char> query;
	bool                       all_rows = false;
	uint8_t                    null_kind = 0;
	size_t                     window = 0;
	Phase                      phase = Phase::Done;
	uint64_t                   next_id = 0;
	uint32_t                   linear_next = 0;

	hannoy::VisitedSet             visited;
	hannoy::MinHeap                frontier;
	hannoy::MinHeap                pending;
	std::vector<hannoy::Candidate> later;         /* for both heaps, once another round runs */
	std::vector<hannoy::Candidate> pending_later; /* for 'pending' only (already in the frontier) */
	std::vector<hannoy::Candidate> batch;
	size_t                         batch_pos = 0;
	std::vector<uint32_t>          scratch;
	std::vector<uint32_t>          list;    /* a layer-0 list the snapshot cache does not keep */
	std::vector<const void *>      vectors; /* pieces of the neighbours in scratch, nullptr: none */
	/* the codes' quantizer: the walk ranks by code distances (format 5), else nullptr */
	std::shared_ptr<const hannoy::Quantizer> codes;
	hannoy::QueryForm                        form; /* the query made ready for the codes */
	uint32_t                                 rerank_window = 0; /* 0: ef (set by the caller) */
	size_t                                   first_limit = 0;   /* rows the first window returns */
	std::vector<const uint8_t *>             code_ptrs; /* codes of the neighbours in scratch */
	std::vector<double>                      dists;     /* distances of the neighbours in scratch */
	/*
	 * An index without vectors (format 7, DESIGN.md "Heap re-ranking"):
	 * each window is handed to the caller for exact distances.  While
	 * 'awaiting', 'batch' holds the window's rows with a TID, and
	 * 'batch_tids' their TIDs, the request; afterwards 'batch_tids' stays
	 * parallel to 'batch', so each row is returned with the TID it was
	 * measured for.
	 */
	bool                   heap = false;
	bool                   awaiting = false;
	std::vector<HannoyTid> batch_tids;

	/*
	 * The staged rows of a sidecar that WAL redo made (replica.cpp), all
	 * measured when the scan starts and sorted; rows are merged with the
	 * graph's by (rank, distance).  'lookahead' is the graph's next row,
	 * held while staged rows nearer than it are returned.
	 */
	std::vector<StagedRow> staged;
	size_t                 staged_pos = 0;
	/*
	 * Their TIDs: the linker may move a staged row into the graph, which a
	 * later snapshot of this scan then walks; the scan has it already.
	 */
	std::unordered_set<HannoyTid> staged_tids;
	bool                          graph_done = false;
	bool                          have_lookahead = false;
	StagedRow                     lookahead{};

	/* Ends the read transaction, keeping its handle (and reader slot) for a renewal. */
	void
	end_txn()
	{
		walk.suspend();
		if (txn != nullptr && txn_active)
		{
			mdb_txn_reset(txn);
			store->txn_ended();
		}
		txn_active = false;
	}
	/* Begins (or renews) the read transaction: the latest committed snapshot. */
	void
	begin_txn()
	{
		for (int attempt = 0;; attempt++)
		{
			int rc;
			store->txn_began();
			MDB_env *env = store->env();
			if (txn == nullptr)
			{
				rc = hannoy::guarded(env,
				                     [&] { return mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn); });
				if (rc != 0)
					txn = nullptr;
			}
			else
				rc = hannoy::guarded(env, [&] { return mdb_txn_renew(txn); });
			if (rc == 0)
				break;
			store->txn_ended();
			if (rc == MDB_MAP_RESIZED && attempt == 0)
			{
				/* moves the map (mdb_env_set_mapsize) and notes where it went (note_map) */
				store->adopt_growth();
				continue;
			}
			hannoy::throw_lmdb(rc, "beginning a read transaction");
		}
		txn_active = true;
		store->arm_cache(txn);
	}
	void
	release_snapshot() override
	{
		end_txn();
	}
	/* Leaves the store: the transaction handle and reader slot go with it. */
	void
	detach()
	{
		if (store == nullptr)
			return;
		end_txn();
		if (txn != nullptr)
			mdb_txn_abort(txn);
		txn = nullptr;
		store->remove_holder(this);
		store = nullptr;
	}

	~HannoyScan()
	{
		walk.reset();
		if (txn != nullptr)
		{
			if (txn_active)
				store->txn_ended();
			mdb_txn_abort(txn);
		}
	}
};

namespace
{

/* Bytes of every new neighbour's vector fetched ahead before any distance is computed. */
constexpr size_t PREFETCH_FIRST_BYTES = 256;

/* Bytes of every new neighbour's code fetched ahead before any distance is computed. */
constexpr size_t PREFETCH_CODE_BYTES = 1024;

/* Distance from a stored item to the query; +inf if the item has no vector. */
double
item_distance(HannoyScan *scan, uint32_t id)
{
	return scan->store->distance_to(scan->txn, id, scan->query.data());
}

/*
 * Distance by which the walk ranks an item: to its code when the sidecar
 * has codes, else (or when the item has no code) to its vector.
 */
double
walk_distance(HannoyScan *scan, uint32_t id)
{
	const uint8_t *code;
	if (scan->codes && scan->store->code_of(scan->txn, id, &code))
		return scan->codes->distance(code, scan->form);
	return item_distance(scan, id);
}

/*
 * Gives each candidate of a window found by code distances its exact
 * distance and sorts the window by it: every row a scan returns carries
 * its exact distance, nearest first within its window (DESIGN.md "Scan").
 */
void
rerank(HannoyScan *scan, std::vector<hannoy::Candidate> &window)
{
	const hannoy::VectorLayout &layout = scan->store->layout();
	uint32_t                    per = layout.pieces();
	if (scan->vectors.size() < window.size() * per)
		scan->vectors.resize(window.size() * per);
	for (size_t i = 0; i < window.size(); i++)
	{
		const void **pieces = &scan->vectors[i * per];
		if (!scan->store->vector_pieces(scan->txn, window[i].id, pieces))
			pieces[0] = nullptr;
		layout.prefetch(pieces, PREFETCH_FIRST_BYTES);
	}
	for (size_t i = 0; i < window.size(); i++)
	{
		const void *const *pieces = &scan->vectors[i * per];
		if (i + 1 < window.size())
			layout.prefetch(pieces + per, SIZE_MAX);
		window[i].dist =
		    pieces[0] == nullptr ? HUGE_VAL : layout.distance(pieces, scan->query.data());
	}
	std::sort(window.begin(), window.end());
}

/*
 * In an index without vectors: keeps the window's rows that have a TID
 * (tombstones are walked through, never returned) and asks the caller for
 * their exact distances (hannoy_scan_rerank_request); the window is sorted
 * when they come (hannoy_scan_rerank_reply).
 */
void
request_distances(HannoyScan *scan)
{
	size_t kept = 0;
	scan->batch_tids.clear();
	for (const hannoy::Candidate &c : scan->batch)
	{
		HannoyTid tid;
		if (!scan->store->tid_of(scan->txn, c.id, &tid))
			continue;
		scan->batch[kept++] = c;
		scan->batch_tids.push_back(tid);
	}
	scan->batch.resize(kept);
	scan->awaiting = kept > 0;
}

/* Takes the exact distances of the window requested, in request order, and sorts it. */
void
take_distances(HannoyScan *scan, const double *distances, uint32_t count)
{
	if (!scan->awaiting || count != scan->batch.size())
		throw hannoy::Error(HANNOY_ERR_INVALID, "the scan asked for " +
		                                            std::to_string(scan->batch.size()) +
		                                            " distances, not " + std::to_string(count));
	std::vector<std::pair<hannoy::Candidate, HannoyTid>> rows(count);
	for (uint32_t i = 0; i < count; i++)
		rows[i] = {hannoy::Candidate{distances[i], scan->batch[i].id}, scan->batch_tids[i]};
	std::sort(rows.begin(), rows.end(),
	          [](const std::pair<hannoy::Candidate, HannoyTid> &a,
	             const std::pair<hannoy::Candidate, HannoyTid> &b) { return a.first < b.first; });
	for (uint32_t i = 0; i < count; i++)
	{
		scan->batch[i] = rows[i].first;
		scan->batch_tids[i] = rows[i].second;
	}
	scan->awaiting = false;
}

/*
 * Distances from the query to the new neighbours scratch[0 .. fresh) by
 * their codes (by their vectors for any without one), into 'out'.
 */
void
code_distances(HannoyScan *scan, size_t fresh, std::vector<double> &out)
{
	const hannoy::Quantizer &q = *scan->codes;
	size_t                   bytes = std::min(q.code_bytes(), PREFETCH_CODE_BYTES);
	if (scan->code_ptrs.size() < fresh)
		scan->code_ptrs.resize(fresh);
	for (size_t i = 0; i < fresh; i++)
	{
		const uint8_t *code;
		if (!scan->store->code_of(scan->txn, scan->scratch[i], &code))
			code = nullptr;
		scan->code_ptrs[i] = code;
		if (code != nullptr)
			for (size_t off = 0; off < bytes; off += 64)
				__builtin_prefetch(code + off);
	}
	out.resize(fresh);
	for (size_t i = 0; i < fresh; i++)
		out[i] = scan->code_ptrs[i] != nullptr ? q.distance(scan->code_ptrs[i], scan->form)
		                                       : item_distance(scan, scan->scratch[i]);
}

/* Marks a newly discovered node: it is both to be expanded and to be returned. */
void
discover(HannoyScan *scan, hannoy::Candidate c)
{
	scan->frontier.push(c);
	scan->pending.push(c);
}

/* Moves the nodes the last round set aside into the heaps. */
void
take_later(HannoyScan *scan)
{
	for (const hannoy::Candidate &c : scan->later)
	{
		scan->frontier.push(c);
		scan->pending.push(c);
	}
	for (const hannoy::Candidate &c : scan->pending_later)
		scan->pending.push(c);
	scan->later.clear();
	scan->pending_later.clear();
}

/*
 * The distances by which the walk ranks the items scratch[0 .. fresh), into
 * 'out': code_distances when the sidecar has codes; else every vector is
 * looked up and fetched ahead before any is measured, so the memory loads
 * overlap.
 */
void
walk_distances(HannoyScan *scan, size_t fresh, std::vector<double> &out)
{
	if (scan->codes)
	{
		code_distances(scan, fresh, out);
		return;
	}
	const hannoy::VectorLayout &layout = scan->store->layout();
	uint32_t                    per = layout.pieces();
	if (scan->vectors.size() < fresh * per)
		scan->vectors.resize(fresh * per);
	for (size_t i = 0; i < fresh; i++)
	{
		const void **pieces = &scan->vectors[i * per];
		if (!scan->store->vector_pieces(scan->txn, scan->scratch[i], pieces))
			pieces[0] = nullptr;
		layout.prefetch(pieces, PREFETCH_FIRST_BYTES);
	}
	out.resize(fresh);
	for (size_t i = 0; i < fresh; i++)
	{
		const void *const *pieces = &scan->vectors[i * per];
		if (i + 1 < fresh)
			layout.prefetch(pieces + per, SIZE_MAX);
		out[i] = pieces[0] == nullptr ? HUGE_VAL : layout.distance(pieces, scan->query.data());
	}
}

/*
 * A scan's descent to layer 0: greedy_descend's steps, each measuring all
 * the neighbours at once with walk_distances (on random-xs-20 at
 * ef_search 10 the descent's distances, one lookup after another, took 7%
 * of the backend's time).
 */
hannoy::Candidate
descend(HannoyScan *scan, hannoy::Candidate ep, int from_layer)
{
	for (int layer = from_layer; layer > 0; layer--)
	{
		bool changed = true;
		while (changed)
		{
			changed = false;
			scan->store->links(scan->txn, ep.id, layer, scan->scratch);
			walk_distances(scan, scan->scratch.size(), scan->dists);
			for (size_t i = 0; i < scan->scratch.size(); i++)
			{
				hannoy::Candidate c{scan->dists[i], scan->scratch[i]};
				if (c < ep)
				{
					ep = c;
					changed = true;
				}
			}
		}
	}
	return ep;
}

/* Runs one round: fills a window from pending, expands the frontier, sorts the window. */
void
run_round(HannoyScan *scan)
{
	take_later(scan);
	hannoy::MaxHeap top;
	size_t          window = scan->window;
	while (!scan->pending.empty() && top.size() < window)
	{
		top.push(scan->pending.top());
		scan->pending.pop();
	}
	std::vector<double> &dists = scan->dists;
	while (!scan->frontier.empty())
	{
		hannoy::Candidate c = scan->frontier.top();
		if (top.size() >= window && top.top() < c)
			break;
		scan->frontier.pop();
		size_t          count;
		const uint32_t *list = scan->store->links0(scan->txn, c.id, scan->list, &count);
		if (scan->scratch.size() < count)
			scan->scratch.resize(count);
		size_t fresh = 0;
		for (size_t i = 0; i < count; i++)
			if (scan->visited.insert(list[i]))
				scan->scratch[fresh++] = list[i];
		walk_distances(scan, fresh, dists);
		for (size_t i = 0; i < fresh; i++)
		{
			hannoy::Candidate cand{dists[i], scan->scratch[i]};
			/*
			 * Farther than a full window: the window's worst only gets nearer,
			 * so this round will neither expand nor return it.
			 */
			if (top.size() >= window && top.top() < cand)
			{
				scan->later.push_back(cand);
				continue;
			}
			scan->frontier.push(cand);
			if (top.size() < window)
				top.push(cand);
			else
			{
				scan->pending_later.push_back(top.top());
				top.pop();
				top.push(cand);
			}
		}
	}
	scan->batch.resize(top.size());
	for (size_t i = top.size(); i-- > 0;)
	{
		scan->batch[i] = top.top();
		top.pop();
	}
	if (scan->codes)
	{
		/*
		 * A first window narrower than the round (hannoy.rerank_window below
		 * ef_search) re-ranks and returns the nearest by code; the rest wait
		 * in 'pending' for the next round, unreturned.
		 */
		if (scan->first_limit > 0 && scan->batch.size() > scan->first_limit)
		{
			for (size_t i = scan->first_limit; i < scan->batch.size(); i++)
				scan->pending.push(scan->batch[i]);
			scan->batch.resize(scan->first_limit);
		}
		if (scan->heap)
			request_distances(scan);
		else
			rerank(scan, scan->batch);
	}
	scan->first_limit = 0;
	scan->batch_pos = 0;
	scan->window = std::min(window * 2, MAX_WINDOW);
}

/* Seeds the search from the next item never reached; false when none is left. */
bool
seed_unreached(HannoyScan *scan)
{
	while (scan->linear_next < scan->next_id)
	{
		uint32_t id = scan->linear_next++;
		if (!scan->visited.insert(id))
			continue;
		double dist = walk_distance(scan, id);
		if (dist == HUGE_VAL && !scan->store->has_vector(scan->txn, id))
			continue;
		discover(scan, hannoy::Candidate{dist, id});
		return true;
	}
	return false;
}

/* Moves to 'next' phase, dropping the cursor of the previous one. */
void
enter(HannoyScan *scan, Phase next)
{
	scan->walk.reset();
	scan->phase = next;
}

/* Produces the next row; see hannoy_scan_next. */
bool
next_row(HannoyScan *scan, HannoyTid *tid, double *distance, bool *isnull)
{
	hannoy::Store &s = *scan->store;
	MDB_val        key, data;
	*isnull = false;
	for (;;)
	{
		switch (scan->phase)
		{
			case Phase::Graph:
				if (scan->awaiting)
					return false; /* the caller measures the window first */
				if (scan->batch_pos < scan->batch.size())
				{
					hannoy::Candidate c = scan->batch[scan->batch_pos++];
					if (scan->heap)
					{
						*tid = scan->batch_tids[scan->batch_pos - 1];
						*distance = c.dist;
						return true;
					}
					if (s.tid_of(scan->txn, c.id, tid))
					{
						*distance = c.dist;
						return true;
					}
					continue; /* a tombstone: walked through, never returned */
				}
				if (scan->frontier.empty() && scan->pending.empty() && scan->later.empty() &&
				    scan->pending_later.empty())
				{
					scan->phase = Phase::Linear;
					continue;
				}
				run_round(scan);
				continue;
			case Phase::Linear:
				if (seed_unreached(scan))
					scan->phase = Phase::Graph;
				else
					enter(scan, Phase::UnindexedNan);
				continue;
			case Phase::UnindexedNan:
			case Phase::UnindexedNull:
			{
				/* NaN distances sort before NULL ones: one pass for each kind */
				uint8_t want = scan->phase == Phase::UnindexedNan ? HANNOY_ROW_UNINDEXED_NAN
				                                                  : HANNOY_ROW_UNINDEXED_NULL;
				while (scan->walk.step(scan->txn, s.dbi_unindexed, key, data))
				{
					uint8_t kind = *static_cast<const uint8_t *>(data.mv_data);
					if (kind != want)
						continue;
					*tid = hannoy::decode_tid(key);
					*distance = std::nan("");
					/* a NULL query makes every distance NULL */
					*isnull = want == HANNOY_ROW_UNINDEXED_NULL ||
					          (scan->all_rows && scan->null_kind != HANNOY_ROW_UNINDEXED_NAN);
					return true;
				}
				enter(scan,
				      scan->phase == Phase::UnindexedNan ? Phase::UnindexedNull : Phase::Done);
				continue;
			}
			case Phase::AllItems:
				if (scan->walk.step(scan->txn, s.dbi_items, key, data))
				{
					*tid = hannoy::decode_tid(key);
					*distance = std::nan("");
					*isnull = scan->null_kind != HANNOY_ROW_UNINDEXED_NAN;
					return true;
				}
				enter(scan, Phase::UnindexedNan);
				continue;
			case Phase::Done:
				return false;
		}
	}
}

/*
 * Reads and measures every staged row (a sidecar WAL redo made) and sorts
 * them; with no query ('measure' false) every row gets the scan's NULL or
 * NaN distance.
 */
void
load_staged(HannoyScan *scan, bool measure)
{
	hannoy::Store &s = *scan->store;
	scan->staged.clear();
	scan->staged_tids.clear();
	scan->staged_pos = 0;
	if (!s.has_staged())
		return;
	HannoyMetric   metric = static_cast<HannoyMetric>(s.meta().metric);
	uint32_t       dims = s.meta().dims;
	size_t         bytes = s.vector_bytes();
	hannoy::Cursor cur(scan->txn, s.dbi_staged);
	MDB_val        key, data;
	int            none = scan->null_kind == HANNOY_ROW_UNINDEXED_NAN ? 1 : 2;
	for (bool more = cur.get(key, data, MDB_FIRST); more; more = cur.get(key, data, MDB_NEXT))
	{
		const unsigned char *v = static_cast<const unsigned char *>(data.mv_data);
		uint8_t              kind = hannoy::staged_kind(data, bytes);
		StagedRow            row{0, std::nan(""), hannoy::decode_tid(key)};
		if (kind == HANNOY_ROW_UNINDEXED_NULL)
			row.rank = 2;
		else if (kind == HANNOY_ROW_UNINDEXED_NAN)
			row.rank = measure ? 1 : none;
		else if (!measure)
			row.rank = none;
		else
		{
			row.dist = hannoy_distance(metric, v + 1, scan->query.data(), dims);
			row.rank = std::isnan(row.dist) ? 1 : 0;
		}
		scan->staged.push_back(row);
		scan->staged_tids.insert(row.tid);
	}
	std::sort(scan->staged.begin(), scan->staged.end());
}

/*
 * The next row of the scan: the graph's rows (next_row) and the staged
 * rows merged, nearest first where both are in order.
 */
bool
merged_row(HannoyScan *scan, HannoyTid *tid, double *distance, bool *isnull)
{
	while (!scan->have_lookahead && !scan->graph_done)
	{
		StagedRow &g = scan->lookahead;
		bool       null = false;
		if (!next_row(scan, &g.tid, &g.dist, &null))
		{
			if (scan->awaiting)
				return false; /* not the end: the window waits for its distances */
			scan->graph_done = true;
		}
		else if (scan->staged_tids.count(g.tid) == 0)
		{
			g.rank = null ? 2 : (std::isnan(g.dist) ? 1 : 0);
			scan->have_lookahead = true;
		}
	}
	bool staged_left = scan->staged_pos < scan->staged.size();
	if (staged_left && (!scan->have_lookahead || scan->staged[scan->staged_pos] < scan->lookahead))
	{
		const StagedRow &r = scan->staged[scan->staged_pos++];
		*tid = r.tid;
		*distance = r.dist;
		*isnull = r.rank == 2;
		return true;
	}
	if (!scan->have_lookahead)
		return false;
	scan->have_lookahead = false;
	*tid = scan->lookahead.tid;
	*distance = scan->lookahead.dist;
	*isnull = scan->lookahead.rank == 2;
	return true;
}

/* Starts the scan: a fresh snapshot, then the descent to layer 0. */
void
start_scan(HannoyScan *scan, const void *query, uint32_t dims, uint32_t ef, uint8_t null_kind)
{
	hannoy::Store &s = *scan->store;
	scan->started = false;
	scan->end_txn();
	scan->walk.reset();
	scan->begin_txn();
	if (s.meta().dims == 0)
		s.reload_meta(scan->txn);
	/* the index's length may have been fixed by another backend since the caller checked */
	if (query != nullptr && s.meta().dims != 0 && dims != s.meta().dims)
		throw hannoy::Error(
		    HANNOY_ERR_INVALID,
		    std::string(hannoy_metric_info(s.meta().metric).element == HANNOY_ELEMENT_BIT
		                    ? "different bit string lengths "
		                    : "different vector dimensions ") +
		        std::to_string(s.meta().dims) + " and " + std::to_string(dims));

	hannoy::GraphState state = s.read_state(scan->txn);
	scan->next_id = state.next_id;
	scan->visited.reset(state.next_id);
	scan->frontier = hannoy::MinHeap();
	scan->pending = hannoy::MinHeap();
	scan->later.clear();
	scan->pending_later.clear();
	scan->batch.clear();
	scan->batch_pos = 0;
	scan->linear_next = 0;
	scan->window = std::max<uint32_t>(ef, 1);
	scan->null_kind = null_kind;
	scan->all_rows = query == nullptr;
	scan->codes.reset();
	scan->heap = false;
	scan->awaiting = false;
	scan->batch_tids.clear();
	scan->started = true;
	scan->graph_done = false;
	scan->have_lookahead = false;
	if (query != nullptr)
		scan->query.assign(static_cast<const unsigned char *>(query),
		                   static_cast<const unsigned char *>(query) + s.vector_bytes());
	load_staged(scan, query != nullptr);
	if (query == nullptr)
	{
		scan->phase = Phase::AllItems;
		return;
	}
	scan->phase = Phase::Graph;
	if (state.max_level < 0)
		return;
	s.refresh_quantizer(scan->txn);
	scan->codes = s.quantizer();
	scan->heap = scan->codes && scan->codes->heap_rerank();
	scan->first_limit = 0;
	if (scan->codes)
	{
		/* the first window: hannoy.rerank_window rows, searched at least ef wide */
		scan->codes->prepare(scan->query.data(), scan->form);
		if (scan->rerank_window > 0)
		{
			scan->first_limit = scan->rerank_window;
			scan->window = std::max<size_t>(scan->window, scan->rerank_window);
		}
	}
	hannoy::Candidate ep{walk_distance(scan, state.entry_point), state.entry_point};
	ep = descend(scan, ep, state.max_level);
	scan->visited.insert(ep.id);
	discover(scan, ep);
}

} // namespace

extern "C" HannoyStatus
hannoy_scan_create(HannoyEnv *env, HannoyScan **scan, HannoyError *err)
{
	*scan = nullptr;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           auto *store = reinterpret_cast<hannoy::Store *>(env);
		                           std::unique_ptr<HannoyScan> s(
		                               static_cast<HannoyScan *>(store->take_idle_scan()));
		                           if (!s)
		                           {
			                           s = std::make_unique<HannoyScan>();
			                           s->store = store;
		                           }
		                           s->started = false;
		                           s->rerank_window = 0; /* an idle scan kept its last caller's */
		                           store->add_holder(s.get());
		                           *scan = s.release();
	                           });
}

extern "C" HannoyStatus
hannoy_scan_start(HannoyScan *scan, const void *query, uint32_t dims, uint32_t ef,
                  uint8_t null_kind, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           if (scan->store == nullptr)
			                           throw hannoy::Error(HANNOY_ERR_INVALID,
			                                               "scan is detached from its sidecar");
		                           start_scan(scan, query, dims, ef, null_kind);
	                           });
}

extern "C" void
hannoy_scan_set_rerank_window(HannoyScan *scan, uint32_t window)
{
	scan->rerank_window = std::min<uint32_t>(window, MAX_WINDOW);
}

extern "C" HannoyStatus
hannoy_scan_next(HannoyScan *scan, HannoyTid *tid, double *distance, bool *isnull, bool *found,
                 HannoyError *err)
{
	*found = false;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           if (!scan->started || scan->store == nullptr)
			                           throw hannoy::Error(HANNOY_ERR_INVALID,
			                                               "scan was not started");
		                           /* a scan that ended its snapshot goes on in a new one */
		                           if (!scan->txn_active)
			                           scan->begin_txn();
		                           *found = merged_row(scan, tid, distance, isnull);
	                           });
}

extern "C" uint32_t
hannoy_scan_rerank_request(HannoyScan *scan, const HannoyTid **tids)
{
	if (!scan->awaiting)
	{
		*tids = nullptr;
		return 0;
	}
	*tids = scan->batch_tids.data();
	return static_cast<uint32_t>(scan->batch_tids.size());
}

extern "C" HannoyStatus
hannoy_scan_rerank_reply(HannoyScan *scan, const double *distances, uint32_t count,
                         HannoyError *err)
{
	return hannoy::run_guarded(err, [&] { take_distances(scan, distances, count); });
}

extern "C" void
hannoy_scan_detach(HannoyScan *scan)
{
	scan->detach();
}

extern "C" HannoyStatus
hannoy_scan_attach(HannoyScan *scan, HannoyEnv *env, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           if (scan->store != nullptr)
			                           throw hannoy::Error(HANNOY_ERR_INVALID,
			                                               "scan is attached already");
		                           auto *store = reinterpret_cast<hannoy::Store *>(env);
		                           store->add_holder(scan);
		                           scan->store = store;
	                           });
}

extern "C" void
hannoy_scan_free(HannoyScan *scan)
{
	hannoy::Store *store = scan->store;
	if (store == nullptr)
	{
		delete scan;
		return;
	}
	scan->end_txn();
	scan->started = false;
	store->remove_holder(scan);
	if (!store->keep_idle_scan(scan, [](void *p) { delete static_cast<HannoyScan *>(p); }))
		delete scan;
}
