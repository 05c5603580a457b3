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
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <libpq-fe.h>
#include <zlib.h>

namespace hannoy
{
namespace tools
{

/* Where the Debian package dataset-fashion-mnist puts the IDX files. */
constexpr const char *kDefaultFmnistDir = "/usr/share/datasets/fashion-mnist";
constexpr size_t      kDefaultQueries = 1000;
constexpr size_t      kDefaultGroundTruthK = 100;
constexpr double      kDefaultTolerance = 1e-6;

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
static std::string Format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Formats like printf into a std::string. */
static std::string
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

/* ---------------------------------------------------------------------
 * Command line
 * ---------------------------------------------------------------------
 */

/* Options of one subcommand: "--name value", "--name=value" or a bare flag. */
class Options
{
  public:
	/* Parses argv[first..] accepting only 'valued' options and 'flags'. */
	Options(int argc, char **argv, int first, const std::set<std::string> &valued,
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
				flags_.insert(name);
			}
			else if (valued.count(name))
			{
				if (!has_value)
				{
					if (i + 1 >= argc)
						throw UsageError("option --" + name + " needs a value");
					value = argv[++i];
				}
				values_[name] = value;
			}
			else
				throw UsageError("unknown option --" + name);
		}
	}

	/* True when the bare flag 'name' was given. */
	bool
	Flag(const std::string &name) const
	{
		return flags_.count(name) > 0;
	}

	/* True when the valued option 'name' was given. */
	bool
	Has(const std::string &name) const
	{
		return values_.count(name) > 0;
	}

	/* Returns the value of a required option. */
	std::string
	Required(const std::string &name) const
	{
		auto it = values_.find(name);
		if (it == values_.end())
			throw UsageError("option --" + name + " is required");
		return it->second;
	}

	/* Returns the value of an option, or 'fallback' when it was not given. */
	std::string
	Get(const std::string &name, const std::string &fallback) const
	{
		auto it = values_.find(name);
		return it == values_.end() ? fallback : it->second;
	}

	/* Returns an integer option within [lo, hi], or 'fallback' when not given. */
	long long
	Integer(const std::string &name, long long fallback, long long lo, long long hi) const
	{
		if (!Has(name))
			return fallback;
		return ParseInteger(values_.at(name), "--" + name, lo, hi);
	}

	/* Returns a floating-point option of at least 'lo', or 'fallback'. */
	double
	Real(const std::string &name, double fallback, double lo) const
	{
		if (!Has(name))
			return fallback;
		const std::string &text = values_.at(name);
		char              *end = nullptr;
		errno = 0;
		double v = strtod(text.c_str(), &end);
		if (text.empty() || *end != '\0' || errno != 0 || !(v >= lo))
			throw UsageError(
			    Format("--%s must be a number >= %g, got \"%s\"", name.c_str(), lo, text.c_str()));
		return v;
	}

	/* Parses a whole decimal integer within [lo, hi]; 'what' names it in errors. */
	static long long
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

  private:
	std::map<std::string, std::string> values_;
	std::set<std::string>              flags_;
};

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

/* A file written under a temporary name and renamed into place on Commit. */
class AtomicFile
{
  public:
	/* Opens "<path>.tmp" for writing with a large buffer. */
	explicit AtomicFile(const std::string &path) : path_(path), tmp_(path + ".tmp")
	{
		file_ = fopen(tmp_.c_str(), "w");
		if (file_ == nullptr)
			throw Fatal(Format("could not create \"%s\": %s", tmp_.c_str(), strerror(errno)));
		setvbuf(file_, nullptr, _IOFBF, size_t(1) << 20);
	}

	/* Closes and removes the temporary file unless it was committed. */
	~AtomicFile()
	{
		if (file_ != nullptr)
		{
			fclose(file_);
			remove(tmp_.c_str());
		}
	}

	AtomicFile(const AtomicFile &) = delete;
	AtomicFile &operator=(const AtomicFile &) = delete;

	/* Appends 'text' to the file. */
	void
	Write(const std::string &text)
	{
		if (fwrite(text.data(), 1, text.size(), file_) != text.size())
			throw Fatal(Format("could not write \"%s\": %s", tmp_.c_str(), strerror(errno)));
	}

	/* Flushes, closes and renames the file to its final name. */
	void
	Commit()
	{
		FILE *f = file_;
		file_ = nullptr;
		if (fflush(f) != 0 || ferror(f))
		{
			int saved = errno;
			fclose(f);
			remove(tmp_.c_str());
			throw Fatal(Format("could not write \"%s\": %s", tmp_.c_str(), strerror(saved)));
		}
		if (fclose(f) != 0)
		{
			remove(tmp_.c_str());
			throw Fatal(Format("could not close \"%s\": %s", tmp_.c_str(), strerror(errno)));
		}
		if (rename(tmp_.c_str(), path_.c_str()) != 0)
			throw Fatal(Format("could not rename \"%s\" to \"%s\": %s", tmp_.c_str(), path_.c_str(),
			                   strerror(errno)));
	}

  private:
	std::string path_;
	std::string tmp_;
	FILE       *file_ = nullptr;
};

/* Reads a text file into lines without their line ends, skipping empty lines. */
static std::vector<std::string>
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

/* Splits 'text' at every 'sep'. */
static std::vector<std::string>
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

/* Writes base.copy: "id<TAB>label<TAB>{...}" per image, ids from 1. */
static void
WriteBaseCopy(const std::string &path, const ImageSet &base)
{
	AtomicFile  file(path);
	std::string line;
	for (size_t i = 0; i < base.count; i++)
	{
		line.clear();
		line += std::to_string(i + 1);
		line += '\t';
		line += std::to_string(unsigned(base.labels[i]));
		line += '\t';
		AppendArrayLiteral(line, base.Row(i), base.dims);
		line += '\n';
		file.Write(line);
	}
	file.Commit();
}

/* Writes queries.txt: one array literal per line. */
static void
WriteQueries(const std::string &path, const ImageSet &queries)
{
	AtomicFile  file(path);
	std::string line;
	for (size_t i = 0; i < queries.count; i++)
	{
		line.clear();
		AppendArrayLiteral(line, queries.Row(i), queries.dims);
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

/* The exact nearest neighbours of one query: ids from 1, nearest first. */
struct Neighbours
{
	std::vector<uint32_t> ids;
	std::vector<double>   distances;
};

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
				n.ids[r] = uint32_t(keys[r] & 0xffffffffu);
				n.distances[r] = std::sqrt(double(keys[r] >> 32));
			}
		}
	};
	std::vector<std::thread> pool;
	for (unsigned t = 1; t < threads; t++)
		pool.emplace_back(worker);
	worker();
	for (std::thread &t : pool)
		t.join();
	return result;
}

/* Writes groundtruth.tsv: "query<TAB>id,id,...<TAB>dist,dist,..." per query, queries from 1. */
static void
WriteGroundTruth(const std::string &path, const std::vector<Neighbours> &truth)
{
	AtomicFile file(path);
	file.Write("# query (line of queries.txt)\tbase ids, nearest first\texact euclidean "
	           "distances\n");
	std::string line;
	char        num[64];
	for (size_t q = 0; q < truth.size(); q++)
	{
		line = std::to_string(q + 1);
		line += '\t';
		for (size_t r = 0; r < truth[q].ids.size(); r++)
		{
			if (r > 0)
				line += ',';
			line += std::to_string(truth[q].ids[r]);
		}
		line += '\t';
		for (size_t r = 0; r < truth[q].distances.size(); r++)
		{
			if (r > 0)
				line += ',';
			snprintf(num, sizeof(num), "%.17g", truth[q].distances[r]);
			line += num;
		}
		line += '\n';
		file.Write(line);
	}
	file.Commit();
}

/* Returns seconds elapsed since 'start'. */
static double
SecondsSince(std::chrono::steady_clock::time_point start)
{
	return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/* Runs "fmnist-prep": writes base.copy, queries.txt and groundtruth.tsv into --out. */
static int
RunFmnistPrep(int argc, char **argv)
{
	Options opts(argc, argv, 2, {"out", "train-limit", "queries", "data-dir", "threads", "gt-k"},
	             {});
	std::string out = opts.Required("out");
	std::string data_dir = opts.Get("data-dir", kDefaultFmnistDir);
	unsigned    hw = std::max(1u, std::thread::hardware_concurrency());
	unsigned    threads = unsigned(opts.Integer("threads", hw, 1, 1024));
	size_t      nqueries = size_t(opts.Integer("queries", kDefaultQueries, 1, 10000));

	auto     start = std::chrono::steady_clock::now();
	IdxArray probe = ReadIdxGz(data_dir + "/train-labels-idx1-ubyte.gz", 1);
	size_t   train_limit = size_t(opts.Integer("train-limit", probe.dims[0], 1, probe.dims[0]));
	size_t   gt_k = size_t(opts.Integer("gt-k", kDefaultGroundTruthK, 1, 100000));
	gt_k = std::min(gt_k, train_limit);

	ImageSet base = LoadSplit(data_dir, "train", train_limit);
	ImageSet queries = LoadSplit(data_dir, "t10k", nqueries);
	if (base.dims != queries.dims)
		throw Fatal(Format("train images have %zu pixels but test images have %zu", base.dims,
		                   queries.dims));

	std::error_code ec;
	std::filesystem::create_directories(out, ec);
	if (ec)
		throw Fatal(
		    Format("could not create directory \"%s\": %s", out.c_str(), ec.message().c_str()));

	WriteBaseCopy(out + "/base.copy", base);
	WriteQueries(out + "/queries.txt", queries);
	printf("wrote %zu base rows and %zu queries of %zu dimensions to %s (%.1f s)\n", base.count,
	       queries.count, base.dims, out.c_str(), SecondsSince(start));
	fflush(stdout);

	auto                    gt_start = std::chrono::steady_clock::now();
	std::vector<Neighbours> truth = BruteForce(base, queries, gt_k, threads);
	WriteGroundTruth(out + "/groundtruth.tsv", truth);
	printf("wrote exact top-%zu ground truth on %u threads (%.1f s)\n", gt_k, threads,
	       SecondsSince(gt_start));
	return 0;
}

/* ---------------------------------------------------------------------
 * bench
 * ---------------------------------------------------------------------
 */

/* Owns a libpq connection and runs statements on it, failing loudly. */
class Connection
{
  public:
	/* Connects with 'conninfo' or fails with the server's message. */
	explicit Connection(const std::string &conninfo)
	{
		conn_ = PQconnectdb(conninfo.c_str());
		if (conn_ == nullptr)
			throw Fatal("could not connect to the server: out of memory");
		if (PQstatus(conn_) != CONNECTION_OK)
		{
			std::string msg = Trim(PQerrorMessage(conn_));
			PQfinish(conn_);
			conn_ = nullptr;
			throw Fatal("could not connect to the server: " + msg);
		}
	}

	/* Closes the connection. */
	~Connection()
	{
		if (conn_ != nullptr)
			PQfinish(conn_);
	}

	Connection(const Connection &) = delete;
	Connection &operator=(const Connection &) = delete;

	/* Runs a statement that returns no rows. */
	void
	Command(const std::string &sql)
	{
		PGresult *res = PQexec(conn_, sql.c_str());
		Check(res, PGRES_COMMAND_OK, sql);
		PQclear(res);
	}

	/* Prepares 'sql' with one parameter under the name 'name'. */
	void
	Prepare(const std::string &name, const std::string &sql)
	{
		PGresult *res = PQprepare(conn_, name.c_str(), sql.c_str(), 1, nullptr);
		Check(res, PGRES_COMMAND_OK, sql);
		PQclear(res);
	}

	/*
	 * Runs prepared statement 'name' with one text parameter; errors name it
	 * "<what> <number>".  The caller PQclears the result.
	 */
	PGresult *
	ExecPrepared(const std::string &name, const std::string &param, const std::string &what,
	             size_t number)
	{
		const char *values[1] = {param.c_str()};
		PGresult   *res =
		    PQexecPrepared(conn_, name.c_str(), 1, values, nullptr, nullptr, 0 /* text */);
		if (res == nullptr || PQresultStatus(res) != PGRES_TUPLES_OK)
			Check(res, PGRES_TUPLES_OK, what + " " + std::to_string(number));
		return res;
	}

  private:
	/* Fails with the server's message unless 'res' has status 'want'; frees 'res' on failure. */
	void
	Check(PGresult *res, ExecStatusType want, const std::string &what)
	{
		if (res != nullptr && PQresultStatus(res) == want)
			return;
		std::string msg = Trim(res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
		if (msg.empty())
			msg = Trim(PQerrorMessage(conn_));
		if (res != nullptr)
			PQclear(res);
		std::string shown = what.size() > 200 ? what.substr(0, 200) + "..." : what;
		throw Fatal("query failed: " + msg + "\n  statement: " + shown);
	}

	/* Removes trailing white space from a libpq message. */
	static std::string
	Trim(const char *text)
	{
		std::string s = text != nullptr ? text : "";
		while (!s.empty() && isspace(static_cast<unsigned char>(s.back())))
			s.pop_back();
		return s;
	}

	PGconn *conn_ = nullptr;
};

/* Reads groundtruth.tsv into the true k-th distance of each query (index = query - 1). */
static std::vector<double>
ReadKthDistances(const std::string &path, size_t nqueries, size_t k)
{
	std::vector<double>      kth(nqueries, -1.0);
	std::vector<std::string> lines = ReadLines(path);
	for (size_t ln = 0; ln < lines.size(); ln++)
	{
		const std::string &line = lines[ln];
		if (line[0] == '#')
			continue;
		std::vector<std::string> fields = Split(line, '\t');
		std::string              where = Format("\"%s\" line %zu", path.c_str(), ln + 1);
		if (fields.size() != 3)
			throw Fatal(where + ": expected 3 tab-separated fields");
		long long q = Options::ParseInteger(fields[0], where + ": query number", 1, 1LL << 40);
		if (size_t(q) > nqueries)
			continue;
		std::vector<std::string> dists = Split(fields[2], ',');
		if (dists.size() < k)
			throw Fatal(Format("%s: only %zu neighbours, fewer than k = %zu", where.c_str(),
			                   dists.size(), k));
		char  *end = nullptr;
		double d = strtod(dists[k - 1].c_str(), &end);
		if (*end != '\0' || !(d >= 0))
			throw Fatal(where + ": bad distance \"" + dists[k - 1] + "\"");
		kth[q - 1] = d;
	}
	for (size_t q = 0; q < nqueries; q++)
		if (kth[q] < 0)
			throw Fatal(Format("\"%s\" has no ground truth for query %zu", path.c_str(), q + 1));
	return kth;
}

/* Returns the 'p' quantile (0..1, nearest rank) of sorted 'values'. */
static double
Percentile(const std::vector<double> &sorted, double p)
{
	if (sorted.empty())
		return 0.0;
	size_t rank = size_t(std::ceil(p * double(sorted.size())));
	rank = std::clamp<size_t>(rank, 1, sorted.size());
	return sorted[rank - 1];
}

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
	double                   tolerance = kDefaultTolerance;
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
			PQclear(conn.ExecPrepared("knn", setup.queries[q], warmup_what, q + 1));

	std::vector<double> latencies;
	latencies.reserve(nq * setup.repeat);
	size_t hits = 0;
	auto   start = std::chrono::steady_clock::now();
	for (size_t rep = 0; rep < setup.repeat; rep++)
	{
		for (size_t q = 0; q < nq; q++)
		{
			auto      t0 = std::chrono::steady_clock::now();
			PGresult *res = conn.ExecPrepared("knn", setup.queries[q], what, q + 1);
			latencies.push_back(SecondsSince(t0) * 1000.0);
			if (size_t(PQntuples(res)) < setup.k)
				run.short_results++;
			hits += CountHits(res, setup.kth[q], setup.tolerance, run);
			PQclear(res);
		}
	}
	double elapsed = SecondsSince(start);
	std::sort(latencies.begin(), latencies.end());
	run.recall = double(hits) / double(nq * setup.repeat * setup.k);
	run.qps = elapsed > 0 ? double(nq * setup.repeat) / elapsed : 0.0;
	run.p50_ms = Percentile(latencies, 0.50);
	run.p99_ms = Percentile(latencies, 0.99);
	return run;
}

/* Parses a comma-separated list of positive ef_search values. */
static std::vector<long long>
ParseEfList(const std::string &text)
{
	std::vector<long long> list;
	for (const std::string &part : Split(text, ','))
		list.push_back(Options::ParseInteger(part, "every --ef value", 1, 1000000));
	return list;
}

/* Appends one row to the CSV file, writing the header first when the file is new or empty. */
static void
AppendCsv(const std::string &path, const std::string &label, const RunResult &run)
{
	bool  fresh = !std::filesystem::exists(path) || std::filesystem::file_size(path) == 0;
	FILE *f = fopen(path.c_str(), "a");
	if (f == nullptr)
		throw Fatal(Format("could not open \"%s\": %s", path.c_str(), strerror(errno)));
	if (fresh)
		fprintf(f, "label,ef,recall,qps,p50_ms,p99_ms\n");
	fprintf(f, "%s,%s,%.4f,%.1f,%.3f,%.3f\n", label.c_str(), run.ef.c_str(), run.recall, run.qps,
	        run.p50_ms, run.p99_ms);
	if (fclose(f) != 0)
		throw Fatal(Format("could not write \"%s\": %s", path.c_str(), strerror(errno)));
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
	Options                            opts(argc, argv, 2,
	                                        {"conninfo", "table", "column", "queries", "groundtruth", "k", "ef", "op",
	                                         "repeat", "label", "csv", "exact-queries", "tolerance"},
	                                        {"warmup", "exact"});
	std::string                        conninfo = opts.Required("conninfo");
	std::string                        table = opts.Required("table");
	std::string                        column = opts.Required("column");
	std::string                        op = opts.Get("op", "<->");
	static const std::set<std::string> known_ops = {"<->", "<=>", "<#>", "<+>"};
	if (!known_ops.count(op))
		throw UsageError("--op must be one of <->, <=>, <#>, <+>, got \"" + op + "\"");
	bool                   exact = opts.Flag("exact");
	std::vector<long long> efs;
	if (!exact)
		efs = ParseEfList(opts.Required("ef"));
	else if (opts.Has("ef"))
		fprintf(stderr, "hannoy_data: note: --ef is ignored with --exact\n");

	BenchSetup setup;
	setup.k = size_t(opts.Integer("k", 10, 1, 100000));
	setup.repeat = size_t(opts.Integer("repeat", 1, 1, 1000000));
	setup.warmup = opts.Flag("warmup");
	setup.tolerance = opts.Real("tolerance", kDefaultTolerance, 0.0);
	setup.queries = ReadLines(opts.Required("queries"));
	if (setup.queries.empty())
		throw Fatal("\"" + opts.Required("queries") + "\" holds no queries");
	if (exact && opts.Has("exact-queries"))
	{
		size_t limit = size_t(opts.Integer("exact-queries", 0, 1, 1LL << 40));
		if (limit < setup.queries.size())
			setup.queries.resize(limit);
	}
	setup.kth = ReadKthDistances(opts.Required("groundtruth"), setup.queries.size(), setup.k);
	std::string label = opts.Get("label", exact ? "exact" : "hannoy");

	Connection conn(conninfo);
	if (exact)
		conn.Command("SET enable_indexscan = off");
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
		conn.Command("SET hannoy.ef_search = " + std::to_string(ef));
		runs.push_back(MeasureRun(conn, setup, std::to_string(ef)));
		PrintRun(runs.back(), setup.k);
	}
	if (exact)
		PrintRun(runs.back(), setup.k);
	if (opts.Has("csv"))
		for (const RunResult &run : runs)
			AppendCsv(opts.Required("csv"), label, run);
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

/* Dispatches to a subcommand and turns errors into messages and exit codes. */
static int
Main(int argc, char **argv)
{
	try
	{
		if (argc < 2)
			throw UsageError("no subcommand given");
		std::string cmd = argv[1];
		if (cmd == "fmnist-prep")
			return RunFmnistPrep(argc, argv);
		if (cmd == "bench")
			return RunBench(argc, argv);
		if (cmd == "help" || cmd == "--help" || cmd == "-h")
		{
			PrintUsage(stdout);
			return 0;
		}
		throw UsageError("unknown subcommand \"" + cmd + "\"");
	}
	catch (const UsageError &e)
	{
		fprintf(stderr, "hannoy_data: %s\n", e.what());
		PrintUsage(stderr);
		return 2;
	}
	catch (const std::exception &e)
	{
		fprintf(stderr, "hannoy_data: error: %s\n", e.what());
		return 1;
	}
}

} // namespace tools
} // namespace hannoy

/* Runs the program. */
int
main(int argc, char **argv)
{
	return hannoy::tools::Main(argc, argv);
}
