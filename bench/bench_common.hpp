/*
 * bench_common.hpp
 *	  What the benchmark programs share beyond tools/common.hpp: the data
 *	  files (base.copy, queries.txt; groundtruth.tsv is tools/groundtruth.hpp),
 *	  recall and timing statistics, queries.csv rows, CPU pinning and peak
 *	  memory.  hannoy_bench (libpq) and hnswlib_bench (in-process) include it
 *	  so that every system is scored by the same code.
 *
 *	  Files, as tools/hannoy_data fmnist-prep writes them:
 *	    base.copy        "id<TAB>label<TAB>{x1,...,xd}" per row (COPY text format)
 *	    queries.txt      one "{x1,...,xd}" array literal per line
 */
#ifndef HANNOY_BENCH_COMMON_HPP
#define HANNOY_BENCH_COMMON_HPP

#include <sched.h>
#include <sys/types.h>

#include "../tools/common.hpp"
#include "../tools/groundtruth.hpp"

namespace hannoy
{
namespace tools
{

/*
 * Parses the array literal "{x1,...,xd}" starting at 'text' into 'out'
 * (appended); returns the character after '}'.  'where' names it in errors.
 */
inline const char *
ParseVector(const char *text, std::vector<float> &out, const std::string &where)
{
	if (*text != '{')
		throw Fatal(where + ": expected an array literal starting with '{'");
	const char *p = text + 1;
	while (true)
	{
		char *end = nullptr;
		errno = 0;
		float v = strtof(p, &end);
		if (end == p || errno == ERANGE || !std::isfinite(v))
			throw Fatal(where + ": bad vector element near \"" + std::string(p, strnlen(p, 20)) +
			            "\"");
		out.push_back(v);
		p = end;
		if (*p == ',')
			p++;
		else if (*p == '}')
			return p + 1;
		else
			throw Fatal(where + ": expected ',' or '}' in an array literal");
	}
}

/* Row-major float vectors of one dimension count, with an id per row. */
struct VectorSet
{
	size_t               dims = 0;
	std::vector<int64_t> ids;
	std::vector<float>   data;

	/* Number of vectors. */
	size_t
	Count() const
	{
		return dims == 0 ? 0 : data.size() / dims;
	}

	/* The elements of vector 'i'. */
	const float *
	Row(size_t i) const
	{
		return data.data() + i * dims;
	}

	/* Appends the vector parsed from 'literal' with 'id', checking its length. */
	void
	Add(int64_t id, const char *literal, const std::string &where)
	{
		size_t before = data.size();
		ParseVector(literal, data, where);
		size_t len = data.size() - before;
		if (dims == 0)
			dims = len;
		else if (len != dims)
			throw Fatal(Format("%s: %zu dimensions, expected %zu", where.c_str(), len, dims));
		ids.push_back(id);
	}
};

/* Reads base.copy ("id<TAB>label<TAB>{...}" per line). */
inline VectorSet
ReadBase(const std::string &path)
{
	FILE *f = fopen(path.c_str(), "r");
	if (f == nullptr)
		throw Fatal(Format("could not open \"%s\": %s", path.c_str(), strerror(errno)));
	VectorSet   set;
	std::string line;
	char        buf[1 << 16];
	size_t      lineno = 0;
	while (fgets(buf, sizeof(buf), f) != nullptr)
	{
		line += buf;
		if (line.back() != '\n' && !feof(f))
			continue;
		lineno++;
		while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
			line.pop_back();
		if (!line.empty())
		{
			std::string where = Format("\"%s\" line %zu", path.c_str(), lineno);
			size_t      tab1 = line.find('\t');
			size_t      tab2 = tab1 == std::string::npos ? tab1 : line.find('\t', tab1 + 1);
			if (tab2 == std::string::npos)
				throw Fatal(where + ": expected id<TAB>label<TAB>vector");
			long long id = ParseInteger(line.substr(0, tab1), where + ": id", 1, INT64_MAX);
			set.Add(id, line.c_str() + tab2 + 1, where);
		}
		line.clear();
	}
	bool failed = ferror(f) != 0;
	fclose(f);
	if (failed)
		throw Fatal(Format("could not read \"%s\"", path.c_str()));
	return set;
}

/* The query vectors of queries.txt: their literals as written, and parsed. */
struct QuerySet
{
	std::vector<std::string> literals;
	VectorSet                vectors;
};

/* Reads the first 'limit' lines of queries.txt (all when 'limit' is 0). */
inline QuerySet
ReadQueries(const std::string &path, size_t limit)
{
	QuerySet set;
	set.literals = ReadLines(path);
	if (set.literals.empty())
		throw Fatal("\"" + path + "\" holds no queries");
	if (limit > 0 && limit < set.literals.size())
		set.literals.resize(limit);
	for (size_t q = 0; q < set.literals.size(); q++)
		set.vectors.Add(int64_t(q + 1), set.literals[q].c_str(),
		                Format("\"%s\" line %zu", path.c_str(), q + 1));
	return set;
}

/* Returns the median of 'values' (the mean of the middle two for an even count). */
inline double
Median(std::vector<double> values)
{
	if (values.empty())
		return 0.0;
	std::sort(values.begin(), values.end());
	size_t n = values.size();
	return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

/* What the measured passes of one system at one setting produced. */
struct PassStats
{
	size_t              queries = 0;  /* per pass */
	size_t              k = 0;        /* recall@k */
	size_t              hits = 0;     /* over all passes */
	size_t              returned = 0; /* rows over all passes */
	size_t              duplicates = 0;
	size_t              short_results = 0;
	std::vector<double> pass_qps;
	std::vector<double> latencies_ms;

	/* recall@k over every measured pass. */
	double
	Recall() const
	{
		size_t denominator = queries * k * pass_qps.size();
		return denominator == 0 ? 0.0 : double(hits) / double(denominator);
	}

	/*
	 * Scores the 'n' rows (ids, reported distances) a measured pass returned
	 * for query 'q' (from 0); rows past the k-th are not counted.
	 */
	void
	Score(const GroundTruth &truth, size_t q, const int64_t *ids, const double *dists, size_t n)
	{
		if (n < k)
			short_results++;
		returned += n;
		hits += truth.Hits(q, ids, dists, std::min(n, k), duplicates);
	}

	/* Adds a measured pass that took 'seconds' and the latency of each of its queries. */
	void
	AddPass(double seconds, const std::vector<double> &pass_latencies_ms)
	{
		pass_qps.push_back(seconds > 0 ? double(queries) / seconds : 0.0);
		latencies_ms.insert(latencies_ms.end(), pass_latencies_ms.begin(), pass_latencies_ms.end());
	}
};

/*
 * Runs every query of a pass once: 'run_query'(q, ids, dists) runs query q
 * (from 0), leaves the ids and reported distances of the rows it returned in
 * 'ids' and 'dists', and returns its latency in milliseconds.  Adds the pass
 * to 'stats' when 'measured' (not for a warm-up pass).
 */
template <typename RunQuery>
void
RunPass(size_t nqueries, const GroundTruth &truth, bool measured, PassStats &stats,
        RunQuery run_query)
{
	std::vector<int64_t> ids;
	std::vector<double>  dists;
	std::vector<double>  latencies;
	latencies.reserve(nqueries);
	auto pass_start = std::chrono::steady_clock::now();
	for (size_t q = 0; q < nqueries; q++)
	{
		ids.clear();
		dists.clear();
		latencies.push_back(run_query(q, ids, dists));
		if (measured)
			stats.Score(truth, q, ids.data(), dists.data(), ids.size());
	}
	double elapsed = SecondsSince(pass_start);
	if (measured)
		stats.AddPass(elapsed, latencies);
}

/* The CSV header of query results (queries.csv), shared by every program. */
constexpr const char *QUERY_CSV_HEADER =
    "dataset,filter,system,m,efc,ef,k,queries,passes,recall,qps,qps_min,qps_max,p50_ms,p99_ms,plan";

/*
 * Formats one queries.csv row; 'plan' names the scan that ran (commas
 * become semicolons).
 */
inline std::string
QueryCsvRow(const std::string &dataset, const std::string &filter, const std::string &system,
            const std::string &m, const std::string &efc, const std::string &ef, PassStats stats,
            std::string plan)
{
	std::replace(plan.begin(), plan.end(), ',', ';');
	double qps = Median(stats.pass_qps);
	double qps_min = stats.pass_qps.empty()
	                     ? 0.0
	                     : *std::min_element(stats.pass_qps.begin(), stats.pass_qps.end());
	double qps_max = stats.pass_qps.empty()
	                     ? 0.0
	                     : *std::max_element(stats.pass_qps.begin(), stats.pass_qps.end());
	double p50 = Percentile(stats.latencies_ms, 0.50);
	double p99 = Percentile(stats.latencies_ms, 0.99);
	return Format("%s,%s,%s,%s,%s,%s,%zu,%zu,%zu,%.4f,%.1f,%.1f,%.1f,%.3f,%.3f,%s", dataset.c_str(),
	              filter.c_str(), system.c_str(), m.c_str(), efc.c_str(), ef.c_str(), stats.k,
	              stats.queries, stats.pass_qps.size(), stats.Recall(), qps, qps_min, qps_max, p50,
	              p99, plan.c_str());
}

/*
 * Prints the result line of 'label' at one ef_search value from its
 * queries.csv 'row', and warnings about ids returned twice and short
 * results; appends 'row' to the CSV file 'csv' unless 'csv' is empty.
 */
inline void
ReportQueries(const char *program, const std::string &label, const std::string &ef,
              const PassStats &stats, const std::string &row, const std::string &csv)
{
	std::vector<std::string> f = Split(row, ',');
	printf("%-10s ef=%-4s recall@%zu=%s qps=%s (%s..%s) p50_ms=%s p99_ms=%s\n", label.c_str(),
	       ef.c_str(), stats.k, f[9].c_str(), f[10].c_str(), f[11].c_str(), f[12].c_str(),
	       f[13].c_str(), f[14].c_str());
	if (stats.duplicates > 0)
		fprintf(stderr, "%s: warning: %s ef=%s returned the same id twice %zu times\n", program,
		        label.c_str(), ef.c_str(), stats.duplicates);
	if (stats.short_results > 0)
		fprintf(stderr, "%s: warning: %s ef=%s returned fewer than %zu rows %zu times\n", program,
		        label.c_str(), ef.c_str(), stats.k, stats.short_results);
	if (!csv.empty())
		AppendCsv(csv, QUERY_CSV_HEADER, row);
	fflush(stdout);
}

/* Pins process 'pid' (0: this one) to CPU 'cpu'; returns false with a warning when it cannot. */
inline bool
PinToCpu(pid_t pid, int cpu, const char *program)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(pid, sizeof(set), &set) == 0)
		return true;
	fprintf(stderr, "%s: warning: could not pin %s %d to CPU %d: %s\n", program,
	        pid == 0 ? "this process" : "process", int(pid), cpu, strerror(errno));
	return false;
}

/* Returns the VmHWM (peak resident set, kB) of this process from /proc/self/status. */
inline long
PeakRssKb()
{
	FILE *f = fopen("/proc/self/status", "r");
	if (f == nullptr)
		return -1;
	char line[256];
	long kb = -1;
	while (fgets(line, sizeof(line), f) != nullptr)
		if (strncmp(line, "VmHWM:", 6) == 0)
			kb = strtol(line + 6, nullptr, 10);
	fclose(f);
	return kb;
}

} // namespace tools
} // namespace hannoy

#endif /* HANNOY_BENCH_COMMON_HPP */
