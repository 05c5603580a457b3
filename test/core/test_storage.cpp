/*
 * test_storage.cpp
 *	  Vectors cut into pieces that share leaf pages (storage format 3): the
 *	  layout rule, distances by pieces equal to whole ones bit for bit, and
 *	  784-d and 1024-d indexes going through build, inserts, VACUUM and id
 *	  reuse with every distance exact, the verifier clean, and the pages used
 *	  below what a vector alone would take (one 4 KiB page, two).
 */
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "edit.hpp"
#include "graph.hpp"
#include "quantizer.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"
#include "test_util.hpp"

namespace
{

using hannoy_test::build_all;
using hannoy_test::env_stats;
using hannoy_test::Row;
using hannoy_test::scan_rows;
using hannoy_test::TempEnvDir;
using hannoy_test::test_meta;
using hannoy_test::uniform;
using hannoy_test::vacuum;
using hannoy_test::verify;

/* A layout's pieces: sizes add up, all but the last a multiple of SEGMENT_ALIGN, each fits a leaf.
 */
void
expect_sound(const hannoy::VectorLayout &l)
{
	size_t total = 0;
	for (uint32_t i = 0; i < l.pieces(); i++)
	{
		EXPECT_EQ(l.piece_offset(i), total);
		if (l.pieces() > 1)
		{
			EXPECT_LE(l.piece_size(i), 2025u) << i; /* a 4 KiB leaf page's largest node */
			if (i + 1 < l.pieces())
			{
				EXPECT_EQ(l.piece_size(i) % hannoy::SEGMENT_ALIGN, 0u) << i;
			}
		}
		total += l.piece_size(i);
	}
	EXPECT_EQ(total, l.bytes());
	EXPECT_LE(l.pieces(), hannoy::VectorLayout::MAX_PIECES);
}

TEST(VectorRecords, VectorsThatFitALeafStayWhole)
{
	for (uint32_t dims : {1u, 20u, 128u, 500u})
	{
		hannoy::VectorLayout l(HANNOY_METRIC_L2, dims);
		EXPECT_EQ(l.pieces(), 1u) << dims;
		expect_sound(l);
	}
	/* 16,200 bits: 2,025 bytes */
	EXPECT_EQ(hannoy::VectorLayout(HANNOY_METRIC_HAMMING, 16200).pieces(), 1u);
	/* the largest vectors keep whole overflow records: 32 pieces could not hold them */
	EXPECT_EQ(hannoy::VectorLayout(HANNOY_METRIC_L2, HANNOY_MAX_DIMS).pieces(), 1u);
}

TEST(VectorRecords, LargerVectorsAreCutIntoPieces)
{
	/* 784 floats: four pieces of 768 bytes and one of 832, five to a page */
	hannoy::VectorLayout fashion(HANNOY_METRIC_L2, 784);
	EXPECT_EQ(fashion.pieces(), 4u);
	EXPECT_EQ(fashion.piece_size(0), 768u);
	EXPECT_EQ(fashion.piece_size(3), 832u);
	for (uint32_t dims : {600u, 784u, 960u, 1024u, 1536u, 3072u, 4096u})
	{
		hannoy::VectorLayout l(HANNOY_METRIC_COSINE, dims);
		EXPECT_GE(l.pieces(), 2u) << dims;
		expect_sound(l);
	}
}

/* The vector 'v' as pieces would point into it. */
std::vector<const void *>
as_pieces(const hannoy::VectorLayout &l, const void *v)
{
	std::vector<const void *> p(l.pieces());
	for (uint32_t i = 0; i < l.pieces(); i++)
		p[i] = static_cast<const char *>(v) + l.piece_offset(i);
	return p;
}

TEST(VectorRecords, DistancesByPiecesEqualWholeDistancesBitForBit)
{
	const HannoyMetric metrics[] = {HANNOY_METRIC_L2, HANNOY_METRIC_COSINE, HANNOY_METRIC_IP,
	                                HANNOY_METRIC_L1};
	for (uint32_t dims : {784u, 1000u, 1024u, 1536u})
	{
		std::vector<float> v = uniform(6, dims, dims);
		for (HannoyMetric metric : metrics)
		{
			hannoy::VectorLayout l(metric, dims);
			ASSERT_GT(l.pieces(), 1u);
			hannoy::DistanceFn whole = hannoy::distance_function(metric);
			for (int i = 0; i < 5; i++)
			{
				const float *a = &v[i * dims], *b = &v[(i + 1) * dims];
				auto         pa = as_pieces(l, a), pb = as_pieces(l, b);
				double       expected = whole(a, b, dims);
				/* compared as bits: "close" would let index order and ORDER BY differ */
				EXPECT_EQ(std::memcmp(&expected, &(const double &) l.distance(pa.data(), b), 8), 0)
				    << metric << " " << dims;
				double both = l.distance(pa.data(), pb.data());
				EXPECT_EQ(std::memcmp(&expected, &both, 8), 0) << metric << " " << dims;
			}
		}
	}
	/* bit strings: 24,000 bits in pieces */
	hannoy::VectorLayout bits(HANNOY_METRIC_HAMMING, 24000);
	ASSERT_GT(bits.pieces(), 1u);
	std::vector<uint8_t> x(3000), y(3000);
	for (size_t i = 0; i < x.size(); i++)
	{
		x[i] = static_cast<uint8_t>(i * 37 + 11);
		y[i] = static_cast<uint8_t>(i * 91 + 5);
	}
	EXPECT_EQ(bits.distance(as_pieces(bits, x.data()).data(), y.data()),
	          hannoy_distance(HANNOY_METRIC_HAMMING, x.data(), y.data(), 24000));
}

/* Pages of the vectors database (a HannoyEnv is a hannoy::Store). */
size_t
vector_pages(HannoyEnv *env)
{
	hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
	hannoy::Txn    txn(s.env(), true);
	MDB_stat       st;
	EXPECT_EQ(mdb_stat(txn.get(), s.dbi_vectors, &st), 0);
	return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
}

/* Pages of the codes database (none before format 5). */
size_t
code_pages(HannoyEnv *env)
{
	hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
	if (!s.has_codes_db())
		return 0;
	hannoy::Txn txn(s.env(), true);
	MDB_stat    st;
	EXPECT_EQ(mdb_stat(txn.get(), s.dbi_codes, &st), 0);
	return st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
}

/* An unbounded scan from 'q': every row it returns, nearest first. */
std::vector<Row>
scan_all(HannoyEnv *env, const float *q, uint32_t dims)
{
	HannoyError err;
	HannoyScan *scan = nullptr;
	EXPECT_EQ(hannoy_scan_create(env, &scan, &err), HANNOY_OK);
	EXPECT_EQ(hannoy_scan_start(scan, q, dims, 16, 0, &err), HANNOY_OK) << err.message;
	std::vector<Row> rows = scan_rows(scan);
	hannoy_scan_free(scan);
	return rows;
}

/* Build, inserts, VACUUM of every odd row, inserts into the freed ids, checked. */
void
lifecycle(uint32_t WIDE, double max_pages_per_row)
{
	TempEnvDir         dir;
	HannoyError        err;
	const size_t       built = 300, inserted = 100;
	std::vector<float> v = uniform(built + 2 * inserted, WIDE, 11);
	std::vector<float> first(v.begin(), v.begin() + built * WIDE);
	HannoyEnv *env = build_all(dir.path(), test_meta(HANNOY_METRIC_L2, WIDE, 8, 32), first, 2);
	/*
	 * The repair deletes 200 wide vectors and their codes in one write
	 * transaction: more dirty pages than the tests' 1 MiB of map room.
	 */
	hannoy_env_close(env);
	HannoyEnvConfig roomy = hannoy_test::test_config();
	roomy.map_room = uint64_t(8) << 20;
	ASSERT_EQ(hannoy_env_open(dir.path(), &roomy, &env, &err), HANNOY_OK) << err.message;
	std::set<size_t> live;
	for (size_t i = 1; i <= built; i++)
		live.insert(i);

	EXPECT_GT(code_pages(env), 0u);
	EXPECT_LT(env_stats(env).used_pages - code_pages(env), max_pages_per_row * built)
	    << "pieces are not packed";
	for (size_t i = built; i < built + inserted; i++, live.insert(i))
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;

	/* every odd TID dies: its pieces go, ids are freed */
	size_t gone = vacuum(env, [](HannoyTid tid) { return tid % 2 == 1; });
	for (auto it = live.begin(); it != live.end();)
		it = *it % 2 == 1 ? live.erase(it) : std::next(it);
	EXPECT_EQ(env_stats(env).free_ids, gone);

	/* new rows take the freed ids */
	for (size_t i = built + inserted; i < built + 2 * inserted; i++, live.insert(i))
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;
	HannoyStats st = env_stats(env);
	EXPECT_EQ(st.free_ids, gone - inserted);
	EXPECT_EQ(st.next_id, built + inserted);
	EXPECT_EQ(verify(env), std::vector<std::string>{});

	/* an unbounded scan returns exactly the live rows, each at its exact distance */
	const float *q = &v[7 * WIDE];
	auto         rows = scan_all(env, q, WIDE);
	ASSERT_EQ(rows.size(), live.size());
	std::set<HannoyTid> seen;
	for (const Row &r : rows)
	{
		ASSERT_TRUE(live.count(r.tid)) << r.tid;
		seen.insert(r.tid);
		EXPECT_EQ(r.distance, hannoy_distance(HANNOY_METRIC_L2, q, &v[(r.tid - 1) * WIDE], WIDE))
		    << r.tid;
	}
	EXPECT_EQ(seen.size(), live.size());
	/* the query's own row comes first */
	EXPECT_EQ(rows.front().tid, 8u);
	EXPECT_EQ(rows.front().distance, 0.0);
	hannoy_env_close(env);
}

/* 784 floats, one page each if whole: four pieces, five pieces to a page */
TEST(VectorRecords, FashionSizedIndexLifecycle)
{
	lifecycle(784, 0.95);
}

/* 1,024 floats, two pages each if whole */
TEST(VectorRecords, WideIndexLifecycle)
{
	lifecycle(1024, 1.3);
}

TEST(VectorRecords, DeleteEverythingAndRefill)
{
	const uint32_t     WIDE = 784;
	TempEnvDir         dir;
	HannoyError        err;
	const size_t       rows = 200;
	std::vector<float> v = uniform(2 * rows, WIDE, 12);
	std::vector<float> first(v.begin(), v.begin() + rows * WIDE);
	HannoyEnv *env = build_all(dir.path(), test_meta(HANNOY_METRIC_L2, WIDE, 8, 32, 4), first, 2);

	size_t built_pages = vector_pages(env);

	EXPECT_EQ(vacuum(env, [](HannoyTid) { return true; }), rows);
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	for (size_t i = rows; i < 2 * rows; i++)
		ASSERT_EQ(hannoy_insert(env, i + 1, &v[i * WIDE], 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(verify(env), std::vector<std::string>{});
	EXPECT_EQ(scan_all(env, &v[rows * WIDE], WIDE).size(), rows);
	/* the refill appends the reused ids in order: pieces pack as the build packed them */
	EXPECT_LE(vector_pages(env), built_pages + 1);
	EXPECT_LT(built_pages, rows) << "pieces are not packed";
	hannoy_env_close(env);
}

/*
 * Storage format 8 writes neighbour lists in CRoaring's tagged form, a
 * format 7 sidecar keeps writing portable bitmaps (a release that knows only
 * format 7 can still read it); both verify and answer scans, inserts and
 * VACUUM included.
 */
TEST(Storage, NeighbourListsFollowTheFormat)
{
	for (uint32_t format : {7u, 8u})
	{
		TempEnvDir dir;
		HannoyMeta meta = test_meta(HANNOY_METRIC_L2, 8, 8, 32);
		meta.format_version = format;
		auto        v = uniform(700, 8, 12);
		HannoyEnv  *env = build_all(dir.path(), meta, v, 2);
		HannoyError err;
		for (size_t i = 0; i < 50; i++)
			ASSERT_EQ(hannoy_insert(env, 5000 + i, &v[i * 8], 0, &err), HANNOY_OK) << err.message;
		vacuum(env, [](HannoyTid tid) { return tid % 9 == 0; });
		EXPECT_TRUE(verify(env).empty()) << "format " << format;
		hannoy_env_close(env);

		hannoy::Store  store(dir.path(), hannoy_test::test_config(), false, nullptr);
		hannoy::Txn    txn(store.env(), true);
		hannoy::Cursor cur(txn.get(), store.dbi_links);
		MDB_val        key, data;
		size_t         lists = 0, tagged = 0, portable = 0;
		for (bool more = cur.get(key, data, MDB_FIRST); more; more = cur.get(key, data, MDB_NEXT))
		{
			const unsigned char first = *static_cast<const unsigned char *>(data.mv_data);
			lists++;
			tagged += first == 1 || first == 2;
			portable += first == 0x3A; /* the cookie 12346, little-endian */
		}
		EXPECT_GT(lists, 700u);
		if (format == 8)
			EXPECT_EQ(tagged, lists);
		else
			EXPECT_EQ(portable, lists);
	}
}

/*
 * An insert's linking takes the vectors its search read (SeenVectors) only
 * in a write transaction that began right on the search's snapshot: after
 * another commit (VACUUM may have freed an id and an insert reused it with
 * another vector) it reads them from the B-tree.  Never the vector the
 * transaction wrote itself; vectors in pieces are put together whole.
 */
TEST(SeenVectors, HoldOnlyInTheNextWriteTransaction)
{
	const uint32_t dims = 784; /* in pieces */
	TempEnvDir     dir;
	HannoyMeta     meta = test_meta(HANNOY_METRIC_L2, dims);
	auto           v = uniform(60, dims, 15);
	HannoyEnv     *env = build_all(dir.path(), meta, v, 1);
	hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
	ASSERT_GT(s.layout().pieces(), 1u);
	hannoy::SeenVectors seen;
	double              d34;
	{
		hannoy::Txn         read(s.env(), true);
		hannoy::StoredGraph g(s, read.get());
		g.remember_in(&seen);
		d34 = g.distance_between(3, 4);
		EXPECT_EQ(g.distance_between(3, 4), d34); /* the second time from 'seen' */
		seen.taken_in(s, read.get());
	}
	ASSERT_NE(seen.find(3), nullptr);
	EXPECT_EQ(seen.find(5), nullptr) << "never read";
	{
		hannoy::Txn write(s.env(), false);
		ASSERT_TRUE(seen.hold_in(s, write.get()));
		hannoy::StoredEditor e(s, write.get());
		e.cache_vectors(true);
		e.trust_seen(&seen, hannoy::NO_NODE);
		EXPECT_EQ(e.distance_between(3, 4), d34);
		/* the vector the transaction writes is read from the B-tree, never from 'seen' */
		auto other = uniform(1, dims, 99);
		s.put_vector(write.get(), 3, other.data(), false);
		hannoy::StoredEditor w(s, write.get());
		w.cache_vectors(true);
		w.trust_seen(&seen, 3);
		hannoy::StoredGraph direct(s, write.get());
		double              want = direct.distance(other.data(), 4);
		EXPECT_NEAR(w.distance_between(3, 4), want, 1e-9 * want);
		EXPECT_NE(w.distance_between(3, 4), d34);
		/*
		 * The pointers are what it reads: vectors changed here (never so in
		 * an insert) are not seen through them.
		 */
		auto changed = uniform(1, dims, 98);
		s.put_vector(write.get(), 4, changed.data(), false);
		hannoy::StoredEditor t(s, write.get());
		t.cache_vectors(true);
		t.trust_seen(&seen, hannoy::NO_NODE);
		EXPECT_EQ(t.distance_between(3, 4), d34) << "both from 'seen'";
		hannoy::StoredEditor u(s, write.get());
		u.cache_vectors(true);
		EXPECT_NE(u.distance_between(3, 4), d34) << "without trust_seen it reads the B-tree";
	} /* aborted: no commit, the next write still begins on the snapshot */
	{
		hannoy::Txn write(s.env(), false);
		EXPECT_TRUE(seen.hold_in(s, write.get()));
		s.write_state(write.get(), s.read_state(write.get()));
		write.commit();
	}
	hannoy::Txn write(s.env(), false);
	EXPECT_FALSE(seen.hold_in(s, write.get())) << "a commit came between";
	write.abort();
	seen.clear();
	hannoy::Txn again(s.env(), false);
	EXPECT_FALSE(seen.hold_in(s, again.get())) << "no snapshot: never";
	again.abort();
	{
		hannoy::Txn read(s.env(), true);
		seen.taken_in(s, read.get());
	}
	s.reserve(s.map_size() * 2); /* the map moves: the pointers dangle */
	hannoy::Txn moved(s.env(), false);
	EXPECT_FALSE(seen.hold_in(s, moved.get())) << "the map moved";
	moved.abort();
	hannoy_env_close(env);
}

/*
 * Vectors cut into pieces get no copies (a gathered copy costs about the
 * read it saves), nor do stores with very many ids.
 */
/*
 * Checks every copy 'copies' keeps below 'next_id' against the stored
 * record 'stored(id)' gives ('bytes' bytes; nullptr: the id has none, so a
 * copy of it is stale); returns how many copies there are.
 */
template <typename Stored>
size_t
check_copies(const hannoy::VectorCopies &copies, uint32_t next_id, size_t bytes, Stored stored)
{
	size_t kept = 0;
	for (uint32_t id = 0; id < next_id; id++)
	{
		const char *copy = copies.find(id);
		if (copy == nullptr)
			continue;
		kept++;
		const void *record = stored(id);
		EXPECT_NE(record, nullptr) << "a copy of freed id " << id;
		if (record != nullptr)
		{
			EXPECT_EQ(std::memcmp(copy, record, bytes), 0) << "id " << id;
		}
	}
	return kept;
}

TEST(VectorCopies, NoneForVectorsInPiecesOrTooManyIds)
{
	TempEnvDir     dir;
	HannoyMeta     meta = test_meta(HANNOY_METRIC_L2, 784);
	auto           v = uniform(20, 784, 23);
	HannoyEnv     *env = build_all(dir.path(), meta, v, 1);
	hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
	ASSERT_GT(s.layout().pieces(), 1u);
	{
		hannoy::Txn read(s.env(), true);
		EXPECT_EQ(s.vector_copies(read.get(), s.read_state(read.get())), nullptr);
	}
	hannoy_env_close(env);

	/* nor in a store with more ids than slots for a quarter of the room */
	hannoy::VectorLayout whole(HANNOY_METRIC_L2, 8);
	hannoy::VectorCopies copies;
	EXPECT_TRUE(copies.open(whole, 0, hannoy::VectorCopies::MAX_IDS));
	EXPECT_FALSE(copies.open(whole, 0, hannoy::VectorCopies::MAX_IDS + 1));
	EXPECT_TRUE(copies.open(whole, 0, 100));
	auto        v8 = uniform(1, 8, 5);
	const void *piece = v8.data();
	copies.add(0xFFFFFFF0u, &piece); /* an id a damaged list names */
	EXPECT_EQ(copies.find(0xFFFFFFF0u), nullptr) << "its slot would pass the room";
	copies.add(7, &piece);
	ASSERT_NE(copies.find(7), nullptr);
	EXPECT_LE(copies.bytes(), hannoy::VectorCopies::MAX_BYTES);
}

/*
 * The vector copies of a store (VectorCopies) outlive transactions: a copy
 * is what the B-tree holds until VACUUM frees an id (the count of freed ids
 * changes and every copy goes, also when next_id went back); one thread
 * uses them; a write transaction never keeps the vector it wrote.  After
 * VACUUM and inserts that take the freed ids again with other vectors,
 * every copy still equals the stored vector.
 */
TEST(VectorCopies, HoldUntilAnIdIsFreed)
{
	for (uint32_t dims : {8u, 500u}) /* the largest vectors kept whole: about 500 floats */
	{
		TempEnvDir dir;
		HannoyMeta meta = test_meta(HANNOY_METRIC_L2, dims);
		auto       v = uniform(300, dims, 21);
		/* no codes: inserts into 500-d rows with codes measure only codes */
		HannoyEnv *env = build_all(dir.path(), meta, v, 1, 0, 20, nullptr, HANNOY_QUANTIZER_NONE);
		hannoy::Store        &s = *reinterpret_cast<hannoy::Store *>(env);
		std::vector<char>     stored(s.vector_bytes());
		hannoy::VectorCopies *copies;
		ASSERT_EQ(s.layout().pieces(), 1u);
		{
			hannoy::Txn read(s.env(), true);
			copies = s.vector_copies(read.get(), s.read_state(read.get()));
			ASSERT_NE(copies, nullptr);
			EXPECT_EQ(copies->find(3), nullptr);
			hannoy::StoredGraph g(s, read.get());
			g.use_copies(copies);
			double d = g.distance(&v[0], 3);
			ASSERT_NE(copies->find(3), nullptr) << "dims " << dims;
			EXPECT_EQ(std::memcmp(copies->find(3), &v[3 * dims], s.vector_bytes()), 0);
			EXPECT_EQ(g.distance(&v[0], 3), d) << "from the copy";
			bool        other_thread = true;
			std::thread t(
			    [&] {
				    other_thread = s.vector_copies(read.get(), s.read_state(read.get())) != nullptr;
			    });
			t.join();
			EXPECT_FALSE(other_thread) << "one thread uses them";
		}
		{
			hannoy::Txn write(s.env(), false);
			s.write_state(write.get(), s.read_state(write.get()));
			write.commit();
		}
		{
			hannoy::Txn read(s.env(), true);
			ASSERT_EQ(s.vector_copies(read.get(), s.read_state(read.get())), copies);
			EXPECT_NE(copies->find(3), nullptr) << "a commit that frees no id keeps them";
			hannoy::GraphState back = s.read_state(read.get());
			back.next_id--;
			s.vector_copies(read.get(), back);
			EXPECT_EQ(copies->find(3), nullptr) << "next_id went back";
			/* refill */
			s.vector_copies(read.get(), s.read_state(read.get()));
			hannoy::StoredGraph g(s, read.get());
			g.use_copies(copies);
			g.distance(&v[0], 3);
			ASSERT_NE(copies->find(3), nullptr);
		}
		{
			/* an editor keeps what it reads from the B-tree, never what its transaction wrote */
			hannoy::Txn write(s.env(), false);
			ASSERT_EQ(s.vector_copies(write.get(), s.read_state(write.get())), copies);
			auto other = uniform(1, dims, 99);
			s.put_vector(write.get(), 5, other.data(), false);
			hannoy::StoredEditor e(s, write.get());
			e.cache_vectors(true);
			e.trust_seen(nullptr, 5);
			e.use_copies(copies);
			hannoy::StoredGraph direct(s, write.get());
			double              want = direct.distance(other.data(), 6);
			EXPECT_NEAR(e.distance_between(5, 6), want, 1e-9 * want);
			EXPECT_EQ(copies->find(5), nullptr) << "the written vector is never kept";
			ASSERT_NE(copies->find(6), nullptr);
			EXPECT_EQ(std::memcmp(copies->find(6), &v[6 * dims], s.vector_bytes()), 0);
			e.distance_between(3, 6);
		} /* aborted: id 5 keeps its vector */
		{
			hannoy::Txn write(s.env(), false);
			EXPECT_EQ(s.read_frees(write.get()), 0u);
			s.add_frees(write.get(), 2);
			write.commit();
		}
		{
			hannoy::Txn read(s.env(), true);
			EXPECT_EQ(s.read_frees(read.get()), 2u);
			ASSERT_EQ(s.vector_copies(read.get(), s.read_state(read.get())), copies);
			EXPECT_EQ(copies->find(3), nullptr) << "an id was freed: every copy goes";
			EXPECT_EQ(copies->find(6), nullptr);
		}

		/* inserts fill the copies; VACUUM frees ids; inserts take them with other vectors */
		HannoyError err;
		auto        more = uniform(200, dims, 22);
		for (size_t i = 0; i < 100; i++)
			ASSERT_EQ(hannoy_insert(env, 5000 + i, &more[i * dims], 0, &err), HANNOY_OK)
			    << err.message;
		/* few enough for one repair slice to fit the tests' small map room */
		size_t removed = vacuum(env, [](HannoyTid tid) { return tid % 5 == 0; });
		ASSERT_GT(removed, 50u);
		{
			hannoy::Txn read(s.env(), true);
			EXPECT_EQ(s.read_frees(read.get()), 2u + removed) << "VACUUM counts the ids it frees";
		}
		for (size_t i = 100; i < 200; i++)
			ASSERT_EQ(hannoy_insert(env, 5000 + i, &more[i * dims], 0, &err), HANNOY_OK)
			    << err.message;
		EXPECT_TRUE(verify(env).empty());
		hannoy::Txn        read(s.env(), true);
		hannoy::GraphState state = s.read_state(read.get());
		ASSERT_EQ(s.vector_copies(read.get(), state), copies);
		size_t kept = check_copies(
		    *copies, state.next_id, stored.size(),
		    [&](uint32_t id) -> const void *
		    { return s.copy_vector(read.get(), id, stored.data()) ? stored.data() : nullptr; });
		EXPECT_GT(kept, 100u) << "the inserts after VACUUM kept copies";
		read.abort();
		hannoy_env_close(env);
	}
}

TEST(VectorCopies, CodesHoldUntilAnIdIsFreed)
{
	/*
	 * The codes an insert's walk reads (256 dimensions and more: every
	 * insert walks on codes) are kept across its transactions, dropped when
	 * VACUUM frees an id, and always equal the stored code.
	 */
	const uint32_t dims = 300;
	TempEnvDir     dir;
	HannoyMeta     meta = test_meta(HANNOY_METRIC_L2, dims);
	auto           v = uniform(600, dims, 31);
	HannoyEnv *env = build_all(dir.path(), meta, v, 1, 0, 20, nullptr, HANNOY_QUANTIZER_SCALAR8);
	hannoy::Store                           &s = *reinterpret_cast<hannoy::Store *>(env);
	std::shared_ptr<const hannoy::Quantizer> quant = s.quantizer();
	ASSERT_TRUE(quant);
	const size_t          code_bytes = quant->code_bytes();
	hannoy::VectorCopies *copies;
	{
		hannoy::Txn read(s.env(), true);
		copies = s.code_copies(read.get(), s.read_state(read.get()));
		ASSERT_NE(copies, nullptr);
		EXPECT_EQ(copies->find(3), nullptr);
		hannoy::QueryForm form;
		quant->prepare(&v[0], form);
		hannoy::CodedGraph g(s, read.get(), *quant, form);
		g.use_copies(copies);
		double         d = g.distance(&v[0], 3);
		const uint8_t *code;
		ASSERT_TRUE(s.code_of(read.get(), 3, &code));
		ASSERT_NE(copies->find(3), nullptr);
		EXPECT_EQ(std::memcmp(copies->find(3), code, code_bytes), 0);
		EXPECT_EQ(g.distance(&v[0], 3), d) << "from the copy";
		bool        other_thread = true;
		std::thread t(
		    [&] { other_thread = s.code_copies(read.get(), s.read_state(read.get())) != nullptr; });
		t.join();
		EXPECT_FALSE(other_thread) << "one thread uses them";
	}
	HannoyError err;
	auto        more = uniform(200, dims, 32);
	for (size_t i = 0; i < 100; i++)
		ASSERT_EQ(hannoy_insert(env, 5000 + i, &more[i * dims], 0, &err), HANNOY_OK) << err.message;
	size_t kept_before = 0;
	{
		hannoy::Txn read(s.env(), true);
		ASSERT_EQ(s.code_copies(read.get(), s.read_state(read.get())), copies);
		for (uint32_t id = 0; id < 600; id++)
			kept_before += copies->find(id) != nullptr;
	}
	EXPECT_GT(kept_before, 100u) << "the inserts' walks kept codes";
	size_t removed = vacuum(env, [](HannoyTid tid) { return tid % 5 == 0; });
	ASSERT_GT(removed, 50u);
	{
		hannoy::Txn read(s.env(), true);
		ASSERT_EQ(s.code_copies(read.get(), s.read_state(read.get())), copies);
		for (uint32_t id = 0; id < 600; id++)
			ASSERT_EQ(copies->find(id), nullptr) << "ids were freed: every copy goes";
	}
	for (size_t i = 100; i < 200; i++)
		ASSERT_EQ(hannoy_insert(env, 5000 + i, &more[i * dims], 0, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(verify(env).empty());
	hannoy::Txn        read(s.env(), true);
	hannoy::GraphState state = s.read_state(read.get());
	ASSERT_EQ(s.code_copies(read.get(), state), copies);
	size_t kept = check_copies(*copies, state.next_id, code_bytes,
	                           [&](uint32_t id) -> const void *
	                           {
		                           const uint8_t *code;
		                           return s.code_of(read.get(), id, &code) ? code : nullptr;
	                           });
	EXPECT_GT(kept, 100u) << "the inserts after VACUUM kept copies";
	read.abort();
	hannoy_env_close(env);
}

} // namespace
