/*
 * groundtruth.hpp
 *	  groundtruth.tsv, the exact nearest neighbours of every query, as
 *	  tools/hannoy_data fmnist-prep and bench/hannoy_bench groundtruth write
 *	  it and the query clients read it to score recall@k:
 *	    "#" header, then "query<TAB>id,id,...<TAB>dist,dist,..." per query
 *	    (query = line of queries.txt from 1), the exact nearest base rows,
 *	    nearest first, distances printed with 17 significant digits.
 */
#ifndef HANNOY_TOOLS_GROUNDTRUTH_HPP
#define HANNOY_TOOLS_GROUNDTRUTH_HPP

#include <unordered_map>
#include <unordered_set>

#include "common.hpp"

namespace hannoy
{
namespace tools
{

/* Relative tolerance under which two true distances count as tied. */
constexpr double TIE_TOLERANCE = 1e-6;

/* The exact nearest neighbours of one query: base ids, nearest first, and their distances. */
struct Neighbours
{
	std::vector<int64_t> ids;
	std::vector<double>  distances;
};

/*
 * Writes 'truth' (index = query - 1) to groundtruth.tsv at 'path'; 'note' is
 * appended to the header line (which rows were searched, say).
 */
inline void
WriteGroundTruth(const std::string &path, const std::vector<Neighbours> &truth,
                 const std::string &note)
{
	OutputFile file(path);
	file.Write("# query (line of queries.txt)\tbase ids, nearest first\texact euclidean distances" +
	           note + "\n");
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
				{
					query.kth = d;
					query.threshold = d * (1.0 + TIE_TOLERANCE);
				}
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

	/* The true distance of the k-th neighbour of query 'q' (from 0). */
	double
	KthDistance(size_t q) const
	{
		return queries_[q].kth;
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
		double                              kth = 0;
		double                              threshold = 0;
		bool                                list_ends_tied = false;
	};

	size_t             k_;
	std::vector<Query> queries_;
};

} // namespace tools
} // namespace hannoy

#endif /* HANNOY_TOOLS_GROUNDTRUTH_HPP */
