/*
 * test_codes.cpp
 *	  Codes (storage format 5, DESIGN.md "Codes"): the quantizer, the code
 *	  kernels against float references, scans that walk on codes and still
 *	  return every row once at its exact distance, codes through inserts,
 *	  VACUUM and hannoy_verify, and format 4 sidecars, which have none.
 */
#include <gtest/gtest.h>

#include <lmdb.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "distance.hpp"
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
using hannoy_test::uniform;
using hannoy_test::verify;

constexpr uint32_t DIMS = 256;

const HannoyMetric FLOAT_METRICS[] = {HANNOY_METRIC_L2, HANNOY_METRIC_COSINE, HANNOY_METRIC_IP,
                                      HANNOY_METRIC_L1};

/* A quantizer fitted to the rows of 'v' (dims floats each). */
hannoy::Quantizer
fitted(HannoyMetric metric, const std::vector<float> &v, uint32_t dims)
{
	hannoy::QuantizerFit fit(dims);
	for (size_t i = 0; i < v.size() / dims; i++)
		fit.add(&v[i * dims]);
	return fit.quantizer(metric);
}

/* The vector a code stands for: offset + scale * code, in double. */
std::vector<float>
decoded(const hannoy::Quantizer &q, const std::vector<uint8_t> &code)
{
	std::vector<float> out(q.dims());
	for (uint32_t i = 0; i < q.dims(); i++)
		out[i] = q.offset()[i] + q.scale()[i] * static_cast<float>(code[i]);
	return out;
}

/* An unbounded scan from 'q' with width 'ef': every row it returns. */
std::vector<Row>
scan_all(HannoyEnv *env, const float *q, uint32_t dims, uint32_t ef)
{
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_scan_start(scan, q, dims, ef, 0, &err), HANNOY_OK) << err.message;
	std::vector<Row> rows = scan_rows(scan);
	hannoy_scan_free(scan);
	return rows;
}

TEST(Quantizer, RangesMapToTheEndsOfTheCode)
{
	std::vector<float> v = {0.0f, -1.0f, 5.0f, 10.5f, 1.25f, 5.0f, 5.0f, 0.0f, 5.0f};
	hannoy::Quantizer  q = fitted(HANNOY_METRIC_L2, v, 3);
	EXPECT_EQ(q.code_bytes(), 3u);
	EXPECT_EQ(q.offset()[0], 0.0f);
	EXPECT_EQ(q.offset()[1], -1.0f);
	EXPECT_EQ(q.scale()[2], 0.0f) << "a constant dimension has no range";
	std::vector<uint8_t> code(3);
	q.encode(&v[3], code.data()); /* (10.5, 1.25, 5): the largest values */
	EXPECT_EQ(code, (std::vector<uint8_t>{255, 255, 0}));
	q.encode(&v[0], code.data()); /* (0, -1, 5): the smallest */
	EXPECT_EQ(code, (std::vector<uint8_t>{0, 0, 0}));
	/* outside the fitted range (a row inserted later) and NaN clamp */
	const float odd[3] = {-50.0f, 7.0f, std::numeric_limits<float>::quiet_NaN()};
	q.encode(odd, code.data());
	EXPECT_EQ(code, (std::vector<uint8_t>{0, 255, 0}));
	/* the midpoint rounds to a nearest step (127.5 in float is just below or above) */
	const float mid[3] = {5.25f, 0.125f, 5.0f};
	q.encode(mid, code.data());
	EXPECT_TRUE(code[0] == 127 || code[0] == 128) << int(code[0]);
	EXPECT_TRUE(code[1] == 127 || code[1] == 128) << int(code[1]);
}

TEST(Quantizer, CodeErrorTellsHowCloselyCodesDescribeARow)
{
	/* rows inside the fitted range: rounding only, a tiny error; none for exact codes */
	std::vector<float> v = {0.0f, -1.0f, 5.0f, 10.5f, 1.25f, 6.0f, 3.0f, 0.5f, 5.5f};
	hannoy::Quantizer  q = fitted(HANNOY_METRIC_L2, v, 3);
	EXPECT_EQ(q.code_error(&v[0]), 0.0) << "the ends of the range are exact";
	const float inside[3] = {5.1f, 0.3f, 5.2f};
	EXPECT_GT(q.code_error(inside), 0.0);
	EXPECT_LT(q.code_error(inside), 1e-3);
	/* far outside the range: clamped, about as far from its code as from the range */
	const float far[3] = {500.0f, -300.0f, 400.0f};
	EXPECT_GT(q.code_error(far), 0.9);
	const float nan[3] = {1.0f, std::numeric_limits<float>::quiet_NaN(), 5.0f};
	EXPECT_EQ(q.code_error(nan), 1.0);
	/* a quantizer that saw one row has no spread: every other row is its whole error */
	std::vector<float> one = {1.0f, 2.0f, 3.0f};
	hannoy::Quantizer  flat = fitted(HANNOY_METRIC_L2, one, 3);
	EXPECT_EQ(flat.code_error(one.data()), 0.0);
	const float other[3] = {1.5f, 2.0f, 3.0f};
	EXPECT_EQ(flat.code_error(other), 1.0);
}

TEST(Quantizer, IntegerPixelsAreExact)
{
	/*
	 * integers with a range of at most 255 in every dimension (Fashion-
	 * MNIST's pixels, whose dimensions need not reach 0 or 255): scale 1,
	 * no error
	 */
	std::vector<float> v(256 * 4);
	for (size_t i = 0; i < 256; i++)
		for (size_t d = 0; d < 4; d++)
			v[i * 4 + d] = static_cast<float>((i * (d + 1)) % (200 + 10 * d)) - 3.0f * d;
	hannoy::Quantizer    q = fitted(HANNOY_METRIC_L2, v, 4);
	std::vector<uint8_t> code(4);
	for (size_t i = 0; i < 256; i++)
	{
		q.encode(&v[i * 4], code.data());
		std::vector<float> back = decoded(q, code);
		for (size_t d = 0; d < 4; d++)
			ASSERT_EQ(back[d], v[i * 4 + d]);
	}
}

/*
 * On lossless codes (integers spanning at most 255 per dimension, offsets far
 * from zero and of both signs), the build's code distances are the float
 * kernels' distances between the vectors, for every float metric: under
 * inner product and cosine only through the offset terms, which a mistake
 * there would break.
 */
TEST(Quantizer, LosslessCodeDistancesAreTheVectorDistances)
{
	std::mt19937       rng(5);
	const uint32_t     dims = 300, rows = 64;
	std::vector<float> offsets(dims);
	for (float &o : offsets)
		o = static_cast<float>(int(rng() % 1001) - 500);
	std::vector<float> v(rows * dims);
	for (size_t i = 0; i < v.size(); i++)
		v[i] = offsets[i % dims] + static_cast<float>(rng() % 256);
	for (HannoyMetric metric : FLOAT_METRICS)
	{
		hannoy::QuantizerFit fit(dims);
		for (uint32_t i = 0; i < rows; i++)
			fit.add(&v[size_t(i) * dims]);
		ASSERT_TRUE(fit.lossless());
		hannoy::Quantizer     q = fit.quantizer(metric);
		hannoy::LosslessCodes lossless(q, metric);
		EXPECT_EQ(lossless.needs_offset_dots(),
		          metric == HANNOY_METRIC_IP || metric == HANNOY_METRIC_COSINE);
		std::vector<uint8_t> codes(size_t(rows) * dims);
		for (uint32_t i = 0; i < rows; i++)
			q.encode(&v[size_t(i) * dims], &codes[size_t(i) * dims]);
		for (uint32_t i = 1; i < rows; i++)
		{
			const float   *x = &v[size_t(i) * dims], *y = &v[size_t(i - 1) * dims];
			const uint8_t *cx = &codes[size_t(i) * dims], *cy = &codes[size_t(i - 1) * dims];
			double         want = hannoy_distance(metric, x, y, dims);
			double         got =
			    lossless.distance(cx, cy, lossless.offset_dot(cx), lossless.offset_dot(cy),
			                      hannoy::kernel_dot(x, x, dims), hannoy::kernel_dot(y, y, dims));
			ASSERT_NEAR(got, want, 1e-6 * std::max(1.0, std::fabs(want)))
			    << "metric " << metric << " row " << i;
		}
	}
}

TEST(Quantizer, ErrorIsAtMostHalfAStep)
{
	std::vector<float>   v = clustered(500, DIMS, 3);
	hannoy::Quantizer    q = fitted(HANNOY_METRIC_L2, v, DIMS);
	std::vector<uint8_t> code(DIMS);
	for (size_t i = 0; i < 500; i++)
	{
		q.encode(&v[i * DIMS], code.data());
		std::vector<float> back = decoded(q, code);
		for (uint32_t d = 0; d < DIMS; d++)
			ASSERT_LE(std::fabs(back[d] - v[i * DIMS + d]), q.scale()[d] * 0.5001f + 1e-6f);
	}
}

TEST(Quantizer, RecordRoundTripsAndRefusesDamage)
{
	std::vector<float> v = uniform(50, DIMS, 5);
	hannoy::Quantizer  q = fitted(HANNOY_METRIC_COSINE, v, DIMS);
	std::string        r = q.record();
	hannoy::Quantizer  back =
	    hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, r.data(), r.size());
	EXPECT_EQ(back.record(), r);
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS + 1, r.data(), r.size()),
	             hannoy::Error);
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, r.data(), r.size() - 4),
	             hannoy::Error);
	std::string bad = r;
	bad[0] = 9; /* an unknown kind */
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_COSINE, DIMS, bad.data(), bad.size()),
	             hannoy::Error);
	EXPECT_EQ(hannoy::code_distance_function(HANNOY_METRIC_HAMMING), nullptr);
	EXPECT_FALSE(hannoy::codes_pay(HANNOY_METRIC_HAMMING, 1000));
	EXPECT_FALSE(hannoy::codes_pay(HANNOY_METRIC_L2, hannoy::CODES_MIN_DIMS - 1));
	EXPECT_TRUE(hannoy::codes_pay(HANNOY_METRIC_L2, hannoy::CODES_MIN_DIMS));
}

/*
 * The process's code kernel of each metric against the scalar one and
 * against the metric's distance to the decoded vector, at every length
 * from 1 to 130 (every tail of the SIMD loops) and at 784.
 */
TEST(CodeKernels, MatchTheFloatReference)
{
	std::mt19937                          rng(7);
	std::uniform_real_distribution<float> u(-2.0f, 2.0f);
	std::vector<uint32_t>                 lengths;
	for (uint32_t n = 1; n <= 130; n++)
		lengths.push_back(n);
	lengths.push_back(784);
	for (HannoyMetric metric : FLOAT_METRICS)
		for (uint32_t n : lengths)
		{
			std::vector<float> rows(20 * n);
			for (float &x : rows)
				x = u(rng);
			hannoy::Quantizer    q = fitted(metric, rows, n);
			std::vector<uint8_t> code(n);
			/* the query: one row moved a little; an unaligned copy as LMDB hands out */
			std::vector<unsigned char> buf(n * sizeof(float) + 2);
			for (uint32_t i = 0; i < n; i++)
			{
				float x = rows[i] + 0.1f * u(rng);
				std::memcpy(&buf[2 + i * sizeof(float)], &x, sizeof(x));
			}
			const void *query = &buf[2];
			auto        scalar = hannoy::scalar_code_distance_function(metric);
			for (size_t r = 1; r < 20; r++)
			{
				q.encode(&rows[r * n], code.data());
				double             got = q.distance(code.data(), query);
				double             ref = scalar(code.data(), q.offset(), q.scale(), query, n);
				std::vector<float> back = decoded(q, code);
				double             exact = hannoy_distance(metric, back.data(), query, n);
				double             tol = 1e-4 * (1.0 + std::fabs(ref));
				ASSERT_NEAR(got, ref, tol) << "metric " << metric << ", " << n << " dims";
				ASSERT_NEAR(got, exact, tol) << "metric " << metric << ", " << n << " dims";
			}
		}
}

/* Builds a 256-d index with codes over 'v' and three NULL rows; checks it has them. */
HannoyEnv *
coded_index(const char *path, HannoyMetric metric, const std::vector<float> &v, uint32_t threads)
{
	HannoyEnv  *env = build_all(path, test_meta(metric, DIMS, 8, 64), v, threads, 3);
	HannoyStats st = env_stats(env);
	EXPECT_EQ(st.code_bytes, DIMS);
	EXPECT_EQ(st.codes, v.size() / DIMS);
	return env;
}

/*
 * Scans walk on codes, yet return each row once, at its exact distance,
 * nearest first within the first window; unindexed rows come last.
 */
TEST(CodedScans, ExactDistancesAndCompleteness)
{
	for (HannoyMetric metric : FLOAT_METRICS)
	{
		TempEnvDir         dir;
		const size_t       n = 1500;
		std::vector<float> v = clustered(n + 20, DIMS, 11);
		std::vector<float> base(v.begin(), v.begin() + n * DIMS);
		HannoyEnv         *env = coded_index(dir.path(), metric, base, 2);
		for (size_t qi = 0; qi < 5; qi++)
		{
			const float     *q = &v[(n + qi) * DIMS];
			const uint32_t   ef = 40;
			std::vector<Row> rows = scan_all(env, q, DIMS, ef);
			ASSERT_EQ(rows.size(), n + 3) << "metric " << metric;
			std::set<HannoyTid> seen;
			for (size_t i = 0; i < n; i++)
			{
				const Row &r = rows[i];
				ASSERT_FALSE(r.isnull);
				ASSERT_GE(r.tid, 1u);
				ASSERT_LE(r.tid, n);
				ASSERT_TRUE(seen.insert(r.tid).second) << "row " << r.tid << " twice";
				ASSERT_EQ(r.distance, hannoy_distance(metric, q, &base[(r.tid - 1) * DIMS], DIMS))
				    << "metric " << metric << ", row " << r.tid;
				if (i > 0 && i < ef)
				{
					ASSERT_LE(rows[i - 1].distance, r.distance) << "first window out of order";
				}
			}
			for (size_t i = n; i < n + 3; i++)
				EXPECT_TRUE(rows[i].isnull);
			/* the first window holds most of the true nearest (recall of a walk on codes) */
			std::vector<std::pair<double, HannoyTid>> truth;
			for (size_t i = 0; i < n; i++)
				truth.emplace_back(hannoy_distance(metric, q, &base[i * DIMS], DIMS), i + 1);
			std::sort(truth.begin(), truth.end());
			size_t hits = 0;
			for (size_t k = 0; k < 10; k++)
				for (size_t i = 0; i < 10; i++)
					hits += rows[i].tid == truth[k].second;
			EXPECT_GE(hits, 8u) << "metric " << metric;
		}
		EXPECT_EQ(verify(env), std::vector<std::string>{});
		hannoy_env_close(env);
	}
}

/* A scan detached and attached again in the middle goes on walking codes. */
TEST(CodedScans, DetachAndAttachKeepEveryRowOnce)
{
	TempEnvDir         dir;
	const size_t       n = 800;
	std::vector<float> v = clustered(n, DIMS, 12);
	HannoyEnv         *env = coded_index(dir.path(), HANNOY_METRIC_L2, v, 1);
	HannoyError        err;
	HannoyScan        *scan = nullptr;
	ASSERT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_scan_start(scan, &v[0], DIMS, 10, 0, &err), HANNOY_OK) << err.message;
	std::vector<Row> rows = scan_rows(scan, 25);
	hannoy_scan_detach(scan);
	hannoy_env_close(env);
	HannoyEnvConfig config = hannoy_test::test_config();
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK) << err.message;
	ASSERT_EQ(hannoy_scan_attach(scan, env, &err), HANNOY_OK) << err.message;
	std::vector<Row> rest = scan_rows(scan);
	rows.insert(rows.end(), rest.begin(), rest.end());
	hannoy_scan_free(scan);
	std::set<HannoyTid> seen;
	for (const Row &r : rows)
		if (!r.isnull)
		{
			ASSERT_TRUE(seen.insert(r.tid).second);
			ASSERT_EQ(r.distance,
			          hannoy_distance(HANNOY_METRIC_L2, &v[0], &v[(r.tid - 1) * DIMS], DIMS));
		}
	EXPECT_EQ(seen.size(), n);
	EXPECT_EQ(rows.front().distance, 0.0);
	hannoy_env_close(env);
}

/* Inserts write codes (clamped outside the range), VACUUM frees them, verify checks them. */
TEST(CodedScans, InsertsVacuumAndVerify)
{
	TempEnvDir         dir;
	const size_t       n = 600;
	std::vector<float> v = clustered(n + 200, DIMS, 13);
	std::vector<float> base(v.begin(), v.begin() + n * DIMS);
	HannoyEnv         *env = coded_index(dir.path(), HANNOY_METRIC_L2, base, 2);
	HannoyError        err;
	for (size_t i = n; i < n + 200; i++)
	{
		/* every tenth row far outside the fitted range */
		if (i % 10 == 0)
			for (uint32_t d = 0; d < DIMS; d++)
				v[i * DIMS + d] *= 50.0f;
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * DIMS], 0, &err), HANNOY_OK) << err.message;
	}
	EXPECT_EQ(env_stats(env).codes, n + 200);
	EXPECT_EQ(verify(env), std::vector<std::string>{});

	hannoy_test::vacuum(env, [](HannoyTid tid) { return tid % 3 == 0; });
	const size_t gone = (n + 200) / 3; /* graph rows; a NULL row went too */
	EXPECT_EQ(env_stats(env).codes, n + 200 - gone);
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	std::vector<Row>    rows = scan_all(env, &v[5 * DIMS], DIMS, 20);
	std::set<HannoyTid> seen;
	for (const Row &r : rows)
		if (!r.isnull)
		{
			ASSERT_NE(r.tid % 3, 0u);
			ASSERT_TRUE(seen.insert(r.tid).second);
			ASSERT_EQ(r.distance, hannoy_distance(HANNOY_METRIC_L2, &v[5 * DIMS],
			                                      &v[(r.tid - 1) * DIMS], DIMS));
		}
	EXPECT_EQ(seen.size(), n + 200 - gone);
	hannoy_env_close(env);

	/* a code that is not its vector's quantization, and one without a vector */
	HannoyEnvConfig config = hannoy_test::test_config();
	{
		hannoy::Store        store(dir.path(), config, false, nullptr);
		hannoy::Txn          txn(store.env(), false);
		std::vector<uint8_t> wrong(DIMS, 7);
		store.put_code(txn.get(), 4, wrong.data(), false);
		store.put_code(txn.get(), 999999, wrong.data(), true);
		txn.commit();
	}
	ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK) << err.message;
	std::vector<std::string> problems = verify(env);
	auto                     mentions = [&](const std::string &s)
	{
		return std::any_of(problems.begin(), problems.end(),
		                   [&](const std::string &p) { return p.find(s) != std::string::npos; });
	};
	EXPECT_TRUE(mentions("code of item 4 is not the quantization of its vector"))
	    << ::testing::PrintToString(problems);
	EXPECT_TRUE(mentions("item 999999 has a code but no vector"))
	    << ::testing::PrintToString(problems);
	hannoy_env_close(env);
}

/* Below the dimension rule, and for an index built empty, there are no codes. */
TEST(CodedScans, SmallDimensionsAndEmptyBuildsHaveNone)
{
	{
		TempEnvDir         dir;
		std::vector<float> v = uniform(300, 20, 14);
		HannoyEnv         *env = build_all(dir.path(), test_meta(HANNOY_METRIC_L2, 20), v, 1);
		EXPECT_EQ(env_stats(env).code_bytes, 0u);
		hannoy_env_close(env);
	}
	{
		TempEnvDir         dir;
		std::vector<float> v = uniform(300, DIMS, 15);
		std::vector<float> none;
		HannoyEnv         *env = build_all(dir.path(), test_meta(HANNOY_METRIC_L2, DIMS), none, 1);
		HannoyError        err;
		for (size_t i = 0; i < 300; i++)
			ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * DIMS], 0, &err), HANNOY_OK) << err.message;
		EXPECT_EQ(env_stats(env).code_bytes, 0u);
		EXPECT_EQ(env_stats(env).codes, 0u);
		EXPECT_EQ(verify(env), std::vector<std::string>{});
		EXPECT_EQ(scan_all(env, &v[0], DIMS, 10).size(), 300u);
		hannoy_env_close(env);
	}
}

/* A format 4 sidecar (no codes database) is read and written as before. */
TEST(CodedScans, FormatFourSidecarsWalkOnVectors)
{
	TempEnvDir         dir;
	const size_t       n = 400;
	std::vector<float> v = clustered(n + 50, DIMS, 16);
	std::vector<float> base(v.begin(), v.begin() + n * DIMS);
	HannoyMeta         meta = test_meta(HANNOY_METRIC_L2, DIMS, 8, 64);
	meta.format_version = 4;
	HannoyEnv  *env = build_all(dir.path(), meta, base, 2);
	HannoyError err;
	for (size_t i = n; i < n + 50; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * DIMS], 0, &err), HANNOY_OK) << err.message;
	hannoy_test::vacuum(env, [](HannoyTid tid) { return tid % 4 == 0; });
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	HannoyStats st = env_stats(env);
	EXPECT_EQ(st.code_bytes, 0u);
	EXPECT_EQ(st.codes, 0u);
	HannoyMeta read{};
	ASSERT_EQ(hannoy_env_meta(env, &read, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(read.format_version, 4u);
	std::vector<Row> rows = scan_all(env, &v[0], DIMS, 10);
	EXPECT_EQ(rows.size(), n + 50 - (n + 50) / 4);
	EXPECT_EQ(rows.front().distance, 0.0);
	hannoy_env_close(env);

	hannoy::Store store(dir.path(), hannoy_test::test_config(), false, nullptr);
	EXPECT_FALSE(store.has_codes_db());
	EXPECT_EQ(store.quantizer(), nullptr);
}

} // namespace
