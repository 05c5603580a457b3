/*
 * test_vacuum.cpp
 *	  VACUUM's graph repair through the C ABI: after removing rows and
 *	  repairing, no list names a removed node, the verifier finds nothing,
 *	  recall on the survivors stays close to a fresh build's, the entry point
 *	  is replaced when removed, and inserts reuse the freed ids.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::env_stats;
using hannoy_test::TempEnvDir;
using hannoy_test::vacuum;
using hannoy_test::verify;

constexpr uint32_t DIMS = 16;

/* Clustered vectors (row i gets TID i + 1 in the builds below). */
std::vector<float>
clustered(size_t n, uint32_t seed)
{
	return hannoy_test::clustered(n, DIMS, seed, 10, 0.2f);
}

/* Builds an index over the rows whose index is in 'rows' (one thread, fixed seed). */
HannoyEnv *
build(const char *path, const std::vector<float> &v, const std::vector<size_t> &rows)
{
	HannoyMeta meta = hannoy_test::test_meta(HANNOY_METRIC_L2, DIMS, 8, 64, 5);
	return hannoy_test::build_rows(path, meta, v, rows, 1, 0, 50);
}

/* Builds an index over every row of 'v'. */
HannoyEnv *
build_all(const char *path, const std::vector<float> &v)
{
	HannoyMeta meta = hannoy_test::test_meta(HANNOY_METRIC_L2, DIMS, 8, 64, 5);
	return hannoy_test::build_all(path, meta, v, 1, 0, 50);
}

/* Recall@10 at ef 64 over 'queries' against brute force on the rows in 'live'. */
double
recall(HannoyEnv *env, const std::vector<float> &v, const std::set<size_t> &live,
       const std::vector<size_t> &queries)
{
	size_t      hits = 0;
	HannoyError err;
	for (size_t qi : queries)
	{
		const float                           *q = &v[qi * DIMS];
		std::vector<std::pair<double, size_t>> exact;
		for (size_t i : live)
			exact.push_back({hannoy_distance(HANNOY_METRIC_L2, &v[i * DIMS], q, DIMS), i});
		std::partial_sort(exact.begin(), exact.begin() + 10, exact.end());
		double      kth = exact[9].first;
		HannoyScan *scan = nullptr;
		EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
		EXPECT_EQ(hannoy_scan_start(scan, q, DIMS, 64, 0, &err), HANNOY_OK);
		for (const hannoy_test::Row &r : hannoy_test::scan_rows(scan, 10))
		{
			EXPECT_TRUE(live.count(r.tid - 1)) << "a removed row came back";
			hits += r.distance <= kth;
		}
		hannoy_scan_free(scan);
	}
	return double(hits) / double(queries.size() * 10);
}

} // namespace

TEST(Vacuum, RepairKeepsRecallAndLeavesNoDanglingLinks)
{
	auto                v = clustered(4000, 1);
	std::mt19937        rng(7);
	std::set<size_t>    live;
	std::vector<size_t> survivors;
	for (size_t i = 0; i < 4000; i++)
		if (rng() % 2)
		{
			live.insert(i);
			survivors.push_back(i);
		}
	std::vector<size_t> queries;
	for (size_t i = 0; i < survivors.size(); i += 20)
		queries.push_back(survivors[i]);

	TempEnvDir a;
	HannoyEnv *env = build_all(a.path(), v);
	size_t     removed = vacuum(env, [&](HannoyTid t) { return live.count(t - 1) == 0; });
	EXPECT_EQ(removed, 4000 - live.size());
	EXPECT_EQ(verify(env), std::vector<std::string>());
	HannoyStats stats = env_stats(env);
	HannoyError err;
	EXPECT_EQ(stats.items, live.size());
	EXPECT_EQ(stats.deleted, 0u);
	double repaired = recall(env, v, live, queries);

	TempEnvDir b;
	HannoyEnv *fresh = build(b.path(), v, survivors);
	double     rebuilt = recall(fresh, v, live, queries);
	std::printf("recall@10 on survivors: repaired %.4f, fresh build %.4f\n", repaired, rebuilt);
	EXPECT_GE(repaired, rebuilt - 0.01);
	hannoy_env_close(fresh);

	/* inserts reuse the freed ids before taking new ones */
	uint64_t next_before = stats.next_id;
	for (size_t i = 0; i < 100; i++)
		ASSERT_EQ(hannoy_insert(env, 100000 + i, &v[i * DIMS], 0, &err), HANNOY_OK);
	EXPECT_EQ(env_stats(env).next_id, next_before);
	EXPECT_EQ(verify(env), std::vector<std::string>());
	hannoy_env_close(env);
}

TEST(Vacuum, RemovingEverythingThenRefilling)
{
	auto        v = clustered(1500, 2);
	TempEnvDir  dir;
	HannoyEnv  *env = build_all(dir.path(), v);
	HannoyError err;
	EXPECT_EQ(vacuum(env, [](HannoyTid) { return true; }), 1500u);
	HannoyStats stats = env_stats(env);
	EXPECT_EQ(stats.items, 0u);
	EXPECT_EQ(stats.max_level, -1); /* the entry point went with everything else */
	for (size_t i = 0; i < 1500; i++)
		ASSERT_EQ(hannoy_insert(env, 5000 + i, &v[i * DIMS], 0, &err), HANNOY_OK) << err.message;
	stats = env_stats(env);
	EXPECT_EQ(stats.items, 1500u);
	EXPECT_EQ(stats.next_id, 1500u); /* every id reused */
	EXPECT_EQ(verify(env), std::vector<std::string>());
	hannoy_env_close(env);
}

TEST(Vacuum, EntryPointIsReplacedWhenRemoved)
{
	auto        v = clustered(2000, 3);
	TempEnvDir  dir;
	HannoyEnv  *env = build_all(dir.path(), v);
	HannoyStats before = env_stats(env);
	/* item ids equal row order here: remove the entry point and a few others */
	uint32_t ep = before.entry_point;
	vacuum(env, [&](HannoyTid t) { return t - 1 == ep || t % 7 == 0; });
	HannoyStats after = env_stats(env);
	EXPECT_NE(after.entry_point, ep);
	EXPECT_GE(after.max_level, 0);
	EXPECT_EQ(verify(env), std::vector<std::string>());
	hannoy_env_close(env);
}
