/*
 * test_links.cpp
 *	  Neighbour lists: round trips through CRoaring's portable format, our
 *	  decoder on bitmaps CRoaring wrote with run containers, and rejection of
 *	  truncated, malformed and random input.
 */
#include "links.hpp"

#include <gtest/gtest.h>
#include <roaring/roaring.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace
{

constexpr uint32_t COOKIE_NO_RUN = 12346;
constexpr uint32_t COOKIE_RUN = 12347;

/* Frees a CRoaring bitmap at the end of a test. */
struct BitmapDeleter
{
	void
	operator()(roaring_bitmap_t *bitmap) const
	{
		roaring_bitmap_free(bitmap);
	}
};

using BitmapPtr = std::unique_ptr<roaring_bitmap_t, BitmapDeleter>;

/* Encodes 'ids' into a fresh string, portable (formats 3 to 7) unless 'tagged' (format 8). */
std::string
encode(const std::vector<uint32_t> &ids, bool tagged = false)
{
	std::string out;

	hannoy::encode_links(ids.data(), ids.size(), out, tagged);
	return out;
}

/*
 * Decodes a copy of 'bytes' held in a buffer of exactly their size, so the
 * address sanitizer (or a guard) would notice any read past the end.
 */
bool
decode_exact(const std::string &bytes, size_t size, std::vector<uint32_t> &out)
{
	std::unique_ptr<unsigned char[]> copy(new unsigned char[size == 0 ? 1 : size]);

	std::memcpy(copy.get(), bytes.data(), size);
	return hannoy::decode_links(copy.get(), size, out);
}

/* The sorted, deduplicated form of 'ids': what a decode must return. */
std::vector<uint32_t>
sorted(std::vector<uint32_t> ids)
{
	std::sort(ids.begin(), ids.end());
	ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
	return ids;
}

/* The first 32-bit word of a serialisation. */
uint32_t
cookie_of(const std::string &bytes)
{
	uint32_t cookie;

	std::memcpy(&cookie, bytes.data(), sizeof(cookie));
	return cookie;
}

/* Serialises a CRoaring bitmap as CRoaring itself does. */
std::string
roaring_serialize(const roaring_bitmap_t *bitmap)
{
	std::string out(roaring_bitmap_portable_size_in_bytes(bitmap), '\0');

	EXPECT_EQ(roaring_bitmap_portable_serialize(bitmap, &out[0]), out.size());
	return out;
}

/* The values of a CRoaring bitmap, ascending. */
std::vector<uint32_t>
roaring_values(const roaring_bitmap_t *bitmap)
{
	std::vector<uint32_t> values(roaring_bitmap_get_cardinality(bitmap));

	roaring_bitmap_to_uint32_array(bitmap, values.data());
	return values;
}

/* Appends little-endian integers, to build serialisations by hand. */
void
put_u16(std::string &s, uint16_t v)
{
	s.push_back(static_cast<char>(v & 0xFF));
	s.push_back(static_cast<char>(v >> 8));
}

void
put_u32(std::string &s, uint32_t v)
{
	put_u16(s, static_cast<uint16_t>(v & 0xFFFF));
	put_u16(s, static_cast<uint16_t>(v >> 16));
}

/* Encodes, checks the decode equals the sorted input, and returns the bytes. */
std::string
check_round_trip(const std::vector<uint32_t> &ids)
{
	const std::string     bytes = encode(ids);
	std::vector<uint32_t> decoded = {1, 2, 3};

	EXPECT_TRUE(decode_exact(bytes, bytes.size(), decoded));
	EXPECT_EQ(decoded, sorted(ids));
	/* Our encoding never holds run containers. */
	EXPECT_EQ(cookie_of(bytes), COOKIE_NO_RUN);
	/* CRoaring reads what we wrote. */
	BitmapPtr back(roaring_bitmap_portable_deserialize_safe(bytes.data(), bytes.size()));
	EXPECT_TRUE(back != nullptr);
	if (back)
	{
		EXPECT_EQ(roaring_values(back.get()), sorted(ids));
	}
	return bytes;
}

/* Every proper prefix of a valid serialisation is rejected, without reading past it. */
void
check_prefixes_rejected(const std::string &bytes)
{
	std::vector<uint32_t> out;

	for (size_t len = 0; len < bytes.size(); len++)
	{
		ASSERT_FALSE(decode_exact(bytes, len, out)) << "prefix of " << len << " bytes";
		ASSERT_TRUE(out.empty());
	}
}

TEST(Links, EmptyList)
{
	const std::string bytes = check_round_trip({});

	EXPECT_EQ(bytes.size(), 8u);
	check_prefixes_rejected(bytes);
}

TEST(Links, SingleId)
{
	for (uint32_t id : {0u, 1u, 65535u, 65536u, 123456789u, UINT32_MAX})
		check_prefixes_rejected(check_round_trip({id}));
}

TEST(Links, RandomIdsInOneChunk)
{
	std::mt19937 rng(1);

	for (int round = 0; round < 50; round++)
	{
		std::set<uint32_t> unique;

		while (unique.size() < 32)
			unique.insert(rng() % 65536);

		std::vector<uint32_t> ids(unique.begin(), unique.end());

		std::shuffle(ids.begin(), ids.end(), rng);
		check_round_trip(ids);
	}
}

TEST(Links, IdsSpanningSeveralChunks)
{
	std::mt19937          rng(2);
	std::vector<uint32_t> ids = {0, 65535, 65536, 131071, 131072, UINT32_MAX - 1, UINT32_MAX};

	for (int i = 0; i < 200; i++)
		ids.push_back(rng() % (1u << 22));
	ids = sorted(ids);
	std::shuffle(ids.begin(), ids.end(), rng);

	const std::string bytes = check_round_trip(ids);

	check_prefixes_rejected(bytes);
}

TEST(Links, DenseChunkUsesBitset)
{
	std::mt19937          rng(3);
	std::vector<uint32_t> ids;

	/* 5000 ids in chunk 2 (a bitset container), a full chunk 5, and a few sparse ones. */
	for (uint32_t v = 0; v < 65536 && ids.size() < 5000; v += 1 + rng() % 20)
		ids.push_back((2u << 16) | v);
	for (uint32_t v = 0; v < 65536; v++)
		ids.push_back((5u << 16) | v);
	ids.push_back(7);
	ids.push_back((9u << 16) | 4);

	const std::string bytes = check_round_trip(ids);

	EXPECT_GT(bytes.size(), 2 * 8192u);
	check_prefixes_rejected(bytes);
}

TEST(Links, AppendsToExistingBytes)
{
	std::string                 out = "prefix";
	const std::vector<uint32_t> ids = {5, 3, 70000};

	hannoy::encode_links(ids.data(), ids.size(), out, false);
	ASSERT_EQ(out.compare(0, 6, "prefix"), 0);

	std::vector<uint32_t> decoded;

	EXPECT_TRUE(hannoy::decode_links(out.data() + 6, out.size() - 6, decoded));
	EXPECT_EQ(decoded, sorted(ids));
}

TEST(Links, UnalignedInput)
{
	const std::vector<uint32_t> ids = {1, 2, 3, 100000, 4000000000u};
	const std::string           bytes = encode(ids);

	for (size_t shift = 1; shift < 8; shift++)
	{
		std::string           shifted(shift, 'x');
		std::vector<uint32_t> decoded;

		shifted += bytes;
		EXPECT_TRUE(hannoy::decode_links(shifted.data() + shift, bytes.size(), decoded));
		EXPECT_EQ(decoded, sorted(ids));
	}
}

/* Bitmaps CRoaring wrote with run containers, with and without container offsets. */
TEST(Links, DecodesRunContainersFromCRoaring)
{
	for (uint32_t containers : {1u, 2u, 3u, 4u, 5u, 9u})
	{
		SCOPED_TRACE("containers " + std::to_string(containers));
		BitmapPtr bitmap(roaring_bitmap_create());

		for (uint32_t c = 0; c < containers; c++)
		{
			const uint64_t base = static_cast<uint64_t>(c * 3 + 1) << 16;

			/* A few runs per container, one of them up to the end of the chunk. */
			roaring_bitmap_add_range(bitmap.get(), base + 10, base + 300);
			roaring_bitmap_add_range(bitmap.get(), base + 1000, base + 1001);
			roaring_bitmap_add_range(bitmap.get(), base + 65000, base + 65536);
			/* Every other container also gets scattered values: array or bitset kept. */
			if (c % 3 == 1)
			{
				for (int i = 0; i < 50; i++)
					roaring_bitmap_add(bitmap.get(), static_cast<uint32_t>(base) + 2000 + 7 * i);
			}
			if (c % 3 == 2)
			{
				for (uint32_t v = 2000; v < 62000; v += 3)
					roaring_bitmap_add(bitmap.get(), static_cast<uint32_t>(base) + v);
			}
		}
		roaring_bitmap_run_optimize(bitmap.get());

		const std::string     bytes = roaring_serialize(bitmap.get());
		std::vector<uint32_t> decoded;

		ASSERT_EQ(cookie_of(bytes) & 0xFFFF, COOKIE_RUN);
		ASSERT_EQ((cookie_of(bytes) >> 16) + 1, containers);
		EXPECT_TRUE(decode_exact(bytes, bytes.size(), decoded));
		EXPECT_EQ(decoded, roaring_values(bitmap.get()));
		check_prefixes_rejected(bytes);
	}

	/* A single full chunk is one run of 65536 values. */
	BitmapPtr full(roaring_bitmap_create());

	roaring_bitmap_add_range(full.get(), 0, 65536);
	roaring_bitmap_run_optimize(full.get());

	const std::string     bytes = roaring_serialize(full.get());
	std::vector<uint32_t> decoded;

	EXPECT_EQ(bytes.size(), 4u + 1 + 4 + 2 + 4);
	EXPECT_TRUE(decode_exact(bytes, bytes.size(), decoded));
	EXPECT_EQ(decoded.size(), 65536u);
	EXPECT_EQ(decoded, roaring_values(full.get()));
}

/* Random bitmaps of every container kind written by CRoaring, with and without runs. */
TEST(Links, DecodesRandomCRoaringBitmaps)
{
	std::mt19937 rng(5);

	for (int round = 0; round < 40; round++)
	{
		BitmapPtr bitmap(roaring_bitmap_create());
		const int chunks = 1 + static_cast<int>(rng() % 8);

		for (int c = 0; c < chunks; c++)
		{
			const uint32_t base = (rng() % 65536) << 16;

			switch (rng() % 3)
			{
				case 0:
					for (int i = 0; i < 40; i++)
						roaring_bitmap_add(bitmap.get(), base | (rng() % 65536));
					break;
				case 1:
					for (int i = 0; i < 6000; i++)
						roaring_bitmap_add(bitmap.get(), base | (rng() % 65536));
					break;
				default:
				{
					const uint32_t start = rng() % 60000;

					roaring_bitmap_add_range(bitmap.get(), base + start,
					                         base + start + 1 + rng() % 5000);
				}
			}
		}
		if (round % 2 == 1)
			roaring_bitmap_run_optimize(bitmap.get());

		const std::string     bytes = roaring_serialize(bitmap.get());
		std::vector<uint32_t> decoded;

		EXPECT_TRUE(decode_exact(bytes, bytes.size(), decoded));
		EXPECT_EQ(decoded, roaring_values(bitmap.get()));
	}
}

TEST(Links, RejectsBadCookies)
{
	std::string           bytes = encode({1, 2, 3});
	std::vector<uint32_t> out;

	for (uint32_t cookie : {0u, 12345u, 12348u, 13766u, 0xFFFFFFFFu, COOKIE_NO_RUN | (1u << 16)})
	{
		std::memcpy(&bytes[0], &cookie, sizeof(cookie));
		EXPECT_FALSE(decode_exact(bytes, bytes.size(), out)) << cookie;
	}
	EXPECT_FALSE(hannoy::decode_links(nullptr, 0, out));
}

TEST(Links, RejectsMalformedContainers)
{
	std::vector<uint32_t> out;

	/* Too many containers for a 32-bit id space. */
	{
		std::string s;

		put_u32(s, COOKIE_NO_RUN);
		put_u32(s, 65537);
		s.append(65537 * 8 + 65537 * 2, '\0');
		EXPECT_FALSE(decode_exact(s, s.size(), out));
	}

	/* A well-formed two-container bitmap built by hand, then broken one field at a time. */
	auto build = [](uint16_t key0, uint16_t key1, uint32_t offset0, uint16_t v0, uint16_t v1)
	{
		std::string s;

		put_u32(s, COOKIE_NO_RUN);
		put_u32(s, 2);
		put_u16(s, key0);
		put_u16(s, 1); /* 2 values */
		put_u16(s, key1);
		put_u16(s, 0); /* 1 value */
		put_u32(s, offset0);
		put_u32(s, offset0 + 4);
		put_u16(s, v0);
		put_u16(s, v1);
		put_u16(s, 9);
		return s;
	};

	const std::string good = build(1, 2, 24, 3, 4);

	ASSERT_TRUE(decode_exact(good, good.size(), out));
	EXPECT_EQ(out, (std::vector<uint32_t>{65536 + 3, 65536 + 4, 131072 + 9}));

	const std::string keys_out_of_order = build(2, 1, 24, 3, 4);
	const std::string duplicate_keys = build(1, 1, 24, 3, 4);
	const std::string bad_offset = build(1, 2, 25, 3, 4);
	const std::string values_not_ascending = build(1, 2, 24, 4, 3);
	const std::string duplicate_values = build(1, 2, 24, 4, 4);

	EXPECT_FALSE(decode_exact(keys_out_of_order, keys_out_of_order.size(), out));
	EXPECT_FALSE(decode_exact(duplicate_keys, duplicate_keys.size(), out));
	EXPECT_FALSE(decode_exact(bad_offset, bad_offset.size(), out));
	EXPECT_FALSE(decode_exact(values_not_ascending, values_not_ascending.size(), out));
	EXPECT_FALSE(decode_exact(duplicate_values, duplicate_values.size(), out));
	EXPECT_TRUE(out.empty());

	/* Trailing bytes. */
	const std::string trailing = good + std::string(1, '\0');

	EXPECT_FALSE(decode_exact(trailing, trailing.size(), out));

	/* Run containers: one container (no offsets), run flag set. */
	auto build_runs = [](uint16_t card_minus_1, std::vector<std::pair<uint16_t, uint16_t>> runs)
	{
		std::string s;

		put_u32(s, COOKIE_RUN); /* one container */
		s.push_back('\x01');    /* container 0 is a run container */
		put_u16(s, 0);
		put_u16(s, card_minus_1);
		put_u16(s, static_cast<uint16_t>(runs.size()));
		for (auto &run : runs)
		{
			put_u16(s, run.first);
			put_u16(s, run.second);
		}
		return s;
	};

	const std::string runs_ok = build_runs(4, {{10, 2}, {20, 1}});
	const std::string runs_adjacent = build_runs(4, {{10, 2}, {13, 1}});
	const std::string runs_at_top = build_runs(1, {{65534, 1}});

	ASSERT_TRUE(decode_exact(runs_ok, runs_ok.size(), out));
	EXPECT_EQ(out, (std::vector<uint32_t>{10, 11, 12, 20, 21}));
	/* Touching runs are unusual but still a valid ascending set. */
	ASSERT_TRUE(decode_exact(runs_adjacent, runs_adjacent.size(), out));
	EXPECT_EQ(out, (std::vector<uint32_t>{10, 11, 12, 13, 14}));
	ASSERT_TRUE(decode_exact(runs_at_top, runs_at_top.size(), out));
	EXPECT_EQ(out, (std::vector<uint32_t>{65534, 65535}));

	const std::string runs_card_4 = build_runs(3, {{10, 2}, {20, 1}}); /* wrong: 5 - 1 */
	const std::string runs_overlap = build_runs(4, {{10, 2}, {12, 1}});
	const std::string runs_descending = build_runs(4, {{20, 1}, {10, 2}});
	const std::string runs_overflow = build_runs(4, {{65534, 4}});
	const std::string runs_none = build_runs(0, {});

	EXPECT_FALSE(decode_exact(runs_card_4, runs_card_4.size(), out));
	EXPECT_FALSE(decode_exact(runs_overlap, runs_overlap.size(), out));
	EXPECT_FALSE(decode_exact(runs_descending, runs_descending.size(), out));
	EXPECT_FALSE(decode_exact(runs_overflow, runs_overflow.size(), out));
	EXPECT_FALSE(decode_exact(runs_none, runs_none.size(), out));

	/* A bitset whose header cardinality disagrees with its bits. */
	{
		std::string s;

		put_u32(s, COOKIE_NO_RUN);
		put_u32(s, 1);
		put_u16(s, 0);
		put_u16(s, 5000 - 1);
		put_u32(s, 16);
		std::string words(8192, '\0');

		for (int i = 0; i < 5000 / 8; i++)
			words[i] = '\xFF';
		EXPECT_TRUE(decode_exact(s + words, s.size() + words.size(), out));
		EXPECT_EQ(out.size(), 5000u);
		words[700] = '\x01';
		const std::string too_many = s + words;

		EXPECT_FALSE(decode_exact(too_many, too_many.size(), out));
		words[700] = '\0';
		words[0] = '\x7F';
		const std::string too_few = s + words;

		EXPECT_FALSE(decode_exact(too_few, too_few.size(), out));
	}
}

/* Random bytes, random bytes behind a valid cookie, and corrupted encodings never crash. */
TEST(Links, SurvivesGarbage)
{
	std::mt19937          rng(6);
	std::vector<uint32_t> out;
	int                   accepted = 0;

	auto check = [&](const std::string &bytes)
	{
		if (decode_exact(bytes, bytes.size(), out))
		{
			accepted++;
			for (size_t i = 1; i < out.size(); i++)
				ASSERT_LT(out[i - 1], out[i]);
		}
		else
			ASSERT_TRUE(out.empty());
	};

	for (int round = 0; round < 20000; round++)
	{
		std::string bytes(rng() % 200, '\0');

		for (char &c : bytes)
			c = static_cast<char>(rng());
		if (round % 8 == 3 && bytes.size() >= 5)
		{
			/* CRoaring's tagged forms (format 8): an array, or a portable bitmap */
			bytes[0] = static_cast<char>(1 + rng() % 2);
			if (bytes[0] == 1 && rng() % 2 == 0)
			{
				const uint32_t count = static_cast<uint32_t>((bytes.size() - 5) / 4);
				std::memcpy(&bytes[1], &count, 4);
			}
		}
		else if (round % 4 == 1 && bytes.size() >= 8)
		{
			const uint32_t cookie = COOKIE_NO_RUN;
			const uint32_t count = rng() % 4;

			std::memcpy(&bytes[0], &cookie, 4);
			std::memcpy(&bytes[4], &count, 4);
		}
		else if (round % 4 == 2 && bytes.size() >= 4)
		{
			const uint32_t cookie = COOKIE_RUN | ((rng() % 6) << 16);

			std::memcpy(&bytes[0], &cookie, 4);
		}
		check(bytes);
	}

	/* Corrupt single bytes of valid encodings of each container kind. */
	BitmapPtr runs(roaring_bitmap_create());

	roaring_bitmap_add_range(runs.get(), 100, 200);
	roaring_bitmap_add_range(runs.get(), 70000, 70500);
	roaring_bitmap_add(runs.get(), 1u << 20);
	roaring_bitmap_add(runs.get(), 1u << 24);
	roaring_bitmap_add(runs.get(), 1u << 28);
	roaring_bitmap_run_optimize(runs.get());

	const std::vector<std::string> valid = {encode({1, 5, 9, 70000, 1u << 30}), encode({3}),
	                                        roaring_serialize(runs.get()),
	                                        encode({1, 5, 9, 70000, 1u << 30}, true),
	                                        encode({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, true)};

	for (const std::string &original : valid)
	{
		for (size_t pos = 0; pos < original.size(); pos++)
		{
			for (int trial = 0; trial < 8; trial++)
			{
				std::string bytes = original;

				bytes[pos] = static_cast<char>(rng());
				check(bytes);
			}
		}
	}
	std::cout << "[          ] garbage inputs accepted as well-formed: " << accepted << std::endl;
}

/*
 * CRoaring's tagged forms (storage format 8): each list round-trips, CRoaring
 * reads it back, every proper prefix and each malformed variant is
 * rejected, and the smaller form is chosen.
 */
TEST(Links, TaggedFormsRoundTripThroughCRoaring)
{
	std::mt19937                       rng(8);
	std::vector<std::vector<uint32_t>> lists = {{}, {7}, {0, 4000000000u}};
	std::vector<uint32_t>              spread, dense, bitset;
	for (uint32_t i = 0; i < 32; i++)
	{
		spread.push_back(rng() % 1000000);
		dense.push_back(i * 100);
	}
	for (uint32_t i = 0; i < 5000; i++)
		bitset.push_back(i * 3);
	std::sort(spread.begin(), spread.end());
	spread.erase(std::unique(spread.begin(), spread.end()), spread.end());
	lists.push_back(spread);
	lists.push_back(dense);
	lists.push_back(bitset);
	for (const auto &ids : lists)
	{
		const std::string     bytes = encode(ids, true);
		std::vector<uint32_t> decoded = {1, 2};
		EXPECT_TRUE(decode_exact(bytes, bytes.size(), decoded));
		EXPECT_EQ(decoded, sorted(ids));
		BitmapPtr back(roaring_bitmap_deserialize(bytes.data()));
		ASSERT_TRUE(back != nullptr);
		EXPECT_EQ(roaring_values(back.get()), sorted(ids));
		check_prefixes_rejected(bytes);
	}
	/* 32 links of an index of a million items: the array form, 133 bytes against 180 or more */
	const std::string tagged = encode(spread, true);
	EXPECT_EQ(tagged[0], 1);
	EXPECT_EQ(tagged.size(), 1 + 4 + 4 * spread.size());
	EXPECT_GT(encode(spread).size(), tagged.size() + 40);
	/* 32 links within one chunk: the portable form behind its tag, one byte more */
	const std::string one_chunk = encode(dense, true);
	EXPECT_EQ(one_chunk[0], 2);
	EXPECT_EQ(one_chunk.substr(1), encode(dense));

	std::vector<uint32_t> out;
	std::string           bad = tagged;
	bad[1] = static_cast<char>(bad[1] + 1); /* a count one more than the values */
	EXPECT_FALSE(decode_exact(bad, bad.size(), out));
	EXPECT_TRUE(out.empty());
	bad = tagged;
	std::swap(bad[5], bad[9]); /* the first two values out of order */
	std::swap(bad[6], bad[10]);
	std::swap(bad[7], bad[11]);
	std::swap(bad[8], bad[12]);
	EXPECT_FALSE(decode_exact(bad, bad.size(), out));
	bad = tagged;
	bad.replace(9, 4, bad.substr(5, 4)); /* a value twice */
	EXPECT_FALSE(decode_exact(bad, bad.size(), out));
	bad = one_chunk;
	bad[1] = 0; /* a portable bitmap with a bad cookie */
	EXPECT_FALSE(decode_exact(bad, bad.size(), out));
	bad = tagged;
	bad[0] = 3; /* no such tag: read as a portable bitmap, which it is not */
	EXPECT_FALSE(decode_exact(bad, bad.size(), out));
}

/* A typical layer-0 neighbour list stays small. */
TEST(Links, TypicalListIsCompact)
{
	std::mt19937       rng(7);
	std::set<uint32_t> unique;

	while (unique.size() < 32)
		unique.insert(rng() % 65536);

	const std::vector<uint32_t> ids(unique.begin(), unique.end());
	const std::string           bytes = check_round_trip(ids);

	std::cout << "[          ] 32 ids under 65536 encode to " << bytes.size() << " bytes"
	          << std::endl;
	EXPECT_LT(bytes.size(), 100u);
}

} // namespace
