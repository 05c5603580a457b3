/*
 * test_util.hpp
 *	  Helpers shared by the core's unit tests: a temporary environment
 *	  directory, the environment configuration and meta record tests use,
 *	  test data (clustered and uniform vectors), building an index through
 *	  the C ABI, removing rows and repairing the graph, and running the
 *	  verifier.
 */
#ifndef HANNOY_TEST_UTIL_HPP
#define HANNOY_TEST_UTIL_HPP

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"

namespace hannoy_test
{

/* A temporary directory holding one environment, removed at the end. */
class TempEnvDir
{
  public:
	TempEnvDir()
	{
		char  tmpl[] = "/tmp/hannoy-core-test-XXXXXX";
		char *dir = mkdtemp(tmpl);
		if (dir == nullptr)
			std::abort();
		root_ = dir;
		path_ = root_ + "/env";
	}
	~TempEnvDir()
	{
		HannoyError err;
		hannoy_env_remove(path_.c_str(), &err);
		rmdir(root_.c_str());
	}
	const char *
	path() const
	{
		return path_.c_str();
	}

  private:
	std::string root_, path_;
};

/* Test configuration: a small map, never synced. */
inline HannoyEnvConfig
test_config()
{
	HannoyEnvConfig c{};
	c.max_readers = 126;
	c.map_room = uint64_t(1) << 20; /* small: the tests grow maps often */
	c.file_mode = 0600;
	c.dir_mode = 0700;
	c.durable = false;
	return c;
}

/* Meta record of a fresh index: m links above layer 0, 2m at layer 0. */
inline HannoyMeta
test_meta(HannoyMetric metric, uint32_t dims, uint32_t m = 16, uint32_t efc = 100,
          uint64_t seed = 99)
{
	HannoyMeta meta{};
	meta.format_version = HANNOY_FORMAT_VERSION;
	meta.metric = metric;
	meta.dims = dims;
	meta.options.m = m;
	meta.m0 = 2 * m;
	meta.options.ef_construction = efc;
	meta.generation = 42;
	meta.system_id = 7;
	meta.timeline = 1;
	meta.index_oid = 12345;
	meta.seed = seed;
	return meta;
}

/* Creates an empty index of 'metric' and 'dims' at 'path' (test_config); nullptr on failure. */
inline HannoyEnv *
create_empty(const char *path, HannoyMetric metric, uint32_t dims)
{
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(metric, dims);
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	EXPECT_EQ(hannoy_env_create(path, &config, &meta, &env, &err), HANNOY_OK) << err.message;
	return env;
}

/*
 * Clustered random vectors, row after row: 'centres' centres drawn
 * uniformly in [-1, 1], each row one of them plus gaussian noise.  Harder
 * than uniform noise, like real embeddings.
 */
inline std::vector<float>
clustered(size_t n, uint32_t dims, uint32_t seed, uint32_t centres = 20, float noise = 0.15f)
{
	std::mt19937                          rng(seed);
	std::normal_distribution<float>       jitter(0.0f, noise);
	std::uniform_real_distribution<float> centre(-1.0f, 1.0f);
	std::vector<float>                    points(size_t(centres) * dims);
	for (auto &c : points)
		c = centre(rng);
	std::vector<float> out(n * dims);
	for (size_t i = 0; i < n; i++)
	{
		size_t c = rng() % centres;
		for (uint32_t d = 0; d < dims; d++)
			out[i * dims + d] = points[c * dims + d] + jitter(rng);
	}
	return out;
}

/* Uniform random vectors in [-1, 1]. */
inline std::vector<float>
uniform(size_t n, uint32_t dims, uint32_t seed)
{
	std::mt19937                          rng(seed);
	std::uniform_real_distribution<float> u(-1.0f, 1.0f);
	std::vector<float>                    out(n * dims);
	for (auto &x : out)
		x = u(rng);
	return out;
}

/*
 * Creates an index at 'path' and builds it over 'rows' of 'vectors' (row i
 * gets TID i + 1) and 'null_rows' NULL rows, in slices of 'budget_ms' as
 * the shim does; returns the open environment and the number of slices.
 */
inline HannoyEnv *
build_rows(const char *path, const HannoyMeta &meta, const std::vector<float> &vectors,
           const std::vector<size_t> &rows, uint32_t threads, size_t null_rows = 0,
           uint32_t budget_ms = 20, int *slices = nullptr,
           uint32_t quantizer = HANNOY_QUANTIZER_AUTO)
{
	HannoyEnvConfig config = test_config();
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	EXPECT_EQ(hannoy_env_create(path, &config, &meta, &env, &err), HANNOY_OK) << err.message;
	HannoyBuilder *b = nullptr;
	EXPECT_EQ(hannoy_build_begin(env, threads, &b, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(hannoy_build_set_quantizer(b, quantizer, &err), HANNOY_OK) << err.message;
	for (size_t i : rows)
		EXPECT_EQ(hannoy_build_add(b, i + 1, &vectors[i * meta.dims], 0, &err), HANNOY_OK);
	for (size_t i = 0; i < null_rows; i++)
		EXPECT_EQ(hannoy_build_add(b, 1000000 + i, nullptr, 1, &err), HANNOY_OK);
	bool                done = false;
	HannoyBuildProgress progress;
	int                 steps = 0;
	while (!done)
	{
		EXPECT_EQ(hannoy_build_step(b, budget_ms, &progress, &done, &err), HANNOY_OK)
		    << err.message;
		steps++;
	}
	hannoy_build_free(b);
	if (slices != nullptr)
		*slices = steps;
	return env;
}

/* Builds an index over every row of 'vectors'; see build_rows. */
inline HannoyEnv *
build_all(const char *path, const HannoyMeta &meta, const std::vector<float> &vectors,
          uint32_t threads, size_t null_rows = 0, uint32_t budget_ms = 20, int *slices = nullptr,
          uint32_t quantizer = HANNOY_QUANTIZER_AUTO)
{
	std::vector<size_t> rows(vectors.size() / meta.dims);
	for (size_t i = 0; i < rows.size(); i++)
		rows[i] = i;
	return build_rows(path, meta, vectors, rows, threads, null_rows, budget_ms, slices, quantizer);
}

/* The counters of 'env' as last committed. */
inline HannoyStats
env_stats(HannoyEnv *env)
{
	HannoyStats stats{};
	HannoyError err;
	EXPECT_EQ(hannoy_env_stats(env, &stats, &err), HANNOY_OK) << err.message;
	return stats;
}

/* One row a scan returned. */
struct Row
{
	HannoyTid tid;
	double    distance;
	bool      isnull;
};

/* The next rows of a started scan, up to 'limit' or its end. */
inline std::vector<Row>
scan_rows(HannoyScan *scan, size_t limit = SIZE_MAX)
{
	std::vector<Row> rows;
	HannoyError      err;
	while (rows.size() < limit)
	{
		Row          r;
		bool         found = false;
		HannoyStatus st = hannoy_scan_next(scan, &r.tid, &r.distance, &r.isnull, &found, &err);
		EXPECT_EQ(st, HANNOY_OK) << err.message;
		if (st != HANNOY_OK || !found)
			break;
		rows.push_back(r);
	}
	return rows;
}

/* Every problem one verifying walk of 'env' reports. */
inline std::vector<HannoyProblem>
verify_problems(HannoyEnv *env)
{
	HannoyInspect             *w = nullptr;
	HannoyError                err;
	std::vector<HannoyProblem> out;
	EXPECT_EQ(hannoy_inspect_begin(env, true, &w, &err), HANNOY_OK) << err.message;
	if (w == nullptr)
		return out;
	bool          done = false;
	HannoyProblem p[64];
	uint32_t      n;
	while (!done)
	{
		HannoyStatus st = hannoy_inspect_step(w, 100, p, 64, &n, &done, &err);
		EXPECT_EQ(st, HANNOY_OK) << err.message;
		if (st != HANNOY_OK)
			break;
		out.insert(out.end(), p, p + n);
	}
	hannoy_inspect_free(w);
	return out;
}

/* The verifier's problems as "kind: detail" lines (empty when healthy). */
inline std::vector<std::string>
verify(HannoyEnv *env)
{
	std::vector<std::string> out;
	for (const HannoyProblem &p : verify_problems(env))
		out.push_back(std::string(hannoy_problem_name(p.kind)) + ": " + p.detail);
	return out;
}

/* Live items the verifier finds unreachable from the entry point at layer 0. */
inline size_t
unreachable(HannoyEnv *env)
{
	size_t n = 0;
	for (const HannoyProblem &p : verify_problems(env))
		n += p.kind == HANNOY_PROBLEM_UNREACHABLE;
	return n;
}

/*
 * Removes the rows whose entry (TID and item id) satisfies 'dead' (graph
 * rows become tombstones); returns how many.
 */
template <class F>
size_t
remove_entries(HannoyEnv *env, F dead)
{
	HannoyError              err;
	HannoyEntryPosition      pos{};
	HannoyEntry              batch[256];
	uint32_t                 n;
	std::vector<HannoyEntry> gone;
	do
	{
		EXPECT_EQ(hannoy_entries_next(env, &pos, batch, 256, &n, &err), HANNOY_OK);
		for (uint32_t i = 0; i < n; i++)
			if (dead(batch[i]))
				gone.push_back(batch[i]);
	} while (n > 0);
	EXPECT_EQ(hannoy_delete_entries(env, gone.data(), uint32_t(gone.size()), &err), HANNOY_OK);
	return gone.size();
}

/* Removes the rows whose TID satisfies 'dead'; returns how many. */
template <class F>
size_t
remove_rows(HannoyEnv *env, F dead)
{
	return remove_entries(env, [&](const HannoyEntry &e) { return dead(e.tid); });
}

/* Runs a whole graph repair in steps of 'budget_ms'; returns the lists rebuilt. */
inline uint64_t
repair(HannoyEnv *env, uint32_t budget_ms = 5)
{
	HannoyError   err;
	HannoyRepair *r = nullptr;
	EXPECT_EQ(hannoy_repair_begin(env, &r, &err), HANNOY_OK) << err.message;
	if (r == nullptr)
		return 0;
	bool     done = false;
	uint64_t repaired = 0;
	while (!done)
	{
		HannoyStatus st = hannoy_repair_step(r, budget_ms, &done, &repaired, &err);
		EXPECT_EQ(st, HANNOY_OK) << err.message;
		if (st != HANNOY_OK)
			break;
	}
	hannoy_repair_free(r);
	return repaired;
}

/* Removes the rows whose TID satisfies 'dead', then repairs the graph; returns how many. */
template <class F>
size_t
vacuum(HannoyEnv *env, F dead)
{
	size_t n = remove_rows(env, dead);
	repair(env);
	return n;
}

} // namespace hannoy_test

#endif /* HANNOY_TEST_UTIL_HPP */
