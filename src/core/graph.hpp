/*
 * graph.hpp
 *	  The HNSW algorithms of Malkov & Yashunin (2018) shared by the build, the
 *	  insert path and scans: greedy descent (Alg. 2 with ef = 1), beam search
 *	  in one layer (Alg. 2) and heuristic neighbour selection (Alg. 4).
 *
 *	  They are templates over a graph accessor G with:
 *	    double distance(const void *query, uint32_t id)   (+inf when missing)
 *	    double distance_between(uint32_t a, uint32_t b)
 *	    void neighbors(uint32_t id, int layer, std::vector<uint32_t> &out)
 *
 *	  The list edits at the end (pruning that keeps every node reachable,
 *	  linking an unreachable node back in) need an editable accessor E, a G
 *	  with also:
 *	    bool peek(uint32_t id, int layer, std::vector<uint32_t> &out)
 *	        the list as it is now; false when it cannot be read now (the
 *	        build's lists locked by another thread): it then covers nothing
 *	    bool may_cover(uint32_t id)
 *	        whether links from 'id' can stand in for a dropped one (false
 *	        for tombstones: VACUUM deletes them)
 *	    bool adopt(uint32_t into, int layer, uint32_t x, bool make_room)
 *	        adds 'x' to the list of 'into' if it has room (or, with
 *	        'make_room', if an entry nothing relies on can make room)
 *	    void relies(uint32_t y, int layer, uint32_t x)
 *	        says that an edit now relies on the list of 'y' holding 'x'
 *	    void set_links(uint32_t id, int layer, const std::vector<uint32_t> &list)
 *	    size_t max_links(int layer)
 *	    const void *vector(uint32_t id, std::string &buf)
 *	        the whole vector of 'id', copied into 'buf' when it is stored
 *	        in pieces
 */
#ifndef HANNOY_GRAPH_HPP
#define HANNOY_GRAPH_HPP

#include "core_guard.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <queue>
#include <string>
#include <vector>

namespace hannoy
{

/* A node and its distance to some base point. */
struct Candidate
{
	double   dist;
	uint32_t id;
};

/*
 * The value a distance sorts by: NaN (overflowing inputs, cosine of a zero
 * vector) sorts after every number, as in PostgreSQL's float8 ordering, so
 * the heaps keep a strict weak order.
 */
inline double
sort_key(double d)
{
	return d != d ? HUGE_VAL : d;
}

/* Orders candidates nearest first; ties by id so results are repeatable. */
inline bool
operator<(const Candidate &a, const Candidate &b)
{
	double x = sort_key(a.dist), y = sort_key(b.dist);
	return x < y || (x == y && a.id < b.id);
}

/* Comparator for a min-heap of candidates (std heaps are max-heaps). */
struct FartherFirst
{
	bool
	operator()(const Candidate &a, const Candidate &b) const
	{
		return b < a;
	}
};

/* Comparator for a max-heap of candidates. */
struct NearerFirst
{
	bool
	operator()(const Candidate &a, const Candidate &b) const
	{
		return a < b;
	}
};

using MinHeap = std::priority_queue<Candidate, std::vector<Candidate>, FartherFirst>;
using MaxHeap = std::priority_queue<Candidate, std::vector<Candidate>, NearerFirst>;

/*
 * A visited set over item ids with O(1) reset: a stamp per id, bumped per
 * search, so a build thread reuses one array for all its insertions.
 */
class VisitedSet
{
  public:
	explicit VisitedSet(size_t n = 0) : stamps_(n, 0) {}
	/* Starts a new search over ids below 'n'. */
	void
	reset(size_t n)
	{
		if (stamps_.size() < n)
			stamps_.resize(n, 0);
		if (++current_ == 0)
		{
			std::fill(stamps_.begin(), stamps_.end(), 0);
			current_ = 1;
		}
	}
	/* Marks 'id'; returns false when it was already marked in this search. */
	bool
	insert(uint32_t id)
	{
		if (id >= stamps_.size())
			stamps_.resize(static_cast<size_t>(id) + 1, 0);
		if (stamps_[id] == current_)
			return false;
		stamps_[id] = current_;
		return true;
	}
	bool
	contains(uint32_t id) const
	{
		return id < stamps_.size() && stamps_[id] == current_;
	}

  private:
	std::vector<uint16_t> stamps_;
	uint16_t              current_ = 0;
};

/* Walks greedily from 'ep' down to 'to_layer' (exclusive lower bound: stops at it). */
template <class G>
Candidate
greedy_descend(G &g, const void *query, Candidate ep, int from_layer, int to_layer,
               std::vector<uint32_t> &scratch)
{
	for (int layer = from_layer; layer > to_layer; layer--)
	{
		bool changed = true;
		while (changed)
		{
			changed = false;
			g.neighbors(ep.id, layer, scratch);
			for (uint32_t n : scratch)
			{
				Candidate c{g.distance(query, n), n};
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

/*
 * Beam search in one layer (Alg. 2): returns up to 'ef' nearest nodes found
 * from 'entries', nearest first, in 'result'.
 */
template <class G>
void
search_layer(G &g, const void *query, const std::vector<Candidate> &entries, size_t ef, int layer,
             VisitedSet &visited, std::vector<Candidate> &result, std::vector<uint32_t> &scratch)
{
	MinHeap frontier;
	MaxHeap best;
	for (const Candidate &e : entries)
	{
		if (!visited.insert(e.id))
			continue;
		frontier.push(e);
		best.push(e);
		if (best.size() > ef)
			best.pop();
	}
	while (!frontier.empty())
	{
		Candidate c = frontier.top();
		if (best.size() >= ef && best.top() < c)
			break;
		frontier.pop();
		g.neighbors(c.id, layer, scratch);
		for (uint32_t n : scratch)
		{
			if (!visited.insert(n))
				continue;
			Candidate cand{g.distance(query, n), n};
			if (best.size() < ef || cand < best.top())
			{
				frontier.push(cand);
				best.push(cand);
				if (best.size() > ef)
					best.pop();
			}
		}
	}
	result.resize(best.size());
	for (size_t i = best.size(); i-- > 0;)
	{
		result[i] = best.top();
		best.pop();
	}
}

/*
 * Heuristic neighbour selection (Alg. 4 without extension): walks
 * 'candidates' (sorted nearest first to the base) and keeps one only if it
 * is nearer to the base than to every node kept so far, which spreads links
 * across directions.  When that keeps fewer than 'min_keep', the nearest
 * discarded candidates fill up to it (Alg. 4's keepPrunedConnections,
 * bounded): pruning an overflowing list in a tight cluster could otherwise
 * cut it to one or two links and strand the nodes it dropped.
 */
template <class G>
void
select_neighbors(G &g, const std::vector<Candidate> &candidates, size_t m,
                 std::vector<uint32_t> &out, size_t min_keep = 0)
{
	out.clear();
	if (candidates.size() <= m)
	{
		for (const Candidate &c : candidates)
			out.push_back(c.id);
		return;
	}
	for (const Candidate &c : candidates)
	{
		if (out.size() >= m)
			break;
		bool good = true;
		for (uint32_t kept : out)
		{
			if (sort_key(g.distance_between(c.id, kept)) < sort_key(c.dist))
			{
				good = false;
				break;
			}
		}
		if (good)
			out.push_back(c.id);
	}
	min_keep = std::min(min_keep, m);
	for (size_t i = 0; i < candidates.size() && out.size() < min_keep; i++)
	{
		if (std::find(out.begin(), out.end(), candidates[i].id) == out.end())
			out.push_back(candidates[i].id);
	}
}

/* No node: an id no graph uses. */
constexpr uint32_t NO_NODE = std::numeric_limits<uint32_t>::max();

/*
 * Fewest entries an overflowing list keeps after pruning: the nearest
 * candidates the heuristic left out fill it up to this.
 */
inline size_t
prune_floor(size_t max_links)
{
	return max_links / 2;
}

/* True when 'list' holds 'id'. */
inline bool
holds(const std::vector<uint32_t> &list, uint32_t id)
{
	return std::find(list.begin(), list.end(), id) != list.end();
}

/*
 * The lists of the members of a list being pruned, each read at most once
 * per pruning: they say which dropped entries are still one hop away, and
 * which members have room to take one in.
 */
class CoverCache
{
  public:
	/* Forgets the lists of the previous pruning. */
	void
	reset()
	{
		if (++stamp_ == 0)
		{
			for (Entry &e : entries_)
				e.stamp = 0;
			stamp_ = 1;
		}
	}
	/*
	 * True when a member of 'kept' other than 'x' lists 'x' (and may cover).
	 * Between resets 'kept' is one list, only ever appended to.
	 */
	template <class E>
	bool
	covered(E &g, int layer, const std::vector<uint32_t> &kept, uint32_t x)
	{
		for (size_t i = 0; i < kept.size(); i++)
		{
			if (kept[i] == x)
				continue;
			const Entry &e = load(g, layer, kept, i);
			if (e.usable && holds(e.list, x))
			{
				g.relies(kept[i], layer, x);
				return true;
			}
		}
		return false;
	}
	/*
	 * Adds 'x' to the list of a member of 'kept' that has room, the nearest
	 * to 'x' first, so that 'x' stays one hop away; false when none can.
	 */
	template <class E>
	bool
	rehome(E &g, int layer, const std::vector<uint32_t> &kept, uint32_t x)
	{
		size_t max_links = g.max_links(layer);
		order_.clear();
		for (size_t i = 0; i < kept.size(); i++)
		{
			if (kept[i] == x)
				continue;
			const Entry &e = load(g, layer, kept, i);
			if (e.usable && e.list.size() < max_links)
				order_.push_back(Candidate{g.distance_between(x, kept[i]), kept[i]});
		}
		std::sort(order_.begin(), order_.end());
		for (const Candidate &c : order_)
			if (g.adopt(c.id, layer, x, false))
			{
				changed(c.id);
				return true;
			}
		return false;
	}
	/* Forgets the list of 'y', which an adoption just changed. */
	void
	changed(uint32_t y)
	{
		for (Entry &e : entries_)
			if (e.id == y)
				e.stamp = 0;
	}

  private:
	struct Entry
	{
		uint32_t              id = NO_NODE;
		uint32_t              stamp = 0;      /* valid when it equals stamp_ */
		bool                  usable = false; /* read, and may cover */
		std::vector<uint32_t> list;
	};
	/* The list of kept[i], read on first use. */
	template <class E>
	const Entry &
	load(E &g, int layer, const std::vector<uint32_t> &kept, size_t i)
	{
		if (entries_.size() < kept.size())
			entries_.resize(kept.size());
		Entry &e = entries_[i];
		if (e.stamp != stamp_ || e.id != kept[i])
		{
			e.id = kept[i];
			e.stamp = stamp_;
			e.usable = g.may_cover(e.id) && g.peek(e.id, layer, e.list);
		}
		return e;
	}

	std::vector<Entry>     entries_; /* entries_[i]: the list of member i */
	uint32_t               stamp_ = 1;
	std::vector<Candidate> order_;
};

/* How prune_keeping_reach treats a node being linked and what it cannot keep. */
struct PruneRules
{
	uint32_t added = NO_NODE;    /* a node being linked, among the candidates */
	bool     keep_added = false; /* it must stay in the list */
	bool     strict = true;      /* false: drop what cannot be kept (the caller relinks it) */
	size_t   floor = 0;          /* fill the list up to this many (0: prune_floor) */
};

/*
 * Prunes a neighbour list without stranding anyone (the paper's Alg. 4
 * with one more rule).  'cands' are the candidates, nearest first to the
 * list's owner: the entries it holds now ('reach') and the node being
 * linked, if any (see PruneRules).  The heuristic picks the list.  An entry
 * of 'reach' it leaves out must stay reachable one hop further: it is
 * dropped only when an entry kept lists it, or takes it in (one with room;
 * or the node being linked, which may make room), so every path that went
 * through the owner to it still exists.  Otherwise it stays while the list
 * has room; failing that, with strict rules, returns false and the caller
 * leaves the list as it was.  Last, the list is filled up to the rules'
 * floor (prune_floor() unless set) with the nearest candidates left out.
 */
template <class E>
bool
prune_keeping_reach(E &g, int layer, const std::vector<Candidate> &cands,
                    const std::vector<uint32_t> &reach, const PruneRules &rules, CoverCache &cover,
                    std::vector<uint32_t> &out)
{
	size_t   max_links = g.max_links(layer);
	uint32_t added = rules.added;
	select_neighbors(g, cands, max_links, out);
	if (rules.keep_added && added != NO_NODE && !holds(out, added))
	{
		if (out.size() < max_links)
			out.push_back(added);
		else
			out.back() = added;
	}
	cover.reset();
	for (const Candidate &c : cands)
	{
		uint32_t x = c.id;
		if (holds(out, x) || !holds(reach, x) || cover.covered(g, layer, out, x) ||
		    cover.rehome(g, layer, out, x))
			continue;
		if (out.size() < max_links)
			out.push_back(x);
		else if (added != NO_NODE && holds(out, added) && g.adopt(added, layer, x, true))
			cover.changed(added);
		else if (rules.strict)
			return false;
	}
	size_t floor = std::min(rules.floor > 0 ? rules.floor : prune_floor(max_links), max_links);
	for (size_t i = 0; i < cands.size() && out.size() < floor; i++)
		if (!holds(out, cands[i].id))
			out.push_back(cands[i].id);
	return true;
}

/* The entries of 'list' as candidates of 'owner', nearest first. */
template <class G>
void
candidates_of(G &g, uint32_t owner, const std::vector<uint32_t> &list,
              std::vector<Candidate> &cands)
{
	cands.clear();
	for (uint32_t x : list)
		cands.push_back(Candidate{g.distance_between(owner, x), x});
	std::sort(cands.begin(), cands.end());
}

/*
 * Adds 'u' to the list of 'c' at 'layer' without stranding anyone: appended
 * when the list has room, else the list is pruned with 'u' kept (see
 * prune_keeping_reach), else an entry that another entry lists gives 'u'
 * its place.  Returns false, changing nothing, when none of that works.
 */
template <class E>
bool
link_keeping_reach(E &g, uint32_t c, int layer, uint32_t u, CoverCache &cover,
                   std::vector<Candidate> &cands, std::vector<uint32_t> &list,
                   std::vector<uint32_t> &out)
{
	if (!g.peek(c, layer, list))
		return false;
	if (holds(list, u))
		return true;
	if (list.size() < g.max_links(layer))
	{
		list.push_back(u);
		g.set_links(c, layer, list);
		return true;
	}
	candidates_of(g, c, list, cands);
	cands.push_back(Candidate{g.distance_between(c, u), u});
	std::sort(cands.begin(), cands.end());
	PruneRules rules;
	rules.added = u;
	rules.keep_added = true;
	if (prune_keeping_reach(g, layer, cands, list, rules, cover, out))
	{
		g.set_links(c, layer, out);
		return true;
	}
	/* farthest first: an entry still one hop away through another one */
	cover.reset();
	for (size_t i = cands.size(); i-- > 0;)
	{
		uint32_t x = cands[i].id;
		if (x == u || !cover.covered(g, layer, list, x))
			continue;
		*std::find(list.begin(), list.end(), x) = u;
		g.set_links(c, layer, list);
		return true;
	}
	return false;
}

/*
 * The last resort for linking 'u' from 'c': the farthest entry x of the
 * list of 'c' that may move (no tombstone: nothing links to those) gives
 * its place to 'u', and 'u' lists x instead, so x stays reachable through
 * 'u'.  When the list of 'u' is full, its farthest entry other than 'keep'
 * makes room and is returned in 'dropped' (else NO_NODE) for the caller to
 * check.  Returns false, changing nothing, when no entry may move; with
 * 'force' the farthest entry then gives its place all the same.
 */
template <class E>
bool
splice_link(E &g, uint32_t c, int layer, uint32_t u, uint32_t keep, bool force,
            std::vector<Candidate> &cands, std::vector<uint32_t> &list, uint32_t &dropped)
{
	dropped = NO_NODE;
	g.peek(c, layer, list);
	if (holds(list, u))
		return true;
	uint32_t x = NO_NODE;
	if (list.size() >= g.max_links(layer))
	{
		candidates_of(g, c, list, cands);
		for (size_t i = cands.size(); i-- > 0 && x == NO_NODE;)
			if (cands[i].id != u && g.may_cover(cands[i].id))
				x = cands[i].id;
		if (x == NO_NODE && !force)
			return false;
		*std::find(list.begin(), list.end(), x == NO_NODE ? cands.back().id : x) = u;
	}
	else
		list.push_back(u);
	g.set_links(c, layer, list);
	if (x == NO_NODE)
		return true;
	g.peek(u, layer, list);
	if (holds(list, x))
		return true;
	if (list.size() >= g.max_links(layer))
	{
		candidates_of(g, u, list, cands);
		for (size_t i = cands.size(); i-- > 0 && dropped == NO_NODE;)
			if (cands[i].id != keep)
				dropped = cands[i].id;
		list.erase(std::find(list.begin(), list.end(), dropped));
	}
	list.push_back(x);
	g.set_links(u, layer, list);
	return true;
}

/*
 * Marks every node reachable at layer 0 from the nodes on 'stack' (already
 * marked), using 'reached' as the marks (grown as needed); stops early,
 * returning false, when 'budget' nodes were expanded and some are left.
 */
template <class G>
bool
mark_reachable(G &g, std::vector<uint32_t> &stack, std::vector<char> &reached,
               std::vector<uint32_t> &scratch, size_t budget = SIZE_MAX)
{
	for (size_t expanded = 0; !stack.empty(); expanded++)
	{
		if (expanded == budget)
			return false;
		uint32_t id = stack.back();
		stack.pop_back();
		g.neighbors(id, 0, scratch);
		for (uint32_t n : scratch)
		{
			if (n >= reached.size())
				reached.resize(static_cast<size_t>(n) + 1, 0);
			if (!reached[n])
			{
				reached[n] = 1;
				stack.push_back(n);
			}
		}
	}
	return true;
}

/* Scratch space of relink_orphan, reused across orphans. */
struct RelinkScratch
{
	VisitedSet             visited;
	CoverCache             cover;
	std::vector<Candidate> found, entries, cands;
	std::vector<uint32_t>  scratch, list, out, stack;
	std::string            query; /* the vector being linked, when stored in pieces */
};

/*
 * Links 'u', which the layer-0 walk from the entry point does not reach,
 * from the nearest reachable nodes (those 'reached' marks) that a search
 * from 'entry' (on its top layer 'level') finds, then marks what 'u' leads
 * to.  Returns the node the last resort dropped from the list of 'u'
 * (NO_NODE when none): it may need linking in its turn.
 */
template <class E>
uint32_t
relink_orphan(E &g, uint32_t u, uint32_t entry, int level, size_t ef, std::vector<char> &reached,
              RelinkScratch &w)
{
	const void *q = g.vector(u, w.query);
	Candidate   start{g.distance(q, entry), entry};
	Candidate   ep = greedy_descend(g, q, start, level, 0, w.scratch);
	bool        linked = false;
	/* from where the descent ended, then from the entry point itself */
	for (int attempt = 0; attempt < 2 && !linked; attempt++)
	{
		w.entries.assign(1, attempt == 0 ? ep : start);
		w.visited.reset(reached.size());
		search_layer(g, q, w.entries, ef, 0, w.visited, w.found, w.scratch);
		for (const Candidate &c : w.found)
		{
			if (c.id == u || c.id >= reached.size() || !reached[c.id] || !g.may_cover(c.id))
				continue;
			if (link_keeping_reach(g, c.id, 0, u, w.cover, w.cands, w.list, w.out))
			{
				linked = true;
				break;
			}
		}
	}
	/* the last resort: a reached node makes room for 'u' */
	uint32_t dropped = NO_NODE;
	for (int force = 0; force < 2 && !linked; force++)
		for (const Candidate &c : w.found)
		{
			if (c.id == u || c.id >= reached.size() || !reached[c.id] || !g.may_cover(c.id))
				continue;
			if (splice_link(g, c.id, 0, u, NO_NODE, force == 1, w.cands, w.list, dropped))
			{
				linked = true;
				break;
			}
		}
	if (!linked)
		splice_link(g, entry, 0, u, NO_NODE, true, w.cands, w.list, dropped);
	if (u >= reached.size())
		reached.resize(static_cast<size_t>(u) + 1, 0);
	if (!reached[u])
	{
		reached[u] = 1;
		w.stack.assign(1, u);
		mark_reachable(g, w.stack, reached, w.scratch);
	}
	return dropped;
}

} // namespace hannoy

#endif /* HANNOY_GRAPH_HPP */
