/*
 * test_binary.cpp
 *	  1-bit codes (storage format 6, DESIGN.md "1-bit codes"): the rotation,
 *	  the record, the distance estimates of every float metric, the choice
 *	  of quantizer, and scans, inserts, VACUUM and hannoy_verify on an index
 *	  built with them: every row once at its exact distance, the first
 *	  window (hannoy.rerank_window) in exact order, and recall.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"
#include "quantizer.hpp"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::build_all;
using hannoy_test::clustered;
using hannoy_test::env_stats;
using hannoy_test::Row;
using hannoy_test::scan_rows;
using hannoy_test::TempEnvDir;
using hannoy_test::test_meta;
using hannoy_test::verify;

constexpr uint32_t DIMS = 200; /* padded to 256 by the rotation */

const HannoyMetric FLOAT_METRICS[] = {HANNOY_METRIC_L2, HANNOY_METRIC_COSINE, HANNOY_METRIC_IP,
                                      HANNOY_METRIC_L1};

/* A 1-bit quantizer fitted to the rows of 'v' (dims floats each). */
hannoy::Quantizer
binary_fitted(HannoyMetric metric, const std::vector<float> &v, uint32_t dims, uint64_t seed = 5)
{
	hannoy::QuantizerFit fit(dims);
	for (size_t i = 0; i < v.size() / dims; i++)
		fit.add(&v[i * dims]);
	return fit.binary(metric, seed);
}

/* Rows drawn around 20 centres, shifted far from the origin, with uneven scales per dimension. */
std::vector<float>
skewed(size_t n, uint32_t dims, uint32_t seed)
{
	std::vector<float> v = clustered(n, dims, seed);
	for (size_t i = 0; i < n; i++)
		for (uint32_t d = 0; d < dims; d++)
			v[i * dims + d] = 3.0f + v[i * dims + d] * (d % 7 == 0 ? 4.0f : 0.5f);
	return v;
}

/* A scan with width 'ef' and first window 'rerank' (0: ef): every row it returns. */
std::vector<Row>
scan_all(HannoyEnv *env, const float *q, uint32_t ef, uint32_t rerank)
{
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	hannoy_scan_set_rerank_window(scan, rerank);
	EXPECT_EQ(hannoy_scan_start(scan, q, DIMS, ef, 0, &err), HANNOY_OK) << err.message;
	std::vector<Row> rows = scan_rows(scan);
	hannoy_scan_free(scan);
	return rows;
}

/* An index of 'base' with 1-bit codes (and three NULL rows). */
HannoyEnv *
binary_index(const char *path, HannoyMetric metric, const std::vector<float> &base)
{
	HannoyEnv  *env = build_all(path, test_meta(metric, DIMS, 8, 64), base, 2, 3, 20, nullptr,
	                            HANNOY_QUANTIZER_BINARY);
	HannoyStats st = env_stats(env);
	EXPECT_EQ(st.quantizer, uint32_t(hannoy::QUANTIZER_BINARY));
	EXPECT_EQ(st.code_bytes, 256u / 8 + 12);
	EXPECT_EQ(st.codes, base.size() / DIMS);
	EXPECT_EQ(st.quantizer_bytes, 16u + 8 + DIMS * 4);
	return env;
}

/* The rotation keeps lengths and inner products, and the same seed gives the same rotation. */
TEST(BinaryQuantizer, RotationIsOrthonormalAndSeeded)
{
	std::vector<float> rows = clustered(50, DIMS, 3);
	hannoy::Quantizer  q = binary_fitted(HANNOY_METRIC_L2, rows, DIMS);
	ASSERT_EQ(q.padded(), 256u);
	std::mt19937                    rng(1);
	std::normal_distribution<float> g;
	std::vector<float>              a(q.padded()), b(q.padded()), ra(q.padded()), rb(q.padded());
	for (int t = 0; t < 20; t++)
	{
		for (uint32_t i = 0; i < q.padded(); i++)
		{
			a[i] = g(rng);
			b[i] = g(rng);
		}
		q.rotate(a.data(), ra.data());
		q.rotate(b.data(), rb.data());
		double dot = 0, rdot = 0, aa = 0, raa = 0;
		for (uint32_t i = 0; i < q.padded(); i++)
		{
			dot += double(a[i]) * b[i];
			rdot += double(ra[i]) * rb[i];
			aa += double(a[i]) * a[i];
			raa += double(ra[i]) * ra[i];
		}
		EXPECT_NEAR(raa, aa, 1e-4 * aa);
		EXPECT_NEAR(rdot, dot, 1e-3 * std::sqrt(aa) * std::sqrt(aa));
		/* the rotation is no permutation or sign change of the input: it mixes */
		EXPECT_GT(std::fabs(ra[0] - a[0]) + std::fabs(ra[1] - a[1]), 1e-3);
	}
	hannoy::Quantizer    same = binary_fitted(HANNOY_METRIC_L2, rows, DIMS);
	hannoy::Quantizer    other = binary_fitted(HANNOY_METRIC_L2, rows, DIMS, 6);
	std::vector<uint8_t> c1(q.code_bytes()), c2(q.code_bytes()), c3(q.code_bytes());
	q.encode(&rows[0], c1.data());
	same.encode(&rows[0], c2.data());
	other.encode(&rows[0], c3.data());
	EXPECT_EQ(c1, c2);
	EXPECT_NE(c1, c3);
}

/* The record holds the seed and the mean only (no d x d matrix) and refuses damage. */
TEST(BinaryQuantizer, RecordRoundTripsAndRefusesDamage)
{
	std::vector<float> rows = skewed(100, DIMS, 4);
	hannoy::Quantizer  q = binary_fitted(HANNOY_METRIC_COSINE, rows, DIMS);
	std::string        r = q.record();
	EXPECT_EQ(r.size(), 16u + 8u + DIMS * sizeof(float));
	EXPECT_EQ(r.size(), q.record_bytes());
	hannoy::Quantizer back =
	    hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, r.data(), r.size());
	EXPECT_EQ(back.kind(), hannoy::QUANTIZER_BINARY);
	std::vector<uint8_t> c1(q.code_bytes()), c2(q.code_bytes());
	for (size_t i = 0; i < 100; i++)
	{
		q.encode(&rows[i * DIMS], c1.data());
		back.encode(&rows[i * DIMS], c2.data());
		ASSERT_EQ(c1, c2);
	}
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, r.data(), r.size() - 4),
	             hannoy::Error);
	std::string bad = r;
	float       nan = std::nanf("");
	std::memcpy(&bad[16 + 8], &nan, sizeof(nan));
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, bad.data(), bad.size()),
	             hannoy::Error);
	std::string wrong_size = r;
	uint32_t    code_bytes = 99;
	std::memcpy(&wrong_size[8], &code_bytes, sizeof(code_bytes));
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, wrong_size.data(),
	                                            wrong_size.size()),
	             hannoy::Error);

	/*
	 * A cosine quantizer scales vectors to length 1 (flag 2 of the record);
	 * one without the flag, as written before it existed, encodes vectors as
	 * they come, and reads back so; the flag on another metric is refused.
	 */
	uint32_t flags;
	std::memcpy(&flags, &r[12], sizeof(flags));
	EXPECT_EQ(flags, 2u);
	std::string old_record = r;
	flags = 0;
	std::memcpy(&old_record[12], &flags, sizeof(flags));
	hannoy::Quantizer old_q = hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS,
	                                                         old_record.data(), old_record.size());
	EXPECT_EQ(old_q.record(), old_record);
	std::vector<float> doubled(rows.begin(), rows.begin() + DIMS);
	for (float &x : doubled)
		x *= 2.0f;
	q.encode(&rows[0], c1.data());
	q.encode(doubled.data(), c2.data());
	EXPECT_EQ(std::vector<uint8_t>(c1.begin(), c1.begin() + 256 / 8),
	          std::vector<uint8_t>(c2.begin(), c2.begin() + 256 / 8))
	    << "with the flag, a vector's length does not change its signs";
	old_q.encode(&rows[0], c1.data());
	old_q.encode(doubled.data(), c2.data());
	EXPECT_NE(c1, c2) << "without it, it does";
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_L2, DIMS, r.data(), r.size()),
	             hannoy::Error);
	EXPECT_EQ(binary_fitted(HANNOY_METRIC_L2, rows, DIMS).record().substr(12, 4),
	          std::string(4, '\0'));
}

/* Which codes each index option gives, and that bit strings take none by name. */
TEST(BinaryQuantizer, ChoiceFitsTheMetric)
{
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_AUTO, HANNOY_METRIC_L2, 784),
	          uint32_t(hannoy::QUANTIZER_SCALAR8));
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_AUTO, HANNOY_METRIC_L2, 32), 0u);
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_NONE, HANNOY_METRIC_L2, 784), 0u);
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_SCALAR8, HANNOY_METRIC_IP, 8),
	          uint32_t(hannoy::QUANTIZER_SCALAR8));
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_BINARY, HANNOY_METRIC_L1, 8),
	          uint32_t(hannoy::QUANTIZER_BINARY));
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_AUTO, HANNOY_METRIC_HAMMING, 4096), 0u);
	EXPECT_EQ(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_NONE, HANNOY_METRIC_HAMMING, 4096), 0u);
	EXPECT_THROW(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_BINARY, HANNOY_METRIC_HAMMING, 64),
	             hannoy::Error);
	EXPECT_THROW(hannoy::quantizer_kind_for(HANNOY_QUANTIZER_SCALAR8, HANNOY_METRIC_HAMMING, 64),
	             hannoy::Error);
	EXPECT_THROW(hannoy::quantizer_kind_for(9, HANNOY_METRIC_L2, 64), hannoy::Error);
}

/*
 * The estimates rank well enough to re-rank from: for every float metric,
 * on data shifted off the origin with uneven scales, the true 10 nearest
 * lie among the 100 nearest by estimate (of 2,000), and the estimate
 * correlates with the exact distance.
 */
/* The ids of the first 'n' of 'sorted' (pairs of distance and id, nearest first). */
template <class Id>
std::vector<uint64_t>
first_ids(const std::vector<std::pair<double, Id>> &sorted, size_t n)
{
	std::vector<uint64_t> ids;
	for (size_t i = 0; i < n && i < sorted.size(); i++)
		ids.push_back(sorted[i].second);
	return ids;
}

/* How many of the ids 'truth' are among the ids 'window'. */
size_t
found_in(const std::vector<uint64_t> &window, const std::vector<uint64_t> &truth)
{
	std::set<uint64_t> w(window.begin(), window.end());
	size_t             n = 0;
	for (uint64_t id : truth)
		n += w.count(id);
	return n;
}

/* How well a 1-bit quantizer's estimates rank rows for queries: see window_quality. */
struct EstimateQuality
{
	double hits;        /* share of each query's exact 10 nearest among its estimated 100 */
	double correlation; /* mean Pearson correlation of estimated and exact distances */
	double top10;       /* share of each query's exact 10 nearest among its estimated 10 */
};

/*
 * Fits a quantizer of 'kind' (1-bit unless said) for 'metric' to the first
 * 'n' rows of 'v' and asks
 * each of the following rows, as a query, how many of its exact 10 nearest
 * rows are among the 100 its estimates put first.
 */
EstimateQuality
window_quality(HannoyMetric metric, const std::vector<float> &v, size_t n, uint32_t dims,
               hannoy::QuantizerKind kind = hannoy::QUANTIZER_BINARY)
{
	std::vector<float>   base(v.begin(), v.begin() + n * dims);
	hannoy::QuantizerFit fit(dims);
	for (size_t i = 0; i < n; i++)
		fit.add(&base[i * dims]);
	hannoy::Quantizer q =
	    kind == hannoy::QUANTIZER_BINARY ? fit.binary(metric, 5) : fit.quantizer(metric);
	std::vector<uint8_t> codes(n * q.code_bytes());
	for (size_t i = 0; i < n; i++)
		q.encode(&base[i * dims], &codes[i * q.code_bytes()]);
	size_t       hits = 0, total = 0, top10 = 0;
	double       corr_sum = 0;
	const size_t queries = v.size() / dims - n;
	for (size_t qi = 0; qi < queries; qi++)
	{
		const float      *query = &v[(n + qi) * dims];
		hannoy::QueryForm form;
		q.prepare(query, form);
		std::vector<std::pair<double, size_t>> exact, est;
		for (size_t i = 0; i < n; i++)
		{
			exact.emplace_back(hannoy_distance(metric, query, &base[i * dims], dims), i);
			est.emplace_back(q.distance(&codes[i * q.code_bytes()], form), i);
		}
		double mx = 0, my = 0;
		for (size_t i = 0; i < n; i++)
		{
			mx += exact[i].first;
			my += est[i].first;
		}
		mx /= n;
		my /= n;
		double sxy = 0, sxx = 0, syy = 0;
		for (size_t i = 0; i < n; i++)
		{
			sxy += (exact[i].first - mx) * (est[i].first - my);
			sxx += (exact[i].first - mx) * (exact[i].first - mx);
			syy += (est[i].first - my) * (est[i].first - my);
		}
		corr_sum += sxy / std::sqrt(sxx * syy);
		std::sort(exact.begin(), exact.end());
		std::sort(est.begin(), est.end());
		const std::vector<uint64_t> truth = first_ids(exact, 10);
		hits += found_in(first_ids(est, 100), truth);
		top10 += found_in(first_ids(est, 10), truth);
		total += 10;
	}
	return {double(hits) / total, corr_sum / queries, double(top10) / total};
}

TEST(BinaryQuantizer, EstimatesRankEveryMetric)
{
	const size_t       n = 2000;
	std::vector<float> v = skewed(n + 20, DIMS, 9);
	for (HannoyMetric metric : FLOAT_METRICS)
	{
		EstimateQuality e = window_quality(metric, v, n, DIMS);
		EXPECT_GE(e.hits, 0.9) << "metric " << metric;
		EXPECT_GE(e.correlation, 0.8) << "metric " << metric;
	}
}

/*
 * Rows the way text embeddings come (the benchmark's clustered-cosine set,
 * bench/make_synthetic.py): around 20 centres, plus one large common
 * component on which each row has its own log-normal weight, each row then
 * scaled by its own length between 1/2 and 2.  Cosine distances ignore the
 * lengths, and so must the estimates of 1-bit and 8-bit codes: they must
 * rank as well as on the same rows normalised.
 */
TEST(BinaryQuantizer, CosineCodesIgnoreLengths)
{
	constexpr uint32_t                    dims = 32; /* padded to 64, as the benchmark's set */
	const size_t                          n = 2000;
	std::vector<float>                    v = clustered(n + 40, dims, 21, 20, 0.3f);
	std::mt19937                          rng(4);
	std::normal_distribution<float>       weight(0.0f, 1.0f);
	std::uniform_real_distribution<float> spread(std::log(0.5f), std::log(2.0f));
	std::vector<float>                    unit(v.size()), scaled(v.size());
	for (size_t i = 0; i < n + 40; i++)
	{
		float *x = &v[i * dims];
		x[0] += 4.0f * std::exp(weight(rng)); /* the common component */
		double sq = 0;
		for (uint32_t d = 0; d < dims; d++)
			sq += double(x[d]) * x[d];
		float len = std::exp(spread(rng));
		for (uint32_t d = 0; d < dims; d++)
		{
			unit[i * dims + d] = static_cast<float>(x[d] / std::sqrt(sq));
			scaled[i * dims + d] = x[d] * len;
		}
	}
	for (auto kind : {hannoy::QUANTIZER_BINARY, hannoy::QUANTIZER_SCALAR8})
	{
		EstimateQuality normalised = window_quality(HANNOY_METRIC_COSINE, unit, n, dims, kind);
		EstimateQuality lengths = window_quality(HANNOY_METRIC_COSINE, scaled, n, dims, kind);
		EXPECT_GE(normalised.hits, 0.8) << "kind " << kind;
		EXPECT_GE(lengths.hits, normalised.hits - 0.03)
		    << "kind " << kind << ": normalised rows " << normalised.hits
		    << ", the same rows with their lengths " << lengths.hits;
		EXPECT_GE(lengths.correlation, normalised.correlation - 0.03) << "kind " << kind;
		EXPECT_GE(lengths.top10, normalised.top10 - 0.03)
		    << "kind " << kind << ": normalised rows " << normalised.top10
		    << ", the same rows with their lengths " << lengths.top10;
	}
}

/*
 * A vector so short that 1 / |v| is beyond a float (about 3e-39) scales to
 * length 1 like any other: the fitted quantizers of both kinds stay finite,
 * their records read back, and its code is that of the same direction.
 */
TEST(BinaryQuantizer, CosineCodesOfTinyVectors)
{
	constexpr uint32_t dims = 16;
	std::vector<float> rows = hannoy_test::uniform(50, dims, 3);
	std::vector<float> tiny(dims, 0.0f), unit_x(dims, 0.0f);
	tiny[0] = 1e-39f; /* a subnormal float */
	unit_x[0] = 1.0f;
	rows.insert(rows.end(), tiny.begin(), tiny.end());
	hannoy::QuantizerFit fit(dims);
	for (size_t i = 0; i < rows.size() / dims; i++)
		fit.add(&rows[i * dims]);
	for (hannoy::Quantizer q :
	     {fit.binary(HANNOY_METRIC_COSINE, 5), fit.quantizer(HANNOY_METRIC_COSINE)})
	{
		std::string r = q.record();
		EXPECT_NO_THROW(
		    hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, dims, r.data(), r.size()))
		    << "kind " << q.kind();
		std::vector<uint8_t> a(q.code_bytes()), b(q.code_bytes());
		q.encode(tiny.data(), a.data());
		q.encode(unit_x.data(), b.data());
		EXPECT_EQ(a, b) << "kind " << q.kind();
		EXPECT_TRUE(std::isfinite(q.distance(a.data(), unit_x.data()))) << "kind " << q.kind();
	}
}

/*
 * Scans on 1-bit codes return each row once at its exact distance, the
 * first window in exact order (both a window equal to ef and one set by
 * hannoy.rerank_window, smaller and larger), NULL rows last, and find most
 * of the true nearest.
 */
TEST(BinaryScans, ExactFirstWindowCompletenessAndRecall)
{
	for (HannoyMetric metric : FLOAT_METRICS)
	{
		TempEnvDir         dir;
		const size_t       n = 1500;
		std::vector<float> v = skewed(n + 20, DIMS, 11);
		std::vector<float> base(v.begin(), v.begin() + n * DIMS);
		HannoyEnv         *env = binary_index(dir.path(), metric, base);
		size_t             hits = 0, total = 0;
		for (size_t qi = 0; qi < 12; qi++)
		{
			const float     *q = &v[(n + qi) * DIMS];
			const uint32_t   ef = 60;
			const uint32_t   rerank = qi % 3 == 0 ? 0 : qi % 3 == 1 ? 20 : 150;
			const size_t     first = rerank == 0 ? ef : rerank;
			std::vector<Row> rows = scan_all(env, q, ef, rerank);
			ASSERT_EQ(rows.size(), n + 3) << "metric " << metric;
			std::set<HannoyTid> seen;
			for (size_t i = 0; i < n; i++)
			{
				const Row &r = rows[i];
				ASSERT_FALSE(r.isnull);
				ASSERT_TRUE(r.tid >= 1 && r.tid <= n);
				ASSERT_TRUE(seen.insert(r.tid).second) << "row " << r.tid << " twice";
				ASSERT_EQ(r.distance, hannoy_distance(metric, q, &base[(r.tid - 1) * DIMS], DIMS))
				    << "metric " << metric << ", row " << r.tid;
				if (i > 0 && i < first)
				{
					ASSERT_LE(rows[i - 1].distance, r.distance)
					    << "first window out of order, metric " << metric << ", rerank " << rerank;
				}
			}
			for (size_t i = n; i < n + 3; i++)
				EXPECT_TRUE(rows[i].isnull);
			std::vector<std::pair<double, HannoyTid>> truth;
			for (size_t i = 0; i < n; i++)
				truth.emplace_back(hannoy_distance(metric, q, &base[i * DIMS], DIMS), i + 1);
			std::sort(truth.begin(), truth.end());
			std::vector<uint64_t> got;
			for (size_t i = 0; i < 10; i++)
				got.push_back(rows[i].tid);
			hits += found_in(got, first_ids(truth, 10));
			total += 10;
		}
		/* L1 walks on the Euclidean estimate (no rotation keeps L1): a looser bound */
		EXPECT_GE(double(hits) / total, metric == HANNOY_METRIC_L1 ? 0.8 : 0.9)
		    << "metric " << metric;
		EXPECT_EQ(verify(env), std::vector<std::string>{});
		hannoy_env_close(env);
	}
}

/* Inserts encode with the build's quantizer, VACUUM removes codes, verify checks them. */
TEST(BinaryScans, InsertsVacuumAndVerify)
{
	TempEnvDir         dir;
	const size_t       n = 500;
	std::vector<float> v = skewed(n + 200, DIMS, 13);
	std::vector<float> base(v.begin(), v.begin() + n * DIMS);
	HannoyEnv         *env = binary_index(dir.path(), HANNOY_METRIC_L2, base);
	HannoyError        err;
	for (size_t i = n; i < n + 200; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * DIMS], 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(env_stats(env).codes, n + 200);
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	hannoy_test::vacuum(env, [](HannoyTid tid) { return tid % 4 == 0; });
	EXPECT_EQ(env_stats(env).codes, n + 200 - (n + 200) / 4);
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	std::vector<Row> rows = scan_all(env, &v[(n + 6) * DIMS], 40, 0); /* row n + 7 stays */
	size_t           graph_rows = 0;
	for (const Row &r : rows)
		if (!r.isnull)
		{
			ASSERT_NE(r.tid % 4, 0u);
			graph_rows++;
		}
	EXPECT_EQ(graph_rows, n + 200 - (n + 200) / 4);
	EXPECT_EQ(rows.front().tid, n + 7);
	EXPECT_EQ(rows.front().distance, 0.0);
	hannoy_env_close(env);

	/* a code that is not its vector's quantization */
	HannoyEnvConfig config = hannoy_test::test_config();
	{
		hannoy::Store        store(dir.path(), config, false, nullptr);
		hannoy::Txn          txn(store.env(), false);
		std::vector<uint8_t> wrong(256 / 8 + 12, 7);
		store.put_code(txn.get(), 5, wrong.data(), false);
		txn.commit();
	}
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK) << err.message;
	std::vector<std::string> problems = verify(env);
	EXPECT_TRUE(std::any_of(problems.begin(), problems.end(),
	                        [](const std::string &p) {
		                        return p.find("code of item 5 is not the quantization") !=
		                               std::string::npos;
	                        }))
	    << ::testing::PrintToString(problems);
	hannoy_env_close(env);
}

/* A quantizer chosen by name is refused for bit strings; 'none' gives no codes. */
TEST(BinaryScans, BuildRefusesAQuantizerThatDoesNotFit)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = hannoy_test::test_config();
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	HannoyMeta      meta = test_meta(HANNOY_METRIC_HAMMING, 128);
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK);
	HannoyBuilder *b = nullptr;
	ASSERT_EQ(hannoy_build_begin(env, 1, &b, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_build_set_quantizer(b, HANNOY_QUANTIZER_BINARY, &err), HANNOY_ERR_INVALID);
	EXPECT_NE(std::string(err.message).find("only float vectors have codes"), std::string::npos)
	    << err.message;
	EXPECT_EQ(hannoy_build_set_quantizer(b, HANNOY_QUANTIZER_NONE, &err), HANNOY_OK);
	hannoy_build_free(b);
	hannoy_env_close(env);

	TempEnvDir         dir2;
	std::vector<float> v = clustered(300, 300, 2);
	env = build_all(dir2.path(), test_meta(HANNOY_METRIC_L2, 300), v, 1, 0, 20, nullptr,
	                HANNOY_QUANTIZER_NONE);
	EXPECT_EQ(env_stats(env).codes, 0u);
	EXPECT_EQ(env_stats(env).quantizer, 0u);
	hannoy_env_close(env);
}

} // namespace

/* The entry point, top layer, and lists and their entries per layer of 'env'. */
static std::vector<uint64_t>
graph_shape(HannoyEnv *env)
{
	HannoyInspect *ins = nullptr;
	HannoyError    err;
	EXPECT_EQ(hannoy_inspect_begin(env, false, &ins, &err), HANNOY_OK) << err.message;
	if (ins == nullptr)
		return {};
	HannoyProblem problem;
	uint32_t      count = 0;
	bool          done = false;
	while (!done)
		EXPECT_EQ(hannoy_inspect_step(ins, 100, &problem, 1, &count, &done, &err), HANNOY_OK);
	HannoyInspectSummary s{};
	EXPECT_EQ(hannoy_inspect_summary(ins, &s, &err), HANNOY_OK);
	hannoy_inspect_free(ins);
	std::vector<uint64_t> shape{s.stats.entry_point, uint64_t(s.stats.max_level)};
	for (uint32_t l = 0; l < s.layers; l++)
	{
		shape.push_back(s.lists[l]);
		shape.push_back(s.edges[l]);
	}
	return shape;
}

/*
 * A 1-bit build over rows whose 8-bit codes are lossless (integers spanning
 * at most 255 per dimension, offsets of both signs) measures its distances
 * on 8-bit codes made for the build alone: it must link exactly the graph
 * the 8-bit build links.  (The float path it replaced links the same graph
 * on these rows too; what the codes change is the build's speed, which the
 * benchmark measures.  A wrong code or offset term changes the graph.)
 */
TEST(BinaryQuantizer, BuildOnLosslessRowsLinksTheEightBitGraph)
{
	const uint32_t     dims = 300, rows = 1500;
	std::mt19937       rng(17);
	std::vector<float> offsets(dims), v(size_t(rows) * dims);
	for (float &o : offsets)
		o = static_cast<float>(int(rng() % 1001) - 500);
	for (size_t i = 0; i < v.size(); i++)
		v[i] = offsets[i % dims] + static_cast<float>(rng() % 256);
	for (HannoyMetric metric : {HANNOY_METRIC_L2, HANNOY_METRIC_COSINE})
	{
		HannoyMeta            meta = test_meta(metric, dims);
		std::vector<uint64_t> shapes[2];
		uint32_t              kinds[2] = {HANNOY_QUANTIZER_SCALAR8, HANNOY_QUANTIZER_BINARY};
		for (int k = 0; k < 2; k++)
		{
			TempEnvDir dir;
			HannoyEnv *env = build_all(dir.path(), meta, v, 1, 0, 20, nullptr, kinds[k]);
			ASSERT_NE(env, nullptr);
			EXPECT_EQ(env_stats(env).quantizer, k == 0 ? 1u : 2u);
			shapes[k] = graph_shape(env);
			EXPECT_TRUE(verify(env).empty());
			hannoy_env_close(env);
		}
		EXPECT_EQ(shapes[0], shapes[1]) << "metric " << metric;
	}
}
