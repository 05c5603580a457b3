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

/*
 * Makes the insert hook count the searches that walk on the vectors
 * (walks[0]) and on codes (walks[1]).
 */
void
count_walks(size_t *walks)
{
	HannoyTestHooks hooks = {};
	hooks.insert_walk = [](void *arg, bool on_codes) { static_cast<size_t *>(arg)[on_codes]++; };
	hooks.insert_walk_arg = walks;
	hannoy_test_set_hooks(&hooks);
}

/* Removes every test hook. */
void
clear_hooks()
{
	HannoyTestHooks none = {};
	hannoy_test_set_hooks(&none);
}

/*
 * Builds an index with 8-bit codes (by name: 'auto' gives them from 256
 * dimensions on) over the first 'built' rows of 'base', then inserts the
 * next 'added' (TID: the row + 1) with count_walks(walks) armed; nullptr
 * after a failed insert.
 */
HannoyEnv *
build_then_insert(const char *path, const HannoyMeta &meta, const std::vector<float> &base,
                  size_t built, size_t added, size_t *walks)
{
	const uint32_t dims = meta.dims;
	HannoyEnv     *env = hannoy_test::build_all(
	        path, meta, std::vector<float>(base.begin(), base.begin() + built * dims), 1, 0, 20,
	        nullptr, HANNOY_QUANTIZER_SCALAR8);
	count_walks(walks);
	HannoyError err;
	for (size_t i = built; i < built + added; i++)
		if (hannoy_insert(env, i + 1, &base[i * dims], 0, &err) != HANNOY_OK)
		{
			ADD_FAILURE() << err.message;
			hannoy_env_close(env);
			return nullptr;
		}
	return env;
}

/*
 * How many of rows first .. last - 1 of 'base' (TID: the row + 1) find
 * themselves at distance 0 among their 10 nearest at ef_search 40.
 */
size_t
rows_finding_themselves(HannoyEnv *env, const std::vector<float> &base, uint32_t dims, size_t first,
                        size_t last)
{
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	if (scan == nullptr)
		return 0;
	size_t found = 0;
	for (size_t i = first; i < last; i++)
	{
		EXPECT_EQ(hannoy_scan_start(scan, &base[i * dims], dims, 40, 0, &err), HANNOY_OK);
		bool self = false;
		for (const Row &r : hannoy_test::scan_rows(scan, 10))
			self = self || (r.tid == i + 1 && r.distance == 0.0);
		found += self;
	}
	hannoy_scan_free(scan);
	return found;
}

/*
 * After build_then_insert: how many inserted rows find themselves (into
 * *found) and recall@10 at ef_search 40 of 'queries' over every row
 * (returned), both printed under 'label'.
 */
double
measure_inserted(HannoyEnv *env, const std::vector<float> &base, const std::vector<float> &queries,
                 size_t built, size_t added, const char *label, size_t *found)
{
	const uint32_t dims = static_cast<uint32_t>(base.size() / (built + added));
	*found = rows_finding_themselves(env, base, dims, built, built + added);
	double r40 = hannoy_test::recall_at(env, HANNOY_METRIC_L2, dims, base, queries, 40);
	std::printf("%s, %zu built and %zu inserted: %zu inserted rows find themselves, "
	            "recall@10 at ef 40 %.4f\n",
	            label, built, added, *found, r40);
	return r40;
}

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
	 * Whole numbers from 0 to 255 (pixels), with a row of zeros and one of
	 * 255s among the built rows, so the build's codes have steps of 1 over
	 * that whole range and hold every inserted row exactly: each insert's
	 * search walks on codes (DESIGN.md "Insert"), which the test hook
	 * counts.  Half the rows come by inserts after the build; every one
	 * finds itself at distance 0, and the queries' neighbours are found as
	 * in a built index.  Rows with fractions walk on the vectors.
	 */
	const uint32_t     dims = 32;
	const size_t       built = 3000, added = 3000, fractional = 20;
	std::vector<float> rows = hannoy_test::common_direction(built + added + 200, dims, 21, 1);
	float              lo = *std::min_element(rows.begin(), rows.end()),
	      hi = *std::max_element(rows.begin(), rows.end());
	for (float &x : rows)
		x = std::round((x - lo) / (hi - lo) * 255.0f);
	std::fill(rows.begin(), rows.begin() + dims, 0.0f);
	std::fill(rows.begin() + dims, rows.begin() + 2 * dims, 255.0f);
	std::vector<float> base(rows.begin(), rows.begin() + (built + added) * dims);
	std::vector<float> queries(rows.begin() + (built + added) * dims, rows.end());
	HannoyMeta         meta = hannoy_test::test_meta(HANNOY_METRIC_L2, dims, 16, 64);
	TempEnvDir         dir;
	size_t             walks[2] = {0, 0}; /* on the vectors, on codes */
	HannoyEnv         *env = build_then_insert(dir.path(), meta, base, built, added, walks);
	ASSERT_NE(env, nullptr);
	HannoyError err;
	EXPECT_EQ(walks[1], added);
	EXPECT_EQ(walks[0], 0u);
	size_t found;
	double r40 = measure_inserted(env, base, queries, built, added, "pixel rows", &found);
	EXPECT_EQ(found, added);
	EXPECT_GE(r40, 0.95);
	/* a half in every element: no code holds it */
	for (size_t i = 0; i < fractional; i++)
	{
		std::vector<float> v(base.begin() + i * dims, base.begin() + (i + 1) * dims);
		for (float &x : v)
			x = std::min(x + 0.5f, 254.5f);
		ASSERT_EQ(hannoy_insert(env, built + added + i + 1, v.data(), 0, &err), HANNOY_OK)
		    << err.message;
	}
	EXPECT_EQ(walks[0], fractional);
	EXPECT_EQ(walks[1], added);
	clear_hooks();
	hannoy_env_close(env);
}

TEST(InsertRecall, ManyDimensionsSearchOnCodes)
{
	/*
	 * Rows with fractions and 256 dimensions (CODES_MIN_DIMS): no code holds
	 * them, yet each insert's search walks on the codes, which describe them
	 * closely, and ranks, chooses and prunes on them too, reading no vector
	 * (DESIGN.md "Insert"); rows the codes clamp far walk on the vectors.
	 * Inserted rows find themselves (a walk on the vectors: 1,999 of 2,000,
	 * recall 0.958; on codes, measuring the finds on the vectors: 1,997 and
	 * 0.963; on codes only: 1,996 and 0.964) and the queries' neighbours are
	 * found as in a built index.
	 */
	const uint32_t     dims = 256;
	const size_t       built = 2000, added = 2000;
	std::vector<float> rows = hannoy_test::common_direction(built + added + 100, dims, 23, 2);
	std::vector<float> base(rows.begin(), rows.begin() + (built + added) * dims);
	std::vector<float> queries(rows.begin() + (built + added) * dims, rows.end());
	HannoyMeta         meta = hannoy_test::test_meta(HANNOY_METRIC_L2, dims, 16, 64);
	TempEnvDir         dir;
	size_t             walks[2] = {0, 0}; /* on the vectors, on codes */
	HannoyEnv         *env = build_then_insert(dir.path(), meta, base, built, added, walks);
	ASSERT_NE(env, nullptr);
	clear_hooks();
	HannoyError err;
	EXPECT_EQ(walks[1], added);
	EXPECT_EQ(walks[0], 0u);
	{
		/* the inserts kept copies of the codes they read, and read no vector to copy */
		hannoy::Store        &s = *reinterpret_cast<hannoy::Store *>(env);
		hannoy::Txn           read(s.env(), true);
		hannoy::GraphState    state = s.read_state(read.get());
		hannoy::VectorCopies *vectors = s.vector_copies(read.get(), state);
		hannoy::VectorCopies *codes = s.code_copies(read.get(), state);
		ASSERT_NE(vectors, nullptr);
		ASSERT_NE(codes, nullptr);
		size_t vector_copies = 0, code_copies = 0;
		for (uint32_t id = 0; id < state.next_id; id++)
		{
			vector_copies += vectors->find(id) != nullptr;
			code_copies += codes->find(id) != nullptr;
		}
		EXPECT_EQ(vector_copies, 0u);
		EXPECT_GT(code_copies, built / 2);
	}
	size_t found;
	double r40 = measure_inserted(env, base, queries, built, added, "256 dimensions", &found);
	EXPECT_GE(found, added - added / 200);
	EXPECT_GE(r40, 0.95);
	/* rows the codes clamp far (ten times the build's values) walk on the vectors */
	count_walks(walks);
	const size_t far = 20;
	for (size_t i = 0; i < far; i++)
	{
		std::vector<float> v(base.begin() + i * dims, base.begin() + (i + 1) * dims);
		for (float &x : v)
			x *= 10.0f;
		ASSERT_EQ(hannoy_insert(env, built + added + i + 1, v.data(), 0, &err), HANNOY_OK)
		    << err.message;
	}
	clear_hooks();
	EXPECT_EQ(walks[0], far);
	EXPECT_EQ(walks[1], added);
	/*
	 * Their codes, clamped, would mislead a choice on codes: the sidecar
	 * counts them, and later inserts walk on codes but measure what they
	 * found on the vectors (which the vector copies then keep).
	 */
	hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
	auto           vector_copies = [&]
	{
		hannoy::Txn           read(s.env(), true);
		hannoy::GraphState    state = s.read_state(read.get());
		hannoy::VectorCopies *vectors = s.vector_copies(read.get(), state);
		size_t                n = 0;
		for (uint32_t id = 0; vectors != nullptr && id < state.next_id; id++)
			n += vectors->find(id) != nullptr;
		EXPECT_EQ(s.read_far_codes(read.get()), far);
		return n;
	};
	size_t before = vector_copies(); /* what the far rows' walks on the vectors kept */
	for (size_t i = 0; i < far; i++)
		ASSERT_EQ(hannoy_insert(env, built + added + far + i + 1, &queries[i * dims], 0, &err),
		          HANNOY_OK)
		    << err.message;
	EXPECT_GT(vector_copies(), before) << "rows after a far one measure their finds on vectors";
	hannoy_env_close(env);
}

} // namespace
