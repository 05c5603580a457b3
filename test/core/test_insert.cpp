/*
 * test_insert.cpp
 *	  A row inserted into an index whose VACUUM stopped before its repair
 *	  (a crash, a cancel) is among the 10 nearest to its own vector at once,
 *	  as the crash test checks after every restart.
 */
#include <gtest/gtest.h>

#include <vector>

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

} // namespace
