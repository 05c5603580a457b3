/*
 * test_insert.cpp
 *	  A row inserted into an index whose VACUUM stopped before its repair
 *	  (a crash, a cancel) is among the 10 nearest to its own vector at once,
 *	  as the crash test checks after every restart.  An index filled by
 *	  inserts into an empty one finds neighbours as well as a built one on
 *	  data where the heuristic's choice alone keeps few links.  Rows whose
 *	  8-bit codes are exact (pixels) are searched on their codes and find
 *	  their neighbours as well.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "common_direction.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::Row;
using hannoy_test::TempEnvDir;

TEST(SelfLookup, InsertsWhileEveryUpperLayerNodeIsATombstone)
{
	/*
	 * A VACUUM stopped before its repair leaves the entry point and the
	 * upper layers as tombstones: a new node's search must walk on through
	 * them to its true neighbours at every layer below (a search from live
	 * nodes only found nothing there, and such nodes were linked from a
	 * live node anywhere in the graph, found by their own vector only after
	 * thousands of rows).
	 */
	const uint32_t dims = 16;
	const size_t   built = 3000, added = 1000;
	auto           vectors = hannoy_test::uniform(built + added, dims, 77);
	HannoyMeta     meta = hannoy_test::test_meta(HANNOY_METRIC_L2, dims, 16, 64);
	TempEnvDir     dir;
	HannoyEnv     *env = hannoy_test::build_all(
	        dir.path(), meta, std::vector<float>(vectors.begin(), vectors.begin() + built * dims), 1);
	/* a build draws a node's level from its item id */
	size_t removed = hannoy_test::remove_entries(
	    env, [&](const HannoyEntry &e)
	    { return hannoy::draw_level(meta.seed, e.id, meta.options.m) >= 1; });
	ASSERT_GT(removed, 50u);
	HannoyError            err;
	size_t                 upper = 0;
	std::vector<HannoyTid> missed;
	HannoyScan            *scan = nullptr;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	for (size_t i = built; i < built + added; i++)
	{
		ASSERT_EQ(hannoy_insert(env, i + 1, &vectors[i * dims], 0, &err), HANNOY_OK) << err.message;
		if (hannoy::draw_level(meta.seed, i + 1, meta.options.m) < 1)
			continue;
		/* a node above layer 0 met only tombstones there: at once, its own vector finds it */
		upper++;
		ASSERT_EQ(hannoy_scan_start(scan, &vectors[i * dims], dims, 40, 0, &err), HANNOY_OK);
		bool found = false;
		for (const Row &r : hannoy_test::scan_rows(scan, 10))
			found = found || r.tid == i + 1;
		if (!found)
			missed.push_back(i + 1);
	}
	hannoy_scan_free(scan);
	ASSERT_GT(upper, 20u);
	EXPECT_EQ(missed, std::vector<HannoyTid>());
	hannoy_env_close(env);
}

TEST(InsertRecall, ClustersSharingACommonDirection)
{
	/*
	 * New nodes once listed the heuristic's choice only: a mean layer-0
	 * degree of 8 of 32 on this data, and later inserts searched a graph
	 * too sparse to find their neighbours (recall@10 0.88 at ef 40 on
	 * 30,000 rows; 10,000 keep the test short).
	 */
	const uint32_t     dims = 32;
	const size_t       n = 10000;
	std::vector<float> base = hannoy_test::common_direction(n, dims, 13, 1);
	std::vector<float> queries = hannoy_test::common_direction(200, dims, 13, 2);
	TempEnvDir         dir;
	HannoyMeta         meta = hannoy_test::test_meta(HANNOY_METRIC_L2, dims, 16, 64);
	HannoyEnvConfig    config = hannoy_test::test_config();
	HannoyEnv         *env = nullptr;
	HannoyError        err;
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK) << err.message;
	for (size_t i = 0; i < n; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &base[i * dims], 0, &err), HANNOY_OK) << err.message;
	double r40 = hannoy_test::recall_at(env, HANNOY_METRIC_L2, dims, base, queries, 40);
	double r200 = hannoy_test::recall_at(env, HANNOY_METRIC_L2, dims, base, queries, 200);
	std::printf("recall@10 on 10,000 inserted rows sharing a common direction (m 16, efc 64): "
	            "ef 40 %.4f, ef 200 %.4f\n",
	            r40, r200);
	EXPECT_GE(r40, 0.95);
	EXPECT_GE(r200, 0.99);
	hannoy_env_close(env);
}

TEST(InsertRecall, RowsWithExactCodesSearchOnThem)
{
	/*
	 * Whole numbers from 0 to 255 (pixels): the build's codes hold each
	 * inserted row exactly, so an insert's search walks on codes (DESIGN.md
	 * "Insert").  Half the rows come by inserts after the build; every one
	 * finds itself first, and the queries' neighbours are found as in a
	 * built index.
	 */
	const uint32_t     dims = 32;
	const size_t       built = 3000, added = 3000;
	std::vector<float> base = hannoy_test::common_direction(built + added, dims, 21, 1);
	std::vector<float> queries = hannoy_test::common_direction(200, dims, 21, 2);
	auto               pixel = [](std::vector<float> &v)
	{
		float lo = *std::min_element(v.begin(), v.end()),
		      hi = *std::max_element(v.begin(), v.end());
		for (float &x : v)
			x = std::round((x - lo) / (hi - lo) * 255.0f);
	};
	pixel(base);
	pixel(queries);
	HannoyMeta meta = hannoy_test::test_meta(HANNOY_METRIC_L2, dims, 16, 64);
	TempEnvDir dir;
	/* 8-bit codes by name: 'auto' gives them from 256 dimensions on */
	HannoyEnv *env = hannoy_test::build_all(
	    dir.path(), meta, std::vector<float>(base.begin(), base.begin() + built * dims), 1, 0, 20,
	    nullptr, HANNOY_QUANTIZER_SCALAR8);
	HannoyError err;
	for (size_t i = built; i < built + added; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &base[i * dims], 0, &err), HANNOY_OK) << err.message;
	HannoyStats stats;
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(stats.quantizer, 1u); /* 8-bit codes to walk on */
	ASSERT_EQ(stats.codes, built + added);
	HannoyScan *scan = nullptr;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	size_t first = 0;
	for (size_t i = built; i < built + added; i++)
	{
		ASSERT_EQ(hannoy_scan_start(scan, &base[i * dims], dims, 40, 0, &err), HANNOY_OK);
		std::vector<Row> rows = hannoy_test::scan_rows(scan, 1);
		first += !rows.empty() && rows[0].distance == 0.0;
	}
	hannoy_scan_free(scan);
	double r40 = hannoy_test::recall_at(env, HANNOY_METRIC_L2, dims, base, queries, 40);
	std::printf("pixel rows, %zu built and %zu inserted: %zu inserted rows at distance 0 first, "
	            "recall@10 at ef 40 %.4f\n",
	            built, added, first, r40);
	EXPECT_EQ(first, added);
	EXPECT_GE(r40, 0.95);
	hannoy_env_close(env);
}

} // namespace
