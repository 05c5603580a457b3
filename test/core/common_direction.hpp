/*
 * common_direction.hpp
 *	  Test data in the shape of text embeddings, as bench/make_synthetic.py's angular set
 *	  draws it: ten clusters that share one large common direction, whose
 *	  weight varies per row (log-normally), L2-normalised.  The heuristic's
 *	  choice alone keeps few links on it (a mean layer-0 degree of 8 of 32),
 *	  which once left graphs too sparse for their own searches.  Also the
 *	  recall check the graph tests share.
 */
#ifndef HANNOY_TEST_COMMON_DIRECTION_HPP
#define HANNOY_TEST_COMMON_DIRECTION_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "hannoy/hannoy.h"
#include "test_util.hpp"

namespace hannoy_test
{

/* A random unit vector. */
inline std::vector<double>
random_unit(std::mt19937_64 &rng, uint32_t dims)
{
	std::normal_distribution<double> normal;
	std::vector<double>              v(dims);
	double                           norm = 0;
	for (double &x : v)
	{
		x = normal(rng);
		norm += x * x;
	}
	for (double &x : v)
		x /= std::sqrt(norm);
	return v;
}

/*
 * 'n' rows: 4 * w * c + t[k] + e, with w = exp(N(0, 1)), c the common
 * direction, t[k] one of ten cluster directions and e a standard normal
 * vector over sqrt(dims); each row normalised.  The same 'seed' gives the
 * same directions, so rows drawn with another 'rows_seed' come from the
 * same distribution (held-out queries).
 */
inline std::vector<float>
common_direction(size_t n, uint32_t dims, uint64_t seed, uint64_t rows_seed)
{
	std::mt19937_64                  shape(seed);
	std::vector<double>              common = random_unit(shape, dims);
	std::vector<std::vector<double>> centres;
	for (int k = 0; k < 10; k++)
		centres.push_back(random_unit(shape, dims));
	std::mt19937_64                  rng(rows_seed);
	std::normal_distribution<double> normal;
	std::vector<float>               out(n * dims);
	std::vector<double>              x(dims);
	for (size_t i = 0; i < n; i++)
	{
		size_t k = rng() % centres.size();
		double w = 4.0 * std::exp(normal(rng)), norm = 0;
		for (uint32_t d = 0; d < dims; d++)
		{
			x[d] = w * common[d] + centres[k][d] + normal(rng) / std::sqrt(double(dims));
			norm += x[d] * x[d];
		}
		for (uint32_t d = 0; d < dims; d++)
			out[i * dims + d] = float(x[d] / std::sqrt(norm));
	}
	return out;
}

/*
 * Recall@10 of scans of 'env' at width 'ef' for the rows of 'queries',
 * against the exact top 10 of 'base' (row i has TID i + 1).
 */
inline double
recall_at(HannoyEnv *env, HannoyMetric metric, uint32_t dims, const std::vector<float> &base,
          const std::vector<float> &queries, uint32_t ef)
{
	size_t      n = base.size() / dims, nq = queries.size() / dims, hits = 0;
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK) << err.message;
	std::vector<std::pair<double, HannoyTid>> d(n);
	for (size_t q = 0; q < nq; q++)
	{
		const float *qv = &queries[q * dims];
		for (size_t i = 0; i < n; i++)
			d[i] = {hannoy_distance(metric, qv, &base[i * dims], dims), HannoyTid(i + 1)};
		std::partial_sort(d.begin(), d.begin() + 10, d.end());
		EXPECT_EQ(hannoy_scan_start(scan, qv, dims, ef, 0, &err), HANNOY_OK) << err.message;
		for (const Row &r : scan_rows(scan, 10))
			for (int k = 0; k < 10; k++)
				hits += d[k].second == r.tid;
	}
	hannoy_scan_free(scan);
	return double(hits) / (10.0 * nq);
}

} // namespace hannoy_test

#endif /* HANNOY_TEST_COMMON_DIRECTION_HPP */
