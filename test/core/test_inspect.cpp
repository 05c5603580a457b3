/*
 * test_inspect.cpp
 *	  The inspection walk through its C ABI: a healthy index (after a build,
 *	  inserts and deletes) has no problems and a sane summary; each kind of
 *	  corruption, made directly through hannoy::Store, is reported; the walk
 *	  runs in slices, hands problems out a few at a time, and holds no
 *	  writer lock.
 */
#include <gtest/gtest.h>

#include <lmdb.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_config;

constexpr uint32_t DIMS = 6;
constexpr uint32_t M = 4;

/* Uniform random vectors. */
std::vector<float>
random_vectors(size_t n, uint32_t seed)
{
	return hannoy_test::uniform(n, DIMS, seed);
}

/*
 * Builds an index of 'n' vectors (row i gets TID i + 1) and 'null_rows'
 * NULL rows, then closes it.
 */
void
build_index(const char *path, size_t n, size_t null_rows = 0)
{
	HannoyMeta meta = hannoy_test::test_meta(HANNOY_METRIC_L2, DIMS, M, 16, 5);
	auto       vectors = random_vectors(n, 11);
	hannoy_env_close(hannoy_test::build_all(path, meta, vectors, 2, null_rows, 50));
}

/* What one complete walk returned. */
struct Walk
{
	std::vector<HannoyProblem> problems;
	HannoyInspectSummary       summary{};
	size_t                     steps = 0;
	size_t                     largest_batch = 0;
};

/* Walks an open environment to the end with the given slice and batch sizes. */
Walk
walk_env(HannoyEnv *env, bool verify, uint32_t budget_ms = 100, uint32_t capacity = 64)
{
	Walk           w;
	HannoyInspect *ins = nullptr;
	HannoyError    err;
	EXPECT_EQ(hannoy_inspect_begin(env, verify, &ins, &err), HANNOY_OK) << err.message;
	if (ins == nullptr)
		return w;
	std::vector<HannoyProblem> batch(capacity);
	bool                       done = false;
	while (!done)
	{
		uint32_t     count = 0;
		HannoyStatus st =
		    hannoy_inspect_step(ins, budget_ms, batch.data(), capacity, &count, &done, &err);
		EXPECT_EQ(st, HANNOY_OK) << err.message;
		if (st != HANNOY_OK)
			break;
		w.problems.insert(w.problems.end(), batch.begin(), batch.begin() + count);
		w.largest_batch = std::max<size_t>(w.largest_batch, count);
		w.steps++;
	}
	EXPECT_EQ(hannoy_inspect_summary(ins, &w.summary, &err), HANNOY_OK);
	hannoy_inspect_free(ins);
	return w;
}

/* Opens the environment at 'path', walks it, closes it. */
Walk
walk(const char *path, bool verify = true, uint32_t budget_ms = 100, uint32_t capacity = 64)
{
	HannoyEnvConfig config = test_config();
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	EXPECT_EQ(hannoy_env_open(path, &config, &env, &err), HANNOY_OK) << err.message;
	Walk w = walk_env(env, verify, budget_ms, capacity);
	hannoy_env_close(env);
	return w;
}

/* Prints problems for a failing assertion. */
std::string
describe(const std::vector<HannoyProblem> &problems)
{
	std::string s;
	for (const auto &p : problems)
		s += std::string(hannoy_problem_name(p.kind)) + " [" + std::to_string(p.item) +
		     "]: " + p.detail + "\n";
	return s;
}

/* True when a problem of 'kind' about 'item' was reported. */
bool
has_problem(const Walk &w, HannoyProblemKind kind, int64_t item)
{
	return std::any_of(w.problems.begin(), w.problems.end(),
	                   [&](const HannoyProblem &p) { return p.kind == kind && p.item == item; });
}

/* Changes the sidecar at 'path' in one write transaction through hannoy::Store. */
void
corrupt(const char *path, const std::function<void(hannoy::Store &, MDB_txn *)> &change)
{
	HannoyEnvConfig config = test_config();
	hannoy::Store   store(path, config, false, nullptr);
	hannoy::Txn     txn(store.env(), false);
	change(store, txn.get());
	txn.commit();
}

/* Highest layer with a neighbour list of 'id', -1 when none. */
int
top_layer(hannoy::Store &s, MDB_txn *txn, uint32_t id)
{
	int top = -1;
	for (int layer = 0; layer <= hannoy::MAX_LEVEL; layer++)
	{
		hannoy::LinkKey key(id, layer);
		MDB_val         data;
		if (hannoy::get(txn, s.dbi_links, key.val(), data))
			top = layer;
	}
	return top;
}

/* The first node, other than the entry point, whose top layer is 'layer'. */
uint32_t
node_at(hannoy::Store &s, MDB_txn *txn, int layer)
{
	hannoy::GraphState state = s.read_state(txn);
	for (uint32_t id = 0; id < state.next_id; id++)
		if (id != state.entry_point && top_layer(s, txn, id) == layer)
			return id;
	ADD_FAILURE() << "no node with top layer " << layer;
	return 0;
}

/* A fixture with a freshly built index of 400 items and 3 NULL rows. */
class Inspect : public ::testing::Test
{
  protected:
	void
	SetUp() override
	{
		build_index(dir.path(), 400, 3);
	}
	TempEnvDir dir;
};

} // namespace

TEST_F(Inspect, HealthyIndexHasNoProblemsAndASaneSummary)
{
	Walk w = walk(dir.path());
	EXPECT_TRUE(w.problems.empty()) << describe(w.problems);
	const HannoyInspectSummary &s = w.summary;
	EXPECT_EQ(s.stats.items, 400u);
	EXPECT_EQ(s.stats.unindexed, 3u);
	EXPECT_EQ(s.stats.deleted, 0u);
	EXPECT_EQ(s.stats.next_id, 400u);
	ASSERT_GE(s.stats.max_level, 1);
	EXPECT_EQ(s.layers, uint32_t(s.stats.max_level + 1));
	EXPECT_EQ(s.lists[0], 400u);
	for (uint32_t layer = 1; layer < s.layers; layer++)
	{
		EXPECT_LE(s.lists[layer], s.lists[layer - 1]);
		EXPECT_LE(s.edges[layer], s.lists[layer] * M);
	}
	EXPECT_LE(s.edges[0], s.lists[0] * 2 * M);
	EXPECT_GE(s.edges[0], s.lists[0]); /* every node has a neighbour at layer 0 */
	EXPECT_GT(s.stats.used_pages, 1u);
	EXPECT_GT(s.stats.file_bytes, 0u);

	/* statistics alone agree with the checking walk */
	Walk stats = walk(dir.path(), false);
	EXPECT_TRUE(stats.problems.empty());
	EXPECT_EQ(stats.summary.layers, s.layers);
	for (uint32_t layer = 0; layer < HANNOY_MAX_LAYERS; layer++)
	{
		EXPECT_EQ(stats.summary.lists[layer], s.lists[layer]);
		EXPECT_EQ(stats.summary.edges[layer], s.edges[layer]);
	}
}

TEST_F(Inspect, TombstonesAndInsertsStayHealthy)
{
	HannoyEnvConfig config = test_config();
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK);
	/* delete every third row (a NULL row too), then insert some more */
	std::vector<HannoyEntry> dead;
	for (uint32_t id = 0; id < 400; id += 3)
		dead.push_back(HannoyEntry{HannoyTid(id + 1), id});
	dead.push_back(HannoyEntry{1000000, UINT32_MAX});
	ASSERT_EQ(hannoy_delete_entries(env, dead.data(), uint32_t(dead.size()), &err), HANNOY_OK);
	auto more = random_vectors(50, 12);
	for (size_t i = 0; i < 50; i++)
		ASSERT_EQ(hannoy_insert(env, 5000 + i, &more[i * DIMS], 0, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_insert(env, 6000, nullptr, 2, &err), HANNOY_OK);

	Walk w = walk_env(env, true);
	EXPECT_TRUE(w.problems.empty()) << describe(w.problems);
	EXPECT_EQ(w.summary.stats.items, 400u - 134u + 50u);
	EXPECT_EQ(w.summary.stats.deleted, 134u);
	EXPECT_EQ(w.summary.stats.unindexed, 3u);
	EXPECT_EQ(w.summary.stats.next_id, 450u);
	EXPECT_EQ(w.summary.lists[0], 450u);
	hannoy_env_close(env);
}

TEST_F(Inspect, WalkRunsInSlicesAndHoldsNoWriterLock)
{
	HannoyEnvConfig config = test_config();
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK);
	HannoyInspect *ins = nullptr;
	ASSERT_EQ(hannoy_inspect_begin(env, true, &ins, &err), HANNOY_OK);
	HannoyProblem problem;
	uint32_t      count;
	bool          done = false;
	/* a zero budget stops after a few entries: the walk is far from over */
	ASSERT_EQ(hannoy_inspect_step(ins, 0, &problem, 1, &count, &done, &err), HANNOY_OK);
	EXPECT_FALSE(done);
	/* meanwhile a writer commits: the walk holds only a read transaction */
	auto v = random_vectors(1, 13);
	ASSERT_EQ(hannoy_insert(env, 7777, v.data(), 0, &err), HANNOY_OK) << err.message;
	size_t steps = 1;
	while (!done)
	{
		ASSERT_EQ(hannoy_inspect_step(ins, 0, &problem, 1, &count, &done, &err), HANNOY_OK);
		EXPECT_EQ(count, 0u) << problem.detail;
		steps++;
	}
	EXPECT_GT(steps, 10u);
	/* the walk saw one snapshot: the one from before the insert */
	HannoyInspectSummary s;
	ASSERT_EQ(hannoy_inspect_summary(ins, &s, &err), HANNOY_OK);
	EXPECT_EQ(s.stats.items, 400u);
	EXPECT_EQ(s.lists[0], 400u);
	hannoy_inspect_free(ins);
	Walk after = walk_env(env, true);
	EXPECT_TRUE(after.problems.empty()) << describe(after.problems);
	EXPECT_EQ(after.summary.stats.items, 401u);
	hannoy_env_close(env);
}

TEST_F(Inspect, RemovedLinkListIsAMissingLayer)
{
	uint32_t x = 0, y = 0;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        /* a node's only list, and the layer-0 list of a node with more layers */
		        x = node_at(s, txn, 0);
		        y = node_at(s, txn, 1);
		        hannoy::LinkKey kx(x, 0), ky(y, 0);
		        ASSERT_TRUE(hannoy::del(txn, s.dbi_links, kx.val()));
		        ASSERT_TRUE(hannoy::del(txn, s.dbi_links, ky.val()));
	        });
	Walk w = walk(dir.path());
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_MISSING_LAYER, x)) << describe(w.problems);
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_MISSING_LAYER, y)) << describe(w.problems);
	/* and whoever links to x at layer 0 links to a node without that layer */
	bool linked =
	    std::any_of(w.problems.begin(), w.problems.end(),
	                [&](const HannoyProblem &p)
	                {
		                return p.kind == HANNOY_PROBLEM_MISSING_LAYER && p.item != x &&
		                       std::string(p.detail).find("to item " + std::to_string(x) +
		                                                  " at layer 0") != std::string::npos;
	                });
	EXPECT_TRUE(linked) << describe(w.problems);
}

TEST_F(Inspect, DanglingLinksAndOrphanListsAreReported)
{
	uint32_t x = 0, y = 0;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        x = node_at(s, txn, 0);
		        std::vector<uint32_t> list;
		        s.links(txn, x, 0, list);
		        list.pop_back();
		        list.push_back(400 + 5); /* beyond next_id */
		        s.put_links(txn, x, 0, list);
		        /* a vector removed: its TID, its lists and every link to it now dangle */
		        y = node_at(s, txn, 1);
		        hannoy::VectorKey ky(y, 0);
		        ASSERT_TRUE(hannoy::del(txn, s.dbi_vectors, ky.val()));
	        });
	Walk w = walk(dir.path());
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_DANGLING_LINK, x)) << describe(w.problems);
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_ORPHAN_LINKS, y)) << describe(w.problems);
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_TID_MAP, y)) << describe(w.problems);
	size_t dangling_to_y =
	    std::count_if(w.problems.begin(), w.problems.end(),
	                  [&](const HannoyProblem &p)
	                  {
		                  return p.kind == HANNOY_PROBLEM_DANGLING_LINK &&
		                         std::string(p.detail).find("to item " + std::to_string(y) + " ") !=
		                             std::string::npos;
	                  });
	EXPECT_GE(dangling_to_y, 1u) << describe(w.problems);
}

TEST_F(Inspect, BrokenTidMapIsReported)
{
	uint32_t moved = 10, lost = 20;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        /* item 10 now claims a TID nobody maps back; item 20 loses its TID */
		        hannoy::IdKey  k10(moved), k20(lost);
		        hannoy::TidKey t(999999);
		        hannoy::put(txn, s.dbi_tids, k10.val(), t.val());
		        ASSERT_TRUE(hannoy::del(txn, s.dbi_tids, k20.val()));
	        });
	Walk w = walk(dir.path());
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_TID_MAP, moved)) << describe(w.problems);
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_TID_MAP, lost)) << describe(w.problems);
	/* one live item fewer than the state record counts */
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_COUNTER, -1)) << describe(w.problems);
	/* item 20 has neither TID nor tombstone; TID (0,21) maps to an item without TID */
	size_t about_lost = std::count_if(
	    w.problems.begin(), w.problems.end(),
	    [&](const HannoyProblem &p) { return p.kind == HANNOY_PROBLEM_TID_MAP && p.item == lost; });
	EXPECT_EQ(about_lost, 2u) << describe(w.problems);
}

TEST_F(Inspect, OverfullListAndSelfLinkAreReported)
{
	uint32_t x = 0, y = 0;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        x = node_at(s, txn, 0);
		        std::vector<uint32_t> list;
		        for (uint32_t id = 0; list.size() < 2 * M + 1; id++)
			        if (id != x)
				        list.push_back(id);
		        s.put_links(txn, x, 0, list);
		        y = x + 1;
		        s.links(txn, y, 0, list);
		        list.push_back(y);
		        s.put_links(txn, y, 0, list);
	        });
	Walk w = walk(dir.path());
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_DEGREE, x)) << describe(w.problems);
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_SELF_LINK, y)) << describe(w.problems);
}

TEST_F(Inspect, UnreachableItemIsReported)
{
	uint32_t x = 0;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        /* nobody links to x at layer 0 any more */
		        x = node_at(s, txn, 0);
		        hannoy::GraphState    state = s.read_state(txn);
		        std::vector<uint32_t> list;
		        for (uint32_t id = 0; id < state.next_id; id++)
		        {
			        s.links(txn, id, 0, list);
			        auto it = std::find(list.begin(), list.end(), x);
			        if (it == list.end())
				        continue;
			        list.erase(it);
			        s.put_links(txn, id, 0, list);
		        }
	        });
	Walk w = walk(dir.path());
	ASSERT_EQ(w.problems.size(), 1u) << describe(w.problems);
	EXPECT_EQ(w.problems[0].kind, HANNOY_PROBLEM_UNREACHABLE);
	EXPECT_EQ(w.problems[0].item, int64_t(x));
	EXPECT_STREQ(hannoy_problem_name(w.problems[0].kind), "unreachable");
}

TEST_F(Inspect, StateRecordIsChecked)
{
	uint32_t low = 0, top = 0;
	int      max_level = 0;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        low = node_at(s, txn, 0);
		        hannoy::GraphState state = s.read_state(txn);
		        top = state.entry_point;
		        max_level = state.max_level;
		        state.entry_point = low; /* not on the top layer */
		        state.deleted = 2;
		        state.unindexed = 9;
		        s.write_state(txn, state);
	        });
	Walk w = walk(dir.path());
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_ENTRY_POINT, low)) << describe(w.problems);
	size_t counters =
	    std::count_if(w.problems.begin(), w.problems.end(),
	                  [](const HannoyProblem &p) { return p.kind == HANNOY_PROBLEM_COUNTER; });
	EXPECT_EQ(counters, 2u) << describe(w.problems);
	EXPECT_EQ(w.problems.size(), 3u) << describe(w.problems);

	/* the right entry point, but a max_level below its top layer */
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        hannoy::GraphState state = s.read_state(txn);
		        state.entry_point = top;
		        state.max_level = max_level - 1;
		        state.deleted = 0;
		        state.unindexed = 3;
		        s.write_state(txn, state);
	        });
	w = walk(dir.path());
	ASSERT_EQ(w.problems.size(), 2u) << describe(w.problems);
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_ENTRY_POINT, top)) << describe(w.problems);
	EXPECT_NE(std::string(w.problems[1].detail).find("above max_level"), std::string::npos)
	    << describe(w.problems);
}

TEST_F(Inspect, MalformedListIsReportedAndWalkedPast)
{
	uint32_t x = 0;
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        x = node_at(s, txn, 0);
		        hannoy::LinkKey key(x, 0);
		        char            junk[] = "not a roaring bitmap";
		        hannoy::put(txn, s.dbi_links, key.val(), MDB_val{sizeof(junk), junk});
	        });
	Walk w = walk(dir.path());
	EXPECT_TRUE(has_problem(w, HANNOY_PROBLEM_MALFORMED, x)) << describe(w.problems);
	/* statistics skip the list rather than fail */
	Walk stats = walk(dir.path(), false);
	EXPECT_EQ(stats.summary.lists[0], 399u);
}

TEST_F(Inspect, ProblemsComeOutAFewAtATime)
{
	corrupt(dir.path(),
	        [&](hannoy::Store &s, MDB_txn *txn)
	        {
		        /* every layer-0 list gets a link beyond next_id: 400 problems */
		        std::vector<uint32_t> list;
		        for (uint32_t id = 0; id < 400; id++)
		        {
			        s.links(txn, id, 0, list);
			        list.push_back(1000 + id);
			        s.put_links(txn, id, 0, list);
		        }
	        });
	Walk   all = walk(dir.path(), true, 100, 1000);
	Walk   few = walk(dir.path(), true, 100, 3);
	size_t dangling = std::count_if(all.problems.begin(), all.problems.end(),
	                                [](const HannoyProblem &p)
	                                { return p.kind == HANNOY_PROBLEM_DANGLING_LINK; });
	EXPECT_EQ(dangling, 400u) << describe(all.problems);
	EXPECT_EQ(few.problems.size(), all.problems.size());
	EXPECT_LE(few.largest_batch, 3u);
	EXPECT_GE(few.steps, all.problems.size() / 3);
	for (size_t i = 0; i < std::min(all.problems.size(), few.problems.size()); i++)
	{
		EXPECT_EQ(all.problems[i].kind, few.problems[i].kind);
		EXPECT_EQ(all.problems[i].item, few.problems[i].item);
		EXPECT_STREQ(all.problems[i].detail, few.problems[i].detail);
	}
}

TEST(InspectEmpty, EmptyIndexIsHealthy)
{
	TempEnvDir dir;
	build_index(dir.path(), 0, 2);
	Walk w = walk(dir.path());
	EXPECT_TRUE(w.problems.empty()) << describe(w.problems);
	EXPECT_EQ(w.summary.layers, 0u);
	EXPECT_EQ(w.summary.stats.max_level, -1);
	EXPECT_EQ(w.summary.stats.unindexed, 2u);
}
