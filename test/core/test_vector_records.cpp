/*
 * test_vector_records.cpp
 *	  Vectors packed several to an LMDB record (storage format 2): the record
 *	  size rule, and a 1024-d index going through build, inserts, VACUUM and id
 *	  reuse with every distance exact, the verifier clean, and the pages used
 *	  well below the two 4 KiB pages a vector would take alone.
 */
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "hannoy/hannoy.h"
#include "hannoy/storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::build_all;
using hannoy_test::env_stats;
using hannoy_test::Row;
using hannoy_test::scan_rows;
using hannoy_test::TempEnvDir;
using hannoy_test::test_meta;
using hannoy_test::uniform;
using hannoy_test::vacuum;
using hannoy_test::verify;

constexpr uint32_t WIDE = 1024; /* 4,096-byte vectors: two pages each unpacked */

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
	EXPECT_EQ(hannoy::chunk_vectors_for(80), 1u);   /* 20 floats */
	EXPECT_EQ(hannoy::chunk_vectors_for(512), 1u);  /* 128 floats */
	EXPECT_EQ(hannoy::chunk_vectors_for(96), 1u);   /* 768 bits */
	EXPECT_EQ(hannoy::chunk_vectors_for(3136), 1u); /* 784 floats: one overflow page */
}

TEST(VectorRecords, LargeVectorsShareRecordsOfAtMost64KiB)
{
	for (size_t dims : {1024, 1536, 3072, 4096})
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
	/* 1024-d: 9 vectors in 10 pages instead of 18 */
	EXPECT_EQ(hannoy::chunk_vectors_for(WIDE * 4), 9u);
}

/* An unbounded scan from 'q': every row it returns, nearest first. */
std::vector<Row>
scan_all(HannoyEnv *env, const float *q)
{
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_scan_start(scan, q, WIDE, 16, 0, &err), HANNOY_OK) << err.message;
	std::vector<Row> rows = scan_rows(scan);
	hannoy_scan_free(scan);
	return rows;
}

TEST(VectorRecords, WideIndexLifecycle)
{
	TempEnvDir         dir;
	HannoyError        err;
	const size_t       built = 300, inserted = 100;
	std::vector<float> v = uniform(built + 2 * inserted, WIDE, 11);
	std::vector<float> first(v.begin(), v.begin() + built * WIDE);
	HannoyEnv *env = build_all(dir.path(), test_meta(HANNOY_METRIC_L2, WIDE, 8, 32), first, 2);
	std::set<size_t> live;
	for (size_t i = 1; i <= built; i++)
		live.insert(i);

	/* 300 vectors in 34 records of 10 pages, the other databases: well below two pages each */
	EXPECT_LT(env_stats(env).used_pages, 1.3 * built) << "vectors are not packed";
	for (size_t i = built; i < built + inserted; i++, live.insert(i))
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;

	/* every odd TID dies: a record keeps its other vectors, ids are freed */
	size_t gone = vacuum(env, [](HannoyTid tid) { return tid % 2 == 1; });
	for (auto it = live.begin(); it != live.end();)
		it = *it % 2 == 1 ? live.erase(it) : std::next(it);
	EXPECT_EQ(env_stats(env).free_ids, gone);

	/* new rows take the freed ids: their slots in existing records */
	for (size_t i = built + inserted; i < built + 2 * inserted; i++, live.insert(i))
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;
	HannoyStats st = env_stats(env);
	EXPECT_EQ(st.free_ids, gone - inserted);
	EXPECT_EQ(st.next_id, built + inserted);
	EXPECT_EQ(verify(env), std::vector<std::string>{});

	/* an unbounded scan returns exactly the live rows, each at its exact distance */
	const float *q = &v[7 * WIDE];
	auto         rows = scan_all(env, q);
	ASSERT_EQ(rows.size(), live.size());
	std::set<HannoyTid> seen;
	for (const Row &r : rows)
	{
		ASSERT_TRUE(live.count(r.tid)) << r.tid;
		seen.insert(r.tid);
		EXPECT_EQ(r.distance, hannoy_l2_distance(q, &v[(r.tid - 1) * WIDE], WIDE)) << r.tid;
	}
	EXPECT_EQ(seen.size(), live.size());
	/* the query's own row comes first */
	EXPECT_EQ(rows.front().tid, 8u);
	EXPECT_EQ(rows.front().distance, 0.0);
	hannoy_env_close(env);
}

TEST(VectorRecords, DeleteEverythingAndRefill)
{
	TempEnvDir         dir;
	HannoyError        err;
	const size_t       rows = 200;
	std::vector<float> v = uniform(2 * rows, WIDE, 12);
	std::vector<float> first(v.begin(), v.begin() + rows * WIDE);
	HannoyEnv *env = build_all(dir.path(), test_meta(HANNOY_METRIC_L2, WIDE, 8, 32, 4), first, 2);

	EXPECT_EQ(vacuum(env, [](HannoyTid) { return true; }), rows);
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	for (size_t i = rows; i < 2 * rows; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	EXPECT_EQ(scan_all(env, &v[rows * WIDE]).size(), rows);
	hannoy_env_close(env);
}

} // namespace
