/*
 * test_graph.cpp
 *	  The list edits of graph.hpp on small in-memory graphs: pruning never
 *	  drops an entry that is not still one hop away (or kept), linking and
 *	  splicing keep every node reachable that was, and an unreachable node
 *	  is linked back in.  Random graphs over random points, many seeds.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "graph.hpp"

namespace
{

/* A graph in memory with one layer: the editable accessor of graph.hpp. */
struct MemGraph
{
	std::vector<std::vector<float>>    points;
	std::vector<std::vector<uint32_t>> links;
	std::set<uint32_t>                 tombstones;
	size_t                             max = 6;

	double
	distance(const void *query, uint32_t id) const
	{
		const float *q = static_cast<const float *>(query);
		double       d = 0;
		for (size_t i = 0; i < points[id].size(); i++)
			d += (q[i] - points[id][i]) * (q[i] - points[id][i]);
		return std::sqrt(d);
	}
	double
	distance_between(uint32_t a, uint32_t b) const
	{
		return distance(points[a].data(), b);
	}
	void
	neighbors(uint32_t id, int, std::vector<uint32_t> &out) const
	{
		out = links[id];
	}
	bool
	peek(uint32_t id, int, std::vector<uint32_t> &out) const
	{
		out = links[id];
		return true;
	}
	bool
	may_cover(uint32_t id) const
	{
		return tombstones.count(id) == 0;
	}
	bool
	adopt(uint32_t into, int, uint32_t x, bool)
	{
		if (!may_cover(x))
			return false;
		if (hannoy::holds(links[into], x))
			return true;
		if (links[into].size() >= max)
			return false;
		links[into].push_back(x);
		return true;
	}
	void
	relies(uint32_t, int, uint32_t) const
	{
	}
	void
	set_links(uint32_t id, int, const std::vector<uint32_t> &list)
	{
		links[id] = list;
	}
	size_t
	max_links(int) const
	{
		return max;
	}
	const void *
	vector(uint32_t id, std::string &) const
	{
		return points[id].data();
	}
};

/* 'n' random points in 'dims' dimensions, each with up to 'max' random links. */
MemGraph
random_graph(size_t n, uint32_t dims, size_t max, uint32_t seed)
{
	std::mt19937                          rng(seed);
	std::uniform_real_distribution<float> u(0.0f, 1.0f);
	MemGraph                              g;
	g.max = max;
	g.points.resize(n);
	g.links.resize(n);
	for (auto &p : g.points)
		for (uint32_t d = 0; d < dims; d++)
			p.push_back(u(rng));
	for (uint32_t id = 0; id < n; id++)
	{
		size_t want = 1 + rng() % max;
		while (g.links[id].size() < want)
		{
			uint32_t x = rng() % n;
			if (x != id && !hannoy::holds(g.links[id], x))
				g.links[id].push_back(x);
		}
	}
	return g;
}

/* Nodes reachable from 'from' (itself included). */
std::vector<char>
reachable(const MemGraph &g, uint32_t from)
{
	std::vector<char>     seen(g.links.size(), 0);
	std::vector<uint32_t> todo{from};
	seen[from] = 1;
	while (!todo.empty())
	{
		uint32_t id = todo.back();
		todo.pop_back();
		for (uint32_t n : g.links[id])
			if (!seen[n])
			{
				seen[n] = 1;
				todo.push_back(n);
			}
	}
	return seen;
}

/* True when everything 'before' marks is marked in 'after' too. */
bool
keeps_all(const std::vector<char> &before, const std::vector<char> &after)
{
	for (size_t i = 0; i < before.size(); i++)
		if (before[i] && !after[i])
			return false;
	return true;
}

} // namespace

TEST(Prune, DroppedEntriesStayOneHopAway)
{
	size_t pruned = 0, refused = 0;
	for (uint32_t seed = 1; seed <= 400; seed++)
	{
		MemGraph g = random_graph(40, 3, 6, seed);
		/* the list to prune is full: the new entry makes it overflow */
		for (uint32_t x = 0; g.links[seed % 40].size() < g.max; x++)
			if (x != seed % 40 && !hannoy::holds(g.links[seed % 40], x))
				g.links[seed % 40].push_back(x);
		if (seed % 4 == 0)
			for (uint32_t t : g.links[seed % 40])
				g.tombstones.insert(t); /* links from tombstones prove nothing */
		uint32_t base = seed % 40, added = (seed * 7 + 3) % 40;
		if (added == base)
			added = (added + 1) % 40;
		std::vector<uint32_t> old = g.links[base];
		if (hannoy::holds(old, added))
			continue;
		std::vector<hannoy::Candidate> cands;
		hannoy::candidates_of(g, base, old, cands);
		cands.push_back(hannoy::Candidate{g.distance_between(base, added), added});
		std::sort(cands.begin(), cands.end());
		hannoy::PruneRules rules;
		rules.added = added;
		rules.keep_added = seed % 2 == 0;
		hannoy::CoverCache    cover;
		std::vector<uint32_t> out;
		if (!hannoy::prune_keeping_reach(g, 0, cands, old, rules, cover, out))
		{
			refused++;
			continue;
		}
		pruned++;
		EXPECT_LE(out.size(), g.max);
		EXPECT_EQ(std::set<uint32_t>(out.begin(), out.end()).size(), out.size());
		EXPECT_EQ(hannoy::holds(out, base), false);
		if (rules.keep_added)
		{
			EXPECT_TRUE(hannoy::holds(out, added));
		}
		for (uint32_t x : old)
		{
			if (hannoy::holds(out, x))
				continue;
			bool one_hop = false;
			for (uint32_t y : out)
				one_hop = one_hop || (y != x && g.may_cover(y) && hannoy::holds(g.links[y], x));
			EXPECT_TRUE(one_hop) << "seed " << seed << ": " << x << " dropped and stranded";
		}
	}
	EXPECT_GT(pruned, 250u);
	EXPECT_GT(refused, 0u);
	std::printf("pruned %zu lists, %zu left as they were\n", pruned, refused);
}

TEST(Prune, LinkingKeepsEveryPath)
{
	/* whatever a node reached before an edit, it still reaches after it */
	for (uint32_t seed = 1; seed <= 300; seed++)
	{
		MemGraph g = random_graph(30, 2, 4, seed);
		if (seed % 3 == 0)
			g.tombstones = {uint32_t(seed % 30), uint32_t((seed + 11) % 30)};
		std::vector<char>              before = reachable(g, 0);
		uint32_t                       c = (seed * 5) % 30, u = (seed * 13 + 1) % 30;
		hannoy::CoverCache             cover;
		std::vector<hannoy::Candidate> cands;
		std::vector<uint32_t>          list, out;
		if (c == u || !g.may_cover(u))
			continue;
		bool     linked = hannoy::link_keeping_reach(g, c, 0, u, cover, cands, list, out);
		uint32_t dropped = hannoy::NO_NODE;
		if (!linked)
			linked = hannoy::splice_link(g, c, 0, u, hannoy::NO_NODE, false, cands, list, dropped);
		if (!linked)
			continue;
		EXPECT_TRUE(hannoy::holds(g.links[c], u)) << "seed " << seed;
		for (const auto &l : g.links)
			EXPECT_LE(l.size(), g.max);
		/* a splice that had to drop an entry of u's list says so: the caller relinks it */
		std::vector<char> after = reachable(g, 0);
		if (dropped != hannoy::NO_NODE)
			after[dropped] = before[dropped];
		EXPECT_TRUE(dropped != hannoy::NO_NODE || keeps_all(before, after)) << "seed " << seed;
	}
}

TEST(Prune, UnreachableNodesAreLinkedBackIn)
{
	for (uint32_t seed = 1; seed <= 100; seed++)
	{
		MemGraph g = random_graph(60, 3, 5, seed);
		/* cut a few nodes off: nobody links to them any more */
		std::vector<uint32_t> cut = {uint32_t(1 + seed % 59), uint32_t(1 + (seed * 7) % 59)};
		for (auto &l : g.links)
			for (uint32_t x : cut)
				if (hannoy::holds(l, x))
					l.erase(std::find(l.begin(), l.end(), x));
		std::vector<char>     reached = reachable(g, 0);
		std::vector<uint32_t> orphans;
		for (uint32_t x = 0; x < 60; x++)
			if (!reached[x])
				orphans.push_back(x);
		hannoy::RelinkScratch w;
		for (size_t i = 0; i < orphans.size(); i++)
		{
			uint32_t x = orphans[i];
			if (reached[x])
				continue;
			uint32_t dropped = hannoy::relink_orphan(g, x, 0, 0, 16, reached, w);
			EXPECT_TRUE(reached[x]);
			if (dropped != hannoy::NO_NODE && !reached[dropped])
				orphans.push_back(dropped);
		}
		std::vector<char> after = reachable(g, 0);
		for (uint32_t x = 0; x < 60; x++)
			EXPECT_TRUE(after[x]) << "seed " << seed << ": node " << x;
		for (const auto &l : g.links)
			EXPECT_LE(l.size(), g.max);
	}
}
