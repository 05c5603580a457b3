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
 */
#ifndef HANNOY_GRAPH_HPP
#define HANNOY_GRAPH_HPP

#include "hannoy/core_guard.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <queue>
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

/*
 * After pruning the list of a new node's nearest neighbour, puts the new
 * node back if pruning dropped it ('nearest' true), in place of the last
 * entry: otherwise a node inserted into a tight cluster can end with no
 * incoming link at all and only be found by a linear pass.
 */
inline void
keep_link(std::vector<uint32_t> &list, uint32_t id, bool nearest)
{
	if (!nearest || std::find(list.begin(), list.end(), id) != list.end())
		return;
	if (list.empty())
		list.push_back(id);
	else
		list.back() = id;
}

} // namespace hannoy

#endif /* HANNOY_GRAPH_HPP */
