/*
 * hannoy_data.cpp
 *	  Data preparation and recall/latency benchmark for the hannoy index.
 *
 *	  fmnist-prep  turns the Fashion-MNIST IDX files into a COPY file, a query
 *	               file and exact ground truth (brute force, all cores).
 *	  bench        runs k-NN queries through libpq for a list of ef_search
 *	               values and reports recall@k, throughput and latency.
 *
 * Build: g++ -std=c++17 -O3 -pthread -o hannoy_data hannoy_data.cpp \
 *            -I$(pg_config --includedir) -lpq -lz
 */
#include <atomic>
#include <unordered_set>
#include <thread>

#include <zlib.h>

#include "common.hpp"
#include "groundtruth.hpp"
#include "pq_connection.hpp"

namespace hannoy
{
namespace tools
{

/* Where the Debian package dataset-fashion-mnist puts the IDX files. */
constexpr const char *DEFAULT_FMNIST_DIR = "/usr/share/datasets/fashion-mnist";
constexpr size_t      DEFAULT_QUERIES = 1000;
constexpr size_t      DEFAULT_GROUND_TRUTH_K = 100;

/* ---------------------------------------------------------------------
 * Files
 * ---------------------------------------------------------------------
 */

/* An IDX array of unsigned bytes: its dimensions and its data, row-major. */
struct IdxArray
{
	std::vector<uint32_t> dims;
	std::vector<uint8_t>  data;
};

/* Reads exactly 'len' bytes from a gzip stream or fails naming 'path'. */
static void
GzReadExact(gzFile gz, const std::string &path, void *buf, size_t len)
{
	uint8_t *out = static_cast<uint8_t *>(buf);
	while (len > 0)
	{
		unsigned chunk = unsigned(std::min<size_t>(len, size_t(1) << 24));
		int      got = gzread(gz, out, chunk);
		if (got < 0)
		{
			int         errnum = 0;
			const char *msg = gzerror(gz, &errnum);
			throw Fatal(Format("could not read \"%s\": %s", path.c_str(), msg));
		}
		if (got == 0)
			throw Fatal(Format("could not read \"%s\": file is truncated", path.c_str()));
		out += got;
		len -= size_t(got);
	}
}

/* Reads a gzip-compressed IDX file of unsigned bytes with 'rank' dimensions. */
static IdxArray
ReadIdxGz(const std::string &path, unsigned rank)
{
	gzFile gz = gzopen(path.c_str(), "rb");
	if (gz == nullptr)
		throw Fatal(Format("could not open \"%s\": %s", path.c_str(),
		                   errno ? strerror(errno) : "out of memory"));
	IdxArray array;
	try
	{
		uint8_t magic[4];
		GzReadExact(gz, path, magic, sizeof(magic));
		if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] != rank)
			throw Fatal(Format("\"%s\" is not an IDX file of unsigned bytes with %u dimensions "
			                   "(magic %02x %02x %02x %02x)",
			                   path.c_str(), rank, magic[0], magic[1], magic[2], magic[3]));
		size_t total = 1;
		for (unsigned i = 0; i < rank; i++)
		{
			uint8_t be[4];
			GzReadExact(gz, path, be, sizeof(be));
			uint32_t dim = (uint32_t(be[0]) << 24) | (uint32_t(be[1]) << 16) |
			               (uint32_t(be[2]) << 8) | uint32_t(be[3]);
			if (dim == 0 || dim > (1u << 28))
				throw Fatal(Format("\"%s\": implausible dimension %u", path.c_str(), dim));
			array.dims.push_back(dim);
			total *= dim;
			if (total > (size_t(1) << 34))
				throw Fatal(Format("\"%s\": array is too large", path.c_str()));
		}
		array.data.resize(total);
		GzReadExact(gz, path, array.data.data(), total);
		uint8_t extra;
		if (gzread(gz, &extra, 1) != 0)
			throw Fatal(Format("\"%s\": unexpected data after the array", path.c_str()));
	}
	catch (...)
	{
		gzclose(gz);
		throw;
	}
	gzclose(gz);
	return array;
}

/* ---------------------------------------------------------------------
 * fmnist-prep
 * ---------------------------------------------------------------------
 */

/* Images as a matrix of bytes: 'count' rows of 'dims' pixels. */
struct ImageSet
{
	size_t               count = 0;
	size_t               dims = 0;
	std::vector<uint8_t> pixels;
	std::vector<uint8_t> labels;

	/* Returns the pixels of image 'i'. */
	const uint8_t *
	Row(size_t i) const
	{
		return pixels.data() + i * dims;
	}
};

/* Loads the first 'limit' images and labels of one Fashion-MNIST split. */
static ImageSet
LoadSplit(const std::string &dir, const std::string &split, size_t limit)
{
	std::string images_path = dir + "/" + split + "-images-idx3-ubyte.gz";
	std::string labels_path = dir + "/" + split + "-labels-idx1-ubyte.gz";
	IdxArray    images = ReadIdxGz(images_path, 3);
	IdxArray    labels = ReadIdxGz(labels_path, 1);
	if (images.dims[0] != labels.dims[0])
		throw Fatal(Format("\"%s\" has %u images but \"%s\" has %u labels", images_path.c_str(),
		                   images.dims[0], labels_path.c_str(), labels.dims[0]));
	if (limit > images.dims[0])
		throw UsageError(Format("asked for %zu %s images but \"%s\" has only %u", limit,
		                        split.c_str(), images_path.c_str(), images.dims[0]));
	ImageSet set;
	set.count = limit;
	set.dims = size_t(images.dims[1]) * images.dims[2];
	images.data.resize(set.count * set.dims);
	labels.data.resize(set.count);
	set.pixels = std::move(images.data);
	set.labels = std::move(labels.data);
	return set;
}

/* Appends the PostgreSQL array literal "{p1,p2,...}" of one image to 'out'. */
static void
AppendArrayLiteral(std::string &out, const uint8_t *pixels, size_t dims)
{
	out += '{';
	for (size_t j = 0; j < dims; j++)
	{
		if (j > 0)
			out += ',';
		/* Integers 0..255 are exact float4 values and PostgreSQL prints them so. */
		out += std::to_string(unsigned(pixels[j]));
	}
	out += '}';
}

/*
 * Writes one image per line as an array literal: base.copy when 'with_ids'
 * ("id<TAB>label<TAB>{...}", ids from 1), else queries.txt ("{...}").
 */
static void
WriteImages(const std::string &path, const ImageSet &images, bool with_ids)
{
	OutputFile  file(path);
	std::string line;
	for (size_t i = 0; i < images.count; i++)
	{
		line.clear();
		if (with_ids)
		{
			line += std::to_string(i + 1);
			line += '\t';
			line += std::to_string(unsigned(images.labels[i]));
			line += '\t';
		}
		AppendArrayLiteral(line, images.Row(i), images.dims);
		line += '\n';
		file.Write(line);
	}
	file.Commit();
}

/* Returns the squared euclidean distance of two byte vectors, exactly. */
static uint32_t
SquaredL2Bytes(const uint8_t *a, const uint8_t *b, size_t dims)
{
	/* 784 * 255^2 < 2^31: the integer sum is exact and vectorizes well. */
	uint32_t sum = 0;
	for (size_t j = 0; j < dims; j++)
	{
		int32_t d = int32_t(a[j]) - int32_t(b[j]);
		sum += uint32_t(d * d);
	}
	return sum;
}

/* Finds the exact top 'k' base rows of every query, ties broken by id, on 'threads' threads. */
static std::vector<Neighbours>
BruteForce(const ImageSet &base, const ImageSet &queries, size_t k, unsigned threads)
{
	std::vector<Neighbours> result(queries.count);
	std::atomic<size_t>     next{0};
	auto                    worker = [&]()
	{
		/* Key = squared distance << 32 | id: sorting keys orders by distance, then id. */
		std::vector<uint64_t> keys(base.count);
		for (size_t q; (q = next.fetch_add(1)) < queries.count;)
		{
			const uint8_t *query = queries.Row(q);
			for (size_t i = 0; i < base.count; i++)
				keys[i] = (uint64_t(SquaredL2Bytes(query, base.Row(i), base.dims)) << 32) |
				          uint64_t(i + 1);
			std::partial_sort(keys.begin(), keys.begin() + k, keys.end());
			Neighbours &n = result[q];
			n.ids.resize(k);
			n.distances.resize(k);
			for (size_t r = 0; r < k; r++)
			{
				n.ids[r] = int64_t(keys[r] & 0xffffffffu);
				n.distances[r] = std::sqrt(double(keys[r] >> 32));
			}
		}
	};
	RunOnThreads(threads, worker);
	return result;
}

/* Runs "fmnist-prep": writes base.copy, queries.txt and groundtruth.tsv into --out. */
static int
RunFmnistPrep(int argc, char **argv)
{
	Args args(argc, argv, 2, {"out", "train-limit", "queries", "data-dir", "threads", "gt-k"}, {});
	std::string out = args.Required("out");
	std::string data_dir = args.Get("data-dir", DEFAULT_FMNIST_DIR);
	unsigned    hw = std::max(1u, std::thread::hardware_concurrency());
	unsigned    threads = unsigned(args.Integer("threads", hw, 1, 1024));
	size_t      nqueries = size_t(args.Integer("queries", DEFAULT_QUERIES, 1, 10000));

	auto     start = std::chrono::steady_clock::now();
	IdxArray probe = ReadIdxGz(data_dir + "/train-labels-idx1-ubyte.gz", 1);
	size_t   train_limit = size_t(args.Integer("train-limit", probe.dims[0], 1, probe.dims[0]));
	size_t   gt_k = size_t(args.Integer("gt-k", DEFAULT_GROUND_TRUTH_K, 1, 100000));
	gt_k = std::min(gt_k, train_limit);

	ImageSet base = LoadSplit(data_dir, "train", train_limit);
	ImageSet queries = LoadSplit(data_dir, "t10k", nqueries);
	if (base.dims != queries.dims)
		throw Fatal(Format("train images have %zu pixels but test images have %zu", base.dims,
		                   queries.dims));

	MakeDirectory(out);
	WriteImages(out + "/base.copy", base, true);
	WriteImages(out + "/queries.txt", queries, false);
	printf("wrote %zu base rows and %zu queries of %zu dimensions to %s (%.1f s)\n", base.count,
	       queries.count, base.dims, out.c_str(), SecondsSince(start));
	fflush(stdout);

	auto                    gt_start = std::chrono::steady_clock::now();
	std::vector<Neighbours> truth = BruteForce(base, queries, gt_k, threads);
	WriteGroundTruth(out + "/groundtruth.tsv", truth, "");
	printf("wrote exact top-%zu ground truth on %u threads (%.1f s)\n", gt_k, threads,
	       SecondsSince(gt_start));
	return 0;
}

/* ---------------------------------------------------------------------
 * bench
 * ---------------------------------------------------------------------
 */

/* What one measured run (one ef, or the exact baseline) produced. */
struct RunResult
{
	std::string ef;
	double      recall = 0;
	double      qps = 0;
	double      p50_ms = 0;
	double      p99_ms = 0;
	size_t      duplicates = 0;
	size_t      short_results = 0;
};

/* What the bench needs to run queries and score them. */
struct BenchSetup
{
	std::vector<std::string> queries;
	std::vector<double>      kth;
	size_t                   k = 10;
	size_t                   repeat = 1;
	bool                     warmup = false;
	double                   tolerance = TIE_TOLERANCE;
};

/* Counts rows of 'res' (columns id, d) within the true k-th distance, each id once. */
static size_t
CountHits(PGresult *res, double kth, double tolerance, RunResult &run)
{
	size_t                          hits = 0;
	int                             rows = PQntuples(res);
	std::unordered_set<std::string> seen;
	for (int r = 0; r < rows; r++)
	{
		if (!seen.insert(PQgetvalue(res, r, 0)).second)
		{
			run.duplicates++;
			continue;
		}
		if (PQgetisnull(res, r, 1))
			continue;
		double d = strtod(PQgetvalue(res, r, 1), nullptr);
		if (d <= kth * (1.0 + tolerance) + 1e-9)
			hits++;
	}
	return hits;
}

/* Runs every query 'repeat' times (after a warm-up pass if asked) and scores the run. */
static RunResult
MeasureRun(Connection &conn, const BenchSetup &setup, const std::string &ef)
{
	RunResult run;
	run.ef = ef;
	size_t      nq = setup.queries.size();
	std::string what = "knn query (ef=" + ef + "), line";
	std::string warmup_what = "warm-up " + what;
	if (setup.warmup)
		for (size_t q = 0; q < nq; q++)
			PQclear(conn.Execute("knn", setup.queries[q], warmup_what, q + 1));

	std::vector<double> latencies;
	latencies.reserve(nq * setup.repeat);
	size_t hits = 0;
	auto   start = std::chrono::steady_clock::now();
	for (size_t rep = 0; rep < setup.repeat; rep++)
	{
		for (size_t q = 0; q < nq; q++)
		{
			auto      t0 = std::chrono::steady_clock::now();
			PGresult *res = conn.Execute("knn", setup.queries[q], what, q + 1);
			latencies.push_back(SecondsSince(t0) * 1000.0);
			if (size_t(PQntuples(res)) < setup.k)
				run.short_results++;
			hits += CountHits(res, setup.kth[q], setup.tolerance, run);
			PQclear(res);
		}
	}
	double elapsed = SecondsSince(start);
	run.recall = double(hits) / double(nq * setup.repeat * setup.k);
	run.qps = elapsed > 0 ? double(nq * setup.repeat) / elapsed : 0.0;
	run.p50_ms = Percentile(latencies, 0.50);
	run.p99_ms = Percentile(latencies, 0.99);
	return run;
}

/* Appends one row of 'run' to the CSV file at 'path'. */
static void
AppendRunCsv(const std::string &path, const std::string &label, const RunResult &run)
{
	AppendCsv(path, "label,ef,recall,qps,p50_ms,p99_ms",
	          Format("%s,%s,%.4f,%.1f,%.3f,%.3f", label.c_str(), run.ef.c_str(), run.recall,
	                 run.qps, run.p50_ms, run.p99_ms));
}

/* Prints one result line and any anomaly the run showed. */
static void
PrintRun(const RunResult &run, size_t k)
{
	printf("ef=%s recall@%zu=%.4f qps=%.1f p50_ms=%.2f p99_ms=%.2f\n", run.ef.c_str(), k,
	       run.recall, run.qps, run.p50_ms, run.p99_ms);
	if (run.duplicates > 0)
		fprintf(stderr, "hannoy_data: warning: ef=%s returned the same id twice %zu times\n",
		        run.ef.c_str(), run.duplicates);
	if (run.short_results > 0)
		fprintf(stderr, "hannoy_data: warning: ef=%s returned fewer than %zu rows %zu times\n",
		        run.ef.c_str(), k, run.short_results);
	fflush(stdout);
}

/* Runs "bench": recall@k, qps and latency percentiles per ef_search value. */
static int
RunBench(int argc, char **argv)
{
	Args                               args(argc, argv, 2,
	                                        {"conninfo", "table", "column", "queries", "groundtruth", "k", "ef", "op", "repeat",
	                                         "label", "csv", "exact-queries", "tolerance"},
	                                        {"warmup", "exact"});
	std::string                        conninfo = args.Required("conninfo");
	std::string                        table = args.Required("table");
	std::string                        column = args.Required("column");
	std::string                        op = args.Get("op", "<->");
	static const std::set<std::string> known_ops = {"<->", "<=>", "<#>", "<+>"};
	if (!known_ops.count(op))
		throw UsageError("--op must be one of <->, <=>, <#>, <+>, got \"" + op + "\"");
	bool                   exact = args.Has("exact");
	std::vector<long long> efs;
	if (!exact)
		efs = ParseIntegerList(args.Required("ef"), "every --ef value", 1, 1000000);
	else if (args.Has("ef"))
		fprintf(stderr, "hannoy_data: note: --ef is ignored with --exact\n");

	BenchSetup setup;
	setup.k = size_t(args.Integer("k", 10, 1, 100000));
	setup.repeat = size_t(args.Integer("repeat", 1, 1, 1000000));
	setup.warmup = args.Has("warmup");
	setup.tolerance = args.Real("tolerance", TIE_TOLERANCE, 0.0);
	setup.queries = ReadLines(args.Required("queries"));
	if (setup.queries.empty())
		throw Fatal("\"" + args.Required("queries") + "\" holds no queries");
	if (exact && args.Has("exact-queries"))
	{
		size_t limit = size_t(args.Integer("exact-queries", 0, 1, 1LL << 40));
		if (limit < setup.queries.size())
			setup.queries.resize(limit);
	}
	GroundTruth truth(args.Required("groundtruth"), setup.queries.size(), setup.k);
	for (size_t q = 0; q < setup.queries.size(); q++)
		setup.kth.push_back(truth.KthDistance(q));
	std::string label = args.Get("label", exact ? "exact" : "hannoy");

	Connection conn(conninfo);
	if (exact)
		conn.Run("SET enable_indexscan = off");
	std::string expr = column + " " + op + " $1::real[]";
	conn.Prepare("knn", "SELECT id, " + expr + " AS d FROM " + table + " ORDER BY " + expr +
	                        " LIMIT " + std::to_string(setup.k));

	printf("# %s: %zu queries x %zu, k=%zu, table %s, column %s, operator %s%s\n", label.c_str(),
	       setup.queries.size(), setup.repeat, setup.k, table.c_str(), column.c_str(), op.c_str(),
	       exact ? ", index scans off" : "");
	fflush(stdout);

	std::vector<RunResult> runs;
	if (exact)
		runs.push_back(MeasureRun(conn, setup, "exact"));
	for (long long ef : efs)
	{
		conn.Run("SET hannoy.ef_search = " + std::to_string(ef));
		runs.push_back(MeasureRun(conn, setup, std::to_string(ef)));
		PrintRun(runs.back(), setup.k);
	}
	if (exact)
		PrintRun(runs.back(), setup.k);
	if (args.Has("csv"))
		for (const RunResult &run : runs)
			AppendRunCsv(args.Required("csv"), label, run);
	return 0;
}

/* Prints how to call the program. */
static void
PrintUsage(FILE *out)
{
	fprintf(out, "usage:\n"
	             "  hannoy_data fmnist-prep --out DIR [--train-limit N] [--queries Q]\n"
	             "                          [--data-dir DIR] [--threads T] [--gt-k K]\n"
	             "  hannoy_data bench --conninfo STR --table T --column C --queries FILE\n"
	             "                    --groundtruth FILE [--k 10] --ef LIST [--op '<->']\n"
	             "                    [--repeat R] [--warmup] [--label L] [--csv FILE]\n"
	             "                    [--exact [--exact-queries N]] [--tolerance 1e-6]\n");
}

/* Runs the subcommand argv[1] names and turns errors into messages and exit codes. */
static int
Main(int argc, char **argv)
{
	return RunSubcommand("hannoy_data", PrintUsage,
	                     {{"fmnist-prep", RunFmnistPrep}, {"bench", RunBench}}, argc, argv);
}

} // namespace tools
} // namespace hannoy

/* Runs the program. */
int
main(int argc, char **argv)
{
	return hannoy::tools::Main(argc, argv);
}
