/*
 * build.cpp
 *	  Index build: heap rows are streamed into LMDB in bounded batches, then
 *	  the HNSW graph is linked in memory by worker threads (insertion grouped
 *	  by level, top first) in time-bounded slices, then every node the
 *	  layer-0 walk from the entry point cannot reach is linked in, then the
 *	  links are written to LMDB as Roaring bitmaps.
 */
#include "core_guard.hpp"

#include <pthread.h>
#include <signal.h>

#include <exception>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "graph.hpp"
#include "guarded.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"

namespace
{

/* Rows buffered before one LMDB write transaction stores them. */
constexpr size_t LOAD_BATCH_BYTES = 16u << 20;
/* The fewest vectors a build fits a quantizer to (DESIGN.md "Codes"). */
constexpr size_t CODES_MIN_ROWS = 100;
/* Links written per write transaction slice check. */
constexpr uint32_t WRITE_CHECK_EVERY = 256;

using Clock = std::chrono::steady_clock;

/* A tiny spinlock guarding one node's neighbour lists during the build. */
class NodeLock
{
  public:
	void
	lock()
	{
		while (flag_.exchange(true, std::memory_order_acquire))
			std::this_thread::yield();
	}
	/* Takes the lock if it is free; false when another thread holds it. */
	bool
	try_lock()
	{
		return !flag_.exchange(true, std::memory_order_acquire);
	}
	void
	unlock()
	{
		flag_.store(false, std::memory_order_release);
	}

  private:
	std::atomic<bool> flag_{false};
};

} // namespace

/*
 * The in-memory graph under construction; the accessor (and editable
 * accessor) of graph.hpp.  Reading a list for a search waits for its lock;
 * peeking at one while the caller holds another list's lock does not (a
 * list being changed just covers nothing), so two threads never wait on
 * each other.
 */
struct BuildGraph
{
	std::vector<const void *>                       pieces; /* node id * P + piece: into the map */
	std::vector<uint8_t>                            levels; /* per node */
	std::vector<std::vector<std::vector<uint32_t>>> links;  /* [node][layer] */
	std::unique_ptr<NodeLock[]>                     locks;
	/*
	 * Layer 0's top-up, deferred: per node, the next nearest candidates
	 * its search found beyond those it linked (up to fill0 in all), added
	 * once every node is linked (see top_up_lists).
	 */
	std::vector<uint32_t> spare;  /* node id * fill0 + i */
	std::vector<uint8_t>  spares; /* per node */
	uint32_t              fill0 = 0;
	/*
	 * Wide nodes (true metrics only, wide_min > 0): the heuristic kept at
	 * least wide_min of a node's layer-0 candidates (3/8 of the bound), as
	 * where the data have a high intrinsic dimension.  A wide node links its
	 * full list at once, and its list, when full, takes a new node by one
	 * swap (see one_swap) instead of being pruned.  Set under the node's lock.
	 */
	std::vector<uint8_t> wide;
	uint32_t             wide_min = 0;
	bool                 swap_upper = false; /* lists above layer 0 take new nodes by one swap */
	/* What one_swap keeps of a wide node's full layer-0 list, built on its first swap. */
	struct SwapEntry
	{
		uint32_t id;
		float    dist; /* from the list's owner */
		bool     kept; /* the heuristic keeps it */
	};
	std::vector<std::vector<SwapEntry>> swap_state;
	const hannoy::VectorLayout         *layout = nullptr;
	uint32_t                            per_node = 1; /* pieces per vector */
	uint32_t                            m = 0, m0 = 0;
	/* the codes (format 5, when they pay): node id * code bytes */
	std::shared_ptr<const hannoy::Quantizer> quantizer;
	std::vector<uint8_t>                     codes;
	/*
	 * The codes are lossless (every element is offset + code): then every
	 * distance between nodes, the searches' and the neighbour choice's, is
	 * measured on the codes by 'lossless', with each node's offset_dot
	 * under inner product and cosine.
	 */
	bool                                         search_codes = false;
	std::unique_ptr<const hannoy::LosslessCodes> lossless;
	std::vector<double>                          offset_dots;
	/*
	 * The lossless 8-bit codes the distances read (node id * dims): the
	 * stored codes themselves, or, when those are 1-bit, lossless_codes,
	 * kept in memory for the build only.
	 */
	const uint8_t       *distance_codes = nullptr;
	std::vector<uint8_t> lossless_codes;
	size_t               distance_code_bytes = 0;
	/*
	 * Cosine: each vector's a.a, so that a distance takes one dot product
	 * instead of three (empty for other metrics).
	 */
	std::vector<float> sq_norms;

	size_t
	size() const
	{
		return levels.size();
	}
	const void *const *
	pieces_of(uint32_t id) const
	{
		return &pieces[size_t(id) * per_node];
	}
	double
	distance(const void *query, uint32_t id) const
	{
		return layout->distance(pieces_of(id), query);
	}
	/* The distance between two nodes from their lossless codes (search_codes). */
	double
	code_distance_between(uint32_t a, uint32_t b) const
	{
		const size_t bytes = distance_code_bytes;
		return lossless->distance(
		    &distance_codes[size_t(a) * bytes], &distance_codes[size_t(b) * bytes],
		    offset_dots.empty() ? 0.0 : offset_dots[a], offset_dots.empty() ? 0.0 : offset_dots[b],
		    sq_norms.empty() ? 0.0f : sq_norms[a], sq_norms.empty() ? 0.0f : sq_norms[b]);
	}
	double
	distance_between(uint32_t a, uint32_t b) const
	{
		if (search_codes)
			return code_distance_between(a, b);
		if (!sq_norms.empty())
			return hannoy::cosine_distance_from_dots(layout->dot(pieces_of(a), pieces_of(b)),
			                                         sq_norms[a], sq_norms[b]);
		return layout->distance(pieces_of(a), pieces_of(b));
	}
	void
	neighbors(uint32_t id, int layer, std::vector<uint32_t> &out)
	{
		locks[id].lock();
		copy_list(id, layer, out);
		locks[id].unlock();
	}
	bool
	peek(uint32_t id, int layer, std::vector<uint32_t> &out)
	{
		if (!locks[id].try_lock())
			return false;
		copy_list(id, layer, out);
		locks[id].unlock();
		return true;
	}
	bool
	may_cover(uint32_t) const
	{
		return true;
	}
	/* Only with room: other threads may rely on any entry of a list. */
	bool
	adopt(uint32_t into, int layer, uint32_t x, bool)
	{
		if (!locks[into].try_lock())
			return false;
		std::vector<uint32_t> &list = links[into][layer];
		bool                   ok = hannoy::holds(list, x) || list.size() < max_links(layer);
		if (ok && !hannoy::holds(list, x))
			list.push_back(x);
		locks[into].unlock();
		return ok;
	}
	void
	relies(uint32_t, int, uint32_t) const
	{
	}
	void
	set_links(uint32_t id, int layer, const std::vector<uint32_t> &list)
	{
		locks[id].lock();
		links[id][layer] = list;
		locks[id].unlock();
	}
	size_t
	max_links(int layer) const
	{
		return layer == 0 ? m0 : m;
	}
	const void *
	vector(uint32_t id, std::string &buf) const
	{
		if (per_node == 1)
			return pieces[id];
		buf.resize(layout->bytes());
		layout->gather(pieces_of(id), &buf[0]);
		return buf.data();
	}

  private:
	/* Copies the list of (id, layer), empty when the node has no such layer; lock held. */
	void
	copy_list(uint32_t id, int layer, std::vector<uint32_t> &out) const
	{
		if (static_cast<size_t>(layer) < links[id].size())
			out.assign(links[id][layer].begin(), links[id][layer].end());
		else
			out.clear();
	}
};

/*
 * The build's graph as the searches that link node 'self' walk it: the
 * query is the node itself, so a distance is distance_between's (on
 * lossless codes their integer sums; else under cosine one dot product and
 * the cached norms), and the searches' distances are the ones the
 * neighbour choice needs.
 */
struct SelfSearchGraph
{
	BuildGraph &g;
	uint32_t    self;

	double
	distance(const void *, uint32_t id) const
	{
		return g.distance_between(self, id);
	}
	/*
	 * The list of 'id' at 'layer'; on codes (a few hundred bytes or more:
	 * CODES_MIN_DIMS), each neighbour's code is fetched into the cache
	 * before the search measures it, which took a third off the build's CPU
	 * on Fashion-MNIST.  Not for vectors: on 64-d rows (four cache lines)
	 * the prefetches cost 10% more than they saved (DESIGN.md "Build").
	 */
	void
	neighbors(uint32_t id, int layer, std::vector<uint32_t> &out)
	{
		g.neighbors(id, layer, out);
		if (!g.search_codes)
			return;
		const size_t bytes = g.distance_code_bytes;
		for (uint32_t n : out)
		{
			const char *code = reinterpret_cast<const char *>(&g.distance_codes[size_t(n) * bytes]);
			for (size_t off = 0; off < bytes; off += 64)
				__builtin_prefetch(code + off);
		}
	}
};

/* Per-thread scratch space, reused across insertions. */
struct BuildWorker
{
	hannoy::VisitedSet             visited;
	hannoy::CoverCache             cover;
	std::vector<hannoy::Candidate> found, entries, pruning;
	std::vector<uint32_t>          scratch, selected, pruned;
	/* one_swap's */
	std::vector<BuildGraph::SwapEntry> swap_state; /* for lists above layer 0: not kept */
	std::vector<size_t>                swap_order;
	std::vector<uint32_t>              swap_kept;
};

struct HannoyBuilder
{
	hannoy::Store   *store = nullptr;
	uint32_t         threads = 1;
	uint32_t         quantizer = HANNOY_QUANTIZER_AUTO; /* the index option */
	bool             heap_rerank = false; /* the index option rerank = 'heap' (format 7) */
	HannoyBuildPhase phase = HANNOY_BUILD_LOADING;

	/* loading */
	std::string batch_vectors;
	/*
	 * An index without vectors: every vector, in id order, kept in memory
	 * for the build's exact neighbour choice and never written (LMDB files
	 * never shrink, so writing and deleting them would keep their bytes).
	 */
	std::string                                memory_vectors;
	std::vector<HannoyTid>                     batch_tids;
	std::vector<std::pair<HannoyTid, uint8_t>> batch_unindexed;
	uint32_t                                   next_id = 0;
	uint64_t                                   unindexed = 0;

	/* linking */
	std::unique_ptr<hannoy::Txn> read_txn;
	BuildGraph                   graph;
	std::vector<uint32_t>        order;
	std::atomic<size_t>          next_order{0};
	std::atomic<size_t>          linked{0};
	uint32_t                     entry_point = 0;
	int                          max_level = -1;
	std::vector<BuildWorker>     workers;

	/* connecting: the layer-0 walk from the entry point, then the nodes it missed */
	bool                  connect_started = false, walked = false;
	std::vector<char>     reached;
	std::vector<uint32_t> stack, orphans;
	size_t                orphan_pos = 0;
	hannoy::RelinkScratch relink;

	/* writing */
	uint32_t write_pos = 0;
};

namespace
{

/* What LMDB adds to a small record at most: node header, key, alignment, page index. */
constexpr uint64_t LMDB_RECORD_BYTES = 32;

/* Writes the buffered rows in one LMDB write transaction. */
void
flush_batch(HannoyBuilder *b)
{
	if (b->batch_tids.empty() && b->batch_unindexed.empty())
		return;
	hannoy::Store &s = *b->store;
	/* the map must hold the whole batch: twice its records leaves room for the B-trees */
	s.reserve(2 * (b->batch_vectors.size() +
	               (b->batch_tids.size() + b->batch_unindexed.size()) * LMDB_RECORD_BYTES));
	hannoy::Txn txn(s.env(), false);
	uint32_t    first = b->next_id - static_cast<uint32_t>(b->batch_tids.size());
	if (b->heap_rerank)
		b->memory_vectors.append(b->batch_vectors);
	else
		s.put_vectors(txn.get(), first, b->batch_tids.size(), b->batch_vectors.data());
	for (size_t i = 0; i < b->batch_tids.size(); i++)
	{
		uint32_t       id = first + static_cast<uint32_t>(i);
		hannoy::IdKey  key(id);
		hannoy::TidKey tkey(b->batch_tids[i]);
		hannoy::put(txn.get(), s.dbi_tids, key.val(), tkey.val(), MDB_APPEND);
		hannoy::put(txn.get(), s.dbi_items, tkey.val(), key.val());
	}
	for (const auto &u : b->batch_unindexed)
	{
		hannoy::TidKey tkey(u.first);
		uint8_t        kind = u.second;
		hannoy::put(txn.get(), s.dbi_unindexed, tkey.val(), MDB_val{1, &kind});
	}
	txn.commit();
	b->batch_vectors.clear();
	b->batch_tids.clear();
	b->batch_unindexed.clear();
}

/* The heuristic's verdict on each entry of 'st' (see select_neighbors). */
void
mark_kept(BuildGraph &g, std::vector<BuildGraph::SwapEntry> &st, std::vector<size_t> &order,
          std::vector<uint32_t> &kept)
{
	order.resize(st.size());
	for (size_t i = 0; i < order.size(); i++)
		order[i] = i;
	std::sort(order.begin(), order.end(),
	          [&](size_t a, size_t b) {
		          return hannoy::Candidate{st[a].dist, st[a].id} <
		                 hannoy::Candidate{st[b].dist, st[b].id};
	          });
	kept.clear();
	for (size_t i : order)
	{
		st[i].kept = true;
		for (uint32_t k : kept)
			if (hannoy::sort_key(g.distance_between(st[i].id, k)) < hannoy::sort_key(st[i].dist))
			{
				st[i].kept = false;
				break;
			}
		if (st[i].kept)
			kept.push_back(st[i].id);
	}
}

/*
 * A new node 'u' for the full list of 'owner' (lock held), pgvector's way:
 * of the list and u, the one that the heuristic's choice topped up with the
 * nearest candidates it passed over would leave out goes (the farthest the
 * heuristic passes over, or the farthest of all when it keeps everyone),
 * and u takes its place unless that is u itself.  'st' caches each entry's
 * distance to the owner and the heuristic's verdict (rebuilt when it does
 * not describe 'list'), so a swap measures u against the list alone: u
 * passed over leaves every verdict as it was; u kept may hide entries
 * farther than it, and then, since those may have hidden others, the
 * verdicts are taken again.  On 100,000 uniform 64-d rows this took the
 * build's distances from 1,650 to 500 million, the same graph (DESIGN.md
 * "Build").  Lists above layer 0 (few) keep no state: 'st' comes empty.
 */
void
one_swap(BuildGraph &g, uint32_t owner, uint32_t u, std::vector<uint32_t> &list,
         std::vector<BuildGraph::SwapEntry> &st, BuildWorker &w)
{
	bool valid = st.size() == list.size();
	for (size_t i = 0; valid && i < list.size(); i++)
		valid = st[i].id == list[i];
	if (!valid)
	{
		st.clear();
		for (uint32_t x : list)
			st.push_back(BuildGraph::SwapEntry{x, float(g.distance_between(owner, x)), true});
		mark_kept(g, st, w.swap_order, w.swap_kept);
	}
	const float             du = float(g.distance_between(owner, u));
	const hannoy::Candidate cu{du, u};
	bool                    u_kept = true;
	for (const BuildGraph::SwapEntry &e : st)
		if (e.kept && hannoy::Candidate{e.dist, e.id} < cu &&
		    hannoy::sort_key(g.distance_between(u, e.id)) < hannoy::sort_key(du))
		{
			u_kept = false;
			break;
		}
	if (u_kept)
	{
		bool hid = false;
		for (const BuildGraph::SwapEntry &e : st)
			if (e.kept && cu < hannoy::Candidate{e.dist, e.id} &&
			    hannoy::sort_key(g.distance_between(e.id, u)) < hannoy::sort_key(e.dist))
			{
				hid = true;
				break;
			}
		if (hid)
		{
			st.push_back(BuildGraph::SwapEntry{u, du, true});
			mark_kept(g, st, w.swap_order, w.swap_kept);
			u_kept = st.back().kept;
			st.pop_back();
		}
	}
	/* the farthest passed over goes; the farthest of all when none is */
	size_t            drop = st.size(); /* u */
	bool              drop_passed = !u_kept;
	hannoy::Candidate far = cu;
	for (size_t i = 0; i < st.size(); i++)
	{
		bool              passed = !st[i].kept;
		hannoy::Candidate c{st[i].dist, st[i].id};
		if ((passed && !drop_passed) || (passed == drop_passed && far < c))
		{
			drop = i;
			drop_passed = passed;
			far = c;
		}
	}
	if (drop == st.size())
		return;
	st[drop] = BuildGraph::SwapEntry{u, du, u_kept};
	list[drop] = u;
}

/*
 * Links one node into the in-memory graph (Alg. 1 of the HNSW paper).  A
 * neighbour's list that overflows takes the node by one swap when the
 * neighbour is wide at layer 0, or always above layer 0, under the true
 * metrics (see one_swap); otherwise it is pruned so that what it drops
 * stays one hop away where it can (see prune_keeping_reach).  A swap may
 * drop the only link to a node, and lists other threads hold cannot be
 * looked at, so a node may be stranded: connect_slice links in whatever is.
 */
void
link_node(HannoyBuilder *b, BuildWorker &w, uint32_t id)
{
	BuildGraph       &g = b->graph;
	const HannoyMeta &meta = b->store->meta();
	const void       *q = nullptr; /* the searches measure from node 'id' itself */
	int               level = g.levels[id];
	SelfSearchGraph   exact{g, id};
	hannoy::Candidate ep{exact.distance(q, b->entry_point), b->entry_point};
	if (level < b->max_level)
		ep = hannoy::greedy_descend(exact, q, ep, b->max_level, level, w.scratch);
	w.entries.assign(1, ep);
	for (int layer = std::min(level, b->max_level); layer >= 0; layer--)
	{
		w.visited.reset(g.size());
		hannoy::search_layer(exact, q, w.entries, meta.options.ef_construction, layer, w.visited,
		                     w.found, w.scratch);
		/* a concurrent insertion may already have linked this node: never link to itself */
		w.found.erase(std::remove_if(w.found.begin(), w.found.end(),
		                             [id](const hannoy::Candidate &c) { return c.id == id; }),
		              w.found.end());
		/* the distances the search found are the exact ones, on codes or vectors */
		std::vector<hannoy::Candidate> &chosen_from = w.found;
		size_t                          max_links = g.max_links(layer);
		bool                            wide = false;
		if (layer == 0)
		{
			/*
			 * Layer 0 links the heuristic's choice topped up to half the fill
			 * now and keeps the next nearest candidates for the end: the
			 * build's searches walk lists shorter than full (fewer distances),
			 * the finished graph gets the full lists queries gain recall per
			 * hop from.  Not the heuristic's choice alone: where it keeps few
			 * links (rows crowding along a common direction: 8 of 32 on
			 * bench/make_synthetic.py's angular set), the build's own searches walked
			 * a graph too sparse to find the true neighbours, and no top-up
			 * at the end could mend lists chosen from what they found.
			 * A wide node (the heuristic keeps wide_min or more: uniform
			 * 64-d rows keep 19 of 32 on average, the angular set's rows 4)
			 * takes the full list now, as pgvector does (DESIGN.md "Build").
			 */
			hannoy::select_neighbors(g, chosen_from, max_links, w.selected);
			wide = g.wide_min > 0 && w.selected.size() >= g.wide_min;
			size_t fill = wide ? g.fill0 : g.fill0 / 2;
			for (size_t i = 0; i < chosen_from.size() && w.selected.size() < fill; i++)
				if (!hannoy::holds(w.selected, chosen_from[i].id))
					w.selected.push_back(chosen_from[i].id);
			uint32_t *spare = &g.spare[size_t(id) * g.fill0];
			uint8_t   kept = 0;
			for (const hannoy::Candidate &c : chosen_from)
			{
				if (w.selected.size() + kept >= g.fill0)
					break;
				if (!hannoy::holds(w.selected, c.id))
					spare[kept++] = c.id;
			}
			g.spares[id] = kept;
		}
		else
			hannoy::select_neighbors(g, chosen_from, max_links, w.selected,
			                         b->store->fill_links(layer));

		/*
		 * Other threads may already have added their nodes to this list
		 * (they found this node through its upper layers): those entries
		 * stay, they may be their only way in.
		 */
		g.locks[id].lock();
		if (layer == 0)
			g.wide[id] = wide;
		std::vector<uint32_t> &mine = g.links[id][layer];
		for (uint32_t n : w.selected)
			if (mine.size() < max_links && !hannoy::holds(mine, n))
				mine.push_back(n);
		g.locks[id].unlock();

		hannoy::PruneRules rules;
		rules.added = id;
		rules.strict = false;
		for (size_t k = 0; k < w.selected.size(); k++)
		{
			uint32_t n = w.selected[k];
			g.locks[n].lock();
			std::vector<uint32_t> &list = g.links[n][layer];
			if (!hannoy::holds(list, id))
			{
				if (list.size() < max_links)
					list.push_back(id);
				else if (layer == 0 ? g.wide[n] != 0 : g.swap_upper)
				{
					std::vector<BuildGraph::SwapEntry> &st =
					    layer == 0 ? g.swap_state[n] : w.swap_state;
					if (layer > 0)
						st.clear();
					one_swap(g, n, id, list, st, w);
				}
				else
				{
					/* only the overflowing neighbour's own list is pruned */
					hannoy::candidates_of(g, n, list, w.pruning);
					w.pruning.push_back(hannoy::Candidate{g.distance_between(n, id), id});
					std::sort(w.pruning.begin(), w.pruning.end());
					/* topped up to half only (prune_floor): a full list would be pruned at every
					 * link */
					rules.keep_added = k == 0;
					hannoy::prune_keeping_reach(g, layer, w.pruning, list, rules, w.cover,
					                            w.pruned);
					list = w.pruned;
				}
			}
			g.locks[n].unlock();
		}
		w.entries.swap(w.found);
	}
}

/*
 * Fits the quantizer to every vector of the build and encodes them all
 * (DESIGN.md "Codes"): the writing phase stores them, and when they are
 * lossless the build's searches rank by them.
 */
void
make_codes(HannoyBuilder *b, uint32_t kind)
{
	BuildGraph          &g = b->graph;
	size_t               n = g.size();
	const HannoyMeta    &meta = b->store->meta();
	std::string          buf; /* a vector stored in pieces, gathered */
	hannoy::QuantizerFit fit(meta.dims);
	for (size_t id = 0; id < n; id++)
		fit.add(g.vector(static_cast<uint32_t>(id), buf));
	auto              metric = static_cast<HannoyMetric>(meta.metric);
	hannoy::Quantizer made =
	    kind == hannoy::QUANTIZER_BINARY ? fit.binary(metric, meta.seed) : fit.quantizer(metric);
	made.set_heap_rerank(b->heap_rerank);
	auto   q = std::make_shared<const hannoy::Quantizer>(std::move(made));
	size_t bytes = q->code_bytes();
	g.codes.resize(n * bytes);
	for (size_t id = 0; id < n; id++)
		q->encode(g.vector(static_cast<uint32_t>(id), buf), &g.codes[id * bytes]);
	g.quantizer = q;
	/*
	 * Lossy codes would steer the build's searches to other candidates: on
	 * a 256-d clustered set that cost recall at some ef_search and saved no
	 * time (DESIGN.md "Build"), so the build measures on codes only when
	 * 8-bit codes of its vectors are lossless (pixels): the stored codes,
	 * or, under a 1-bit quantizer, 8-bit codes made for the build alone.
	 */
	g.search_codes = fit.lossless();
	if (!g.search_codes)
		return;
	g.distance_code_bytes = meta.dims;
	if (kind == hannoy::QUANTIZER_SCALAR8)
	{
		g.lossless = std::make_unique<const hannoy::LosslessCodes>(*q, metric);
		g.distance_codes = g.codes.data();
	}
	else
	{
		hannoy::Quantizer eight = fit.quantizer(metric);
		g.lossless_codes.resize(n * meta.dims);
		for (size_t id = 0; id < n; id++)
			eight.encode(g.vector(static_cast<uint32_t>(id), buf),
			             &g.lossless_codes[id * meta.dims]);
		g.lossless = std::make_unique<const hannoy::LosslessCodes>(eight, metric);
		g.distance_codes = g.lossless_codes.data();
	}
	if (g.lossless->needs_offset_dots())
	{
		g.offset_dots.resize(n);
		for (size_t id = 0; id < n; id++)
			g.offset_dots[id] = g.lossless->offset_dot(&g.distance_codes[id * meta.dims]);
	}
}

/* Prepares the linking phase: maps every stored vector and orders nodes by level. */
void
start_linking(HannoyBuilder *b)
{
	hannoy::Store &s = *b->store;
	size_t         n = b->next_id;
	BuildGraph    &g = b->graph;
	/*
	 * The read transaction below maps every vector until the graph is
	 * linked (write_slice releases it), so the map cannot move until then:
	 * make room for every list first, with a Roaring list taking at most 10
	 * bytes per link.
	 */
	/* 'auto' gives codes from CODES_MIN_ROWS vectors on; a quantizer chosen by name from one */
	uint32_t kind =
	    s.has_codes_db() && n >= (b->quantizer == HANNOY_QUANTIZER_AUTO ? CODES_MIN_ROWS : 1)
	        ? hannoy::quantizer_kind_for(b->quantizer, static_cast<HannoyMetric>(s.meta().metric),
	                                     s.meta().dims)
	        : 0;
	bool codes = kind != 0;
	/* at least either kind's code: 1-bit codes take at most max(dims, 64) bytes too */
	size_t code_bytes = codes ? std::max<size_t>(s.meta().dims, 64) : 0;
	s.reserve(static_cast<uint64_t>(n) *
	          ((s.meta().m0 + s.meta().options.m) * 10 + LMDB_RECORD_BYTES +
	           (codes ? code_bytes + hannoy::CHECKSUM_BYTES + LMDB_RECORD_BYTES : 0)) *
	          2);
	b->read_txn = std::make_unique<hannoy::Txn>(s.env(), true);
	g.layout = &s.layout();
	g.per_node = s.layout().pieces();
	g.m = s.meta().options.m;
	g.m0 = s.meta().m0;
	g.pieces.resize(n * g.per_node, nullptr);
	g.fill0 = s.fill_links(0);
	g.spare.assign(n * g.fill0, 0);
	g.spares.assign(n, 0);
	/* wide nodes and one swaps under the true metrics, whose lists are filled to the bound */
	g.swap_upper = g.fill0 == g.m0;
	g.wide_min = g.swap_upper ? (3 * g.m0 + 7) / 8 : 0;
	g.wide.assign(n, 0);
	if (g.wide_min > 0)
		g.swap_state.resize(n);
	g.levels.resize(n, 0);
	g.links.resize(n);
	g.locks.reset(new NodeLock[n]);
	if (b->heap_rerank)
	{
		/* the vectors in memory, laid out as stored pieces would be */
		if (b->memory_vectors.size() != n * s.vector_bytes())
			throw hannoy::Error(HANNOY_ERR_INTERNAL, "the build's vectors are incomplete");
		for (size_t id = 0; id < n; id++)
			for (uint32_t i = 0; i < g.per_node; i++)
				g.pieces[id * g.per_node + i] =
				    b->memory_vectors.data() + id * s.vector_bytes() + s.layout().piece_offset(i);
	}
	else
		s.for_each_vector(b->read_txn->get(),
		                  [&](uint32_t id, const void *const *pieces)
		                  {
			                  if (id >= n)
				                  throw hannoy::Error(HANNOY_ERR_CORRUPT,
				                                      "unexpected vector record during build");
			                  std::copy(pieces, pieces + g.per_node,
			                            &g.pieces[size_t(id) * g.per_node]);
		                  });
	for (size_t id = 0; id < n; id++)
		if (g.pieces[id * g.per_node] == nullptr)
			throw hannoy::Error(HANNOY_ERR_CORRUPT, "vector missing during build");
	if (s.meta().metric == HANNOY_METRIC_COSINE)
	{
		g.sq_norms.resize(n);
		for (uint32_t id = 0; id < n; id++)
			g.sq_norms[id] = g.layout->dot(g.pieces_of(id), g.pieces_of(id));
	}
	if (codes)
		make_codes(b, kind);
	for (size_t id = 0; id < n; id++)
	{
		int level = hannoy::draw_level(s.meta().seed, id, s.meta().options.m);
		g.levels[id] = static_cast<uint8_t>(level);
		g.links[id].resize(level + 1);
		g.links[id][0].reserve(s.max_links(0));
	}
	b->order.resize(n);
	for (size_t i = 0; i < n; i++)
		b->order[i] = static_cast<uint32_t>(i);
	std::stable_sort(b->order.begin(), b->order.end(),
	                 [&](uint32_t x, uint32_t y) { return g.levels[x] > g.levels[y]; });
	if (n > 0)
	{
		b->entry_point = b->order[0];
		b->max_level = g.levels[b->entry_point];
		b->next_order = 1;
		b->linked = 1;
	}
	size_t nthreads = std::max<uint32_t>(1, b->threads);
	nthreads = std::min(nthreads, std::max<size_t>(1, n / 256));
	b->workers.resize(nthreads);
	for (auto &w : b->workers)
		w.visited.reset(n);
	b->phase = HANNOY_BUILD_GRAPH;
}

/* Links nodes with all workers until the deadline or the end of the order. */
void
link_slice(HannoyBuilder *b, Clock::time_point deadline)
{
	size_t n = b->order.size();
	auto   work = [b, deadline, n](BuildWorker *w)
	{
		for (;;)
		{
			if (Clock::now() >= deadline)
				return;
			size_t i = b->next_order.fetch_add(1);
			if (i >= n)
				return;
			link_node(b, *w, b->order[i]);
			b->linked.fetch_add(1, std::memory_order_relaxed);
		}
	};
	if (b->workers.size() == 1)
	{
		work(&b->workers[0]);
	}
	else
	{
		/* Threads never take PostgreSQL's signals: block all before spawning. */
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		std::vector<std::thread> pool;
		std::exception_ptr       failure;
		std::mutex               failure_lock;
		try
		{
			for (size_t t = 1; t < b->workers.size(); t++)
				pool.emplace_back(
				    [&, t]
				    {
					    try
					    {
						    work(&b->workers[t]);
					    }
					    catch (...)
					    {
						    std::lock_guard<std::mutex> guard(failure_lock);
						    if (!failure)
							    failure = std::current_exception();
						    b->next_order = n;
					    }
				    });
		}
		catch (...)
		{
			b->next_order = n;
			for (auto &th : pool)
				th.join();
			pthread_sigmask(SIG_SETMASK, &old, nullptr);
			throw;
		}
		pthread_sigmask(SIG_SETMASK, &old, nullptr);
		try
		{
			work(&b->workers[0]);
		}
		catch (...)
		{
			b->next_order = n;
			for (auto &th : pool)
				th.join();
			throw;
		}
		for (auto &th : pool)
			th.join();
		if (failure)
			std::rethrow_exception(failure);
	}
	/* fetch_add past the end by every worker: clamp for progress */
	if (b->next_order.load() > n)
		b->next_order = n;
}

/* Tops layer-0 lists up with their spare candidates once every node is linked. */
void
top_up_lists(BuildGraph &g)
{
	for (uint32_t id = 0; id < g.size(); id++)
	{
		std::vector<uint32_t> &list = g.links[id][0];
		const uint32_t        *spare = &g.spare[size_t(id) * g.fill0];
		for (uint8_t i = 0; i < g.spares[id] && list.size() < g.fill0; i++)
			if (spare[i] != id && !hannoy::holds(list, spare[i]))
				list.push_back(spare[i]);
	}
	std::vector<uint32_t>().swap(g.spare);
	std::vector<uint8_t>().swap(g.spares);
	std::vector<std::vector<BuildGraph::SwapEntry>>().swap(g.swap_state);
}

/*
 * Links in, until the deadline, the nodes that the layer-0 walk from the
 * entry point does not reach (parallel pruning could not see every list
 * it dropped a node from), each from the nearest nodes it does reach; see
 * relink_orphan.  Runs on one thread, after the workers.
 */
bool
connect_slice(HannoyBuilder *b, Clock::time_point deadline)
{
	BuildGraph &g = b->graph;
	size_t      n = g.size();
	if (!b->connect_started)
	{
		b->connect_started = true;
		top_up_lists(g);
		b->reached.assign(n, 0);
		if (n > 0)
		{
			b->reached[b->entry_point] = 1;
			b->stack.assign(1, b->entry_point);
		}
		b->relink.visited.reset(n);
	}
	if (!b->walked)
	{
		while (!hannoy::mark_reachable(g, b->stack, b->reached, b->relink.scratch, 4096))
			if (Clock::now() >= deadline)
				return false;
		b->walked = true;
		for (uint32_t id = 0; id < n; id++)
			if (!b->reached[id])
				b->orphans.push_back(id);
	}
	while (b->orphan_pos < b->orphans.size())
	{
		if (Clock::now() >= deadline)
			return false;
		uint32_t u = b->orphans[b->orphan_pos++];
		if (b->reached[u])
			continue;
		uint32_t dropped =
		    hannoy::relink_orphan(g, u, b->entry_point, b->max_level,
		                          b->store->meta().options.ef_construction, b->reached, b->relink);
		if (dropped != hannoy::NO_NODE && !b->reached[dropped])
			b->orphans.push_back(dropped);
	}
	return true;
}

/* Writes links of the next nodes in one write transaction, until the deadline. */
void
write_slice(HannoyBuilder *b, Clock::time_point deadline)
{
	hannoy::Store &s = *b->store;
	BuildGraph    &g = b->graph;
	uint32_t       n = b->next_id;
	/*
	 * Links and codes are written from memory: the read transaction that
	 * mapped the vectors goes, so the map may move should another process
	 * (a standby's redo, during a rebuild from the table) have grown the
	 * file meanwhile.
	 */
	if (b->write_pos == 0)
		b->read_txn.reset();
	if (b->write_pos < n)
	{
		hannoy::Txn txn(s.env(), false);
		/* the quantizer before the first code (put_code reads its size) */
		if (b->write_pos == 0 && g.quantizer)
			s.write_quantizer(txn.get(), *g.quantizer);
		while (b->write_pos < n)
		{
			uint32_t id = b->write_pos++;
			if (g.quantizer)
				s.put_code(txn.get(), id, &g.codes[size_t(id) * g.quantizer->code_bytes()], true);
			for (size_t layer = 0; layer < g.links[id].size(); layer++)
			{
				s.put_links(txn.get(), id, static_cast<int>(layer), g.links[id][layer], MDB_APPEND);
				std::vector<uint32_t>().swap(g.links[id][layer]);
			}
			if (b->write_pos % WRITE_CHECK_EVERY == 0 && Clock::now() >= deadline)
				break;
		}
		txn.commit();
	}
	if (b->write_pos < n)
		return;

	b->read_txn.reset();
	hannoy::Txn        txn(s.env(), false);
	hannoy::GraphState state = s.read_state(txn.get());
	state.items = n;
	state.unindexed = b->unindexed;
	state.next_id = n;
	state.max_level = n > 0 ? b->max_level : -1;
	state.entry_point = n > 0 ? b->entry_point : 0;
	s.write_state(txn.get(), state);
	txn.commit();
	s.sync(true);
	std::string().swap(b->memory_vectors); /* nothing points into them any more */
	b->phase = HANNOY_BUILD_DONE;
}

} // namespace

extern "C" HannoyStatus
hannoy_build_begin(HannoyEnv *env, uint32_t threads, HannoyBuilder **builder, HannoyError *err)
{
	*builder = nullptr;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           auto b = std::make_unique<HannoyBuilder>();
		                           b->store = reinterpret_cast<hannoy::Store *>(env);
		                           b->threads = threads == 0 ? 1 : threads;
		                           *builder = b.release();
	                           });
}

extern "C" HannoyStatus
hannoy_build_set_quantizer(HannoyBuilder *b, uint32_t choice, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           /* throws when the choice does not fit the metric */
		                           hannoy::quantizer_kind_for(
		                               choice, static_cast<HannoyMetric>(b->store->meta().metric),
		                               b->store->meta().dims);
		                           b->quantizer = choice;
	                           });
}

extern "C" HannoyStatus
hannoy_build_set_heap_rerank(HannoyBuilder *b, bool heap, HannoyError *err)
{
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    if (b->phase != HANNOY_BUILD_LOADING || b->next_id > 0 || b->unindexed > 0)
			    throw hannoy::Error(HANNOY_ERR_INVALID,
			                        "re-ranking from the heap is chosen before the first row");
		    if (heap && b->quantizer != HANNOY_QUANTIZER_SCALAR8 &&
		        b->quantizer != HANNOY_QUANTIZER_BINARY)
			    throw hannoy::Error(HANNOY_ERR_INVALID,
			                        "re-ranking from the heap needs quantizer scalar8 or binary");
		    if (heap && b->store->meta().format_version < 7)
			    throw hannoy::Error(HANNOY_ERR_INVALID,
			                        "a sidecar of format " +
			                            std::to_string(b->store->meta().format_version) +
			                            " keeps its vectors");
		    b->heap_rerank = heap;
	    });
}

extern "C" HannoyStatus
hannoy_build_add(HannoyBuilder *b, HannoyTid tid, const void *vector, uint8_t unindexed_kind,
                 HannoyError *err)
{
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    if (b->phase != HANNOY_BUILD_LOADING)
			    throw hannoy::Error(HANNOY_ERR_INVALID, "rows can only be added while loading");
		    if (vector == nullptr)
		    {
			    b->batch_unindexed.emplace_back(tid, unindexed_kind);
			    b->unindexed++;
		    }
		    else
		    {
			    size_t vbytes = b->store->vector_bytes();
			    if (b->store->meta().dims == 0)
				    throw hannoy::Error(HANNOY_ERR_INVALID, "dimensions must be set before adding");
			    if (b->next_id == HANNOY_MAX_ITEMS)
				    throw hannoy::Error(HANNOY_ERR_LIMIT,
				                        "an index holds at most 4294967295 vectors");
			    b->batch_vectors.append(static_cast<const char *>(vector), vbytes);
			    b->batch_tids.push_back(tid);
			    b->next_id++;
		    }
		    if (b->batch_vectors.size() >= LOAD_BATCH_BYTES || b->batch_unindexed.size() >= 65536)
			    flush_batch(b);
	    });
}

extern "C" HannoyStatus
hannoy_build_step(HannoyBuilder *b, uint32_t budget_ms, HannoyBuildProgress *progress, bool *done,
                  HannoyError *err)
{
	*done = false;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    auto deadline = Clock::now() + std::chrono::milliseconds(budget_ms);
		    if (b->phase == HANNOY_BUILD_LOADING)
		    {
			    flush_batch(b);
			    start_linking(b);
			    if (b->next_id == 0)
				    b->phase = HANNOY_BUILD_WRITING;
		    }
		    else if (b->phase == HANNOY_BUILD_GRAPH)
		    {
			    if (b->linked.load() < b->next_id)
				    link_slice(b, deadline);
			    if (b->linked.load() >= b->next_id && connect_slice(b, deadline))
				    b->phase = HANNOY_BUILD_WRITING;
		    }
		    else if (b->phase == HANNOY_BUILD_WRITING)
			    write_slice(b, deadline);
		    progress->phase = b->phase;
		    if (b->phase == HANNOY_BUILD_GRAPH)
		    {
			    progress->done = b->linked.load();
			    progress->total = b->next_id;
		    }
		    else if (b->phase == HANNOY_BUILD_WRITING)
		    {
			    progress->done = b->write_pos;
			    progress->total = b->next_id;
		    }
		    else
		    {
			    progress->done = progress->total = b->next_id;
		    }
		    *done = b->phase == HANNOY_BUILD_DONE;
	    });
}

extern "C" void
hannoy_build_free(HannoyBuilder *b)
{
	delete b;
}
