/*
 * test_vector_records.cpp
 *	  Vectors packed several to an LMDB record (storage format 2): the record
 *	  size rule, and a 784-d index going through build, inserts, VACUUM and id
 *	  reuse with every distance exact, the verifier clean, and the pages used
 *	  well below one 4 KiB page per vector.
 */
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "hannoy/hannoy.h"
#include "hannoy/storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_config;

constexpr uint32_t WIDE = 784; /* Fashion-MNIST: 3,136-byte vectors */

/* Pages one vector of 'bytes' bytes costs when records hold chunk_vectors_for(bytes). */
double
pages_per_vector(size_t bytes)
{
	uint32_t k = hannoy::chunk_vectors_for(bytes);
	size_t   record = k == 1 ? bytes : hannoy::CHUNK_HEADER + k * bytes;
	return double((16 + record + 4095) / 4096) / k;
}

TEST(VectorRecords, SmallVectorsKeepARecordEach)
{
	EXPECT_EQ(hannoy::chunk_vectors_for(0), 1u);
	EXPECT_EQ(hannoy::chunk_vectors_for(80), 1u);  /* 20 floats */
	EXPECT_EQ(hannoy::chunk_vectors_for(512), 1u); /* 128 floats */
	EXPECT_EQ(hannoy::chunk_vectors_for(96), 1u);  /* 768 bits */
}

TEST(VectorRecords, LargeVectorsShareRecordsOfAtMost64KiB)
{
	for (size_t dims : {300, 384, 784, 960, 1024, 1536, 3072, 4096})
	{
		size_t   bytes = dims * 4;
		uint32_t k = hannoy::chunk_vectors_for(bytes);
		ASSERT_GE(k, 2u) << dims;
		ASSERT_LE(k, 32u) << dims;
		EXPECT_LE(hannoy::CHUNK_HEADER + k * bytes, std::max<size_t>(64 * 1024, 2 * bytes + 8))
		    << dims;
		/* better than a record per vector, and within 15% of the ideal */
		double ideal = bytes / 4096.0;
		EXPECT_LT(pages_per_vector(bytes), double((16 + bytes + 4095) / 4096)) << dims;
		EXPECT_LE(pages_per_vector(bytes), std::max(1.0, ideal) * 1.15) << dims;
	}
	/* 784-d: 5 vectors in 4 pages instead of 5 pages */
	EXPECT_EQ(hannoy::chunk_vectors_for(WIDE * 4), 5u);
}

/* Uniform random wide vectors. */
std::vector<float>
wide_vectors(size_t n, uint32_t seed)
{
	std::mt19937                          rng(seed);
	std::uniform_real_distribution<float> u(0.0f, 1.0f);
	std::vector<float>                    out(n * WIDE);
	for (auto &x : out)
		x = u(rng);
	return out;
}

/* Every live TID with its distance to 'q', as an unbounded scan returns them. */
std::vector<std::pair<HannoyTid, double>>
scan_all(HannoyEnv *env, const float *q)
{
	HannoyError                               err;
	HannoyScan                               *scan = nullptr;
	std::vector<std::pair<HannoyTid, double>> out;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_scan_start(scan, q, WIDE, 16, 0, &err), HANNOY_OK) << err.message;
	for (;;)
	{
		HannoyTid tid;
		double    d;
		bool      isnull, found;
		EXPECT_EQ(hannoy_scan_next(scan, &tid, &d, &isnull, &found, &err), HANNOY_OK);
		if (!found)
			break;
		out.emplace_back(tid, d);
	}
	hannoy_scan_free(scan);
	return out;
}

/* Problems the verifier reports. */
size_t
problems(HannoyEnv *env)
{
	HannoyInspect *w = nullptr;
	HannoyError    err;
	size_t         count = 0;
	EXPECT_EQ(hannoy_inspect_begin(env, true, &w, &err), HANNOY_OK);
	bool          done = false;
	HannoyProblem p[16];
	uint32_t      n;
	while (!done)
	{
		EXPECT_EQ(hannoy_inspect_step(w, 50, p, 16, &n, &done, &err), HANNOY_OK);
		for (uint32_t i = 0; i < n; i++)
			ADD_FAILURE() << hannoy_problem_name(p[i].kind) << ": " << p[i].detail;
		count += n;
	}
	hannoy_inspect_free(w);
	return count;
}

TEST(VectorRecords, WideIndexLifecycle)
{
	TempEnvDir         dir;
	HannoyEnvConfig    config = test_config();
	HannoyMeta         meta{};
	HannoyError        err;
	HannoyEnv         *env = nullptr;
	HannoyBuilder     *b = nullptr;
	const size_t       built = 300, inserted = 100;
	std::vector<float> v = wide_vectors(built + 2 * inserted, 11);
	std::set<size_t>   live;

	meta.format_version = HANNOY_FORMAT_VERSION;
	meta.metric = HANNOY_METRIC_L2;
	meta.dims = WIDE;
	meta.m = 8;
	meta.m0 = 16;
	meta.ef_construction = 32;
	meta.generation = 1;
	meta.seed = 3;
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_build_begin(env, 2, &b, &err), HANNOY_OK);
	for (size_t i = 0; i < built; i++, live.insert(i))
		ASSERT_EQ(hannoy_build_add(b, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK);
	bool                done = false;
	HannoyBuildProgress p;
	while (!done)
		ASSERT_EQ(hannoy_build_step(b, 50, &p, &done, &err), HANNOY_OK) << err.message;
	hannoy_build_free(b);
	HannoyStats st;
	ASSERT_EQ(hannoy_env_stats(env, &st, &err), HANNOY_OK);
	/* 300 vectors in 60 records of 4 pages, the other databases: below a page per vector */
	EXPECT_LT(st.used_pages, built) << "vectors are not packed";
	for (size_t i = built; i < built + inserted; i++, live.insert(i))
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;

	/* every odd TID dies: a record keeps its other vectors, ids are freed */
	std::vector<HannoyEntry> gone;
	HannoyEntryPosition      pos{};
	HannoyEntry              batch[128];
	uint32_t                 n;
	do
	{
		ASSERT_EQ(hannoy_entries_next(env, &pos, batch, 128, &n, &err), HANNOY_OK);
		for (uint32_t i = 0; i < n; i++)
			if (batch[i].tid % 2 == 1)
			{
				gone.push_back(batch[i]);
				live.erase(batch[i].tid);
			}
	} while (n > 0);
	ASSERT_EQ(hannoy_delete_entries(env, gone.data(), uint32_t(gone.size()), &err), HANNOY_OK);
	HannoyRepair *r = nullptr;
	ASSERT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
	uint64_t repaired = 0;
	done = false;
	while (!done)
		ASSERT_EQ(hannoy_repair_step(r, 20, &done, &repaired, &err), HANNOY_OK) << err.message;
	hannoy_repair_free(r);
	ASSERT_EQ(hannoy_env_stats(env, &st, &err), HANNOY_OK);
	EXPECT_EQ(st.free_ids, gone.size());

	/* new rows take the freed ids: their slots in existing records */
	for (size_t i = built + inserted; i < built + 2 * inserted; i++, live.insert(i))
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_env_stats(env, &st, &err), HANNOY_OK);
	EXPECT_EQ(st.free_ids, gone.size() - inserted);
	EXPECT_EQ(st.next_id, built + inserted);
	EXPECT_EQ(problems(env), 0u);

	/* an unbounded scan returns exactly the live rows, each at its exact distance */
	const float *q = &v[7 * WIDE];
	auto         rows = scan_all(env, q);
	ASSERT_EQ(rows.size(), live.size());
	std::set<HannoyTid> seen;
	for (auto &[tid, d] : rows)
	{
		ASSERT_TRUE(live.count(tid)) << tid;
		seen.insert(tid);
		EXPECT_EQ(d, hannoy_l2_distance(q, &v[(tid - 1) * WIDE], WIDE)) << tid;
	}
	EXPECT_EQ(seen.size(), live.size());
	/* the query's own row comes first */
	EXPECT_EQ(rows.front().first, 8u);
	EXPECT_EQ(rows.front().second, 0.0);
	hannoy_env_close(env);
}

TEST(VectorRecords, DeleteEverythingAndRefill)
{
	TempEnvDir         dir;
	HannoyEnvConfig    config = test_config();
	HannoyMeta         meta{};
	HannoyError        err;
	HannoyEnv         *env = nullptr;
	HannoyBuilder     *b = nullptr;
	const size_t       rows = 200;
	std::vector<float> v = wide_vectors(2 * rows, 12);

	meta.format_version = HANNOY_FORMAT_VERSION;
	meta.metric = HANNOY_METRIC_L2;
	meta.dims = WIDE;
	meta.m = 8;
	meta.m0 = 16;
	meta.ef_construction = 32;
	meta.generation = 1;
	meta.seed = 4;
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_build_begin(env, 2, &b, &err), HANNOY_OK);
	for (size_t i = 0; i < rows; i++)
		ASSERT_EQ(hannoy_build_add(b, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK);
	bool                done = false;
	HannoyBuildProgress p;
	while (!done)
		ASSERT_EQ(hannoy_build_step(b, 50, &p, &done, &err), HANNOY_OK) << err.message;
	hannoy_build_free(b);

	std::vector<HannoyEntry> gone;
	HannoyEntryPosition      pos{};
	HannoyEntry              batch[128];
	uint32_t                 n;
	do
	{
		ASSERT_EQ(hannoy_entries_next(env, &pos, batch, 128, &n, &err), HANNOY_OK);
		gone.insert(gone.end(), batch, batch + n);
	} while (n > 0);
	ASSERT_EQ(gone.size(), rows);
	ASSERT_EQ(hannoy_delete_entries(env, gone.data(), uint32_t(gone.size()), &err), HANNOY_OK);
	HannoyRepair *r = nullptr;
	ASSERT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
	uint64_t repaired = 0;
	done = false;
	while (!done)
		ASSERT_EQ(hannoy_repair_step(r, 20, &done, &repaired, &err), HANNOY_OK) << err.message;
	hannoy_repair_free(r);
	EXPECT_EQ(problems(env), 0u);
	for (size_t i = rows; i < 2 * rows; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(problems(env), 0u);
	auto all = scan_all(env, &v[rows * WIDE]);
	EXPECT_EQ(all.size(), rows);
	hannoy_env_close(env);
}

} // namespace
