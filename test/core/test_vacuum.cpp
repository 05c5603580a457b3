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
#include "hannoy/storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_config;

constexpr uint32_t DIMS = 16;

/* Clustered vectors (row i gets TID i + 1 in the builds below). */
std::vector<float>
clustered(size_t n, uint32_t seed)
{
	std::mt19937                          rng(seed);
	std::normal_distribution<float>       noise(0.0f, 0.2f);
	std::uniform_real_distribution<float> centre(-1.0f, 1.0f);
	std::vector<float>                    centres(10 * DIMS), out(n * DIMS);
	for (auto &c : centres)
		c = centre(rng);
	for (size_t i = 0; i < n; i++)
	{
		size_t c = rng() % 10;
		for (uint32_t d = 0; d < DIMS; d++)
			out[i * DIMS + d] = centres[c * DIMS + d] + noise(rng);
	}
	return out;
}

/* Builds an index over the rows whose index is in 'rows' (one thread, fixed seed). */
HannoyEnv *
build(const char *path, const std::vector<float> &v, const std::vector<size_t> &rows)
{
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta{};
	meta.format_version = HANNOY_FORMAT_VERSION;
	meta.metric = HANNOY_METRIC_L2;
	meta.dims = DIMS;
	meta.m = 8;
	meta.m0 = 16;
	meta.ef_construction = 64;
	meta.generation = 1;
	meta.seed = 5;
	HannoyEnv     *env = nullptr;
	HannoyError    err;
	HannoyBuilder *b = nullptr;
	EXPECT_EQ(hannoy_env_create(path, &config, &meta, &env, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(hannoy_build_begin(env, 1, &b, &err), HANNOY_OK);
	for (size_t i : rows)
		EXPECT_EQ(hannoy_build_add(b, i + 1, &v[i * DIMS], 0, &err), HANNOY_OK);
	bool                done = false;
	HannoyBuildProgress p;
	while (!done)
		EXPECT_EQ(hannoy_build_step(b, 50, &p, &done, &err), HANNOY_OK) << err.message;
	hannoy_build_free(b);
	return env;
}

/* Removes the rows whose TID satisfies 'dead', then repairs the graph. */
template <class F>
size_t
vacuum(HannoyEnv *env, F dead)
{
	HannoyError              err;
	HannoyEntryPosition      pos{};
	HannoyEntry              batch[256];
	uint32_t                 n;
	std::vector<HannoyEntry> gone;
	do
	{
		EXPECT_EQ(hannoy_entries_next(env, &pos, batch, 256, &n, &err), HANNOY_OK);
		for (uint32_t i = 0; i < n; i++)
			if (dead(batch[i].tid))
				gone.push_back(batch[i]);
	} while (n > 0);
	EXPECT_EQ(hannoy_delete_entries(env, gone.data(), uint32_t(gone.size()), &err), HANNOY_OK);
	HannoyRepair *r = nullptr;
	EXPECT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
	bool     done = false;
	uint64_t repaired = 0;
	int      steps = 0;
	while (!done)
	{
		EXPECT_EQ(hannoy_repair_step(r, 5, &done, &repaired, &err), HANNOY_OK) << err.message;
		steps++;
	}
	hannoy_repair_free(r);
	return gone.size();
}

/* Problems the verifier reports, as "kind: detail" lines. */
std::vector<std::string>
verify(HannoyEnv *env)
{
	HannoyInspect           *w = nullptr;
	HannoyError              err;
	std::vector<std::string> out;
	EXPECT_EQ(hannoy_inspect_begin(env, true, &w, &err), HANNOY_OK);
	bool          done = false;
	HannoyProblem p[16];
	uint32_t      n;
	while (!done)
	{
		EXPECT_EQ(hannoy_inspect_step(w, 50, p, 16, &n, &done, &err), HANNOY_OK);
		for (uint32_t i = 0; i < n; i++)
			out.push_back(std::string(hannoy_problem_name(p[i].kind)) + ": " + p[i].detail);
	}
	hannoy_inspect_free(w);
	return out;
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
			exact.push_back({hannoy_l2_distance(&v[i * DIMS], q, DIMS), i});
		std::partial_sort(exact.begin(), exact.begin() + 10, exact.end());
		double      kth = exact[9].first;
		HannoyScan *scan = nullptr;
		EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
		EXPECT_EQ(hannoy_scan_start(scan, q, DIMS, 64, 0, &err), HANNOY_OK);
		for (int k = 0; k < 10; k++)
		{
			HannoyTid tid;
			double    d;
			bool      isnull, found;
			EXPECT_EQ(hannoy_scan_next(scan, &tid, &d, &isnull, &found, &err), HANNOY_OK);
			if (!found)
				break;
			EXPECT_TRUE(live.count(tid - 1)) << "a removed row came back";
			hits += d <= kth;
		}
		hannoy_scan_free(scan);
	}
	return double(hits) / double(queries.size() * 10);
}

} // namespace

TEST(Vacuum, RepairKeepsRecallAndLeavesNoDanglingLinks)
{
	auto                v = clustered(4000, 1);
	std::vector<size_t> all(4000);
	for (size_t i = 0; i < all.size(); i++)
		all[i] = i;
	std::mt19937          rng(7);
	std::set<size_t>      live;
	std::vector<size_t>   survivors;
	std::vector<uint32_t> coin(4000);
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
	HannoyEnv *env = build(a.path(), v, all);
	size_t     removed = vacuum(env, [&](HannoyTid t) { return live.count(t - 1) == 0; });
	EXPECT_EQ(removed, 4000 - live.size());
	EXPECT_EQ(verify(env), std::vector<std::string>());
	HannoyStats stats;
	HannoyError err;
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
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
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
	EXPECT_EQ(stats.next_id, next_before);
	EXPECT_EQ(verify(env), std::vector<std::string>());
	hannoy_env_close(env);
}

TEST(Vacuum, RemovingEverythingThenRefilling)
{
	auto                v = clustered(1500, 2);
	std::vector<size_t> all(1500);
	for (size_t i = 0; i < all.size(); i++)
		all[i] = i;
	TempEnvDir  dir;
	HannoyEnv  *env = build(dir.path(), v, all);
	HannoyError err;
	EXPECT_EQ(vacuum(env, [](HannoyTid) { return true; }), 1500u);
	HannoyStats stats;
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
	EXPECT_EQ(stats.items, 0u);
	EXPECT_EQ(stats.max_level, -1); /* the entry point went with everything else */
	for (size_t i = 0; i < 1500; i++)
		ASSERT_EQ(hannoy_insert(env, 5000 + i, &v[i * DIMS], 0, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
	EXPECT_EQ(stats.items, 1500u);
	EXPECT_EQ(stats.next_id, 1500u); /* every id reused */
	EXPECT_EQ(verify(env), std::vector<std::string>());
	hannoy_env_close(env);
}

TEST(Vacuum, EntryPointIsReplacedWhenRemoved)
{
	auto                v = clustered(2000, 3);
	std::vector<size_t> all(2000);
	for (size_t i = 0; i < all.size(); i++)
		all[i] = i;
	TempEnvDir  dir;
	HannoyEnv  *env = build(dir.path(), v, all);
	HannoyError err;
	HannoyStats before;
	ASSERT_EQ(hannoy_env_stats(env, &before, &err), HANNOY_OK);
	/* item ids equal row order here: remove the entry point and a few others */
	uint32_t ep = before.entry_point;
	vacuum(env, [&](HannoyTid t) { return t - 1 == ep || t % 7 == 0; });
	HannoyStats after;
	ASSERT_EQ(hannoy_env_stats(env, &after, &err), HANNOY_OK);
	EXPECT_NE(after.entry_point, ep);
	EXPECT_GE(after.max_level, 0);
	EXPECT_EQ(verify(env), std::vector<std::string>());
	hannoy_env_close(env);
}
