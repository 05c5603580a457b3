/*
 * test_edit.cpp
 *	  Every live node stays reachable from the entry point at layer 0: after
 *	  builds (one and two threads), after inserts into built and empty
 *	  indexes (one row or many to a transaction), after inserts whose
 *	  neighbour searches saw the same snapshot, and in every state a graph
 *	  repair commits, including repairs stopped (a crash or a cancel) after
 *	  any number of steps.  Data shapes that stress neighbour pruning: tight
 *	  clusters, exact duplicates, uniform 32-d noise, and small m.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_meta;
using hannoy_test::unreachable;
using hannoy_test::verify;

/* A data set: 'n' vectors of 'dims' dimensions, row after row. */
struct Shape
{
	const char        *name;
	uint32_t           dims;
	std::vector<float> vectors;
};

/* Few very tight clusters: pruning keeps dropping near-equal neighbours. */
Shape
tight_clusters(size_t n, uint32_t seed)
{
	return Shape{"tight clusters", 8, hannoy_test::clustered(n, 8, seed, 4, 0.002f)};
}

/* Groups of exact duplicates: every distance inside a group is zero. */
Shape
duplicates(size_t n, uint32_t seed)
{
	const uint32_t     dims = 8;
	auto               distinct = hannoy_test::uniform(n / 25 + 1, dims, seed);
	std::mt19937       rng(seed);
	std::vector<float> out(n * dims);
	for (size_t i = 0; i < n; i++)
	{
		size_t g = rng() % (n / 25 + 1);
		std::copy(&distinct[g * dims], &distinct[g * dims] + dims, &out[i * dims]);
	}
	return Shape{"duplicates", dims, out};
}

/* Uniform noise in 32 dimensions: no structure for the heuristic to use. */
Shape
random32(size_t n, uint32_t seed)
{
	return Shape{"random 32-d", 32, hannoy_test::uniform(n, 32, seed)};
}

/* The shapes every scenario runs on. */
std::vector<Shape>
shapes(size_t n, uint32_t seed)
{
	return {tight_clusters(n, seed), duplicates(n, seed), random32(n, seed)};
}

/* Small m: short lists overflow and get pruned all the time. */
HannoyMeta
small_m(uint32_t dims, uint64_t seed)
{
	return test_meta(HANNOY_METRIC_L2, dims, 4, 24, seed);
}

/* Inserts rows [from, to) of 'shape' one by one (row i gets TID i + 1), as the shim applies a
 * queue. */
void
insert_rows(HannoyEnv *env, const Shape &shape, size_t from, size_t to)
{
	HannoyError err;
	for (size_t i = from; i < to; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &shape.vectors[i * shape.dims], 0, &err), HANNOY_OK)
		    << err.message;
}

/*
 * Checks every state a repair commits (HannoyTestHooks.repair_commit): counts
 * the states with any problem the verifier reports, and the unreachable
 * nodes among them.
 */
struct CommitWatch
{
	HannoyEnv               *env = nullptr;
	size_t                   commits = 0;
	size_t                   unreachable = 0; /* summed over the checked states */
	size_t                   bad_states = 0;  /* states with a problem */
	std::vector<std::string> first_problems;  /* of the first bad state */

	static void
	check(void *arg)
	{
		CommitWatch *w = static_cast<CommitWatch *>(arg);
		auto         problems = hannoy_test::verify_problems(w->env);
		w->commits++;
		for (const HannoyProblem &p : problems)
			w->unreachable += p.kind == HANNOY_PROBLEM_UNREACHABLE;
		w->bad_states += !problems.empty();
		if (!problems.empty() && w->first_problems.empty())
			w->first_problems = verify(w->env);
	}
	void
	start(HannoyEnv *e)
	{
		HannoyTestHooks hooks{};

		env = e;
		hooks.repair_commit = &CommitWatch::check;
		hooks.repair_commit_arg = this;
		hannoy_test_set_hooks(&hooks);
	}
	~CommitWatch()
	{
		const HannoyTestHooks none{};

		hannoy_test_set_hooks(&none);
	}
};

} // namespace

TEST(Reach, AfterBuild)
{
	size_t total = 0, runs = 0;
	for (uint32_t seed = 1; seed <= 4; seed++)
		for (const Shape &shape : shapes(3000, seed))
			for (uint32_t threads : {1u, 2u})
			{
				TempEnvDir dir;
				HannoyEnv *env = hannoy_test::build_all(dir.path(), small_m(shape.dims, seed),
				                                        shape.vectors, threads);
				size_t     u = unreachable(env);
				if (u > 0)
					std::printf("build: %s, seed %u, %u threads: %zu unreachable\n", shape.name,
					            seed, threads, u);
				total += u;
				runs++;
				hannoy_env_close(env);
			}
	std::printf("build: %zu unreachable in %zu runs\n", total, runs);
	EXPECT_EQ(total, 0u);
}

TEST(Reach, AfterInserts)
{
	size_t total = 0, runs = 0;
	for (uint32_t seed = 1; seed <= 3; seed++)
		for (const Shape &shape : shapes(2500, seed))
			for (size_t built : {size_t(0), size_t(500)})
			{
				TempEnvDir          dir;
				std::vector<size_t> rows(built);
				for (size_t i = 0; i < built; i++)
					rows[i] = i;
				HannoyEnv *env = hannoy_test::build_rows(dir.path(), small_m(shape.dims, seed),
				                                         shape.vectors, rows, 1);
				size_t     u = 0;
				/* into the built (or empty) index in rounds of 500 rows */
				for (size_t from = built; from < 2500; from += 500)
				{
					insert_rows(env, shape, from, from + 500);
					u = std::max(u, unreachable(env));
				}
				if (u > 0)
					std::printf("inserts: %s, seed %u, built %zu: %zu unreachable\n", shape.name,
					            seed, built, u);
				total += u;
				runs++;
				hannoy_env_close(env);
			}
	std::printf("inserts: %zu unreachable in %zu runs\n", total, runs);
	EXPECT_EQ(total, 0u);
}

TEST(Reach, InsertsPlannedOnTheSameSnapshot)
{
	/* each insert's search sleeps: two threads' searches see the same snapshot */
	size_t total = 0;
	for (const Shape &shape : shapes(700, 5))
	{
		TempEnvDir          dir;
		std::vector<size_t> rows(300);
		for (size_t i = 0; i < rows.size(); i++)
			rows[i] = i;
		HannoyEnv *env =
		    hannoy_test::build_rows(dir.path(), small_m(shape.dims, 5), shape.vectors, rows, 1);
		HannoyTestHooks slow{};

		slow.insert_search_delay_ms = 3;
		hannoy_test_set_hooks(&slow);
		std::thread a([&] { insert_rows(env, shape, 300, 500); });
		std::thread b([&] { insert_rows(env, shape, 500, 700); });
		a.join();
		b.join();
		const HannoyTestHooks none{};

		hannoy_test_set_hooks(&none);
		size_t u = unreachable(env);
		if (u > 0)
			std::printf("same snapshot: %s: %zu unreachable\n", shape.name, u);
		total += u;
		EXPECT_EQ(hannoy_test::env_stats(env).items, 700u);
		hannoy_env_close(env);
	}
	EXPECT_EQ(total, 0u);
}

TEST(Reach, EveryStateARepairCommits)
{
	/* rounds of deletes (the entry point among them), inserts and repairs */
	size_t states = 0, bad = 0, total = 0;
	for (uint32_t seed = 1; seed <= 2; seed++)
		for (const Shape &shape : shapes(2000, seed))
		{
			TempEnvDir          dir;
			std::vector<size_t> rows(1500);
			for (size_t i = 0; i < rows.size(); i++)
				rows[i] = i;
			HannoyEnv   *env = hannoy_test::build_rows(dir.path(), small_m(shape.dims, seed),
			                                           shape.vectors, rows, 2);
			std::mt19937 rng(seed);
			for (int round = 0; round < 3; round++)
			{
				uint32_t ep = hannoy_test::env_stats(env).entry_point;
				hannoy_test::remove_entries(env, [&](const HannoyEntry &e)
				                            { return e.id == ep || rng() % 100 < 35; });
				if (round < 2)
					insert_rows(env, shape, 1500 + round * 250, 1750 + round * 250);
				CommitWatch watch;
				watch.start(env);
				hannoy_test::repair(env, 1);
				states += watch.commits;
				bad += watch.bad_states;
				total += watch.unreachable;
				EXPECT_EQ(verify(env), std::vector<std::string>()) << shape.name << " " << seed;
			}
			hannoy_env_close(env);
		}
	std::printf(
	    "repairs: %zu of %zu committed states had problems (%zu unreachable nodes in all)\n", bad,
	    states, total);
	EXPECT_EQ(bad, 0u);
}

TEST(Reach, RepairStoppedAfterAnyNumberOfSteps)
{
	/* a repair freed after k steps is what a cancel or a crash leaves */
	size_t bad = 0, stops = 0;
	for (const Shape &shape : shapes(1500, 9))
	{
		TempEnvDir dir;
		HannoyEnv *env =
		    hannoy_test::build_all(dir.path(), small_m(shape.dims, 9), shape.vectors, 1);
		uint32_t ep = hannoy_test::env_stats(env).entry_point;
		hannoy_test::remove_entries(env, [&](const HannoyEntry &e)
		                            { return e.id == ep || e.tid % 3 == 0; });
		for (uint32_t k = 1;; k++)
		{
			HannoyError   err;
			HannoyRepair *r = nullptr;
			ASSERT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
			bool     done = false;
			uint64_t repaired = 0;
			for (uint32_t step = 0; step < k && !done; step++)
				ASSERT_EQ(hannoy_repair_step(r, 1, &done, &repaired, &err), HANNOY_OK)
				    << err.message;
			hannoy_repair_free(r);
			size_t u = unreachable(env);
			stops++;
			bad += u > 0;
			EXPECT_EQ(verify(env), std::vector<std::string>())
			    << shape.name << ", " << k << " steps";
			if (u > 0)
				std::printf("stopped repair: %s, after %u steps: %zu unreachable\n", shape.name, k,
				            u);
			if (done)
				break;
		}
		/* the repair that finished left a clean index */
		EXPECT_EQ(verify(env), std::vector<std::string>()) << shape.name;
		EXPECT_EQ(hannoy_test::env_stats(env).deleted, 0u);
		hannoy_env_close(env);
	}
	std::printf("stopped repairs: %zu of %zu left unreachable nodes\n", bad, stops);
	EXPECT_EQ(bad, 0u);
}

TEST(Reach, InsertsAfterNearlyEverythingWasRemoved)
{
	/* the searches of these inserts find only tombstones (or nothing live at all) */
	for (int keep : {5, 0})
		for (const Shape &shape : shapes(1200, 11))
		{
			TempEnvDir dir;
			HannoyEnv *env =
			    hannoy_test::build_all(dir.path(), small_m(shape.dims, 11), shape.vectors, 1);
			hannoy_test::remove_rows(env, [&](HannoyTid t) { return t > HannoyTid(keep); });
			HannoyError err;
			for (size_t i = 0; i < 60; i++)
			{
				ASSERT_EQ(hannoy_insert(env, 5000 + i, &shape.vectors[i * shape.dims], 0, &err),
				          HANNOY_OK)
				    << err.message;
				ASSERT_EQ(unreachable(env), 0u)
				    << shape.name << ", " << keep << " kept, insert " << i;
			}
			CommitWatch watch;
			watch.start(env);
			hannoy_test::repair(env, 1);
			EXPECT_EQ(watch.bad_states, 0u)
			    << shape.name << ": " << ::testing::PrintToString(watch.first_problems);
			EXPECT_EQ(verify(env), std::vector<std::string>()) << shape.name;
			EXPECT_EQ(hannoy_test::env_stats(env).items, size_t(keep) + 60);
			hannoy_env_close(env);
		}
}

TEST(Reach, InsertsBetweenRepairSteps)
{
	/* another backend inserts while VACUUM repairs, between its transactions */
	for (const Shape &shape : shapes(1600, 13))
	{
		TempEnvDir          dir;
		std::vector<size_t> rows(1200);
		for (size_t i = 0; i < rows.size(); i++)
			rows[i] = i;
		HannoyEnv *env =
		    hannoy_test::build_rows(dir.path(), small_m(shape.dims, 13), shape.vectors, rows, 1);
		uint32_t ep = hannoy_test::env_stats(env).entry_point;
		hannoy_test::remove_entries(env, [&](const HannoyEntry &e)
		                            { return e.id == ep || e.tid % 5 < 2; });
		CommitWatch watch;
		watch.start(env);
		HannoyError   err;
		HannoyRepair *r = nullptr;
		ASSERT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
		bool     done = false;
		uint64_t repaired = 0;
		size_t   next = 1200, steps = 0;
		while (!done)
		{
			ASSERT_EQ(hannoy_repair_step(r, 0, &done, &repaired, &err), HANNOY_OK) << err.message;
			steps++;
			size_t to = std::min<size_t>(next + 40, 1600);
			for (size_t i = next; i < to; i++)
			{
				insert_rows(env, shape, i, i + 1);
				EXPECT_EQ(unreachable(env), 0u)
				    << shape.name << ": after step " << steps << " and the insert of row " << i;
			}
			next = to;
			EXPECT_EQ(verify(env), std::vector<std::string>())
			    << shape.name << ", after step " << steps;
		}
		hannoy_repair_free(r);
		EXPECT_EQ(watch.bad_states, 0u)
		    << shape.name << ": " << ::testing::PrintToString(watch.first_problems);
		EXPECT_EQ(verify(env), std::vector<std::string>()) << shape.name;
		EXPECT_EQ(hannoy_test::env_stats(env).deleted, 0u);
		hannoy_env_close(env);
	}
}

TEST(Reach, RepairFinishesWhenAnInsertOutranksTheNewEntryPoint)
{
	/*
	 * The entry point and every other node of the top layer are removed;
	 * then, before the repair replaces it, a row whose level is the top one
	 * comes in: the repair must make that row the entry point, and keep
	 * everything reachable from it.
	 */
	const Shape shape = random32(1500, 17);
	HannoyMeta  meta = small_m(shape.dims, 17);
	int         top = 0;
	for (uint32_t id = 0; id < 1500; id++)
		top = std::max(top, hannoy::draw_level(meta.seed, id, meta.options.m));
	HannoyTid tall = 100000;
	while (hannoy::draw_level(meta.seed, tall, meta.options.m) < top)
		tall++;
	TempEnvDir dir;
	HannoyEnv *env = hannoy_test::build_all(dir.path(), meta, shape.vectors, 1);
	ASSERT_EQ(hannoy_test::env_stats(env).max_level, top);
	hannoy_test::remove_entries(
	    env, [&](const HannoyEntry &e)
	    { return hannoy::draw_level(meta.seed, e.id, meta.options.m) >= top - 1; });
	CommitWatch watch;
	watch.start(env);
	HannoyError   err;
	HannoyRepair *r = nullptr;
	ASSERT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_insert(env, tall, &shape.vectors[0], 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(unreachable(env), 0u);
	bool     done = false;
	uint64_t repaired = 0;
	while (!done)
		ASSERT_EQ(hannoy_repair_step(r, 1, &done, &repaired, &err), HANNOY_OK) << err.message;
	hannoy_repair_free(r);
	EXPECT_EQ(watch.bad_states, 0u) << ::testing::PrintToString(watch.first_problems);
	EXPECT_EQ(verify(env), std::vector<std::string>());
	HannoyStats st = hannoy_test::env_stats(env);
	EXPECT_EQ(st.max_level, top);
	EXPECT_EQ(st.deleted, 0u);
	hannoy_env_close(env);
}
