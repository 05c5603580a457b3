/*
 * test_replica.cpp
 *	  Replica sidecars through the C ABI (DESIGN.md "Replication and
 *	  recovery"): created by redo with a marker, rows staged and unstaged
 *	  under the applied-LSN stamp, and scans that return the staged rows in
 *	  exact distance order, unindexed rows last.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <new>
#include <vector>

#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

/*
 * Allocation failures on demand, for the tests of what crosses the C
 * boundary: while fail_allocations is set on a thread, operator new fails
 * there.  Replacing the global operator new affects the whole test binary,
 * which otherwise allocates as before (malloc and free).
 */
namespace
{
thread_local bool fail_allocations = false;
} // namespace

void *
operator new(std::size_t size)
{
	void *p = fail_allocations ? nullptr : std::malloc(size == 0 ? 1 : size);
	if (p == nullptr)
		throw std::bad_alloc();
	return p;
}

/* GCC takes free() in a replaced operator delete for a mismatch with new */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void
operator delete(void *p) noexcept
{
	std::free(p);
}

void
operator delete(void *p, std::size_t) noexcept
{
	std::free(p);
}
#pragma GCC diagnostic pop

namespace
{

using hannoy_test::Row;
using hannoy_test::scan_rows;
using hannoy_test::TempEnvDir;
using hannoy_test::test_config;
using hannoy_test::test_meta;

constexpr uint32_t DIMS = 8;

/* Stages rows[i] (vector i of 'vectors', TID tids[i]) at 'lsn'; returns whether it applied. */
bool
stage(HannoyEnv *env, uint64_t lsn, const std::vector<HannoyTid> &tids, const float *vectors)
{
	std::vector<HannoyStagedRow> rows;
	for (size_t i = 0; i < tids.size(); i++)
		rows.push_back({tids[i], HANNOY_ROW_INDEXED, vectors + i * DIMS});
	HannoyError err;
	bool        applied = false;
	EXPECT_EQ(hannoy_replica_stage(env, lsn, DIMS, rows.data(), static_cast<uint32_t>(rows.size()),
	                               &applied, &err),
	          HANNOY_OK)
	    << err.message;
	return applied;
}

/* Sorts rows as a scan returns them: by distance, then TID. */
void
sort_exact(std::vector<Row> &rows)
{
	std::sort(rows.begin(), rows.end(),
	          [](const Row &a, const Row &b)
	          { return a.distance != b.distance ? a.distance < b.distance : a.tid < b.tid; });
}

/* Checks that a scan returned exactly 'want', in its order (NaN distances as NaN). */
void
expect_rows(const std::vector<Row> &got, const std::vector<Row> &want)
{
	ASSERT_EQ(got.size(), want.size());
	for (size_t i = 0; i < want.size(); i++)
	{
		EXPECT_EQ(got[i].tid, want[i].tid) << "row " << i;
		EXPECT_EQ(got[i].isnull, want[i].isnull) << "row " << i;
		if (!std::isnan(want[i].distance))
			EXPECT_EQ(got[i].distance, want[i].distance) << "row " << i;
		else
			EXPECT_TRUE(std::isnan(got[i].distance)) << "row " << i;
	}
}

/* Opens the replica at 'path'. */
HannoyEnv *
open_replica(const char *path)
{
	HannoyEnvConfig config = test_config();
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	EXPECT_EQ(hannoy_env_open(path, &config, &env, &err), HANNOY_OK) << err.message;
	return env;
}

TEST(Replica, StagedRowsComeBackInExactOrderAndRedoIsIdempotent)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, 0);
	HannoyError     err;

	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 100, &err), HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(hannoy_replica_marked(dir.path()));
	HannoyEnv *env = open_replica(dir.path());
	ASSERT_NE(env, nullptr);

	std::vector<float>     vectors = hannoy_test::uniform(300, DIMS, 5);
	std::vector<HannoyTid> tids;
	for (HannoyTid t = 0; t < 300; t++)
		tids.push_back((t / 50 + 1) << 16 | (t % 50 + 1));
	/* a record at or below the creation's stamp is not applied */
	EXPECT_FALSE(stage(env, 100, tids, vectors.data()));
	EXPECT_TRUE(stage(env, 200, tids, vectors.data()));
	EXPECT_FALSE(stage(env, 200, tids, vectors.data()));

	/* unindexed rows, and a removal of every third row */
	HannoyStagedRow none[2] = {{HannoyTid(9) << 16 | 1, HANNOY_ROW_UNINDEXED_NULL, nullptr},
	                           {HannoyTid(9) << 16 | 2, HANNOY_ROW_UNINDEXED_NAN, nullptr}};
	bool            applied = false;
	ASSERT_EQ(hannoy_replica_stage(env, 300, 0, none, 2, &applied, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(applied);
	std::vector<HannoyTid> gone;
	for (size_t i = 0; i < tids.size(); i += 3)
		gone.push_back(tids[i]);
	ASSERT_EQ(hannoy_replica_unstage(env, 400, gone.data(), static_cast<uint32_t>(gone.size()),
	                                 &applied, &err),
	          HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(applied);
	ASSERT_EQ(hannoy_replica_unstage(env, 400, gone.data(), static_cast<uint32_t>(gone.size()),
	                                 &applied, &err),
	          HANNOY_OK);
	EXPECT_FALSE(applied);

	uint64_t staged = 0, lsn = 0;
	ASSERT_EQ(hannoy_replica_state(env, &staged, &lsn, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(staged, 300u - gone.size() + 2);
	EXPECT_EQ(lsn, 400u);

	/* the exact answer: every remaining vector by (distance, TID), then NaN, then NULL */
	std::vector<float> q = hannoy_test::uniform(1, DIMS, 77);
	std::vector<Row>   want;
	for (size_t i = 0; i < tids.size(); i++)
		if (i % 3 != 0)
			want.push_back({tids[i],
			                hannoy_distance(HANNOY_METRIC_L2, &vectors[i * DIMS], q.data(), DIMS),
			                false});
	sort_exact(want);
	want.push_back({none[1].tid, std::nan(""), false});
	want.push_back({none[0].tid, std::nan(""), true});

	HannoyScan *scan = nullptr;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_scan_start(scan, q.data(), DIMS, 10, HANNOY_ROW_UNINDEXED_NULL, &err),
	          HANNOY_OK)
	    << err.message;
	expect_rows(scan_rows(scan), want);

	/* a detached scan goes on where it was, from memory */
	ASSERT_EQ(hannoy_scan_start(scan, q.data(), DIMS, 10, HANNOY_ROW_UNINDEXED_NULL, &err),
	          HANNOY_OK);
	std::vector<Row> first = scan_rows(scan, 5);
	hannoy_scan_detach(scan);
	ASSERT_EQ(hannoy_scan_attach(scan, env, &err), HANNOY_OK) << err.message;
	std::vector<Row> rest = scan_rows(scan);
	EXPECT_EQ(first.size() + rest.size(), want.size());
	if (!rest.empty())
	{
		EXPECT_EQ(rest[0].tid, want[5].tid);
	}
	hannoy_scan_free(scan);

	/* a NULL query returns every row with a NULL distance */
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_scan_start(scan, nullptr, 0, 10, HANNOY_ROW_UNINDEXED_NULL, &err), HANNOY_OK);
	std::vector<Row> all = scan_rows(scan);
	EXPECT_EQ(all.size(), want.size());
	EXPECT_TRUE(std::all_of(all.begin(), all.end(), [](const Row &r) { return r.isnull; }));
	hannoy_scan_free(scan);

	hannoy_env_close(env);
	ASSERT_EQ(hannoy_replica_unmark(dir.path(), &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(hannoy_replica_marked(dir.path()));
}

/*
 * A replica rebuilt from its table (DESIGN.md "Rebuilding a replica from
 * the table"): a build makes its graph from the table's rows while redo
 * stages and removes rows, nothing links or adopts it meanwhile, and once
 * it ends every TID redo touched leaves the built graph, so the linker's
 * rows and the table's rows are each there once, each with its newest
 * vector.
 */
TEST(Replica, ARebuildFromTheTableYieldsToRedo)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, DIMS);
	HannoyError     err;

	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create_seeding(dir.path(), &config, &meta, &err), HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(hannoy_replica_marked(dir.path()));
	HannoyEnv *env = open_replica(dir.path());
	ASSERT_NE(env, nullptr);
	bool seeding = false;
	ASSERT_EQ(hannoy_replica_seeding(env, &seeding, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(seeding);

	/* the table: rows 0..299; redo restages 10..19 (newer vectors) and removes 20..29 */
	std::vector<float>     table = hannoy_test::uniform(300, DIMS, 8);
	std::vector<float>     newer = hannoy_test::uniform(10, DIMS, 9);
	std::vector<HannoyTid> tids;
	for (HannoyTid t = 0; t < 300; t++)
		tids.push_back((t / 20 + 1) << 16 | (t % 20 + 1));
	HannoyBuilder *builder = nullptr;
	ASSERT_EQ(hannoy_build_begin(env, 2, &builder, &err), HANNOY_OK) << err.message;
	for (size_t i = 0; i < 150; i++)
		ASSERT_EQ(hannoy_build_add(builder, tids[i], &table[i * DIMS], HANNOY_ROW_INDEXED, &err),
		          HANNOY_OK)
		    << err.message;
	/* stamp 0: the first record redo reads applies */
	EXPECT_TRUE(
	    stage(env, 10, std::vector<HannoyTid>(tids.begin() + 10, tids.begin() + 20), newer.data()));
	bool applied = false;
	ASSERT_EQ(hannoy_replica_unstage(env, 20, &tids[20], 10, &applied, &err), HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(applied);
	for (size_t i = 150; i < tids.size(); i++)
		ASSERT_EQ(hannoy_build_add(builder, tids[i], &table[i * DIMS], HANNOY_ROW_INDEXED, &err),
		          HANNOY_OK);
	/* nothing links or adopts a replica being rebuilt */
	uint64_t linked = 1, staged = 1;
	ASSERT_EQ(hannoy_replica_link(env, 50, &linked, &staged, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(linked, 0u);
	bool adopted = true;
	ASSERT_EQ(hannoy_replica_adopt(env, dir.path(), 2, 1000, &adopted, &err), HANNOY_OK)
	    << err.message;
	EXPECT_FALSE(adopted);
	EXPECT_FALSE(hannoy_replica_marked(dir.path()));
	HannoyBuildProgress progress;
	bool                done = false;
	bool                removed = false;
	while (!done)
	{
		ASSERT_EQ(hannoy_build_step(builder, 50, &progress, &done, &err), HANNOY_OK) << err.message;
		/* redo goes on between the build's write transactions: row 0 goes */
		if (!removed)
		{
			ASSERT_EQ(hannoy_replica_unstage(env, 30, &tids[0], 1, &removed, &err), HANNOY_OK);
		}
	}
	EXPECT_TRUE(removed);
	hannoy_build_free(builder);
	ASSERT_EQ(hannoy_replica_unstage(env, 40, &tids[1], 1, &applied, &err), HANNOY_OK);
	EXPECT_TRUE(applied);
	ASSERT_EQ(hannoy_replica_seed_end(env, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_replica_seeding(env, &seeding, &err), HANNOY_OK);
	EXPECT_FALSE(seeding);
	EXPECT_EQ(hannoy_replica_seed_end(env, &err), HANNOY_ERR_INVALID);
	HannoyStats stats;
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(stats.deleted, 22u); /* 0, 1, 10..19 restaged, 20..29 removed */
	staged = 1;
	for (int round = 0; round < 100 && staged > 0; round++)
		ASSERT_EQ(hannoy_replica_link(env, 50, &linked, &staged, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(staged, 0u);
	/* the linker's repair around the tombstones */
	HannoyRepair *repair = nullptr;
	ASSERT_EQ(hannoy_repair_begin(env, &repair, &err), HANNOY_OK) << err.message;
	uint64_t repaired = 0;
	for (done = false; !done;)
		ASSERT_EQ(hannoy_repair_step(repair, 50, &done, &repaired, &err), HANNOY_OK) << err.message;
	hannoy_repair_free(repair);
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
	EXPECT_EQ(stats.deleted, 0u);

	/* every row exactly once, each with the vector of its newest copy */
	std::vector<float> q = hannoy_test::uniform(1, DIMS, 78);
	std::vector<Row>   want;
	for (size_t i = 2; i < tids.size(); i++)
	{
		if (i >= 20 && i < 30)
			continue;
		const float *v = i >= 10 && i < 20 ? &newer[(i - 10) * DIMS] : &table[i * DIMS];
		want.push_back({tids[i], hannoy_distance(HANNOY_METRIC_L2, v, q.data(), DIMS), false});
	}
	sort_exact(want);
	HannoyScan *scan = nullptr;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_scan_start(scan, q.data(), DIMS, 400, HANNOY_ROW_UNINDEXED_NULL, &err),
	          HANNOY_OK)
	    << err.message;
	std::vector<Row> got = scan_rows(scan);
	hannoy_scan_free(scan);
	std::map<HannoyTid, int> seen;
	for (const Row &r : got)
		seen[r.tid]++;
	for (const Row &r : want)
		EXPECT_EQ(seen[r.tid], 1) << "TID " << (r.tid >> 16) << "," << (r.tid & 0xFFFF);
	expect_rows(got, want);
	hannoy_env_close(env);
}

/* A primary's own writes to a replica it rebuilds (LSN 0) always apply and leave the stamp. */
TEST(Replica, APrimarysWritesAreNotGatedByTheStamp)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, DIMS);
	HannoyError     err;

	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create_seeding(dir.path(), &config, &meta, &err), HANNOY_OK)
	    << err.message;
	HannoyEnv *env = open_replica(dir.path());
	ASSERT_NE(env, nullptr);
	std::vector<float>     vectors = hannoy_test::uniform(4, DIMS, 5);
	std::vector<HannoyTid> tids = {1 << 16 | 1, 1 << 16 | 2, 1 << 16 | 3, 1 << 16 | 4};
	/* redo up to LSN 500 */
	EXPECT_TRUE(stage(env, 500, {tids[0]}, &vectors[0]));
	EXPECT_FALSE(stage(env, 400, {tids[1]}, &vectors[DIMS]));
	/* after a promotion the primary's rows come in the order their backends commit */
	EXPECT_TRUE(stage(env, 0, {tids[1], tids[2]}, &vectors[DIMS]));
	EXPECT_TRUE(stage(env, 0, {tids[3]}, &vectors[3 * DIMS]));
	bool applied = false;
	ASSERT_EQ(hannoy_replica_unstage(env, 0, &tids[2], 1, &applied, &err), HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(applied);
	uint64_t staged = 0, lsn = 0;
	ASSERT_EQ(hannoy_replica_state(env, &staged, &lsn, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(staged, 3u);
	EXPECT_EQ(lsn, 500u);
	/* the removal is recorded for the rebuild's end: the staged rows stay */
	ASSERT_EQ(hannoy_replica_seed_end(env, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_replica_state(env, &staged, &lsn, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(staged, 3u);
	/* stamp 500 is within WAL replayed to 600: adopted */
	bool adopted = false;
	ASSERT_EQ(hannoy_replica_adopt(env, dir.path(), 2, 600, &adopted, &err), HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(adopted);
	hannoy_env_close(env);
}

TEST(Replica, ASidecarNotMadeByRedoTakesNoStagedRows)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, DIMS);
	HannoyEnv      *env = nullptr;
	HannoyError     err;

	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(hannoy_replica_marked(dir.path()));
	std::vector<float> v = hannoy_test::uniform(1, DIMS, 3);
	HannoyStagedRow    row{1, HANNOY_ROW_INDEXED, v.data()};
	bool               applied = true;
	EXPECT_EQ(hannoy_replica_stage(env, 10, DIMS, &row, 1, &applied, &err), HANNOY_ERR_INVALID);
	EXPECT_FALSE(applied);
	uint64_t staged = 1, lsn = 1;
	ASSERT_EQ(hannoy_replica_state(env, &staged, &lsn, &err), HANNOY_OK);
	EXPECT_EQ(staged, 0u);
	EXPECT_EQ(lsn, 0u);
	hannoy_env_close(env);
}

/*
 * A staged row is read back only as one of the three kinds, each with its
 * size: anything else is a damaged sidecar (HANNOY_ERR_CORRUPT), never a
 * row linked as something it is not.
 */
TEST(Replica, MalformedStagedRowsAreCorrupt)
{
	HannoyEnvConfig    config = test_config();
	std::vector<float> v = hannoy_test::uniform(1, DIMS, 3);
	const size_t       bytes = DIMS * sizeof(float);
	struct Bad
	{
		const char                *what;
		std::vector<unsigned char> value;
	};
	std::vector<Bad> bad;
	bad.push_back({"no kind byte", {}});
	bad.push_back({"kind 3", {3}});
	bad.push_back({"kind 255 with a vector's size", std::vector<unsigned char>(1 + bytes, 255)});
	bad.push_back({"NULL with a byte more", {HANNOY_ROW_UNINDEXED_NULL, 0}});
	bad.push_back({"NaN with a vector", std::vector<unsigned char>(1 + bytes, 0)});
	bad.back().value[0] = HANNOY_ROW_UNINDEXED_NAN;
	bad.push_back({"a vector a float short", std::vector<unsigned char>(1 + bytes - 4, 0)});
	for (const Bad &b : bad)
	{
		TempEnvDir  dir;
		HannoyMeta  meta = test_meta(HANNOY_METRIC_L2, 0);
		HannoyError err;
		meta.timeline = 0;
		ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 1, &err), HANNOY_OK);
		{
			/* one sound row first, so the dimensions are set */
			HannoyEnv *env = open_replica(dir.path());
			ASSERT_NE(env, nullptr);
			EXPECT_TRUE(stage(env, 2, {HannoyTid(1) << 16 | 1}, v.data()));
			hannoy_env_close(env);
		}
		{
			hannoy::Store              s(dir.path(), config, false, nullptr);
			hannoy::Txn                txn(s.env(), false);
			hannoy::TidKey             key(HannoyTid(1) << 16 | 2);
			std::vector<unsigned char> value = b.value;
			hannoy::put(txn.get(), s.dbi_staged, key.val(), MDB_val{value.size(), value.data()});
			txn.commit();
		}
		HannoyEnv *env = open_replica(dir.path());
		ASSERT_NE(env, nullptr);
		uint64_t     linked = 0, staged = 0;
		HannoyStatus st = HANNOY_OK;
		for (int i = 0; i < 3 && st == HANNOY_OK; i++)
			st = hannoy_replica_link(env, 20, &linked, &staged, &err);
		EXPECT_EQ(st, HANNOY_ERR_CORRUPT) << b.what;
		/* nothing of the failed batch was kept: the bad row is still staged, unlinked */
		HannoyStats stats;
		ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
		EXPECT_EQ(stats.unindexed, 0u) << b.what;
		/* a scan, which reads every staged row, is refused as well */
		HannoyScan *scan = nullptr;
		ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
		EXPECT_EQ(hannoy_scan_start(scan, v.data(), DIMS, 10, HANNOY_ROW_UNINDEXED_NULL, &err),
		          HANNOY_ERR_CORRUPT)
		    << b.what;
		hannoy_scan_free(scan);
		hannoy_env_close(env);
	}
}

/* Redo never stages a row without a vector as anything but NULL or NaN. */
TEST(Replica, StagingAnUnknownKindIsRefused)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, 0);
	HannoyError     err;
	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 1, &err), HANNOY_OK);
	HannoyEnv *env = open_replica(dir.path());
	ASSERT_NE(env, nullptr);
	for (uint8_t kind : {uint8_t(HANNOY_ROW_INDEXED), uint8_t(3)})
	{
		HannoyStagedRow row{1, kind, nullptr};
		bool            applied = true;
		EXPECT_EQ(hannoy_replica_stage(env, 10, DIMS, &row, 1, &applied, &err), HANNOY_ERR_INVALID);
		EXPECT_FALSE(applied);
	}
	uint64_t staged = 1, lsn = 0;
	ASSERT_EQ(hannoy_replica_state(env, &staged, &lsn, &err), HANNOY_OK);
	EXPECT_EQ(staged, 0u);
	EXPECT_EQ(lsn, 1u);
	hannoy_env_close(env);
}

/*
 * A replica becomes a primary's sidecar at the end of recovery: stamped
 * with the new timeline, its marker gone, its staged rows still answered
 * and linked later; one whose stamp is past the replayed WAL is refused.
 */
TEST(Replica, AdoptionStampsTheTimelineAndKeepsStagedRows)
{
	HannoyEnvConfig        config = test_config();
	HannoyError            err;
	std::vector<float>     vectors = hannoy_test::uniform(50, DIMS, 8);
	std::vector<HannoyTid> tids;
	for (HannoyTid t = 1; t <= 50; t++)
		tids.push_back(t);

	/* applied up to 200, but the server replayed only up to 150: not this history */
	{
		TempEnvDir dir;
		HannoyMeta meta = test_meta(HANNOY_METRIC_L2, 0);
		meta.timeline = 0;
		ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 100, &err), HANNOY_OK);
		HannoyEnv *env = open_replica(dir.path());
		ASSERT_TRUE(stage(env, 200, tids, vectors.data()));
		bool adopted = true;
		ASSERT_EQ(hannoy_replica_adopt(env, dir.path(), 2, 150, &adopted, &err), HANNOY_OK)
		    << err.message;
		EXPECT_FALSE(adopted);
		EXPECT_FALSE(hannoy_replica_marked(dir.path()));
		HannoyMeta now;
		ASSERT_EQ(hannoy_env_meta(env, &now, &err), HANNOY_OK);
		EXPECT_EQ(now.timeline, 0u);
		hannoy_env_close(env);
	}

	TempEnvDir dir;
	HannoyMeta meta = test_meta(HANNOY_METRIC_L2, 0, 16, 64);
	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 100, &err), HANNOY_OK);
	HannoyEnv *env = open_replica(dir.path());
	ASSERT_TRUE(stage(env, 200, tids, vectors.data()));
	bool adopted = false;
	ASSERT_EQ(hannoy_replica_adopt(env, dir.path(), 2, 200, &adopted, &err), HANNOY_OK)
	    << err.message;
	EXPECT_TRUE(adopted);
	EXPECT_FALSE(hannoy_replica_marked(dir.path()));
	EXPECT_TRUE(hannoy_replica_has_staged_hint(dir.path()));
	HannoyMeta now;
	ASSERT_EQ(hannoy_env_meta(env, &now, &err), HANNOY_OK);
	EXPECT_EQ(now.timeline, 2u);
	EXPECT_EQ(now.generation, meta.generation);
	/* again (a crash came before the marker went): adopted, nothing changes */
	adopted = false;
	ASSERT_EQ(hannoy_replica_adopt(env, dir.path(), 2, 200, &adopted, &err), HANNOY_OK);
	EXPECT_TRUE(adopted);
	/* a later timeline does not take a sidecar adopted on another one */
	ASSERT_EQ(hannoy_replica_adopt(env, dir.path(), 3, 500, &adopted, &err), HANNOY_OK);
	EXPECT_FALSE(adopted);

	/* an insert of a staged TID (its slot reused) replaces the staged row: one row per TID */
	ASSERT_EQ(hannoy_insert(env, 7, vectors.data(), 0, &err), HANNOY_OK) << err.message;
	uint64_t staged = 0, lsn = 0;
	ASSERT_EQ(hannoy_replica_state(env, &staged, &lsn, &err), HANNOY_OK);
	EXPECT_EQ(staged, 49u);
	HannoyScan *scan = nullptr;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_scan_start(scan, vectors.data(), DIMS, 10, 0, &err), HANNOY_OK);
	std::vector<Row> all = scan_rows(scan);
	EXPECT_EQ(all.size(), 50u);
	EXPECT_EQ(std::count_if(all.begin(), all.end(), [](const Row &r) { return r.tid == 7; }), 1);
	/* the rest is linked as on a standby */
	uint64_t batch;
	while (staged > 0)
		ASSERT_EQ(hannoy_replica_link(env, 20, &batch, &staged, &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(hannoy_replica_has_staged_hint(dir.path()));
	ASSERT_EQ(hannoy_scan_start(scan, vectors.data(), DIMS, 10, 0, &err), HANNOY_OK);
	all = scan_rows(scan);
	EXPECT_EQ(all.size(), 50u);
	HannoyStats stats;
	ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
	EXPECT_EQ(stats.items, 50u);
	EXPECT_EQ(stats.deleted, 0u);
	hannoy_scan_free(scan);
	hannoy_env_close(env);
}

/* Whether a sidecar is a replica is answered without an exception crossing, memory or not. */
TEST(Replica, MarkedSurvivesAnAllocationFailure)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, 0);
	HannoyError     err;
	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 1, &err), HANNOY_OK);
	ASSERT_TRUE(hannoy_replica_marked(dir.path()));
	bool marked = true;
	fail_allocations = true;
	try
	{
		marked = hannoy_replica_marked(dir.path());
		fail_allocations = false;
	}
	catch (...)
	{
		fail_allocations = false;
		ADD_FAILURE() << "an exception crossed hannoy_replica_marked";
	}
	/* not trusted when it cannot be told */
	EXPECT_FALSE(marked);
	EXPECT_TRUE(hannoy_replica_marked(dir.path()));
}

} // namespace

namespace
{

/*
 * How many of rows 0..n-1 (TID i + 1) are not among the first 10 rows of a
 * scan at 'ef' for their own vector.
 */
size_t
self_misses(HannoyEnv *env, const std::vector<float> &vectors, size_t n, uint32_t dims, uint32_t ef)
{
	HannoyScan *scan = nullptr;
	HannoyError err;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK) << err.message;
	size_t misses = 0;
	for (size_t i = 0; i < n; i++)
	{
		EXPECT_EQ(hannoy_scan_start(scan, vectors.data() + i * dims, dims, ef, 0, &err), HANNOY_OK)
		    << err.message;
		std::vector<Row> rows = scan_rows(scan, 10);
		bool             found = false;
		for (const Row &r : rows)
			found = found || r.tid == i + 1;
		misses += found ? 0 : 1;
	}
	hannoy_scan_free(scan);
	return misses;
}

} // namespace

/*
 * Staged rows linked in batches make a graph that finds each row as one
 * made by hannoy_insert does, and every row leaves the staged set.
 */
TEST(Replica, LinkedGraphFindsEveryRowAsInsertsDo)
{
	constexpr uint32_t D = 12;
	constexpr size_t   N = 700;
	std::vector<float> vectors = hannoy_test::uniform(N, D, 11);
	HannoyEnvConfig    config = test_config();
	HannoyError        err;

	TempEnvDir rdir, idir;
	HannoyMeta meta = test_meta(HANNOY_METRIC_L2, 0, 16, 64);
	meta.timeline = 0;
	ASSERT_EQ(hannoy_replica_create(rdir.path(), &config, &meta, 1, &err), HANNOY_OK);
	HannoyEnv                   *renv = open_replica(rdir.path());
	std::vector<HannoyStagedRow> rows;
	for (size_t i = 0; i < N; i++)
		rows.push_back({HannoyTid(i + 1), HANNOY_ROW_INDEXED, vectors.data() + i * D});
	bool applied;
	ASSERT_EQ(hannoy_replica_stage(renv, 2, D, rows.data(), N, &applied, &err), HANNOY_OK);
	uint64_t linked = 0, staged = 1;
	while (staged > 0)
	{
		uint64_t batch;
		ASSERT_EQ(hannoy_replica_link(renv, 20, &batch, &staged, &err), HANNOY_OK) << err.message;
		linked += batch;
	}
	EXPECT_EQ(linked, N);

	HannoyMeta imeta = test_meta(HANNOY_METRIC_L2, D, 16, 64);
	HannoyEnv *ienv = nullptr;
	ASSERT_EQ(hannoy_env_create(idir.path(), &config, &imeta, &ienv, &err), HANNOY_OK);
	for (size_t i = 0; i < N; i++)
		ASSERT_EQ(hannoy_insert(ienv, i + 1, vectors.data() + i * D, 0, &err), HANNOY_OK);

	size_t rm = self_misses(renv, vectors, N, D, 40), im = self_misses(ienv, vectors, N, D, 40);
	EXPECT_EQ(rm, 0u);
	EXPECT_LE(rm, im);
	hannoy_env_close(renv);
	hannoy_env_close(ienv);
}

/*
 * Removals replayed after rows were linked make them tombstones (never
 * returned), a repair deletes them, and rows linked before or after the
 * repair still find themselves; a staged row of a TID the graph holds
 * replaces it.
 */
TEST(Replica, RemovalsReachLinkedRows)
{
	constexpr uint32_t D = 12;
	std::vector<float> vectors = hannoy_test::uniform(900, D, 11);
	HannoyEnvConfig    config = test_config();
	HannoyError        err;
	for (int repair_first = 0; repair_first < 2; repair_first++)
	{
		TempEnvDir dir;
		HannoyMeta meta = test_meta(HANNOY_METRIC_L2, 0, 16, 64);
		meta.timeline = 0;
		ASSERT_EQ(hannoy_replica_create(dir.path(), &config, &meta, 1, &err), HANNOY_OK);
		HannoyEnv *env = open_replica(dir.path());
		ASSERT_NE(env, nullptr);
		auto stage12 = [&](uint64_t lsn, const std::vector<HannoyTid> &tids, const float *v)
		{
			std::vector<HannoyStagedRow> rows;
			for (size_t k = 0; k < tids.size(); k++)
				rows.push_back({tids[k], HANNOY_ROW_INDEXED, v + k * D});
			bool applied = false;
			EXPECT_EQ(hannoy_replica_stage(env, lsn, D, rows.data(),
			                               static_cast<uint32_t>(rows.size()), &applied, &err),
			          HANNOY_OK)
			    << err.message;
			return applied;
		};
		auto link_all = [&]
		{
			uint64_t staged = 1, batch;
			while (staged > 0)
				ASSERT_EQ(hannoy_replica_link(env, 20, &batch, &staged, &err), HANNOY_OK)
				    << err.message;
		};
		auto repair = [&]
		{
			HannoyRepair *r = nullptr;
			ASSERT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
			bool     done = false;
			uint64_t n;
			while (!done)
				ASSERT_EQ(hannoy_repair_step(r, 20, &done, &n, &err), HANNOY_OK) << err.message;
			hannoy_repair_free(r);
		};
		std::vector<HannoyTid> first, gone, later;
		for (HannoyTid t = 1; t <= 500; t++)
			first.push_back(t);
		for (HannoyTid t = 1; t <= 500; t += 3)
			gone.push_back(t);
		for (HannoyTid t = 501; t <= 900; t++)
			later.push_back(t);
		ASSERT_TRUE(stage12(2, first, vectors.data()));
		link_all();
		bool applied = false;
		ASSERT_EQ(hannoy_replica_unstage(env, 3, gone.data(), static_cast<uint32_t>(gone.size()),
		                                 &applied, &err),
		          HANNOY_OK)
		    << err.message;
		ASSERT_TRUE(applied);
		HannoyStats stats;
		ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
		EXPECT_EQ(stats.items, 500u - gone.size());
		EXPECT_EQ(stats.deleted, gone.size());
		if (repair_first)
			repair();
		ASSERT_TRUE(stage12(4, later, vectors.data() + 500 * D));
		link_all();
		if (!repair_first)
			repair();
		ASSERT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK);
		EXPECT_EQ(stats.items, 900u - gone.size());
		EXPECT_EQ(stats.deleted, 0u);

		/* every row still there finds itself; no removed row comes back */
		HannoyScan *scan = nullptr;
		ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
		size_t misses = 0, removed_seen = 0;
		for (size_t i = 0; i < 900; i++)
		{
			ASSERT_EQ(hannoy_scan_start(scan, vectors.data() + i * D, D, 40, 0, &err), HANNOY_OK);
			bool found = false;
			for (const Row &r : scan_rows(scan, 10))
			{
				found = found || r.tid == i + 1;
				removed_seen += std::count(gone.begin(), gone.end(), r.tid);
			}
			bool removed = std::count(gone.begin(), gone.end(), HannoyTid(i + 1)) > 0;
			misses += found || removed ? 0 : 1;
		}
		EXPECT_EQ(misses, 0u) << "repair first: " << repair_first;
		EXPECT_EQ(removed_seen, 0u);

		/* a row staged again under a linked row's TID replaces it: one row per TID */
		std::vector<HannoyTid> again{900};
		ASSERT_TRUE(stage12(5, again, vectors.data()));
		ASSERT_EQ(hannoy_scan_start(scan, nullptr, D, 40, 0, &err), HANNOY_OK);
		std::vector<Row> all = scan_rows(scan);
		EXPECT_EQ(all.size(), 900u - gone.size());
		EXPECT_EQ(std::count_if(all.begin(), all.end(), [](const Row &r) { return r.tid == 900; }),
		          1);
		hannoy_scan_free(scan);
		hannoy_env_close(env);
	}
}
