/*
 * hnswlib_bench.cpp
 *	  The in-process baseline of the benchmark: hnswlib (Debian
 *	  libhnswlib-dev), one thread, no SQL around it.  It reads the same files
 *	  as hannoy_bench, builds an index per ef_construction with the same m,
 *	  and scores recall@k with the same code (bench_common.hpp), writing rows
 *	  in the same CSV formats as bench/run.sh.
 *
 * Build: g++ -std=c++17 -O3 -march=native -pthread -o hnswlib_bench hnswlib_bench.cpp
 */
#include <memory>

#include <hnswlib/hnswlib.h>

#include "bench_common.hpp"

namespace hannoy
{
namespace tools
{

constexpr const char *PROGRAM = "hnswlib_bench";

/* The CSV header of build results (builds.csv), as bench/run.sh writes it. */
constexpr const char *BUILD_CSV_HEADER =
    "dataset,system,m,efc,rows,threads,build_s,size_bytes,peak_rss_kb,worker_peak_rss_kb";

/* Returns the bytes hnswlib's index holds: layer 0 (links, vector, label) and upper links. */
static size_t
IndexBytes(const hnswlib::HierarchicalNSW<float> &index)
{
	size_t bytes = index.cur_element_count * index.size_data_per_element_;
	for (size_t i = 0; i < index.cur_element_count; i++)
		if (index.element_levels_[i] > 0)
			bytes += index.size_links_per_element_ * size_t(index.element_levels_[i]);
	return bytes;
}

/* Scales every row of 'set' to length 1 (cosine: hnswlib's inner product on unit vectors). */
static void
NormaliseRows(VectorSet &set)
{
	for (size_t i = 0; i < set.Count(); i++)
	{
		float *row = set.data.data() + i * set.dims;
		double sum = 0;
		for (size_t j = 0; j < set.dims; j++)
			sum += double(row[j]) * double(row[j]);
		if (sum == 0)
			throw Fatal(Format("row %zu has norm 0: it has no cosine distance", i + 1));
		double scale = 1.0 / std::sqrt(sum);
		for (size_t j = 0; j < set.dims; j++)
			row[j] = float(double(row[j]) * scale);
	}
}

/* Runs every query once; adds to 'stats' when 'measured'. */
static void
RunIndexPass(const hnswlib::HierarchicalNSW<float> &index, const QuerySet &queries,
             const GroundTruth &truth, bool measured, PassStats &stats, bool cosine)
{
	auto run_query = [&](size_t q, std::vector<int64_t> &ids, std::vector<double> &dists)
	{
		auto t0 = std::chrono::steady_clock::now();
		auto result = index.searchKnn(queries.vectors.Row(q), truth.K());
		for (; !result.empty(); result.pop())
		{
			/*
			 * Farthest first; hnswlib's L2 space reports squared distances, its
			 * inner product space 1 - dot, the cosine distance of unit vectors.
			 */
			double d = double(result.top().first);
			dists.push_back(cosine ? d : std::sqrt(d));
			ids.push_back(int64_t(result.top().second));
		}
		return SecondsSince(t0) * 1000.0;
	};
	RunPass(queries.vectors.Count(), truth, measured, stats, run_query);
}

/* Builds one index per ef_construction and measures every ef_search on it. */
static int
Run(int argc, char **argv)
{
	Args                   args(argc, argv, 1,
	                            {"base", "queries", "groundtruth", "k", "m", "efc", "ef", "repeat", "pin", "dataset",
	                             "csv-queries", "csv-builds", "seed", "metric"},
	                            {"warmup"});
	size_t                 k = size_t(args.Integer("k", 10, 1, 100000));
	size_t                 m = size_t(args.Integer("m", 16, 2, 1000));
	std::vector<long long> efcs =
	    ParseIntegerList(args.Required("efc"), "every --efc value", 1, 100000);
	std::vector<long long> efs =
	    ParseIntegerList(args.Required("ef"), "every --ef value", 1, 1000000);
	size_t      repeat = size_t(args.Integer("repeat", 3, 1, 1000));
	bool        warmup = args.Has("warmup");
	size_t      seed = size_t(args.Integer("seed", 100, 0, INT64_MAX));
	std::string dataset = args.Get("dataset", "-");
	std::string metric = args.Get("metric", "l2");
	if (metric != "l2" && metric != "cosine")
		throw UsageError("--metric must be l2 or cosine, got \"" + metric + "\"");
	bool cosine = metric == "cosine";
	if (args.Has("pin"))
		PinToCpu(0, int(args.Integer("pin", 0, 0, CPU_SETSIZE - 1)), PROGRAM);

	VectorSet   base = ReadBase(args.Required("base"));
	QuerySet    queries = ReadQueries(args.Required("queries"), 0);
	GroundTruth truth(args.Required("groundtruth"), queries.vectors.Count(), k);
	if (base.dims != queries.vectors.dims)
		throw Fatal(Format("base vectors have %zu dimensions but queries have %zu", base.dims,
		                   queries.vectors.dims));
	if (cosine)
	{
		NormaliseRows(base);
		NormaliseRows(queries.vectors);
	}
	hnswlib::L2Space                l2(base.dims);
	hnswlib::InnerProductSpace      ip(base.dims);
	hnswlib::SpaceInterface<float> &space = cosine
	                                            ? static_cast<hnswlib::SpaceInterface<float> &>(ip)
	                                            : static_cast<hnswlib::SpaceInterface<float> &>(l2);
	printf("# hnswlib: %zu base rows, %zu queries, %zu dimensions, m=%zu, %s, one thread\n",
	       base.Count(), queries.vectors.Count(), base.dims, m, metric.c_str());

	for (long long efc : efcs)
	{
		auto start = std::chrono::steady_clock::now();
		auto index = std::make_unique<hnswlib::HierarchicalNSW<float>>(&space, base.Count(), m,
		                                                               size_t(efc), seed);
		for (size_t i = 0; i < base.Count(); i++)
			index->addPoint(base.Row(i), hnswlib::labeltype(base.ids[i]));
		double build_s = SecondsSince(start);
		size_t bytes = IndexBytes(*index);
		long   rss = PeakRssKb();
		printf("hnswlib    efc=%lld build_s=%.2f size_bytes=%zu peak_rss_kb=%ld\n", efc, build_s,
		       bytes, rss);
		if (args.Has("csv-builds"))
			AppendCsv(args.Get("csv-builds", ""), BUILD_CSV_HEADER,
			          Format("%s,hnswlib,%zu,%lld,%zu,1,%.3f,%zu,%ld,", dataset.c_str(), m, efc,
			                 base.Count(), build_s, bytes, rss));
		for (long long ef : efs)
		{
			index->setEf(size_t(ef));
			PassStats stats;
			stats.queries = queries.vectors.Count();
			stats.k = k;
			if (warmup)
				RunIndexPass(*index, queries, truth, false, stats, cosine);
			for (size_t rep = 0; rep < repeat; rep++)
				RunIndexPass(*index, queries, truth, true, stats, cosine);
			std::string row =
			    QueryCsvRow(dataset, "none", "hnswlib", std::to_string(m), std::to_string(efc),
			                std::to_string(ef), stats, "in-process");
			ReportQueries(PROGRAM, "hnswlib    efc=" + std::to_string(efc), std::to_string(ef),
			              stats, row, args.Get("csv-queries", ""));
		}
	}
	return 0;
}

/* Prints how to call the program. */
static void
PrintUsage(FILE *out)
{
	fprintf(out, "usage: hnswlib_bench --base FILE --queries FILE --groundtruth FILE\n"
	             "         --efc LIST --ef LIST [--k 10] [--m 16] [--repeat 3] [--warmup]\n"
	             "         [--pin CPU] [--seed 100] [--dataset D] [--csv-queries FILE]\n"
	             "         [--csv-builds FILE] [--metric l2|cosine]\n");
}

/* Runs the program and turns errors into messages and exit codes. */
static int
Main(int argc, char **argv)
{
	return RunProgram(PROGRAM, PrintUsage, [&]() { return Run(argc, argv); });
}

} // namespace tools
} // namespace hannoy

/* Runs the program. */
int
main(int argc, char **argv)
{
	return hannoy::tools::Main(argc, argv);
}
