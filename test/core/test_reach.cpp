/*
 * test_reach.cpp
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

/*
 * Inserts rows [from, to) of 'shape' (row i gets TID i + 1), one by one, or
 * with 'bulk' many to a write transaction (hannoy_insert_rows).
 */
void
insert_rows(HannoyEnv *env, const Shape &shape, size_t from, size_t to, bool bulk = false)
{
	HannoyError err;
	if (!bulk)
	{
		for (size_t i = from; i < to; i++)
			ASSERT_EQ(hannoy_insert(env, i + 1, &shape.vectors[i * shape.dims], 0, &err), HANNOY_OK)
			    << err.message;
		return;
	}
	std::vector<HannoyInsertRow> rows;
	for (size_t i = from; i < to; i++)
		rows.push_back(HannoyInsertRow{i + 1, &shape.vectors[i * shape.dims], 0});
	for (size_t at = 0; at < rows.size();)
	{
		uint32_t done = 0;
		ASSERT_EQ(hannoy_insert_rows(env, &rows[at], uint32_t(rows.size() - at), 5, &done, &err),
		          HANNOY_OK)
		    << err.message;
		ASSERT_GT(done, 0u);
		at += done;
	}
}

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
				/* into the built index many rows to a transaction, as COPY does */
				for (size_t from = built; from < 2500; from += 500)
				{
					insert_rows(env, shape, from, from + 500, built > 0);
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
		hannoy_test_set_search_delay(3);
		std::thread a([&] { insert_rows(env, shape, 300, 500); });
		std::thread b([&] { insert_rows(env, shape, 500, 700); });
		a.join();
		b.join();
		hannoy_test_set_search_delay(0);
		size_t u = unreachable(env);
		if (u > 0)
			std::printf("same snapshot: %s: %zu unreachable\n", shape.name, u);
		total += u;
		EXPECT_EQ(hannoy_test::env_stats(env).items, 700u);
		hannoy_env_close(env);
	}
	EXPECT_EQ(total, 0u);
}
