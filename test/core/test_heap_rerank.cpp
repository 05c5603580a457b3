/*
 * test_heap_rerank.cpp
 *	  Indexes without vectors (storage format 7, DESIGN.md "Heap
 *	  re-ranking"): decoding codes, a build that writes no vector, the scan
 *	  protocol that asks the caller for each window's exact distances
 *	  (every row once at the distance the caller gave, the first window in
 *	  order, NULL rows last, recall), inserts and VACUUM measuring decoded
 *	  codes, verify, and the refusals.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"
#include "quantizer.hpp"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::clustered;
using hannoy_test::env_stats;
using hannoy_test::Row;
using hannoy_test::TempEnvDir;
using hannoy_test::test_meta;
using hannoy_test::verify;

constexpr uint32_t DIMS = 120; /* padded to 128 by the 1-bit rotation */

/* Rows around 20 centres, off the origin, with uneven scales per dimension. */
std::vector<float>
skewed(size_t n, uint32_t seed)
{
	std::vector<float> v = clustered(n, DIMS, seed);
	for (size_t i = 0; i < n; i++)
		for (uint32_t d = 0; d < DIMS; d++)
			v[i * DIMS + d] = 2.0f + v[i * DIMS + d] * (d % 5 == 0 ? 3.0f : 0.7f);
	return v;
}

/*
 * Builds an index without vectors over 'base' (row i has TID i + 1) and
 * 'null_rows' NULL rows, with quantizer 'choice'.
 */
HannoyEnv *
heap_index(const char *path, HannoyMetric metric, uint32_t choice, const std::vector<float> &base,
           size_t null_rows, uint32_t threads = 2)
{
	HannoyEnvConfig config = hannoy_test::test_config();
	HannoyMeta      meta = test_meta(metric, DIMS, 8, 64);
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	EXPECT_EQ(hannoy_env_create(path, &config, &meta, &env, &err), HANNOY_OK) << err.message;
	HannoyBuilder *b = nullptr;
	EXPECT_EQ(hannoy_build_begin(env, threads, &b, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(hannoy_build_set_quantizer(b, choice, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(hannoy_build_set_heap_rerank(b, true, &err), HANNOY_OK) << err.message;
	for (size_t i = 0; i < base.size() / DIMS; i++)
		EXPECT_EQ(hannoy_build_add(b, i + 1, &base[i * DIMS], 0, &err), HANNOY_OK);
	for (size_t i = 0; i < null_rows; i++)
		EXPECT_EQ(hannoy_build_add(b, 1000000 + i, nullptr, 1, &err), HANNOY_OK);
	bool                done = false;
	HannoyBuildProgress progress;
	while (!done)
		EXPECT_EQ(hannoy_build_step(b, 20, &progress, &done, &err), HANNOY_OK) << err.message;
	hannoy_build_free(b);
	return env;
}

/* Records in the vectors database of the sidecar at 'path'. */
size_t
stored_vectors(const char *path)
{
	HannoyEnvConfig config = hannoy_test::test_config();
	hannoy::Store   store(path, config, false, nullptr);
	hannoy::Txn     txn(store.env(), true);
	MDB_stat        st;
	EXPECT_EQ(mdb_stat(txn.get(), store.dbi_vectors, &st), 0);
	return st.ms_entries;
}

/*
 * Every row of a scan of 'env' for 'q', answering each request for exact
 * distances from 'rows' (TID t is rows[t - 1]) as the shim answers from the
 * heap; TIDs in 'invisible' get +inf, as rows the snapshot cannot see do.
 * *requests counts the windows measured.
 */
std::vector<Row>
scan_heap(HannoyEnv *env, HannoyMetric metric, const std::vector<float> &rows, const float *q,
          uint32_t ef, uint32_t window, size_t *requests, const std::set<HannoyTid> &invisible = {})
{
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	hannoy_scan_set_rerank_window(scan, window);
	EXPECT_EQ(hannoy_scan_start(scan, q, DIMS, ef, 0, &err), HANNOY_OK) << err.message;
	std::vector<Row> out;
	*requests = 0;
	for (;;)
	{
		Row  r;
		bool found = false;
		EXPECT_EQ(hannoy_scan_next(scan, &r.tid, &r.distance, &r.isnull, &found, &err), HANNOY_OK)
		    << err.message;
		if (found)
		{
			out.push_back(r);
			continue;
		}
		const HannoyTid *tids;
		uint32_t         count = hannoy_scan_rerank_request(scan, &tids);
		if (count == 0)
			break;
		(*requests)++;
		/* the scan waits: asking again changes nothing */
		EXPECT_EQ(hannoy_scan_next(scan, &r.tid, &r.distance, &r.isnull, &found, &err), HANNOY_OK);
		EXPECT_FALSE(found);
		EXPECT_EQ(hannoy_scan_rerank_request(scan, &tids), count);
		std::vector<double> d(count);
		for (uint32_t i = 0; i < count; i++)
		{
			EXPECT_TRUE(tids[i] >= 1 && tids[i] <= rows.size() / DIMS) << tids[i];
			d[i] = invisible.count(tids[i])
			           ? HUGE_VAL
			           : hannoy_distance(metric, q, &rows[(tids[i] - 1) * DIMS], DIMS);
		}
		/* a reply of the wrong length is refused and changes nothing */
		EXPECT_EQ(hannoy_scan_rerank_reply(scan, d.data(), count + 1, &err), HANNOY_ERR_INVALID);
		EXPECT_EQ(hannoy_scan_rerank_reply(scan, d.data(), count, &err), HANNOY_OK) << err.message;
	}
	hannoy_scan_free(scan);
	return out;
}

/*
 * Checks a complete scan: each of the 'live' rows once at its exact
 * distance, the first 'first' in non-decreasing order, then 'nulls' NULL
 * rows; returns recall@10 against the exact order.
 */
double
check_scan(HannoyMetric metric, const std::vector<float> &rows, const std::set<HannoyTid> &live,
           const float *q, const std::vector<Row> &got, size_t first, size_t nulls)
{
	EXPECT_EQ(got.size(), live.size() + nulls);
	std::set<HannoyTid> seen;
	for (size_t i = 0; i < got.size() && i < live.size(); i++)
	{
		const Row &r = got[i];
		EXPECT_FALSE(r.isnull);
		EXPECT_TRUE(live.count(r.tid)) << "row " << r.tid << " is not live";
		EXPECT_TRUE(seen.insert(r.tid).second) << "row " << r.tid << " twice";
		if (r.tid >= 1 && r.tid <= rows.size() / DIMS)
		{
			EXPECT_EQ(r.distance, hannoy_distance(metric, q, &rows[(r.tid - 1) * DIMS], DIMS));
		}
		if (i > 0 && i < first)
		{
			EXPECT_LE(got[i - 1].distance, r.distance) << "first window out of order at " << i;
		}
	}
	for (size_t i = live.size(); i < got.size(); i++)
		EXPECT_TRUE(got[i].isnull);
	std::vector<std::pair<double, HannoyTid>> truth;
	for (HannoyTid t : live)
		truth.emplace_back(hannoy_distance(metric, q, &rows[(t - 1) * DIMS], DIMS), t);
	std::sort(truth.begin(), truth.end());
	std::set<HannoyTid> top;
	for (size_t i = 0; i < 10 && i < got.size(); i++)
		top.insert(got[i].tid);
	size_t hits = 0;
	for (size_t k = 0; k < 10; k++)
		hits += top.count(truth[k].second);
	return hits / 10.0;
}

/* 8-bit codes decode within half a step; 1-bit ones rotate back to the same signs and length. */
TEST(HeapRerankQuantizer, DecodeStandsForTheVector)
{
	std::vector<float>   v = skewed(300, 3);
	hannoy::QuantizerFit fit(DIMS);
	for (size_t i = 0; i < 300; i++)
		fit.add(&v[i * DIMS]);
	hannoy::Quantizer    s8 = fit.quantizer(HANNOY_METRIC_L2);
	hannoy::Quantizer    bin = fit.binary(HANNOY_METRIC_L2, 17);
	std::vector<uint8_t> code(std::max(s8.code_bytes(), bin.code_bytes()));
	std::vector<uint8_t> again(code.size());
	std::vector<float>   out(DIMS);
	for (size_t i = 0; i < 300; i += 7)
	{
		const float *x = &v[i * DIMS];
		s8.encode(x, code.data());
		s8.decode(code.data(), out.data());
		for (uint32_t d = 0; d < DIMS; d++)
			ASSERT_LE(std::fabs(out[d] - x[d]), s8.scale()[d] * 0.5f + 1e-5f) << d;

		bin.encode(x, code.data());
		bin.decode(code.data(), out.data());
		/* the reconstruction's own code has the same signs (its padding may differ) */
		bin.encode(out.data(), again.data());
		size_t same = 0;
		for (uint32_t b = 0; b < bin.padded(); b++)
			same += ((code[b / 8] ^ again[b / 8]) >> (b % 8) & 1) == 0;
		EXPECT_GE(same, bin.padded() * 9 / 10) << "row " << i;
		/* and it is nearer to its vector than the mean is */
		double err = 0, spread = 0;
		for (uint32_t d = 0; d < DIMS; d++)
		{
			float  c;
			double mean_d = 0;
			for (size_t j = 0; j < 300; j++)
				mean_d += v[j * DIMS + d];
			mean_d /= 300;
			c = x[d];
			err += (out[d] - c) * (out[d] - c);
			spread += (c - mean_d) * (c - mean_d);
		}
		EXPECT_LT(err, spread) << "row " << i;
	}
	/* the inverse rotation undoes the rotation */
	std::vector<float> y(bin.padded()), z(bin.padded());
	for (uint32_t i = 0; i < bin.padded(); i++)
		y[i] = std::sin(i * 0.3f) + 0.1f * i;
	bin.rotate(y.data(), z.data());
	bin.unrotate(z.data(), z.data());
	for (uint32_t i = 0; i < bin.padded(); i++)
		ASSERT_NEAR(z[i], y[i], 1e-3f) << i;
}

/* The flag survives the record; a format 6 sidecar refuses it. */
TEST(HeapRerankQuantizer, FlagInTheRecord)
{
	std::vector<float>   v = skewed(50, 4);
	hannoy::QuantizerFit fit(DIMS);
	for (size_t i = 0; i < 50; i++)
		fit.add(&v[i * DIMS]);
	hannoy::Quantizer q = fit.binary(HANNOY_METRIC_L2, 3);
	EXPECT_FALSE(
	    hannoy::Quantizer::from_record(HANNOY_METRIC_L2, DIMS, q.record().data(), q.record().size())
	        .heap_rerank());
	q.set_heap_rerank(true);
	std::string r = q.record();
	EXPECT_TRUE(
	    hannoy::Quantizer::from_record(HANNOY_METRIC_L2, DIMS, r.data(), r.size()).heap_rerank());
	r[12] = 2; /* an unknown flag */
	EXPECT_THROW(hannoy::Quantizer::from_record(HANNOY_METRIC_L2, DIMS, r.data(), r.size()),
	             hannoy::Error);

	TempEnvDir      dir;
	HannoyEnvConfig config = hannoy_test::test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, DIMS);
	meta.format_version = 6;
	HannoyEnv  *env = nullptr;
	HannoyError err;
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK);
	HannoyBuilder *b = nullptr;
	ASSERT_EQ(hannoy_build_begin(env, 1, &b, &err), HANNOY_OK);
	ASSERT_EQ(hannoy_build_set_quantizer(b, HANNOY_QUANTIZER_BINARY, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_build_set_heap_rerank(b, true, &err), HANNOY_ERR_INVALID);
	hannoy_build_free(b);
	hannoy_env_close(env);
}

/* Without a quantizer chosen by name there is nothing to walk on. */
TEST(HeapRerankBuild, NeedsAQuantizerByName)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = hannoy_test::test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, DIMS);
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK);
	for (uint32_t choice : {HANNOY_QUANTIZER_AUTO, HANNOY_QUANTIZER_NONE})
	{
		HannoyBuilder *b = nullptr;
		ASSERT_EQ(hannoy_build_begin(env, 1, &b, &err), HANNOY_OK);
		ASSERT_EQ(hannoy_build_set_quantizer(b, choice, &err), HANNOY_OK);
		EXPECT_EQ(hannoy_build_set_heap_rerank(b, true, &err), HANNOY_ERR_INVALID);
		EXPECT_EQ(hannoy_build_set_heap_rerank(b, false, &err), HANNOY_OK);
		hannoy_build_free(b);
	}
	hannoy_env_close(env);
}

/*
 * Both quantizers, L2 and cosine: no vector stored, every row once at the
 * distance the caller gave, the first window in order, NULL rows last,
 * rows the caller cannot see at the end of their window, recall.  The
 * build's neighbour choice is exact either way, so with one build thread
 * an index with vectors of the same rows returns the same rows in the same
 * order.
 */
TEST(HeapRerankScan, ExactCompleteAndRecall)
{
	for (uint32_t choice : {HANNOY_QUANTIZER_SCALAR8, HANNOY_QUANTIZER_BINARY})
		for (HannoyMetric metric : {HANNOY_METRIC_L2, HANNOY_METRIC_COSINE})
		{
			SCOPED_TRACE("quantizer " + std::to_string(choice) + ", metric " +
			             std::to_string(metric));
			TempEnvDir         dir;
			const size_t       n = 1200;
			std::vector<float> v = skewed(n + 10, 21);
			std::vector<float> base(v.begin(), v.begin() + n * DIMS);
			HannoyEnv         *env = heap_index(dir.path(), metric, choice, base, 2, 1);
			TempEnvDir         side_dir;
			HannoyEnv         *side = hannoy_test::build_all(
			            side_dir.path(), test_meta(metric, DIMS, 8, 64), base, 1, 2, 20, nullptr, choice);
			HannoyStats         st = env_stats(env);
			std::set<HannoyTid> live;
			for (size_t i = 1; i <= n; i++)
				live.insert(i);
			EXPECT_TRUE(st.heap_rerank);
			EXPECT_EQ(st.codes, n);
			EXPECT_EQ(stored_vectors(dir.path()), 0u);
			double recall = 0;
			for (size_t qi = 0; qi < 10; qi++)
			{
				const float     *q = &v[(n + qi) * DIMS];
				uint32_t         window = qi % 2 == 0 ? 0 : 15;
				size_t           requests = 0;
				std::vector<Row> rows = scan_heap(env, metric, base, q, 40, window, &requests);
				EXPECT_GE(requests, 1u);
				HannoyError err;
				HannoyScan *scan = nullptr;
				ASSERT_EQ(hannoy_scan_create(side, &scan, &err), HANNOY_OK);
				hannoy_scan_set_rerank_window(scan, window);
				ASSERT_EQ(hannoy_scan_start(scan, q, DIMS, 40, 0, &err), HANNOY_OK);
				std::vector<Row> side_rows = hannoy_test::scan_rows(scan);
				hannoy_scan_free(scan);
				ASSERT_EQ(side_rows.size(), rows.size());
				for (size_t i = 0; i < rows.size(); i++)
				{
					ASSERT_EQ(side_rows[i].tid, rows[i].tid) << "query " << qi << ", row " << i;
					ASSERT_EQ(side_rows[i].isnull, rows[i].isnull);
					if (!rows[i].isnull)
					{
						ASSERT_EQ(side_rows[i].distance, rows[i].distance);
					}
				}
				recall += check_scan(metric, base, live, q, rows, window == 0 ? 40 : window, 2);
			}
			/* 128 bits for 120 clustered dimensions, half the queries with a window of 15 */
			EXPECT_GE(recall / 10, choice == HANNOY_QUANTIZER_BINARY ? 0.7 : 0.95);
			hannoy_env_close(side);
			/* rows the caller cannot see: any distance, returned all the same, once */
			std::set<HannoyTid> invisible{1, 2, 3, 500, 501};
			size_t              requests = 0;
			std::vector<Row>    rows =
			    scan_heap(env, metric, base, &v[n * DIMS], 40, 0, &requests, invisible);
			EXPECT_EQ(rows.size(), n + 2);
			EXPECT_EQ(verify(env), std::vector<std::string>{});
			hannoy_env_close(env);
		}
}

/*
 * Inserts and VACUUM choose neighbours by decoded codes: still no vector
 * stored, verify clean, scans complete and exact, and the inserted rows
 * are found.
 */
TEST(HeapRerankScan, InsertsAndVacuum)
{
	for (uint32_t choice : {HANNOY_QUANTIZER_SCALAR8, HANNOY_QUANTIZER_BINARY})
	{
		SCOPED_TRACE("quantizer " + std::to_string(choice));
		TempEnvDir         dir;
		const size_t       n = 600, added = 300;
		std::vector<float> v = skewed(n + added, 23);
		std::vector<float> base(v.begin(), v.begin() + n * DIMS);
		HannoyEnv         *env = heap_index(dir.path(), HANNOY_METRIC_L2, choice, base, 0);
		HannoyError        err;
		for (size_t i = n; i < n + added; i++)
			ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * DIMS], 0, &err), HANNOY_OK) << err.message;
		EXPECT_EQ(env_stats(env).codes, n + added);
		EXPECT_EQ(stored_vectors(dir.path()), 0u);
		EXPECT_EQ(verify(env), std::vector<std::string>{});
		hannoy_test::vacuum(env, [](HannoyTid tid) { return tid % 5 == 0; });
		EXPECT_EQ(env_stats(env).codes, n + added - (n + added) / 5);
		EXPECT_EQ(env_stats(env).deleted, 0u);
		EXPECT_EQ(stored_vectors(dir.path()), 0u);
		EXPECT_EQ(verify(env), std::vector<std::string>{});
		std::set<HannoyTid> live;
		for (size_t i = 1; i <= n + added; i++)
			if (i % 5 != 0)
				live.insert(i);
		double recall = 0;
		size_t queries = 0;
		for (size_t i = n; i < n + added; i += 31)
		{
			if ((i + 1) % 5 == 0)
				continue;
			size_t           requests = 0;
			std::vector<Row> rows =
			    scan_heap(env, HANNOY_METRIC_L2, v, &v[i * DIMS], 40, 0, &requests);
			EXPECT_EQ(rows.front().tid, i + 1);
			EXPECT_EQ(rows.front().distance, 0.0);
			recall += check_scan(HANNOY_METRIC_L2, v, live, &v[i * DIMS], rows, 40, 0);
			queries++;
		}
		EXPECT_GE(recall / queries, choice == HANNOY_QUANTIZER_BINARY ? 0.7 : 0.95);
		hannoy_env_close(env);
	}
}

} // namespace

namespace
{

/*
 * The heap check's rows of an index without vectors carry codes, each the
 * encoding of its row's vector (hannoy_env_encode); a code that is not
 * differs from it.
 */
TEST(HeapRerankCheck, StoredRowsCarryCodes)
{
	for (uint32_t choice : {HANNOY_QUANTIZER_SCALAR8, HANNOY_QUANTIZER_BINARY})
	{
		SCOPED_TRACE("quantizer " + std::to_string(choice));
		TempEnvDir           dir;
		const size_t         n = 300;
		std::vector<float>   v = skewed(n, 29);
		HannoyEnv           *env = heap_index(dir.path(), HANNOY_METRIC_L2, choice, v, 2);
		HannoyError          err;
		size_t               code_bytes = 0;
		std::vector<uint8_t> code(2048);
		ASSERT_EQ(hannoy_env_encode(env, &v[0], code.data(), code.size(), &code_bytes, &err),
		          HANNOY_OK);
		EXPECT_EQ(code_bytes, env_stats(env).code_bytes);
		EXPECT_GT(code_bytes, 0u);
		size_t small = 0;
		ASSERT_EQ(hannoy_env_encode(env, &v[0], code.data(), code_bytes - 1, &small, &err),
		          HANNOY_OK);
		EXPECT_EQ(small, 0u); /* too small a buffer: nothing written */

		/* damage one code */
		hannoy_env_close(env);
		HannoyEnvConfig config = hannoy_test::test_config();
		{
			hannoy::Store        store(dir.path(), config, false, nullptr);
			hannoy::Txn          txn(store.env(), false);
			std::vector<uint8_t> wrong(code_bytes, 0x5a);
			store.refresh_quantizer(txn.get());
			store.put_code(txn.get(), 7, wrong.data(), false);
			txn.commit();
		}
		ASSERT_EQ(hannoy_env_open(dir.path(), &config, &env, &err), HANNOY_OK) << err.message;

		HannoyRowPosition    pos{};
		HannoyStoredRow      rows[64];
		std::vector<uint8_t> codes(64 * code_bytes);
		size_t               seen = 0, differ = 0, nulls = 0;
		for (;;)
		{
			uint32_t count = 0;
			size_t   stride = 0;
			ASSERT_EQ(hannoy_stored_rows_next(env, &pos, rows, 64, codes.data(), codes.size(),
			                                  &count, &stride, &err),
			          HANNOY_OK)
			    << err.message;
			ASSERT_EQ(stride, code_bytes);
			if (count == 0)
				break;
			for (uint32_t i = 0; i < count; i++)
			{
				if (rows[i].unindexed_kind != HANNOY_ROW_INDEXED)
				{
					nulls++;
					continue;
				}
				ASSERT_FALSE(rows[i].vector_missing);
				seen++;
				size_t b = 0;
				ASSERT_EQ(hannoy_env_encode(env, &v[(rows[i].tid - 1) * DIMS], code.data(),
				                            code.size(), &b, &err),
				          HANNOY_OK);
				if (std::memcmp(code.data(), &codes[i * stride], stride) != 0)
				{
					differ++;
					EXPECT_EQ(rows[i].id, 7u);
				}
			}
		}
		EXPECT_EQ(seen, n);
		EXPECT_EQ(nulls, 2u);
		EXPECT_EQ(differ, 1u);
		hannoy_env_close(env);
	}
}

} // namespace
