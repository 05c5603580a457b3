/*
 * test_scan.cpp
 *	  The core as a whole through its C ABI, without PostgreSQL: build,
 *	  graph invariants (degree bounds, reachability), recall against brute
 *	  force, inserts after the build, scans that never stop early (DESIGN.md "Complete scans"),
 *	  VACUUM tombstones and storage round trips.
 */
#include <gtest/gtest.h>

#include <lmdb.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::clustered;
using hannoy_test::Row;
using hannoy_test::scan_rows;
using hannoy_test::TempEnvDir;
using hannoy_test::test_config;
using hannoy_test::test_meta;

/* Builds an index over 'vectors' (row i gets TID i + 1), in slices like the shim does. */
HannoyEnv *
build(const char *path, const HannoyMeta &meta, const std::vector<float> &vectors, uint32_t threads,
      size_t null_rows = 0)
{
	int        steps = 0;
	HannoyEnv *env = hannoy_test::build_all(path, meta, vectors, threads, null_rows, 20, &steps);
	EXPECT_GT(steps, 1);
	return env;
}

/* The first k TIDs an ordered scan returns. */
std::vector<HannoyTid>
scan_top(HannoyEnv *env, const float *q, uint32_t dims, uint32_t ef, size_t k)
{
	HannoyScan *scan = nullptr;
	HannoyError err;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_scan_start(scan, q, dims, ef, 0, &err), HANNOY_OK) << err.message;
	std::vector<HannoyTid> out;
	for (const Row &r : scan_rows(scan, k))
		out.push_back(r.tid);
	hannoy_scan_free(scan);
	return out;
}

/* Recall@k of the index against brute force over 'queries'. */
double
recall_at(HannoyEnv *env, const std::vector<float> &base, const std::vector<float> &queries,
          uint32_t dims, uint32_t ef, size_t k)
{
	size_t n = base.size() / dims, nq = queries.size() / dims;
	size_t hits = 0;
	for (size_t qi = 0; qi < nq; qi++)
	{
		const float                              *q = &queries[qi * dims];
		std::vector<std::pair<double, HannoyTid>> exact(n);
		for (size_t i = 0; i < n; i++)
			exact[i] = {hannoy_distance(HANNOY_METRIC_L2, &base[i * dims], q, dims), i + 1};
		std::partial_sort(exact.begin(), exact.begin() + k, exact.end());
		double kth = exact[k - 1].first;
		for (HannoyTid tid : scan_top(env, q, dims, ef, k))
			if (hannoy_distance(HANNOY_METRIC_L2, &base[(tid - 1) * dims], q, dims) <= kth)
				hits++;
	}
	return double(hits) / double(nq * k);
}

/* Reads the graph directly: every node's links per layer. */
struct GraphDump
{
	hannoy::GraphState                              state;
	std::vector<std::vector<std::vector<uint32_t>>> links; /* [id][layer] */
};

GraphDump
dump(const char *path)
{
	HannoyEnvConfig config = test_config();
	hannoy::Store   store(path, config, false, nullptr);
	hannoy::Txn     txn(store.env(), true);
	GraphDump       g;
	g.state = store.read_state(txn.get());
	g.links.resize(g.state.next_id);
	for (uint32_t id = 0; id < g.state.next_id; id++)
	{
		for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
		{
			hannoy::LinkKey key(id, layer);
			MDB_val         data;
			if (!hannoy::get(txn.get(), store.dbi_links, key.val(), data))
				break;
			std::vector<uint32_t> l;
			store.links(txn.get(), id, layer, l);
			g.links[id].push_back(l);
		}
	}
	return g;
}

} // namespace

TEST(Index, BuildRecallDegreeAndReachability)
{
	const uint32_t dims = 24;
	TempEnvDir     dir;
	/* queries held out from the same distribution, as ann-benchmarks does */
	auto               all = clustered(5100, dims, 1);
	std::vector<float> base(all.begin(), all.begin() + 5000 * dims);
	std::vector<float> queries(all.begin() + 5000 * dims, all.end());
	HannoyMeta         meta = test_meta(HANNOY_METRIC_L2, dims, 16, 200);
	HannoyEnv         *env = build(dir.path(), meta, base, 2);

	double recall = recall_at(env, base, queries, dims, 200, 10);
	std::printf("recall@10 at ef=200 on 5000 clustered 24-d vectors: %.4f\n", recall);
	EXPECT_GE(recall, 0.99);
	hannoy_env_close(env);

	GraphDump g = dump(dir.path());
	ASSERT_EQ(g.state.items, 5000u);
	ASSERT_GE(g.state.max_level, 1);
	/* degree bounds: m above layer 0, m0 = 2m at layer 0; no self links, no duplicates */
	for (uint32_t id = 0; id < g.links.size(); id++)
	{
		for (size_t layer = 0; layer < g.links[id].size(); layer++)
		{
			const auto &l = g.links[id][layer];
			EXPECT_LE(l.size(), layer == 0 ? 2 * meta.options.m : meta.options.m);
			EXPECT_EQ(std::set<uint32_t>(l.begin(), l.end()).size(), l.size());
			EXPECT_EQ(std::count(l.begin(), l.end(), id), 0);
			for (uint32_t n : l)
			{
				ASSERT_LT(n, g.links.size());
				/* a neighbour at layer L has layer L itself */
				EXPECT_GT(g.links[n].size(), layer);
			}
		}
	}
	/* reachability at layer 0 from the entry point */
	std::vector<bool>    seen(g.links.size(), false);
	std::deque<uint32_t> todo{g.state.entry_point};
	seen[g.state.entry_point] = true;
	size_t reached = 1;
	while (!todo.empty())
	{
		uint32_t id = todo.front();
		todo.pop_front();
		for (uint32_t n : g.links[id][0])
			if (!seen[n])
			{
				seen[n] = true;
				reached++;
				todo.push_back(n);
			}
	}
	EXPECT_EQ(reached, g.links.size());
	EXPECT_EQ(int(g.links[g.state.entry_point].size()) - 1, g.state.max_level);
}

TEST(Index, SingleThreadBuildIsRepeatable)
{
	const uint32_t dims = 8;
	auto           base = clustered(1500, dims, 3);
	TempEnvDir     a, b;
	HannoyMeta     meta = test_meta(HANNOY_METRIC_L2, dims, 8, 40);
	hannoy_env_close(build(a.path(), meta, base, 1));
	hannoy_env_close(build(b.path(), meta, base, 1));
	GraphDump ga = dump(a.path()), gb = dump(b.path());
	EXPECT_EQ(ga.links, gb.links);
	EXPECT_EQ(ga.state.entry_point, gb.state.entry_point);
}

TEST(Index, ScanNeverStopsEarly)
{
	const uint32_t dims = 16;
	TempEnvDir     dir;
	auto           base = clustered(3000, dims, 4);
	HannoyMeta     meta = test_meta(HANNOY_METRIC_L2, dims, 6, 12);
	HannoyEnv     *env = build(dir.path(), meta, base, 2, 7);
	/* ef = 1: everything beyond the first row comes from resumed rounds */
	HannoyScan *scan = nullptr;
	HannoyError err;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	for (int rescan = 0; rescan < 2; rescan++)
	{
		ASSERT_EQ(hannoy_scan_start(scan, &base[0], dims, 1, 0, &err), HANNOY_OK);
		std::set<HannoyTid> tids;
		size_t              nulls = 0;
		bool                null_seen = false, order_ok = true;
		std::vector<Row>    rows = scan_rows(scan);
		for (const Row &r : rows)
		{
			tids.insert(r.tid);
			if (r.isnull)
			{
				nulls++;
				null_seen = true;
			}
			else
			{
				order_ok = order_ok && !null_seen; /* NULL rows come last */
				EXPECT_EQ(r.distance, hannoy_distance(HANNOY_METRIC_L2, &base[(r.tid - 1) * dims],
				                                      &base[0], dims));
			}
		}
		EXPECT_EQ(rows.size(), 3007u);
		EXPECT_EQ(tids.size(), 3007u);
		EXPECT_EQ(nulls, 7u);
		EXPECT_TRUE(order_ok);
	}
	hannoy_scan_free(scan);
	hannoy_env_close(env);
}

/*
 * A scan that ends its read transaction between rows goes on in a new one
 * and still returns every row it could see exactly once (DESIGN.md "Scan"):
 * here it is detached while its environment is closed and reopened, while
 * rows are inserted (each new row may or may not be returned, never
 * twice), while another scan on the same store forces its map to move, and
 * in the middle of the unindexed rows.
 */
TEST(Index, DetachedScanReturnsEveryRowOnce)
{
	const uint32_t  dims = 16;
	TempEnvDir      dir;
	auto            base = clustered(2000, dims, 5);
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, dims, 6, 12);
	HannoyEnv      *env = build(dir.path(), meta, base, 2, 9);
	HannoyEnvConfig config = test_config();
	HannoyError     err;
	for (int query_kind = 0; query_kind < 2; query_kind++)
	{
		HannoyScan *scan = nullptr;
		ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
		ASSERT_EQ(hannoy_scan_start(scan, query_kind == 0 ? &base[0] : nullptr, dims, 4, 0, &err),
		          HANNOY_OK);
		std::set<HannoyTid> seen;
		size_t              rows = 0, inserted = 0;
		auto                extra = clustered(400, dims, 77 + query_kind);
		const HannoyTid     first_new = 100000 + 1000 * query_kind;
		for (;;)
		{
			HannoyTid tid;
			double    distance;
			bool      isnull, found;
			ASSERT_EQ(hannoy_scan_next(scan, &tid, &distance, &isnull, &found, &err), HANNOY_OK)
			    << err.message;
			if (!found)
				break;
			rows++;
			EXPECT_TRUE(seen.insert(tid).second) << "row " << tid << " returned twice";
			if (rows % 97 == 0)
			{
				/* close the environment under the scan, write, reopen */
				hannoy_scan_detach(scan);
				hannoy_env_close(env);
				ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK);
				for (int i = 0; i < 20 && inserted < 400; i++, inserted++)
					ASSERT_EQ(hannoy_insert(env, first_new + inserted, &extra[inserted * dims],
					                        HANNOY_ROW_INDEXED, &err),
					          HANNOY_OK)
					    << err.message;
				ASSERT_EQ(hannoy_scan_attach(scan, env, &err), HANNOY_OK);
			}
			else if (rows % 89 == 0)
			{
				/* inserts on the same open store: the map may move under the (released) scan */
				for (int i = 0; i < 20 && inserted < 400; i++, inserted++)
					ASSERT_EQ(hannoy_insert(env, first_new + inserted, &extra[inserted * dims],
					                        HANNOY_ROW_INDEXED, &err),
					          HANNOY_OK)
					    << err.message;
			}
		}
		/* every row there before the scan began, new ones at most once */
		auto old_row = [](HannoyTid t)
		{ return (t >= 1 && t <= 2000) || (t >= 1000000 && t < 1000009); };
		for (HannoyTid t = 1; t <= 2000; t++)
			EXPECT_TRUE(seen.count(t)) << "row " << t << " was never returned";
		for (HannoyTid t = 1000000; t < 1000009; t++)
			EXPECT_TRUE(seen.count(t)) << "row " << t << " was never returned";
		for (HannoyTid t : seen)
			EXPECT_TRUE(old_row(t) || (t >= 100000 && t < first_new + inserted)) << t;
		EXPECT_GT(inserted, 0u);
		hannoy_scan_free(scan);
	}
	hannoy_env_close(env);
}

TEST(Index, NullQueryReturnsEveryRow)
{
	const uint32_t dims = 4;
	TempEnvDir     dir;
	auto           base = clustered(500, dims, 5);
	HannoyEnv     *env = build(dir.path(), test_meta(HANNOY_METRIC_L2, dims), base, 1, 3);
	HannoyScan    *scan = nullptr;
	HannoyError    err;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_scan_start(scan, nullptr, 0, 10, 1, &err), HANNOY_OK);
	std::vector<Row> rows = scan_rows(scan);
	for (const Row &r : rows)
		EXPECT_TRUE(r.isnull);
	EXPECT_EQ(rows.size(), 503u);
	hannoy_scan_free(scan);
	hannoy_env_close(env);
}

TEST(Index, InsertAfterBuildAndIntoEmptyIndex)
{
	const uint32_t dims = 12;
	auto           base = clustered(2000, dims, 6);
	for (size_t built : {size_t(0), size_t(1000)})
	{
		TempEnvDir         dir;
		std::vector<float> first(base.begin(), base.begin() + built * dims);
		HannoyEnv  *env = build(dir.path(), test_meta(HANNOY_METRIC_L2, dims, 8, 40), first, 2);
		HannoyError err;
		for (size_t i = built; i < 2000; i++)
			ASSERT_EQ(hannoy_insert(env, i + 1, &base[i * dims], 0, &err), HANNOY_OK)
			    << err.message;
		/* every row's own vector finds it first */
		size_t found_self = 0;
		for (size_t i = 0; i < 2000; i += 7)
		{
			auto top = scan_top(env, &base[i * dims], dims, 64, 1);
			found_self += !top.empty() && top[0] == i + 1;
		}
		EXPECT_EQ(found_self, (2000 + 6) / 7u) << "built " << built;
		HannoyStats stats;
		ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
		EXPECT_EQ(stats.items, 2000u);
		hannoy_env_close(env);
	}
}

TEST(Index, DeletedRowsAreNeverReturned)
{
	const uint32_t dims = 8;
	TempEnvDir     dir;
	auto           base = clustered(1000, dims, 7);
	HannoyEnv     *env = build(dir.path(), test_meta(HANNOY_METRIC_L2, dims, 8, 40), base, 1, 10);
	HannoyError    err;
	/* walk all entries in small batches, delete every other one */
	HannoyEntryPosition      pos{};
	HannoyEntry              batch[64];
	uint32_t                 n;
	std::vector<HannoyEntry> dead;
	size_t                   walked = 0;
	do
	{
		ASSERT_EQ(hannoy_entries_next(env, &pos, batch, 64, &n, &err), HANNOY_OK);
		for (uint32_t i = 0; i < n; i++)
		{
			walked++;
			if (batch[i].tid % 2 == 0)
				dead.push_back(batch[i]);
		}
	} while (n > 0);
	EXPECT_EQ(walked, 1010u);
	ASSERT_EQ(hannoy_delete_entries(env, dead.data(), uint32_t(dead.size()), &err), HANNOY_OK);
	auto all = scan_top(env, &base[0], dims, 10, 100000);
	EXPECT_EQ(all.size(), 1010u - dead.size());
	for (HannoyTid tid : all)
		EXPECT_EQ(tid % 2, 1u);
	hannoy_env_close(env);
}

TEST(Index, EnvironmentRoundTripAndIdentity)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_COSINE, 0);
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	EXPECT_FALSE(hannoy_env_exists(dir.path()));
	EXPECT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_ERR_NOT_FOUND);
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK);
	EXPECT_TRUE(hannoy_env_exists(dir.path()));
	ASSERT_EQ(hannoy_env_set_dims(env, 3, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_env_set_dims(env, 4, &err), HANNOY_ERR_INVALID);
	hannoy_env_close(env);
	/* opening again (as another backend would) sees the same identity */
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK);
	HannoyMeta got;
	ASSERT_EQ(hannoy_env_meta(env, &got, &err), HANNOY_OK);
	EXPECT_EQ(got.dims, 3u);
	EXPECT_EQ(got.metric, uint32_t(HANNOY_METRIC_COSINE));
	EXPECT_EQ(got.generation, 42u);
	EXPECT_EQ(got.system_id, 7u);
	EXPECT_EQ(got.index_oid, 12345u);
	hannoy_env_close(env);
	/* a bad metric is refused, not stored */
	HannoyMeta bad = test_meta(static_cast<HannoyMetric>(9), 3);
	EXPECT_NE(hannoy_env_create(dir.path(), &config, &bad, &env, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_env_remove(dir.path(), &err), HANNOY_OK);
	EXPECT_FALSE(hannoy_env_exists(dir.path()));
}

TEST(Index, QueryOfAnotherLengthIsRefused)
{
	const uint32_t dims = 4;
	TempEnvDir     dir;
	auto           base = clustered(100, dims, 8);
	HannoyEnv     *env = build(dir.path(), test_meta(HANNOY_METRIC_L2, dims), base, 1);
	HannoyScan    *scan = nullptr;
	HannoyError    err;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_scan_start(scan, &base[0], 3, 10, 0, &err), HANNOY_ERR_INVALID);
	EXPECT_STREQ(err.message, "different vector dimensions 4 and 3");
	EXPECT_EQ(hannoy_scan_start(scan, &base[0], 4, 10, 0, &err), HANNOY_OK);
	hannoy_scan_free(scan);
	hannoy_env_close(env);
}

TEST(Index, NanDistancesSortLast)
{
	/* inner products that overflow float give NaN; the scan must stay well-ordered */
	const uint32_t     dims = 2;
	TempEnvDir         dir;
	std::vector<float> base;
	for (int i = 0; i < 200; i++)
	{
		base.push_back(i % 3 == 0 ? 3e38f : float(i));
		base.push_back(i % 3 == 0 ? -3e38f : 1.0f);
	}
	HannoyEnv  *env = build(dir.path(), test_meta(HANNOY_METRIC_IP, dims, 4, 8), base, 1);
	HannoyScan *scan = nullptr;
	HannoyError err;
	const float q[2] = {2.0f, 2.0f};
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_scan_start(scan, q, dims, 400, 0, &err), HANNOY_OK);
	std::set<HannoyTid> tids;
	std::vector<double> dists;
	for (const Row &r : scan_rows(scan))
	{
		tids.insert(r.tid);
		dists.push_back(r.distance);
	}
	/* every row exactly once, NaN rows included */
	EXPECT_EQ(dists.size(), 200u);
	EXPECT_EQ(tids.size(), 200u);
	EXPECT_GT(std::count_if(dists.begin(), dists.end(), [](double d) { return std::isnan(d); }), 0);
	/* the nearest rows come first, as numbers, in order */
	for (size_t i = 0; i < 10; i++)
	{
		EXPECT_FALSE(std::isnan(dists[i]));
		if (i > 0)
		{
			EXPECT_LE(dists[i - 1], dists[i]);
		}
	}
	hannoy_scan_free(scan);
	hannoy_env_close(env);
}
