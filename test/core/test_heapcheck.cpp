/*
 * test_heapcheck.cpp
 *	  hannoy_stored_rows_next, the rows hannoy_verify compares with the heap:
 *	  graph rows and unindexed rows merged in TID order, each vector exactly
 *	  as stored, removed rows gone, small buffers paging correctly (also
 *	  with vectors packed several to a record).
 */
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <vector>

#include "hannoy/hannoy.h"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_config;

/* What one pass hands out: TID -> (unindexed kind, vector or empty). */
using Rows = std::map<HannoyTid, std::pair<uint8_t, std::vector<float>>>;

/* Runs a whole pass with room for 'capacity' rows and 'room' vectors per call. */
Rows
all_rows(HannoyEnv *env, uint32_t capacity, size_t room, uint32_t dims)
{
	HannoyRowPosition            pos{};
	std::vector<HannoyStoredRow> rows(capacity);
	std::vector<float>           vectors(room * dims + 1);
	Rows                         out;
	HannoyTid                    last = 0;
	HannoyError                  err;
	while (!pos.done)
	{
		uint32_t n = 0;
		size_t   vbytes = 0;
		EXPECT_EQ(hannoy_stored_rows_next(env, &pos, rows.data(), capacity, vectors.data(),
		                                  room * dims * sizeof(float), &n, &vbytes, &err),
		          HANNOY_OK)
		    << err.message;
		EXPECT_EQ(vbytes, dims * sizeof(float));
		if (n == 0 && !pos.done)
		{
			ADD_FAILURE() << "no progress with room for " << room << " vectors";
			break;
		}
		for (uint32_t i = 0; i < n; i++)
		{
			EXPECT_GT(rows[i].tid, last) << "not in TID order";
			last = rows[i].tid;
			EXPECT_FALSE(rows[i].vector_missing);
			std::vector<float> v;
			if (rows[i].unindexed_kind == 0)
				v.assign(vectors.begin() + i * dims, vectors.begin() + (i + 1) * dims);
			out[rows[i].tid] = {rows[i].unindexed_kind, v};
		}
	}
	return out;
}

TEST(StoredRows, MergedInTidOrderWithExactVectors)
{
	for (uint32_t dims : {8u, 1024u})
	{
		TempEnvDir         dir;
		HannoyEnvConfig    config = test_config();
		HannoyMeta         meta = hannoy_test::test_meta(HANNOY_METRIC_L2, dims, 8, 32);
		HannoyError        err;
		HannoyEnv         *env = nullptr;
		HannoyBuilder     *b = nullptr;
		std::vector<float> v = hannoy_test::uniform(150, dims, dims);
		Rows               expected;
		ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK);
		ASSERT_EQ(hannoy_build_begin(env, 1, &b, &err), HANNOY_OK);
		/* TIDs 10, 20, ... interleaved with NULL rows at 15, 35, ... */
		for (size_t i = 0; i < 100; i++)
		{
			HannoyTid tid = 10 * (i + 1);
			ASSERT_EQ(hannoy_build_add(b, tid, &v[i * dims], 0, &err), HANNOY_OK);
			expected[tid] = {0, std::vector<float>(&v[i * dims], &v[(i + 1) * dims])};
			if (i % 2 == 1)
			{
				ASSERT_EQ(hannoy_build_add(b, tid + 5, nullptr, 1, &err), HANNOY_OK);
				expected[tid + 5] = {1, {}};
			}
		}
		bool                done = false;
		HannoyBuildProgress p;
		while (!done)
			ASSERT_EQ(hannoy_build_step(b, 50, &p, &done, &err), HANNOY_OK);
		hannoy_build_free(b);
		/* rows inserted later, one replacing row 30's vector */
		for (size_t i = 100; i < 150; i++)
		{
			HannoyTid tid = i == 100 ? 30 : 10 * (i + 1) + 3;
			ASSERT_EQ(hannoy_insert(env, tid, &v[i * dims], 0, &err), HANNOY_OK) << err.message;
			expected[tid] = {0, std::vector<float>(&v[i * dims], &v[(i + 1) * dims])};
		}
		/* rows 40 and 65 (a NULL row) removed */
		ASSERT_EQ(hannoy_test::remove_rows(env, [](HannoyTid t) { return t == 40 || t == 65; }),
		          2u);
		expected.erase(40);
		expected.erase(65);

		EXPECT_EQ(all_rows(env, 256, 256, dims), expected) << dims;
		/* small batches and room for one vector a call give the same rows */
		EXPECT_EQ(all_rows(env, 3, 1, dims), expected) << dims;
		hannoy_env_close(env);
	}
}

} // namespace
