/*
 * common.hpp
 *	  What the programs beside the extension share (tools/hannoy_data,
 *	  bench/hannoy_bench, bench/hnswlib_bench): errors and exit statuses,
 *	  printf-style formatting, command line options and subcommands, text
 *	  files read whole and written atomically, CSV rows, timing and
 *	  percentiles.  Header-only, C++17, no PostgreSQL headers.
 */
#ifndef HANNOY_TOOLS_COMMON_HPP
#define HANNOY_TOOLS_COMMON_HPP

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
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace hannoy
{
namespace tools
{

/* A failure that ends the program with a message and exit status 1. */
class Fatal : public std::runtime_error
{
  public:
	using std::runtime_error::runtime_error;
};

/* A command line mistake: ends the program with a message, the usage and exit status 2. */
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
 * order, so that an option may repeat (hannoy_bench query --target ...); a
 * single value is the last one given.
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

	/* True when option or flag 'name' was given at least once. */
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

	/* Returns a floating-point option of at least 'lo', or 'fallback' when not given. */
	double
	Real(const std::string &name, double fallback, double lo) const
	{
		if (!Has(name))
			return fallback;
		std::string text = Get(name, "");
		char       *end = nullptr;
		errno = 0;
		double v = strtod(text.c_str(), &end);
		if (text.empty() || *end != '\0' || errno != 0 || !(v >= lo))
			throw UsageError(
			    Format("--%s must be a number >= %g, got \"%s\"", name.c_str(), lo, text.c_str()));
		return v;
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
 * A file written under a temporary name and renamed into place on Commit, so
 * that an interrupted run leaves no truncated file behind.
 */
class OutputFile
{
  public:
	/* Opens "<path>.tmp" for writing with a large buffer. */
	explicit OutputFile(const std::string &path) : path_(path), tmp_(path + ".tmp")
	{
		file_ = fopen(tmp_.c_str(), "w");
		if (file_ == nullptr)
			throw Fatal(Format("could not create \"%s\": %s", tmp_.c_str(), strerror(errno)));
		setvbuf(file_, nullptr, _IOFBF, size_t(1) << 22);
	}

	/* Closes and removes the temporary file unless it was committed. */
	~OutputFile()
	{
		if (file_ != nullptr)
		{
			fclose(file_);
			remove(tmp_.c_str());
		}
	}

	OutputFile(const OutputFile &) = delete;
	OutputFile &operator=(const OutputFile &) = delete;

	/* Appends 'text'. */
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
		bool failed = fflush(f) != 0 || ferror(f) != 0;
		int  saved = errno;
		if (fclose(f) != 0 && !failed)
		{
			failed = true;
			saved = errno;
		}
		if (failed)
		{
			remove(tmp_.c_str());
			throw Fatal(Format("could not write \"%s\": %s", tmp_.c_str(), strerror(saved)));
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

/* Creates directory 'dir' and its parents. */
inline void
MakeDirectory(const std::string &dir)
{
	std::error_code ec;
	std::filesystem::create_directories(dir, ec);
	if (ec)
		throw Fatal(
		    Format("could not create directory \"%s\": %s", dir.c_str(), ec.message().c_str()));
}

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

/* Runs 'worker' on 'threads' threads, this one among them, and waits for all of them. */
inline void
RunOnThreads(unsigned threads, const std::function<void()> &worker)
{
	std::vector<std::thread> pool;
	for (unsigned t = 1; t < threads; t++)
		pool.emplace_back(worker);
	worker();
	for (std::thread &t : pool)
		t.join();
}

/*
 * Runs 'body' as the whole program 'program': returns its exit status, or
 * prints an error and returns 1, or prints a UsageError and the usage and
 * returns 2.
 */
inline int
RunProgram(const char *program, void (*usage)(FILE *), const std::function<int()> &body)
{
	try
	{
		return body();
	}
	catch (const UsageError &e)
	{
		fprintf(stderr, "%s: %s\n", program, e.what());
		usage(stderr);
		return 2;
	}
	catch (const std::exception &e)
	{
		fprintf(stderr, "%s: error: %s\n", program, e.what());
		return 1;
	}
}

/* A subcommand: its name and the function that runs it with the whole argv. */
struct Subcommand
{
	const char *name;
	int (*run)(int argc, char **argv);
};

/*
 * Runs the subcommand argv[1] names with the whole argv, or prints the usage
 * for "help", "--help" and "-h".
 */
inline int
Dispatch(void (*usage)(FILE *), const std::vector<Subcommand> &commands, int argc, char **argv)
{
	if (argc < 2)
		throw UsageError("no subcommand given");
	std::string cmd = argv[1];
	for (const Subcommand &command : commands)
		if (cmd == command.name)
			return command.run(argc, argv);
	if (cmd == "help" || cmd == "--help" || cmd == "-h")
	{
		usage(stdout);
		return 0;
	}
	throw UsageError("unknown subcommand \"" + cmd + "\"");
}

/* Runs the program 'program' made of 'commands'; errors as RunProgram reports them. */
inline int
RunSubcommand(const char *program, void (*usage)(FILE *), const std::vector<Subcommand> &commands,
              int argc, char **argv)
{
	return RunProgram(program, usage, [&]() { return Dispatch(usage, commands, argc, argv); });
}

} // namespace tools
} // namespace hannoy

#endif /* HANNOY_TOOLS_COMMON_HPP */
