#include "core_guard.hpp"

/*
 * links.cpp
 *	  Neighbour lists as portable Roaring bitmaps: CRoaring writes them, and a
 *	  small decoder of our own reads them on the search path into a reused
 *	  vector, without allocating a bitmap per visited node.
 *
 * The portable format (the one CRoaring, Java and Go Roaring share), all
 * values little-endian and unaligned:
 *
 *	 cookie		uint32: 12346 (no run containers), followed by a uint32
 *				container count; or 12347 | (count - 1) << 16, followed by
 *				a bitmap of ceil(count / 8) bytes flagging run containers
 *	 headers	count x (uint16 key = high 16 bits, uint16 cardinality - 1)
 *	 offsets	count x uint32 byte offset of each container from the start;
 *				omitted when the cookie is 12347 and count < 4
 *	 containers run: uint16 run count, then (uint16 start, uint16 length - 1)
 *				pairs; bitset (cardinality > 4096): 1024 uint64 words;
 *				array: cardinality sorted uint16 values
 *
 * Storage format 8 writes CRoaring's own serialisation instead
 * (roaring_bitmap_serialize), which is one of two forms, whichever is
 * smaller, behind a tag byte:
 *
 *	 1			uint32 count, then count uint32 values in ascending order
 *	 2			the portable format above
 *
 * A neighbour list of an index of more than 65,536 items spreads over many
 * 16-bit keys, and each container costs 8 bytes of headers in the portable
 * format: 32 links over 14 keys take 184 bytes portable, 133 as an array
 * (DESIGN.md "Neighbour lists").  A portable bitmap starts with its cookie,
 * whose first byte is 0x3A or 0x3B, so lists of earlier formats are never
 * taken for tagged ones.
 */
#include "links.hpp"

#include <roaring/roaring.h>

#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>

namespace hannoy
{

namespace
{

/* Cookie of a portable bitmap without run containers (CRoaring's SERIAL_COOKIE_NO_RUNCONTAINER). */
constexpr uint32_t COOKIE_NO_RUN = 12346;

/* Cookie (low 16 bits) of a portable bitmap with run containers (CRoaring's SERIAL_COOKIE). */
constexpr uint32_t COOKIE_RUN = 12347;

/* Tags of CRoaring's own serialisation (storage format 8). */
constexpr unsigned char TAG_ARRAY = 1;
constexpr unsigned char TAG_PORTABLE = 2;

/* Bitmaps with run containers and fewer containers than this carry no offsets. */
constexpr uint32_t NO_OFFSET_THRESHOLD = 4;

/* A bitmap has at most one container per 16-bit key. */
constexpr uint32_t MAX_CONTAINER_COUNT = 65536;

/* Containers with more values than this are bitsets (unless flagged as runs). */
constexpr uint32_t MAX_ARRAY_CARDINALITY = 4096;

/* Bytes of a serialised bitset container: 65536 bits. */
constexpr size_t BITSET_BYTES = 8192;

/* Frees a CRoaring bitmap when its owner goes out of scope. */
struct BitmapDeleter
{
	void
	operator()(roaring_bitmap_t *bitmap) const
	{
		roaring_bitmap_free(bitmap);
	}
};

using BitmapPtr = std::unique_ptr<roaring_bitmap_t, BitmapDeleter>;

/* Reads an unaligned little-endian uint16; the caller has checked the bounds. */
inline uint16_t
read_u16(const unsigned char *p)
{
	uint16_t v;

	std::memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap16(v);
#endif
	return v;
}

/* Reads an unaligned little-endian uint32; the caller has checked the bounds. */
inline uint32_t
read_u32(const unsigned char *p)
{
	uint32_t v;

	std::memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

/* Reads an unaligned little-endian uint64; the caller has checked the bounds. */
inline uint64_t
read_u64(const unsigned char *p)
{
	uint64_t v;

	std::memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

/*
 * Appends an array container's values (strictly ascending, as the format
 * demands) and advances *pos past it.
 */
bool
decode_array(const unsigned char *p, size_t size, size_t *pos, uint32_t base, uint32_t cardinality,
             std::vector<uint32_t> &out)
{
	const size_t bytes = static_cast<size_t>(cardinality) * sizeof(uint16_t);

	if (size - *pos < bytes)
		return false;

	const unsigned char *values = p + *pos;
	const size_t         first = out.size();

	out.resize(first + cardinality);
	uint32_t *dst = out.data() + first;
	uint32_t  previous = 0;

	for (uint32_t i = 0; i < cardinality; i++)
	{
		const uint32_t value = read_u16(values + 2 * static_cast<size_t>(i));

		if (i > 0 && value <= previous)
			return false;
		dst[i] = base | value;
		previous = value;
	}
	*pos += bytes;
	return true;
}

/*
 * Appends a bitset container's set bits, which must number exactly
 * 'cardinality', and advances *pos past it.
 */
bool
decode_bitset(const unsigned char *p, size_t size, size_t *pos, uint32_t base, uint32_t cardinality,
              std::vector<uint32_t> &out)
{
	if (size - *pos < BITSET_BYTES)
		return false;

	const unsigned char *words = p + *pos;
	const size_t         first = out.size();

	out.resize(first + cardinality);
	uint32_t *dst = out.data() + first;
	uint32_t  filled = 0;

	for (uint32_t w = 0; w < BITSET_BYTES / sizeof(uint64_t); w++)
	{
		uint64_t word = read_u64(words + sizeof(uint64_t) * w);

		if (word == 0)
			continue;
		if (filled + static_cast<uint32_t>(__builtin_popcountll(word)) > cardinality)
			return false;
		while (word != 0)
		{
			dst[filled++] = base | (w * 64 + static_cast<uint32_t>(__builtin_ctzll(word)));
			word &= word - 1;
		}
	}
	if (filled != cardinality)
		return false;
	*pos += BITSET_BYTES;
	return true;
}

/*
 * Appends a run container's values and advances *pos past it.  The runs
 * must be ascending, disjoint (touching is allowed), inside the 16-bit
 * range, and cover exactly 'cardinality' values; they are checked before
 * anything is appended.
 */
bool
decode_runs(const unsigned char *p, size_t size, size_t *pos, uint32_t base, uint32_t cardinality,
            std::vector<uint32_t> &out)
{
	if (size - *pos < sizeof(uint16_t))
		return false;

	const uint32_t nruns = read_u16(p + *pos);
	const size_t   bytes = sizeof(uint16_t) + 4 * static_cast<size_t>(nruns);

	if (size - *pos < bytes)
		return false;

	const unsigned char *runs = p + *pos + sizeof(uint16_t);
	uint32_t             total = 0;
	uint32_t             next_free = 0; /* lowest value the next run may start at */

	for (uint32_t r = 0; r < nruns; r++)
	{
		const uint32_t start = read_u16(runs + 4 * static_cast<size_t>(r));
		const uint32_t length = read_u16(runs + 4 * static_cast<size_t>(r) + 2) + 1u;

		if (start < next_free || start + length > 65536)
			return false;
		next_free = start + length;
		total += length;
	}
	if (total != cardinality)
		return false;

	const size_t first = out.size();

	out.resize(first + cardinality);
	uint32_t *dst = out.data() + first;

	for (uint32_t r = 0; r < nruns; r++)
	{
		const uint32_t start = read_u16(runs + 4 * static_cast<size_t>(r));
		const uint32_t length = read_u16(runs + 4 * static_cast<size_t>(r) + 2) + 1u;

		for (uint32_t v = start; v < start + length; v++)
			*dst++ = base | v;
	}
	*pos += bytes;
	return true;
}

/*
 * Appends the ids of a portable Roaring bitmap to 'out'.  Every length is
 * checked against 'size' before it is read, and anything that does not
 * follow the format exactly (unknown cookie, keys out of order, a
 * cardinality that disagrees with its container, offsets that do not point
 * at the containers, trailing bytes) is rejected.
 */
bool
decode_portable(const unsigned char *p, size_t size, std::vector<uint32_t> &out)
{
	size_t   pos = 0;
	uint32_t ncontainers;
	bool     has_runs;

	if (size < sizeof(uint32_t))
		return false;

	const uint32_t cookie = read_u32(p);

	pos += sizeof(uint32_t);
	if ((cookie & 0xFFFF) == COOKIE_RUN)
	{
		has_runs = true;
		ncontainers = (cookie >> 16) + 1;
	}
	else if (cookie == COOKIE_NO_RUN)
	{
		has_runs = false;
		if (size - pos < sizeof(uint32_t))
			return false;
		ncontainers = read_u32(p + pos);
		pos += sizeof(uint32_t);
		if (ncontainers > MAX_CONTAINER_COUNT)
			return false;
	}
	else
		return false;

	const unsigned char *run_flags = nullptr;

	if (has_runs)
	{
		const size_t flag_bytes = (static_cast<size_t>(ncontainers) + 7) / 8;

		if (size - pos < flag_bytes)
			return false;
		run_flags = p + pos;
		pos += flag_bytes;
	}

	const size_t table_bytes = 4 * static_cast<size_t>(ncontainers);

	if (size - pos < table_bytes)
		return false;

	const unsigned char *headers = p + pos;

	pos += table_bytes;

	const unsigned char *offsets = nullptr;

	if (!has_runs || ncontainers >= NO_OFFSET_THRESHOLD)
	{
		if (size - pos < table_bytes)
			return false;
		offsets = p + pos;
		pos += table_bytes;
	}

	uint32_t previous_key = 0;

	for (uint32_t k = 0; k < ncontainers; k++)
	{
		const uint32_t key = read_u16(headers + 4 * static_cast<size_t>(k));
		const uint32_t cardinality = read_u16(headers + 4 * static_cast<size_t>(k) + 2) + 1u;
		const uint32_t base = key << 16;
		bool           ok;

		if (k > 0 && key <= previous_key)
			return false;
		previous_key = key;
		if (offsets != nullptr && read_u32(offsets + 4 * static_cast<size_t>(k)) != pos)
			return false;

		if (run_flags != nullptr && (run_flags[k / 8] >> (k % 8)) & 1)
			ok = decode_runs(p, size, &pos, base, cardinality, out);
		else if (cardinality > MAX_ARRAY_CARDINALITY)
			ok = decode_bitset(p, size, &pos, base, cardinality, out);
		else
			ok = decode_array(p, size, &pos, base, cardinality, out);
		if (!ok)
			return false;
	}
	return pos == size;
}

/*
 * Reads CRoaring's tagged array form (after its tag byte): a count and that
 * many ascending uint32 values, and nothing more.
 */
bool
decode_array_form(const unsigned char *p, size_t size, std::vector<uint32_t> &out)
{
	if (size < 4)
		return false;
	const uint32_t count = read_u32(p);
	if ((size - 4) / 4 != count || (size - 4) % 4 != 0)
		return false;
	out.resize(count);
	for (uint32_t i = 0; i < count; i++)
	{
		out[i] = read_u32(p + 4 + size_t(i) * 4);
		if (i > 0 && out[i] <= out[i - 1])
			return false;
	}
	return true;
}

} // namespace

/*
 * Serialises 'ids' with CRoaring: in its own tagged form when 'tagged'
 * (storage format 8), in the portable format otherwise.  Run containers are
 * never requested (no run_optimize): neighbour lists are sparse, and array
 * containers are what the decoder reads fastest.
 */
void
encode_links(const uint32_t *ids, size_t count, std::string &out, bool tagged)
{
	BitmapPtr bitmap(count > 0 ? roaring_bitmap_of_ptr(count, ids) : roaring_bitmap_create());

	if (!bitmap)
		throw std::bad_alloc();

	const size_t bytes = tagged ? roaring_bitmap_size_in_bytes(bitmap.get())
	                            : roaring_bitmap_portable_size_in_bytes(bitmap.get());
	const size_t start = out.size();

	out.resize(start + bytes);

	const size_t written = tagged ? roaring_bitmap_serialize(bitmap.get(), &out[start])
	                              : roaring_bitmap_portable_serialize(bitmap.get(), &out[start]);

	if (written != bytes)
	{
		out.resize(start);
		throw std::logic_error("CRoaring wrote a bitmap of an unexpected size");
	}
}

/*
 * Decodes a neighbour list, tagged or portable, into ascending ids; 'out'
 * is left empty if it is malformed.
 */
bool
decode_links(const void *data, size_t size, std::vector<uint32_t> &out)
{
	const unsigned char *p = static_cast<const unsigned char *>(data);
	bool                 ok;
	out.clear();
	if (size > 0 && p[0] == TAG_ARRAY)
		ok = decode_array_form(p + 1, size - 1, out);
	else if (size > 0 && p[0] == TAG_PORTABLE)
		ok = decode_portable(p + 1, size - 1, out);
	else
		ok = decode_portable(p, size, out);
	if (!ok)
		out.clear();
	return ok;
}

} // namespace hannoy
