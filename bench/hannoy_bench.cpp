/*
 * hannoy_bench.cpp
 *	  The benchmark's data generator, brute-force ground truth and libpq
 *	  query client (bench/run.sh drives it; bench/README.md describes it).
 *
 *	  synth        writes a clustered synthetic data set with a fixed seed
 *	  groundtruth  writes the exact top-K neighbours of every query (euclidean
 *	               or cosine distance), on all cores, optionally among the
 *	               rows a selectivity filter keeps
 *	  query        measures recall@k and queries per second of several SQL
 *	               statements ("targets") with one client, interleaved: per
 *	               ef_search value every target gets a warm-up pass, then
 *	               the measured passes rotate through the targets
 *
 * Build: g++ -std=c++17 -O3 -march=native -pthread -o hannoy_bench \
 *            hannoy_bench.cpp -I$(pg_config --includedir) -lpq
 */
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <memory>
#include <queue>
#include <random>
#include <thread>

#include "../tools/pq_connection.hpp"
#include "bench_common.hpp"

namespace hannoy
{
namespace tools
{

constexpr const char *PROGRAM = "hannoy_bench";

/* ---------------------------------------------------------------------
 * synth
 * ---------------------------------------------------------------------
 */

/*
 * Draws the synthetic data set's random numbers: a 64-bit Mersenne Twister
 * (its sequence is fixed by the C++ standard) and Box-Muller normals, so the
 * same seed gives the same data with any standard library.
 */
class SynthRandom
{
  public:
	/* Seeds the generator. */
	explicit SynthRandom(uint64_t seed) : engine_(seed) {}

	/* Returns a uniform double in [0, 1). */
	double
	Uniform()
	{
		return double(engine_() >> 11) * 0x1.0p-53;
	}

	/* Returns a uniform integer in [0, n). */
	uint64_t
	Below(uint64_t n)
	{
		return engine_() % n;
	}

	/* Returns a standard normal deviate. */
	double
	Normal()
	{
		if (has_spare_)
		{
			has_spare_ = false;
			return spare_;
		}
		double u1 = 1.0 - Uniform(); /* (0, 1]: log(u1) is finite */
		double u2 = Uniform();
		double radius = std::sqrt(-2.0 * std::log(u1));
		double angle = 2.0 * M_PI * u2;
		spare_ = radius * std::sin(angle);
		has_spare_ = true;
		return radius * std::cos(angle);
	}

  private:
	std::mt19937_64 engine_;
	double          spare_ = 0;
	bool            has_spare_ = false;
};

/* Appends the array literal of 'v' with 'precision' significant digits. */
static void
AppendLiteral(std::string &out, const float *v, size_t dims, int precision)
{
	char buf[64];
	out += '{';
	for (size_t j = 0; j < dims; j++)
	{
		if (j > 0)
			out += ',';
		auto res =
		    std::to_chars(buf, buf + sizeof(buf), v[j], std::chars_format::general, precision);
		out.append(buf, res.ptr);
	}
	out += '}';
}

/*
 * Runs "synth": 'rows' base vectors and 'queries' query vectors in 'dims'
 * dimensions around 'clusters' centres.  Each cluster is a Gaussian in a
 * random 'latent'-dimensional subspace (so the data has a low intrinsic
 * dimension, as embeddings do) plus isotropic noise:
 *   centre ~ N(0, 2^2) per coordinate,
 *   x = centre + A z + e,  z ~ N(0, I_latent),  A_ij ~ N(0, 1/latent),
 *   e ~ N(0, 0.1^2) per coordinate,
 * each point's cluster drawn uniformly.  Queries are drawn after the base
 * rows from the same stream.  Values are written with 4 significant digits.
 */
static int
RunSynth(int argc, char **argv)
{
	Args        args(argc, argv, 2,
	                 {"out", "rows", "queries", "dims", "clusters", "latent", "seed", "precision"}, {});
	std::string out = args.Required("out");
	size_t      rows = size_t(args.Integer("rows", 1000000, 1, 100000000));
	size_t      nqueries = size_t(args.Integer("queries", 1000, 1, 100000));
	size_t      dims = size_t(args.Integer("dims", 128, 1, 16000));
	size_t      clusters = size_t(args.Integer("clusters", 1000, 1, 1000000));
	size_t      latent = size_t(args.Integer("latent", 16, 1, 16000));
	uint64_t    seed = uint64_t(args.Integer("seed", 42, 0, INT64_MAX));
	int         precision = int(args.Integer("precision", 4, 1, 9));

	auto               start = std::chrono::steady_clock::now();
	SynthRandom        rng(seed);
	std::vector<float> centres(clusters * dims);
	for (float &c : centres)
		c = float(2.0 * rng.Normal());
	std::vector<float> basis(clusters * dims * latent);
	double             scale = 1.0 / std::sqrt(double(latent));
	for (float &a : basis)
		a = float(scale * rng.Normal());

	MakeDirectory(out);
	OutputFile          base_file(out + "/base.copy");
	OutputFile          query_file(out + "/queries.txt");
	std::vector<double> z(latent);
	std::vector<float>  x(dims);
	std::string         line;
	for (size_t i = 0; i < rows + nqueries; i++)
	{
		size_t       c = size_t(rng.Below(clusters));
		const float *centre = centres.data() + c * dims;
		const float *a = basis.data() + c * dims * latent;
		for (double &v : z)
			v = rng.Normal();
		for (size_t j = 0; j < dims; j++)
		{
			double v = centre[j] + 0.1 * rng.Normal();
			for (size_t l = 0; l < latent; l++)
				v += double(a[j * latent + l]) * z[l];
			x[j] = float(v);
		}
		line.clear();
		if (i < rows)
		{
			line += std::to_string(i + 1);
			line += '\t';
			line += std::to_string(c);
			line += '\t';
			AppendLiteral(line, x.data(), dims, precision);
			line += '\n';
			base_file.Write(line);
		}
		else
		{
			AppendLiteral(line, x.data(), dims, precision);
			line += '\n';
			query_file.Write(line);
		}
	}
	base_file.Commit();
	query_file.Commit();
	printf("wrote %zu base rows and %zu queries of %zu dimensions (%zu clusters, seed %llu) to "
	       "%s (%.1f s)\n",
	       rows, nqueries, dims, clusters, (unsigned long long) seed, out.c_str(),
	       SecondsSince(start));
	return 0;
}

/* ---------------------------------------------------------------------
 * groundtruth
 * ---------------------------------------------------------------------
 */

/* Returns the squared euclidean distance of two float vectors, summed in double. */
static double
SquaredL2(const float *a, const float *b, size_t dims)
{
	/* Eight fixed lanes: vectorizes without reassociation, so results are reproducible. */
	double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	size_t j = 0;
	for (; j + 8 <= dims; j += 8)
		for (size_t l = 0; l < 8; l++)
		{
			double d = double(a[j + l]) - double(b[j + l]);
			lane[l] += d * d;
		}
	double sum =
	    ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
	for (; j < dims; j++)
	{
		double d = double(a[j]) - double(b[j]);
		sum += d * d;
	}
	return sum;
}

/* Returns the euclidean norm of a float vector, summed in double like SquaredL2. */
static double
Norm(const float *a, size_t dims)
{
	double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	size_t j = 0;
	for (; j + 8 <= dims; j += 8)
		for (size_t l = 0; l < 8; l++)
			lane[l] += double(a[j + l]) * double(a[j + l]);
	double sum =
	    ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
	for (; j < dims; j++)
		sum += double(a[j]) * double(a[j]);
	return std::sqrt(sum);
}

/* Returns the dot product of two float vectors, summed in double like SquaredL2. */
static double
Dot(const float *a, const float *b, size_t dims)
{
	double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	size_t j = 0;
	for (; j + 8 <= dims; j += 8)
		for (size_t l = 0; l < 8; l++)
			lane[l] += double(a[j + l]) * double(b[j + l]);
	double sum =
	    ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
	for (; j < dims; j++)
		sum += double(a[j]) * double(b[j]);
	return sum;
}

/*
 * Runs "groundtruth": the exact top-K base rows of every query by euclidean
 * distance (--metric l2) or cosine distance, 1 - cos(angle) (--metric
 * cosine: pgvector's <=> and hannoy's real_cosine_ops), ties broken by id,
 * among the rows whose id % mod < below when a filter is given (the "sel"
 * column bench/run.sh creates is id % 100).  Rows or queries of norm 0 have
 * no cosine distance and are refused.
 */
static int
RunGroundTruth(int argc, char **argv)
{
	Args        args(argc, argv, 2,
	                 {"base", "queries", "out", "k", "threads", "id-mod", "id-below", "metric"}, {});
	std::string out = args.Required("out");
	std::string metric = args.Get("metric", "l2");
	if (metric != "l2" && metric != "cosine")
		throw UsageError("--metric must be l2 or cosine, got \"" + metric + "\"");
	bool      cosine = metric == "cosine";
	size_t    k = size_t(args.Integer("k", 100, 1, 100000));
	unsigned  hw = std::max(1u, std::thread::hardware_concurrency());
	unsigned  threads = unsigned(args.Integer("threads", hw, 1, 1024));
	long long mod = args.Integer("id-mod", 0, 1, INT32_MAX);
	long long below = args.Integer("id-below", mod, 0, INT32_MAX);
	if (args.Has("id-below") && !args.Has("id-mod"))
		throw UsageError("--id-below needs --id-mod");

	auto      start = std::chrono::steady_clock::now();
	VectorSet base = ReadBase(args.Required("base"));
	QuerySet  queries = ReadQueries(args.Required("queries"), 0);
	if (base.dims != queries.vectors.dims)
		throw Fatal(Format("base vectors have %zu dimensions but queries have %zu", base.dims,
		                   queries.vectors.dims));
	std::vector<size_t> rows;
	for (size_t i = 0; i < base.Count(); i++)
		if (mod == 0 || base.ids[i] % mod < below)
			rows.push_back(i);
	if (rows.empty())
		throw Fatal("no base row passes the filter");
	/* Cosine: the norms of the base rows, once. */
	std::vector<double> norms;
	if (cosine)
	{
		norms.resize(base.Count());
		for (size_t i = 0; i < base.Count(); i++)
			if ((norms[i] = Norm(base.Row(i), base.dims)) == 0)
				throw Fatal(Format("base row %lld has norm 0: it has no cosine distance",
				                   (long long) base.ids[i]));
	}
	k = std::min(k, rows.size()); /* a 1% filter of a small set keeps fewer than K rows */
	double load_s = SecondsSince(start);

	/* squared euclidean or cosine distance, id: ordered like the output */
	using Entry = std::pair<double, int64_t>;
	size_t                  nq = queries.vectors.Count();
	std::vector<Neighbours> truth(nq);
	std::atomic<size_t>     next{0};
	auto                    worker = [&]()
	{
		for (size_t q; (q = next.fetch_add(1)) < nq;)
		{
			const float               *query = queries.vectors.Row(q);
			double                     query_norm = cosine ? Norm(query, base.dims) : 0;
			std::priority_queue<Entry> heap; /* the farthest kept entry on top */
			if (cosine && query_norm == 0)
				throw Fatal(Format("query %zu has norm 0: it has no cosine distance", q + 1));
			for (size_t i : rows)
			{
				double d = cosine
				               ? 1.0 - Dot(query, base.Row(i), base.dims) / (query_norm * norms[i])
				               : SquaredL2(query, base.Row(i), base.dims);
				Entry  e(d, base.ids[i]);
				if (heap.size() < k)
					heap.push(e);
				else if (e < heap.top())
				{
					heap.pop();
					heap.push(e);
				}
			}
			Neighbours &n = truth[q];
			n.ids.resize(heap.size());
			n.distances.resize(heap.size());
			for (size_t r = heap.size(); r-- > 0; heap.pop())
			{
				n.ids[r] = heap.top().second;
				n.distances[r] =
				    cosine ? std::max(0.0, heap.top().first) : std::sqrt(heap.top().first);
			}
		}
	};
	auto gt_start = std::chrono::steady_clock::now();
	RunOnThreads(threads, worker);

	std::string note = mod == 0 ? "" : Format(" (rows with id %% %lld < %lld)", mod, below);
	if (cosine)
		note += "; metric: cosine distance 1 - cos, not euclidean";
	WriteGroundTruth(out, truth, note);
	printf("wrote exact top-%zu (%s) of %zu queries among %zu of %zu rows to %s (read %.1f s, "
	       "search %.1f s on %u threads)\n",
	       k, metric.c_str(), nq, rows.size(), base.Count(), out.c_str(), load_s,
	       SecondsSince(gt_start), threads);
	return 0;
}

/* ---------------------------------------------------------------------
 * query
 * ---------------------------------------------------------------------
 */

/* One system under test: a labelled statement with its own session and settings. */
struct Target
{
	std::string                 label;
	std::vector<std::string>    setup; /* run per ef value, "{ef}" replaced */
	std::string                 sql;   /* one parameter $1: the query vector as text */
	std::unique_ptr<Connection> conn;
	PassStats                   stats;
	std::string                 plan; /* the scan node the server chose, for the CSV */
	pid_t                       backend_pid = 0;
};

/* Returns 'text' with every "{ef}" replaced by 'ef'. */
static std::string
WithEf(std::string text, const std::string &ef)
{
	for (size_t pos; (pos = text.find("{ef}")) != std::string::npos;)
		text.replace(pos, 4, ef);
	return text;
}

/* Returns 'text' as a single-quoted SQL literal. */
static std::string
QuoteLiteral(const std::string &text)
{
	std::string out = "'";
	for (char c : text)
	{
		if (c == '\'')
			out += '\'';
		out += c;
	}
	return out + "'";
}

/* Runs every query once on 'target'; adds to its stats when 'measured'. */
static void
RunTargetPass(Target &target, const QuerySet &queries, const GroundTruth &truth, bool measured,
              const std::string &ef)
{
	std::string what = target.label + " query (ef=" + ef + "), line";
	auto        run_query = [&](size_t q, std::vector<int64_t> &ids, std::vector<double> &dists)
	{
		auto      t0 = std::chrono::steady_clock::now();
		PGresult *res = target.conn->Execute("knn", queries.literals[q], what, q + 1);
		double    latency_ms = SecondsSince(t0) * 1000.0;
		bool      has_distance = PQnfields(res) >= 2;
		for (int r = 0; r < PQntuples(res); r++)
		{
			ids.push_back(strtoll(PQgetvalue(res, r, 0), nullptr, 10));
			dists.push_back(has_distance && !PQgetisnull(res, r, 1)
			                    ? strtod(PQgetvalue(res, r, 1), nullptr)
			                    : HUGE_VAL);
		}
		PQclear(res);
		return latency_ms;
	};
	RunPass(queries.literals.size(), truth, measured, target.stats, run_query);
}

/*
 * Finds the plan the server uses for 'target' on the first query: keeps the
 * first scan node in target.plan and prints the whole plan when 'print'.
 */
static void
ExplainPlan(Target &target, const QuerySet &queries, bool print)
{
	std::vector<std::string> plan = target.conn->Run("EXPLAIN (COSTS OFF) EXECUTE knn(" +
	                                                 QuoteLiteral(queries.literals[0]) + ")");
	target.plan.clear();
	for (const std::string &line : plan)
	{
		if (print)
			printf("# plan %s: %s\n", target.label.c_str(), line.c_str());
		size_t scan = line.find("Scan");
		if (target.plan.empty() && scan != std::string::npos)
		{
			size_t from = line.find_first_not_of(" ->");
			target.plan = line.substr(from == std::string::npos ? 0 : from);
		}
	}
}

/* Runs "query": interleaved recall and throughput of every target for every ef value. */
static int
RunQuery(int argc, char **argv)
{
	Args                     args(argc, argv, 2,
	                              {"conninfo", "queries", "groundtruth", "k", "max-queries", "ef", "repeat",
	                               "pin-client", "pin-backend", "csv", "dataset", "filter", "m", "efc", "target",
	                               "setup", "sql"},
	                              {"warmup", "explain"});
	std::string              conninfo = args.Required("conninfo");
	size_t                   k = size_t(args.Integer("k", 10, 1, 100000));
	size_t                   max_queries = size_t(args.Integer("max-queries", 0, 0, 1LL << 40));
	size_t                   repeat = size_t(args.Integer("repeat", 3, 1, 1000));
	bool                     warmup = args.Has("warmup");
	bool                     explain = args.Has("explain");
	long long                pin_client = args.Integer("pin-client", -1, 0, CPU_SETSIZE - 1);
	long long                pin_backend = args.Integer("pin-backend", -1, 0, CPU_SETSIZE - 1);
	std::vector<std::string> efs;
	if (args.Has("ef"))
		for (long long ef : ParseIntegerList(args.Get("ef", ""), "every --ef value", 1, 1000000))
			efs.push_back(std::to_string(ef));
	else
		efs.push_back("-");

	std::vector<Target> targets;
	for (const auto &[name, value] : args.Items())
	{
		if (name == "target")
		{
			targets.emplace_back();
			targets.back().label = value;
		}
		else if (name == "setup" || name == "sql")
		{
			if (targets.empty())
				throw UsageError("--" + name + " must follow a --target");
			if (name == "setup")
				targets.back().setup.push_back(value);
			else
				targets.back().sql = value;
		}
	}
	if (targets.empty())
		throw UsageError("give at least one --target LABEL [--setup SQL]... --sql SQL");
	for (const Target &t : targets)
		if (t.sql.empty())
			throw UsageError("target \"" + t.label + "\" has no --sql");

	QuerySet    queries = ReadQueries(args.Required("queries"), max_queries);
	GroundTruth truth(args.Required("groundtruth"), queries.literals.size(), k);

	if (pin_client >= 0)
		PinToCpu(0, int(pin_client), PROGRAM);
	for (Target &t : targets)
	{
		t.conn = std::make_unique<Connection>(conninfo);
		t.backend_pid = pid_t(std::stol(t.conn->Run("SELECT pg_backend_pid()").at(0)));
		if (pin_backend >= 0)
			PinToCpu(t.backend_pid, int(pin_backend), PROGRAM);
		t.conn->Prepare("knn", t.sql);
	}
	printf("# %zu queries x %zu passes, k=%zu, targets (backend pid):", queries.literals.size(),
	       repeat, k);
	for (const Target &t : targets)
		printf(" %s (%d)", t.label.c_str(), int(t.backend_pid));
	printf("\n");
	fflush(stdout);

	for (size_t e = 0; e < efs.size(); e++)
	{
		const std::string &ef = efs[e];
		for (Target &t : targets)
		{
			t.stats = PassStats();
			t.stats.queries = queries.literals.size();
			t.stats.k = k;
			for (const std::string &stmt : t.setup)
				t.conn->Run(WithEf(stmt, ef));
			if (warmup)
				RunTargetPass(t, queries, truth, false, ef);
			if (e == 0)
				ExplainPlan(t, queries, explain);
		}
		/* Rotate the order each pass so no target always runs first. */
		for (size_t rep = 0; rep < repeat; rep++)
			for (size_t i = 0; i < targets.size(); i++)
				RunTargetPass(targets[(rep + i) % targets.size()], queries, truth, true, ef);
		for (Target &t : targets)
		{
			std::string row =
			    QueryCsvRow(args.Get("dataset", "-"), args.Get("filter", "none"), t.label,
			                args.Get("m", "-"), args.Get("efc", "-"), ef, t.stats, t.plan);
			ReportQueries(PROGRAM, t.label, ef, t.stats, row, args.Get("csv", ""));
		}
	}
	return 0;
}

/* Prints how to call the program. */
static void
PrintUsage(FILE *out)
{
	fprintf(out,
	        "usage:\n"
	        "  hannoy_bench synth --out DIR [--rows 1000000] [--queries 1000] [--dims 128]\n"
	        "                     [--clusters 1000] [--latent 16] [--seed 42] [--precision 4]\n"
	        "  hannoy_bench groundtruth --base FILE --queries FILE --out FILE [--k 100]\n"
	        "                     [--threads T] [--id-mod M [--id-below B]]\n"
	        "                     [--metric l2|cosine]\n"
	        "  hannoy_bench query --conninfo STR --queries FILE --groundtruth FILE [--k 10]\n"
	        "                     [--max-queries N] [--ef LIST] [--repeat 3] [--warmup]\n"
	        "                     [--explain] [--pin-client CPU] [--pin-backend CPU]\n"
	        "                     [--csv FILE --dataset D --filter F --m M --efc E]\n"
	        "                     --target LABEL [--setup SQL]... --sql SQL [--target ...]\n");
}

/* Runs the subcommand argv[1] names and turns errors into messages and exit codes. */
static int
Main(int argc, char **argv)
{
	return RunSubcommand(
	    PROGRAM, PrintUsage,
	    {{"synth", RunSynth}, {"groundtruth", RunGroundTruth}, {"query", RunQuery}}, argc, argv);
}

} // namespace tools
} // namespace hannoy

/* Runs the program. */
int
main(int argc, char **argv)
{
	return hannoy::tools::Main(argc, argv);
}
