/*
 * scan_bench.cpp
 *	  Times the core's build and scans through the C ABI, without PostgreSQL,
 *	  so the search path can be profiled on its own (perf record, callgrind).
 *
 *	  scan_bench <dir> [ef ...]
 *	  reads Fashion-MNIST from Debian's dataset-fashion-mnist, builds an index
 *	  in <dir> (m = 16, ef_construction = $EFC or 200, $THREADS or 2 build threads,
 *	  seed 42: with THREADS=1 the same build every time) unless one is there,
 *	  then runs the first 1,000 test images as queries for 10 rows at each ef
 *	  and prints recall@10 (exact top 10 by brute force) and queries/second
 *	  (thread CPU time, so other work on the machine counts less).
 *
 *	  Build (after make, which compiles the core objects):
 *	    g++ -std=c++17 -O3 -g -Iinclude -o build/scan_bench \
 *	        bench/core/scan_bench.cpp src/core/*.o -llmdb -lroaring -lpthread
 */
#include <sys/stat.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"

namespace
{

/* Reads an IDX image file (gzip) as float vectors; returns the dimension count. */
uint32_t
read_images(const char *path, size_t limit, std::vector<float> &out)
{
	std::string cmd = std::string("gzip -dc ") + path;
	FILE       *f = popen(cmd.c_str(), "r");
	if (f == nullptr)
		std::exit(1);
	unsigned char h[16];
	if (fread(h, 1, 16, f) != 16)
		std::exit(1);
	auto be = [&](int o)
	{ return (uint32_t(h[o]) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3]; };
	size_t               n = std::min<size_t>(be(4), limit);
	uint32_t             dims = be(8) * be(12);
	std::vector<uint8_t> px(n * dims);
	if (fread(px.data(), 1, px.size(), f) != px.size())
		std::exit(1);
	pclose(f);
	out.assign(px.begin(), px.end());
	return dims;
}

/* CPU time of this thread: other work on the machine does not count. */
double
thread_seconds()
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
check(HannoyStatus st, const HannoyError &err)
{
	if (st != HANNOY_OK)
	{
		fprintf(stderr, "error: %s\n", err.message);
		std::exit(1);
	}
}

} // namespace

int
main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	std::string        dir = argv[1];
	std::vector<float> base, queries;
	const char        *ds = "/usr/share/datasets/fashion-mnist/";
	uint32_t           dims =
	    read_images((std::string(ds) + "train-images-idx3-ubyte.gz").c_str(), 60000, base);
	read_images((std::string(ds) + "t10k-images-idx3-ubyte.gz").c_str(), 1000, queries);
	size_t          n = base.size() / dims, nq = queries.size() / dims;
	HannoyEnvConfig cfg{};
	cfg.max_readers = 126;
	cfg.file_mode = 0600;
	cfg.dir_mode = 0700;
	cfg.durable = false;
	HannoyError err;
	HannoyEnv  *env = nullptr;
	std::string path = dir + "/env";
	if (!hannoy_env_exists(path.c_str()))
	{
		mkdir(dir.c_str(), 0700);
		HannoyMeta meta{};
		meta.format_version = HANNOY_FORMAT_VERSION;
		meta.metric = HANNOY_METRIC_L2;
		meta.dims = dims;
		meta.options.m = 16;
		meta.m0 = 32;
		meta.options.ef_construction =
		    getenv("EFC") ? static_cast<uint32_t>(atoi(getenv("EFC"))) : 200;
		meta.seed = 42;
		check(hannoy_env_create(path.c_str(), &cfg, &meta, &env, &err), err);
		const uint32_t threads =
		    getenv("THREADS") ? static_cast<uint32_t>(atoi(getenv("THREADS"))) : 2;
		HannoyBuilder *b;
		auto           t0 = std::chrono::steady_clock::now();
		check(hannoy_build_begin(env, threads, &b, &err), err);
		for (size_t i = 0; i < n; i++)
			check(hannoy_build_add(b, HannoyTid(((i / 100 + 1) << 16) | (i % 100 + 1)),
			                       &base[i * dims], HANNOY_ROW_INDEXED, &err),
			      err);
		bool                done = false;
		HannoyBuildProgress p;
		while (!done)
			check(hannoy_build_step(b, 100, &p, &done, &err), err);
		hannoy_build_free(b);
		printf("build %.2f s\n",
		       std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
	}
	else
		check(hannoy_env_open(path.c_str(), &cfg, &env, &err), err);
	HannoyStats st;
	check(hannoy_env_stats(env, &st, &err), err);
	printf("file %.1f MB, used pages %llu (%.1f MB)\n", st.file_bytes / 1e6,
	       (unsigned long long) st.used_pages, st.used_pages * 4096 / 1e6);
	{
		/* mean degree per layer: what a hop costs in distances */
		HannoyInspect       *walk;
		HannoyInspectSummary sum;
		HannoyProblem        problems[8];
		uint32_t             count;
		bool                 done = false;
		check(hannoy_inspect_begin(env, false, &walk, &err), err);
		while (!done)
			check(hannoy_inspect_step(walk, 1000, problems, 8, &count, &done, &err), err);
		check(hannoy_inspect_summary(walk, &sum, &err), err);
		hannoy_inspect_free(walk);
		for (uint32_t l = 0; l < sum.layers && l < 2; l++)
			printf("layer %u: %llu lists, mean degree %.1f\n", l, (unsigned long long) sum.lists[l],
			       double(sum.edges[l]) / sum.lists[l]);
	}

	/* exact top 10 */
	std::vector<std::vector<HannoyTid>> truth(nq);
	std::string                         truth_path = dir + "/truth.bin";
	std::vector<HannoyTid>              cached(nq * 10);
	FILE                               *tf = fopen(truth_path.c_str(), "rb");
	bool                                have = tf != nullptr &&
	            fread(cached.data(), sizeof(HannoyTid), cached.size(), tf) == cached.size();
	if (tf != nullptr)
		fclose(tf);
	for (size_t q = 0; q < nq && have; q++)
		truth[q].assign(cached.begin() + q * 10, cached.begin() + q * 10 + 10);
	for (size_t q = 0; q < nq && !have; q++)
	{
		std::vector<std::pair<double, size_t>> d(n);
		for (size_t i = 0; i < n; i++)
			d[i] = {hannoy_distance(HANNOY_METRIC_L2, &queries[q * dims], &base[i * dims], dims),
			        i};
		std::partial_sort(d.begin(), d.begin() + 10, d.end());
		for (int k = 0; k < 10; k++)
			truth[q].push_back(
			    HannoyTid(((d[k].second / 100 + 1) << 16) | (d[k].second % 100 + 1)));
	}
	if (!have && (tf = fopen(truth_path.c_str(), "wb")) != nullptr)
	{
		for (auto &t : truth)
			fwrite(t.data(), sizeof(HannoyTid), t.size(), tf);
		fclose(tf);
	}
	base.clear();
	base.shrink_to_fit();
	HannoyScan *scan;
	check(hannoy_scan_create(env, &scan, &err), err);
	int repeat = getenv("REPEAT") ? atoi(getenv("REPEAT")) : 3;
	for (int a = 2; a < argc; a++)
	{
		uint32_t ef = atoi(argv[a]);
		size_t   hits = 0;
		double   best = 1e9;
		for (int r = 0; r < repeat; r++)
		{
			hits = 0;
			double t0 = thread_seconds();
			for (size_t q = 0; q < nq; q++)
			{
				check(hannoy_scan_start(scan, &queries[q * dims], dims, ef, 0, &err), err);
				for (int k = 0; k < 10; k++)
				{
					HannoyTid tid;
					double    dist;
					bool      isnull, found;
					check(hannoy_scan_next(scan, &tid, &dist, &isnull, &found, &err), err);
					if (!found)
						break;
					hits += std::count(truth[q].begin(), truth[q].end(), tid);
				}
			}
			best = std::min(best, thread_seconds() - t0);
		}

		printf("ef %u recall %.4f qps %.0f\n", ef, hits / (10.0 * nq), nq / best);
	}
	hannoy_scan_free(scan);
	hannoy_env_close(env);
	return 0;
}
