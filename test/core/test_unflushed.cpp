/*
 * test_unflushed.cpp
 *	  Unflushed rows (DESIGN.md "WAL before sidecar"): inserts note their
 *	  TIDs with the server's run and a WAL position; the next insert forgets
 *	  the notes of its run whose WAL is flushed; a process of a later run
 *	  lists the notes of earlier ones and settles them, removing the entries
 *	  whose heap rows a crash lost, but never an entry an insert of the same
 *	  TID made since the listing.
 */
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "hannoy/hannoy.h"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_config;

constexpr uint32_t DIMS = 4;

/* The TIDs the sidecar holds, graph and unindexed rows. */
std::set<HannoyTid>
stored_tids(HannoyEnv *env)
{
	HannoyRowPosition            pos{};
	std::vector<HannoyStoredRow> rows(64);
	std::vector<float>           vectors(64 * DIMS);
	std::set<HannoyTid>          out;
	HannoyError                  err;
	while (!pos.done)
	{
		uint32_t n = 0;
		size_t   vbytes = 0;
		EXPECT_EQ(hannoy_stored_rows_next(env, &pos, rows.data(), 64, vectors.data(),
		                                  vectors.size() * sizeof(float), &n, &vbytes, &err),
		          HANNOY_OK)
		    << err.message;
		for (uint32_t i = 0; i < n; i++)
			out.insert(rows[i].tid);
		if (n == 0)
			break;
	}
	return out;
}

/* The noted rows of runs other than 'lifetime'. */
std::vector<HannoyUnflushedRow>
foreign(HannoyEnv *env, uint64_t lifetime)
{
	std::vector<HannoyUnflushedRow> rows(100);
	uint32_t                        n = 0;
	HannoyError                     err;
	EXPECT_EQ(hannoy_env_unflushed_foreign(env, lifetime, rows.data(), 100, &n, &err), HANNOY_OK)
	    << err.message;
	rows.resize(n);
	return rows;
}

/* Inserts rows 'tids' (a vector each, or NULL for tids in 'nulls') under run 'lifetime'. */
void
insert_in_run(HannoyEnv *env, uint64_t lifetime, uint64_t lsn, uint64_t flushed,
              const std::vector<HannoyTid> &tids, const std::set<HannoyTid> &nulls = {})
{
	HannoyError err;
	ASSERT_EQ(hannoy_env_set_unflushed(env, lifetime, lsn, flushed, &err), HANNOY_OK)
	    << err.message;
	for (HannoyTid t : tids)
	{
		float v[DIMS] = {float(t), float(t % 7), 1, 2};
		ASSERT_EQ(hannoy_insert(env, t, nulls.count(t) ? nullptr : v, nulls.count(t) ? 1 : 0, &err),
		          HANNOY_OK)
		    << err.message;
	}
	ASSERT_EQ(hannoy_env_set_unflushed(env, 0, 0, 0, &err), HANNOY_OK) << err.message;
}

TEST(Unflushed, NotesAreForgottenOnceFlushedAndSettledInALaterRun)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyError     err;
	HannoyEnv      *env = hannoy_test::create_empty(dir.path(), HANNOY_METRIC_L2, DIMS);
	ASSERT_NE(env, nullptr);

	/* no note before any insert noted one; inserts without the mode note nothing */
	EXPECT_TRUE(foreign(env, 8).empty());
	float v[DIMS] = {9, 9, 9, 9};
	ASSERT_EQ(hannoy_insert(env, 100, v, 0, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(foreign(env, 8).empty());

	/* run 7 notes five rows at WAL position 100: its own run does not list them */
	insert_in_run(env, 7, 100, 0, {1, 2, 3, 4, 5});
	EXPECT_TRUE(foreign(env, 7).empty());
	std::vector<HannoyUnflushedRow> rows = foreign(env, 8);
	ASSERT_EQ(rows.size(), 5u);
	EXPECT_EQ(rows[0].tid, 1u);
	EXPECT_EQ(rows[0].lifetime, 7u);
	EXPECT_EQ(rows[0].lsn, 100u);

	/* WAL flushed past 100: the next insert of run 7 forgets them, and notes itself */
	insert_in_run(env, 7, 200, 150, {6});
	rows = foreign(env, 8);
	ASSERT_EQ(rows.size(), 1u);
	EXPECT_EQ(rows[0].tid, 6u);
	EXPECT_EQ(rows[0].lsn, 200u);

	/* a flush position of another run forgets nothing of run 7 */
	insert_in_run(env, 9, 300, 1000, {7});
	rows = foreign(env, 9);
	ASSERT_EQ(rows.size(), 1u);
	EXPECT_EQ(rows[0].tid, 6u);
	/* an insert of the same TID in run 9 replaces the note: nothing of run 7 is left */
	insert_in_run(env, 9, 310, 0, {6});
	EXPECT_TRUE(foreign(env, 9).empty());

	/* run 7 notes rows 10, 11 and 12 (no vector): run 9 settles them */
	insert_in_run(env, 7, 400, 0, {10, 11, 12}, {12});
	rows = foreign(env, 9);
	ASSERT_EQ(rows.size(), 3u);
	EXPECT_EQ(stored_tids(env).count(10), 1u);
	EXPECT_EQ(stored_tids(env).count(12), 1u);
	/* between the listing and the settling, an insert of run 9 takes TID 11 */
	insert_in_run(env, 9, 500, 0, {11});
	bool     lost[3] = {true, true, true};
	uint32_t retired = 0;
	ASSERT_EQ(hannoy_env_unflushed_settle(env, rows.data(), lost, 3, &retired, &err), HANNOY_OK)
	    << err.message;
	EXPECT_EQ(retired, 2u);
	std::set<HannoyTid> tids = stored_tids(env);
	EXPECT_EQ(tids.count(10), 0u) << "the lost graph row's entry is removed";
	EXPECT_EQ(tids.count(12), 0u) << "the lost unindexed row is removed";
	EXPECT_EQ(tids.count(11), 1u) << "the row inserted since the listing stays";
	EXPECT_EQ(tids.count(6), 1u);
	EXPECT_TRUE(foreign(env, 9).empty());

	/* a row whose heap row is still there ('lost' false) keeps its entry; its note goes */
	insert_in_run(env, 7, 600, 0, {20});
	rows = foreign(env, 9);
	ASSERT_EQ(rows.size(), 1u);
	bool kept[1] = {false};
	ASSERT_EQ(hannoy_env_unflushed_settle(env, rows.data(), kept, 1, &retired, &err), HANNOY_OK)
	    << err.message;
	EXPECT_EQ(retired, 0u);
	EXPECT_EQ(stored_tids(env).count(20), 1u);
	EXPECT_TRUE(foreign(env, 9).empty());

	/* the notes persist: another handle of the sidecar (another process) lists them */
	insert_in_run(env, 7, 700, 0, {30});
	hannoy_env_close(env);
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK) << err.message;
	rows = foreign(env, 9);
	ASSERT_EQ(rows.size(), 1u);
	EXPECT_EQ(rows[0].tid, 30u);
	hannoy_env_close(env);
}

} // namespace
