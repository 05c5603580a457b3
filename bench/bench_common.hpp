/*
 * bench_common.hpp
 *	  What the benchmark programs share: command line options, the data
 *	  files (base.copy, queries.txt, groundtruth.tsv), recall scoring and
 *	  timing statistics.  hannoy_bench (libpq) and hnswlib_bench (in-process)
 *	  include it so that every system is scored by the same code.
 *
 *	  Files, as tools/hannoy_data fmnist-prep writes them:
 *	    base.copy        "id<TAB>label<TAB>{x1,...,xd}" per row (COPY text format)
 *	    queries.txt      one "{x1,...,xd}" array literal per line
 *	    groundtruth.tsv  "#" header, then "query<TAB>id,id,...<TAB>dist,dist,..."
 *	                     per query (query = line of queries.txt from 1), the
 *	                     exact nearest base rows, nearest first
 */
#ifndef HANNOY_BENCH_COMMON_HPP
#define HANNOY_BENCH_COMMON_HPP

#include <sched.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace hannoy
{
namespace bench
{

/* Relative tolerance under which two true distances count as tied. */
constexpr double kTieTolerance = 1e-6;

/* A failure that ends the program with a message and exit status 1. */
class Fatal : public std::runtime_error
{
  public:
	using std::runtime_error::runtime_error;
};

/* A command line mistake: ends the program with a message and exit status 2. */
class UsageError : public std::runtime_error
{
  public:
	using std::runtime_error::runtime_error;
};

/* Formats like printf into a std::string. */
inline std::string Format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Formats like printf into a std::string. */
inline std::string
Format(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	va_list copy;
	va_copy(copy, ap);
	int len = vsnprintf(nullptr, 0, fmt, copy);
	va_end(copy);
	std::string out(len > 0 ? size_t(len) : 0, '\0');
	if (len > 0)
		vsnprintf(out.data(), out.size() + 1, fmt, ap);
	va_end(ap);
	return out;
}

/* Returns seconds elapsed since 'start'. */
inline double
SecondsSince(std::chrono::steady_clock::time_point start)
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/* Parses a whole decimal integer within [lo, hi]; 'what' names it in errors. */
inline long long
ParseInteger(const std::string &text, const std::string &what, long long lo, long long hi)
{
	char *end = nullptr;
	errno = 0;
	long long v = strtoll(text.c_str(), &end, 10);
	if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi)
		throw UsageError(Format("%s must be an integer between %lld and %lld, got \"%s\"",
		                        what.c_str(), lo, hi, text.c_str()));
	return v;
}

/* Splits 'text' at every 'sep'. */
inline std::vector<std::string>
Split(const std::string &text, char sep)
{
	std::vector<std::string> parts;
	size_t                   start = 0;
	while (true)
	{
		size_t pos = text.find(sep, start);
		parts.push_back(text.substr(start, pos - start));
		if (pos == std::string::npos)
			break;
		start = pos + 1;
	}
	return parts;
}

/* Parses a comma-separated list of integers within [lo, hi]. */
inline std::vector<long long>
ParseIntegerList(const std::string &text, const std::string &what, long long lo, long long hi)
{
	std::vector<long long> list;
	for (const std::string &part : Split(text, ','))
		list.push_back(ParseInteger(part, what, lo, hi));
	return list;
}

/*
 * Command line options "--name value", "--name=value" and bare flags, kept in
 * order, so that an option may repeat (hannoy_bench query --target ...).
 */
class Args
{
  public:
	/* Parses argv[first..] accepting only 'valued' options and 'flags'. */
	Args(int argc, char **argv, int first, const std::set<std::string> &valued,
	     const std::set<std::string> &flags)
	{
		for (int i = first; i < argc; i++)
		{
			std::string arg = argv[i];
			if (arg.rfind("--", 0) != 0)
				throw UsageError("unexpected argument \"" + arg + "\"");
			std::string name = arg.substr(2);
			std::string value;
			bool        has_value = false;
			size_t      eq = name.find('=');
			if (eq != std::string::npos)
			{
				value = name.substr(eq + 1);
				name = name.substr(0, eq);
				has_value = true;
			}
			if (flags.count(name))
			{
				if (has_value)
					throw UsageError("option --" + name + " takes no value");
				items_.emplace_back(name, "");
			}
			else if (valued.count(name))
			{
				if (!has_value)
				{
					if (i + 1 >= argc)
						throw UsageError("option --" + name + " needs a value");
					value = argv[++i];
				}
				items_.emplace_back(name, value);
			}
			else
				throw UsageError("unknown option --" + name);
		}
	}

	/* All options in command line order. */
	const std::vector<std::pair<std::string, std::string>> &
	Items() const
	{
		return items_;
	}

	/* True when 'name' was given at least once. */
	bool
	Has(const std::string &name) const
	{
		for (const auto &item : items_)
			if (item.first == name)
				return true;
		return false;
	}

	/* Returns the last value of 'name', or 'fallback' when it was not given. */
	std::string
	Get(const std::string &name, const std::string &fallback) const
	{
		std::string value = fallback;
		for (const auto &item : items_)
			if (item.first == name)
				value = item.second;
		return value;
	}

	/* Returns the last value of a required option. */
	std::string
	Required(const std::string &name) const
	{
		if (!Has(name))
			throw UsageError("option --" + name + " is required");
		return Get(name, "");
	}

	/* Returns an integer option within [lo, hi], or 'fallback' when not given. */
	long long
	Integer(const std::string &name, long long fallback, long long lo, long long hi) const
	{
		if (!Has(name))
			return fallback;
		return ParseInteger(Get(name, ""), "--" + name, lo, hi);
	}

  private:
	std::vector<std::pair<std::string, std::string>> items_;
};

/* Reads a text file into lines without their line ends, skipping empty lines. */
inline std::vector<std::string>
ReadLines(const std::string &path)
{
	FILE *f = fopen(path.c_str(), "r");
	if (f == nullptr)
		throw Fatal(Format("could not open \"%s\": %s", path.c_str(), strerror(errno)));
	std::vector<std::string> lines;
	std::string              line;
	char                     buf[1 << 16];
	while (fgets(buf, sizeof(buf), f) != nullptr)
	{
		line += buf;
		if (!line.empty() && line.back() == '\n')
		{
			while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
				line.pop_back();
			if (!line.empty())
				lines.push_back(line);
			line.clear();
		}
	}
	bool failed = ferror(f) != 0;
	fclose(f);
	if (failed)
		throw Fatal(Format("could not read \"%s\"", path.c_str()));
	if (!line.empty())
		lines.push_back(line);
	return lines;
}

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

/*
 * The exact neighbours of each query, for scoring recall@k the way
 * ann-benchmarks does: a returned row is a hit when its true distance is at
 * most the true k-th distance, so rows tied with the k-th neighbour count.
 * True distances come from the ground truth file, not from the system under
 * test; a row missing from the file's list can only be a hit when the list
 * ends in a tie with the k-th neighbour, and then its reported distance
 * decides.
 */
class GroundTruth
{
  public:
	/* Reads 'path' for queries 1..nqueries and scores at 'k'. */
	GroundTruth(const std::string &path, size_t nqueries, size_t k) : k_(k), queries_(nqueries)
	{
		std::vector<bool>        seen(nqueries, false);
		std::vector<std::string> lines = ReadLines(path);
		for (size_t ln = 0; ln < lines.size(); ln++)
		{
			const std::string &line = lines[ln];
			if (line[0] == '#')
				continue;
			std::string              where = Format("\"%s\" line %zu", path.c_str(), ln + 1);
			std::vector<std::string> fields = Split(line, '\t');
			if (fields.size() != 3)
				throw Fatal(where + ": expected 3 tab-separated fields");
			long long q = ParseInteger(fields[0], where + ": query number", 1, 1LL << 40);
			if (size_t(q) > nqueries)
				continue;
			std::vector<std::string> ids = Split(fields[1], ',');
			std::vector<std::string> dists = Split(fields[2], ',');
			if (ids.size() != dists.size())
				throw Fatal(where + ": as many ids as distances expected");
			if (ids.size() < k)
				throw Fatal(Format("%s: only %zu neighbours, fewer than k = %zu", where.c_str(),
				                   ids.size(), k));
			Query &query = queries_[q - 1];
			double last = 0;
			for (size_t r = 0; r < ids.size(); r++)
			{
				char  *end = nullptr;
				double d = strtod(dists[r].c_str(), &end);
				if (*end != '\0' || !(d >= 0))
					throw Fatal(where + ": bad distance \"" + dists[r] + "\"");
				int64_t id = ParseInteger(ids[r], where + ": id", 1, INT64_MAX);
				query.distance.emplace(id, d);
				if (r == k - 1)
					query.threshold = d * (1.0 + kTieTolerance);
				last = d;
			}
			query.list_ends_tied = last <= query.threshold;
			seen[q - 1] = true;
		}
		for (size_t q = 0; q < nqueries; q++)
			if (!seen[q])
				throw Fatal(
				    Format("\"%s\" has no ground truth for query %zu", path.c_str(), q + 1));
	}

	/* The k recall is scored at. */
	size_t
	K() const
	{
		return k_;
	}

	/*
	 * Returns how many of the 'n' rows a system returned for query 'q' (from
	 * 0) are hits; counts ids returned twice in 'duplicates' (scored once).
	 */
	size_t
	Hits(size_t q, const int64_t *ids, const double *reported, size_t n, size_t &duplicates) const
	{
		const Query                &query = queries_[q];
		std::unordered_set<int64_t> returned;
		size_t                      hits = 0;
		for (size_t i = 0; i < n; i++)
		{
			if (!returned.insert(ids[i]).second)
			{
				duplicates++;
				continue;
			}
			auto it = query.distance.find(ids[i]);
			if (it != query.distance.end())
				hits += it->second <= query.threshold;
			else if (query.list_ends_tied && reported != nullptr)
				hits += reported[i] <= query.threshold;
		}
		return hits;
	}

  private:
	struct Query
	{
		std::unordered_map<int64_t, double> distance; /* true distance of each listed id */
		double                              threshold = 0;
		bool                                list_ends_tied = false;
	};

	size_t             k_;
	std::vector<Query> queries_;
};

/* Returns the 'p' quantile (0..1, nearest rank) of 'values', which it sorts. */
inline double
Percentile(std::vector<double> &values, double p)
{
	if (values.empty())
		return 0.0;
	std::sort(values.begin(), values.end());
	size_t rank = size_t(std::ceil(p * double(values.size())));
	rank = std::clamp<size_t>(rank, 1, values.size());
	return values[rank - 1];
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
};

/* The CSV header of query results (queries.csv), shared by every program. */
constexpr const char *kQueryCsvHeader =
    "dataset,filter,system,m,efc,ef,k,queries,passes,recall,qps,qps_min,qps_max,p50_ms,p99_ms,plan";

/* Appends 'row' to the CSV file at 'path', writing 'header' first when the file is new. */
inline void
AppendCsv(const std::string &path, const std::string &header, const std::string &row)
{
	bool  fresh = !std::filesystem::exists(path) || std::filesystem::file_size(path) == 0;
	FILE *f = fopen(path.c_str(), "a");
	if (f == nullptr)
		throw Fatal(Format("could not open \"%s\": %s", path.c_str(), strerror(errno)));
	if (fresh)
		fprintf(f, "%s\n", header.c_str());
	fprintf(f, "%s\n", row.c_str());
	if (fclose(f) != 0)
		throw Fatal(Format("could not write \"%s\": %s", path.c_str(), strerror(errno)));
}

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

} // namespace bench
} // namespace hannoy

#endif /* HANNOY_BENCH_COMMON_HPP */
