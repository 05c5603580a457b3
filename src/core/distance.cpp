#include "core_guard.hpp"

/*
 * distance.cpp
 *	  Distance kernels: a scalar fallback and AVX2+FMA and AVX-512 variants,
 *	  one set chosen per process from the CPU's features.
 *
 * Every kernel accumulates in float lanes in a fixed order, so a process
 * always reports the same value for the same inputs, and the SQL operators
 * and the index agree bit for bit.  Vectors may be unaligned (LMDB values
 * are only 2-byte aligned): SIMD code uses unaligned loads and scalar code
 * reads through memcpy.
 */
#include "distance.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HANNOY_HAVE_X86_KERNELS 1
#define HANNOY_TARGET_POPCNT    __attribute__((target("popcnt")))
#define HANNOY_TARGET_AVX2      __attribute__((target("avx2,fma,popcnt")))
#define HANNOY_TARGET_AVX512    __attribute__((target("avx512f,avx2,fma,popcnt")))
#define HANNOY_INLINE           inline __attribute__((always_inline))
#else
#define HANNOY_HAVE_X86_KERNELS 0
#endif

namespace hannoy
{

namespace
{

/* Reads float number 'i' of a possibly unaligned array without undefined behaviour. */
inline float
load_float(const unsigned char *p, size_t i)
{
	float v;
	std::memcpy(&v, p + i * sizeof(float), sizeof(float));
	return v;
}

/* Reads a possibly unaligned 64-bit word, so bit strings need no alignment. */
inline uint64_t
load_word(const unsigned char *p)
{
	uint64_t v;
	std::memcpy(&v, p, sizeof(v));
	return v;
}

/* Views a vector as bytes: kernels never dereference a possibly misaligned float pointer. */
inline const unsigned char *
as_bytes(const void *p)
{
	return static_cast<const unsigned char *>(p);
}

/*
 * Drives a scalar accumulation over two float arrays with four interleaved
 * lanes, so that the fused cosine kernel and the separate dot products
 * round identically.
 */
template <typename Op>
inline void
scalar_run(const unsigned char *a, const unsigned char *b, size_t n, typename Op::Lane (&lane)[4])
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
	{
		Op::step(lane[0], load_float(a, i), load_float(b, i));
		Op::step(lane[1], load_float(a, i + 1), load_float(b, i + 1));
		Op::step(lane[2], load_float(a, i + 2), load_float(b, i + 2));
		Op::step(lane[3], load_float(a, i + 3), load_float(b, i + 3));
	}
	for (; i < n; i++)
		Op::step(lane[0], load_float(a, i), load_float(b, i));
}

/* Sums four scalar lanes in the order every scalar kernel uses. */
inline float
scalar_reduce(float s0, float s1, float s2, float s3)
{
	return (s0 + s1) + (s2 + s3);
}

/* Scalar lane of the sum of a[i] * b[i]. */
struct ScalarDotOp
{
	struct Lane
	{
		float s;
	};

	static void
	step(Lane &l, float x, float y)
	{
		l.s += x * y;
	}
};

/* Scalar lane of the sum of (a[i] - b[i])^2. */
struct ScalarL2Op
{
	struct Lane
	{
		float s;
	};

	static void
	step(Lane &l, float x, float y)
	{
		const float d = x - y;

		l.s += d * d;
	}
};

/* Scalar lane of the sum of |a[i] - b[i]|. */
struct ScalarL1Op
{
	struct Lane
	{
		float s;
	};

	static void
	step(Lane &l, float x, float y)
	{
		l.s += std::fabs(x - y);
	}
};

/* Scalar lanes of a.b, a.a and b.b, each exactly as ScalarDotOp computes it. */
struct ScalarDot3Op
{
	struct Lane
	{
		float ab, aa, bb;
	};

	static void
	step(Lane &l, float x, float y)
	{
		l.ab += x * y;
		l.aa += x * x;
		l.bb += y * y;
	}
};

/* Runs a one-quantity scalar operation over two arrays and sums its lanes. */
template <typename Op>
inline float
scalar_sum(const Segment *s, size_t count)
{
	typename Op::Lane lane[4] = {};

	for (size_t k = 0; k < count; k++)
		scalar_run<Op>(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n, lane);
	return scalar_reduce(lane[0].s, lane[1].s, lane[2].s, lane[3].s);
}

/*
 * Drives a scalar accumulation over an 8-bit code, decoded element by
 * element (offset + scale * code), and a float query.
 */
template <typename Op>
inline void
scalar_code_run(const uint8_t *code, const float *offset, const float *scale,
                const unsigned char *q, size_t n, typename Op::Lane (&lane)[4])
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4)
		for (size_t k = 0; k < 4; k++)
			Op::step(lane[k], offset[i + k] + scale[i + k] * static_cast<float>(code[i + k]),
			         load_float(q, i + k));
	for (; i < n; i++)
		Op::step(lane[0], offset[i] + scale[i] * static_cast<float>(code[i]), load_float(q, i));
}

/* Runs a one-quantity scalar operation over a code and a query and sums its lanes. */
template <typename Op>
inline float
scalar_code_sum(const uint8_t *code, const float *offset, const float *scale, const void *q,
                size_t n)
{
	typename Op::Lane lane[4] = {};

	scalar_code_run<Op>(code, offset, scale, as_bytes(q), n, lane);
	return scalar_reduce(lane[0].s, lane[1].s, lane[2].s, lane[3].s);
}

/* Counts the set bits of a ^ b a word at a time, for CPUs without POPCNT. */
uint64_t
scalar_popcount_bytes(const unsigned char *a, const unsigned char *b, size_t nbytes)
{
	uint64_t count = 0;
	size_t   i = 0;

	for (; i + 8 <= nbytes; i += 8)
		count += static_cast<uint64_t>(__builtin_popcountll(load_word(a + i) ^ load_word(b + i)));
	for (; i < nbytes; i++)
		count += static_cast<uint64_t>(__builtin_popcount(static_cast<unsigned>(a[i] ^ b[i])));
	return count;
}

/* An integer kernel over two byte strings of n bytes. */
using ByteSumFn = uint64_t (*)(const uint8_t *, const uint8_t *, size_t);

/*
 * Exact integer sums over two byte strings (8-bit codes whose steps are
 * whole: quantizer.hpp): squared differences, products, absolute
 * differences.  Integers, so every kernel set gives the same sum.
 */
uint64_t
scalar_bytes_l2_squared(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++)
	{
		const int32_t d = int32_t(a[i]) - int32_t(b[i]);

		total += static_cast<uint64_t>(d * d);
	}
	return total;
}

uint64_t
scalar_bytes_dot(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++)
		total += uint64_t(a[i]) * uint64_t(b[i]);
	return total;
}

uint64_t
scalar_bytes_l1(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++)
		total += static_cast<uint64_t>(a[i] > b[i] ? a[i] - b[i] : b[i] - a[i]);
	return total;
}

/* Sums a bit counter over segments (integer sums: any cut gives the same count). */
template <uint64_t (*Count)(const unsigned char *, const unsigned char *, size_t)>
inline uint64_t
sum_bit_counts(const Segment *s, size_t count)
{
	uint64_t total = 0;

	for (size_t k = 0; k < count; k++)
		total += Count(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n);
	return total;
}

/* The scalar kernel set: the fallback, and the reference SIMD sets are tested against. */
struct ScalarKernels
{
	static constexpr const char *name = "scalar";

	static float
	l2_squared(const Segment *s, size_t count)
	{
		return scalar_sum<ScalarL2Op>(s, count);
	}

	static float
	dot(const Segment *s, size_t count)
	{
		return scalar_sum<ScalarDotOp>(s, count);
	}

	static float
	l1(const Segment *s, size_t count)
	{
		return scalar_sum<ScalarL1Op>(s, count);
	}

	static void
	dot3(const Segment *s, size_t count, float *ab, float *aa, float *bb)
	{
		ScalarDot3Op::Lane lane[4] = {};

		for (size_t k = 0; k < count; k++)
			scalar_run<ScalarDot3Op>(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n, lane);
		*ab = scalar_reduce(lane[0].ab, lane[1].ab, lane[2].ab, lane[3].ab);
		*aa = scalar_reduce(lane[0].aa, lane[1].aa, lane[2].aa, lane[3].aa);
		*bb = scalar_reduce(lane[0].bb, lane[1].bb, lane[2].bb, lane[3].bb);
	}

	static uint64_t
	popcount_xor(const Segment *s, size_t count)
	{
		return sum_bit_counts<scalar_popcount_bytes>(s, count);
	}

	/* the integer kernels over byte strings */
	static constexpr ByteSumFn bytes_l2_squared = &scalar_bytes_l2_squared;
	static constexpr ByteSumFn bytes_dot = &scalar_bytes_dot;
	static constexpr ByteSumFn bytes_l1 = &scalar_bytes_l1;

	static float
	code_l2_squared(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return scalar_code_sum<ScalarL2Op>(c, o, k, q, n);
	}

	static float
	code_dot(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return scalar_code_sum<ScalarDotOp>(c, o, k, q, n);
	}

	static float
	code_l1(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return scalar_code_sum<ScalarL1Op>(c, o, k, q, n);
	}

	static void
	code_dot3(const uint8_t *c, const float *o, const float *k, const void *q, size_t n, float *ab,
	          float *aa, float *bb)
	{
		ScalarDot3Op::Lane lane[4] = {};

		scalar_code_run<ScalarDot3Op>(c, o, k, as_bytes(q), n, lane);
		*ab = scalar_reduce(lane[0].ab, lane[1].ab, lane[2].ab, lane[3].ab);
		*aa = scalar_reduce(lane[0].aa, lane[1].aa, lane[2].aa, lane[3].aa);
		*bb = scalar_reduce(lane[0].bb, lane[1].bb, lane[2].bb, lane[3].bb);
	}
};

#if HANNOY_HAVE_X86_KERNELS

/*
 * Counts the set bits of a ^ b with the POPCNT instruction; four
 * accumulators hide its latency and a zero-padded word takes the tail.
 */
HANNOY_TARGET_POPCNT uint64_t
popcnt_popcount_bytes(const unsigned char *a, const unsigned char *b, size_t nbytes)
{
	uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
	size_t   i = 0;

	for (; i + 32 <= nbytes; i += 32)
	{
		c0 += static_cast<uint64_t>(__builtin_popcountll(load_word(a + i) ^ load_word(b + i)));
		c1 += static_cast<uint64_t>(
		    __builtin_popcountll(load_word(a + i + 8) ^ load_word(b + i + 8)));
		c2 += static_cast<uint64_t>(
		    __builtin_popcountll(load_word(a + i + 16) ^ load_word(b + i + 16)));
		c3 += static_cast<uint64_t>(
		    __builtin_popcountll(load_word(a + i + 24) ^ load_word(b + i + 24)));
	}
	for (; i + 8 <= nbytes; i += 8)
		c0 += static_cast<uint64_t>(__builtin_popcountll(load_word(a + i) ^ load_word(b + i)));
	if (i < nbytes)
	{
		uint64_t x = 0;
		uint64_t y = 0;

		std::memcpy(&x, a + i, nbytes - i);
		std::memcpy(&y, b + i, nbytes - i);
		c1 += static_cast<uint64_t>(__builtin_popcountll(x ^ y));
	}
	return (c0 + c1) + (c2 + c3);
}

/* The scalar float kernels with POPCNT for bit strings, for CPUs without AVX2. */
struct PopcntKernels : ScalarKernels
{
	static constexpr const char *name = "popcnt";

	static uint64_t
	popcount_xor(const Segment *s, size_t count)
	{
		return sum_bit_counts<popcnt_popcount_bytes>(s, count);
	}
};

/* Loads eight floats from float offset 'i' of an unaligned array. */
HANNOY_TARGET_AVX2 HANNOY_INLINE __m256
avx2_load(const unsigned char *p, size_t i)
{
	return _mm256_loadu_ps(reinterpret_cast<const float *>(p + i * sizeof(float)));
}

/* Lane masks for the last 1..7 floats of a vector: 'rem' ones, then zeros. */
alignas(32) const int32_t avx2_tail_masks[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                 0,  0,  0,  0,  0,  0,  0,  0};

/*
 * Drives an AVX2 accumulation: 32 floats per round into four lanes, then 8
 * at a time, then a masked load of the last 1..7 floats (masked-off
 * elements read as zero and their memory is never touched).
 */
template <typename Op>
HANNOY_TARGET_AVX2 HANNOY_INLINE void
avx2_run(const unsigned char *a, const unsigned char *b, size_t n, typename Op::Lane (&lane)[4])
{
	size_t i = 0;

	for (; i + 32 <= n; i += 32)
	{
		Op::step(lane[0], avx2_load(a, i), avx2_load(b, i));
		Op::step(lane[1], avx2_load(a, i + 8), avx2_load(b, i + 8));
		Op::step(lane[2], avx2_load(a, i + 16), avx2_load(b, i + 16));
		Op::step(lane[3], avx2_load(a, i + 24), avx2_load(b, i + 24));
	}
	for (; i + 8 <= n; i += 8)
		Op::step(lane[0], avx2_load(a, i), avx2_load(b, i));
	if (i < n)
	{
		const __m256i mask =
		    _mm256_loadu_si256(reinterpret_cast<const __m256i *>(avx2_tail_masks + 8 - (n - i)));
		const __m256 x =
		    _mm256_maskload_ps(reinterpret_cast<const float *>(a + i * sizeof(float)), mask);
		const __m256 y =
		    _mm256_maskload_ps(reinterpret_cast<const float *>(b + i * sizeof(float)), mask);

		Op::step(lane[1], x, y);
	}
}

/* Sums four AVX2 lanes and their elements in one fixed order. */
HANNOY_TARGET_AVX2 HANNOY_INLINE float
avx2_reduce(__m256 s0, __m256 s1, __m256 s2, __m256 s3)
{
	const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
	__m128       v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));

	v = _mm_add_ps(v, _mm_movehl_ps(v, v));
	v = _mm_add_ss(v, _mm_movehdup_ps(v));
	return _mm_cvtss_f32(v);
}

/* AVX2 lane of the sum of a[i] * b[i], with fused multiply-adds. */
struct Avx2DotOp
{
	struct Lane
	{
		__m256 s;
	};

	HANNOY_TARGET_AVX2 HANNOY_INLINE static void
	step(Lane &l, __m256 x, __m256 y)
	{
		l.s = _mm256_fmadd_ps(x, y, l.s);
	}
};

/* AVX2 lane of the sum of (a[i] - b[i])^2. */
struct Avx2L2Op
{
	struct Lane
	{
		__m256 s;
	};

	HANNOY_TARGET_AVX2 HANNOY_INLINE static void
	step(Lane &l, __m256 x, __m256 y)
	{
		const __m256 d = _mm256_sub_ps(x, y);

		l.s = _mm256_fmadd_ps(d, d, l.s);
	}
};

/* AVX2 lane of the sum of |a[i] - b[i]|: andnot clears the sign bit. */
struct Avx2L1Op
{
	struct Lane
	{
		__m256 s;
	};

	HANNOY_TARGET_AVX2 HANNOY_INLINE static void
	step(Lane &l, __m256 x, __m256 y)
	{
		const __m256 d = _mm256_sub_ps(x, y);

		l.s = _mm256_add_ps(l.s, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d));
	}
};

/* AVX2 lanes of a.b, a.a and b.b, each exactly as Avx2DotOp computes it. */
struct Avx2Dot3Op
{
	struct Lane
	{
		__m256 ab, aa, bb;
	};

	HANNOY_TARGET_AVX2 HANNOY_INLINE static void
	step(Lane &l, __m256 x, __m256 y)
	{
		l.ab = _mm256_fmadd_ps(x, y, l.ab);
		l.aa = _mm256_fmadd_ps(x, x, l.aa);
		l.bb = _mm256_fmadd_ps(y, y, l.bb);
	}
};

/* Runs a one-quantity AVX2 operation over two arrays and sums its lanes. */
template <typename Op>
HANNOY_TARGET_AVX2 HANNOY_INLINE float
avx2_sum(const Segment *s, size_t count)
{
	typename Op::Lane lane[4] = {};

	for (size_t k = 0; k < count; k++)
		avx2_run<Op>(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n, lane);
	return avx2_reduce(lane[0].s, lane[1].s, lane[2].s, lane[3].s);
}

/* Decodes eight code bytes from offset 'i' to floats: offset + scale * code. */
HANNOY_TARGET_AVX2 HANNOY_INLINE __m256
avx2_decode(const uint8_t *code, const float *offset, const float *scale, size_t i)
{
	const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(code + i));
	const __m256  c = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));

	return _mm256_fmadd_ps(_mm256_loadu_ps(scale + i), c, _mm256_loadu_ps(offset + i));
}

/*
 * Drives an AVX2 accumulation over an 8-bit code and a float query: 32
 * elements per round into four lanes, 8 at a time, and the last 1..7 with
 * the scalar step into a zeroed lane (codes need no bit-exact order).
 */
template <typename Op>
HANNOY_TARGET_AVX2 HANNOY_INLINE void
avx2_code_run(const uint8_t *code, const float *offset, const float *scale, const unsigned char *q,
              size_t n, typename Op::Lane (&lane)[4])
{
	size_t i = 0;

	for (; i + 32 <= n; i += 32)
	{
		Op::step(lane[0], avx2_decode(code, offset, scale, i), avx2_load(q, i));
		Op::step(lane[1], avx2_decode(code, offset, scale, i + 8), avx2_load(q, i + 8));
		Op::step(lane[2], avx2_decode(code, offset, scale, i + 16), avx2_load(q, i + 16));
		Op::step(lane[3], avx2_decode(code, offset, scale, i + 24), avx2_load(q, i + 24));
	}
	for (; i + 8 <= n; i += 8)
		Op::step(lane[0], avx2_decode(code, offset, scale, i), avx2_load(q, i));
	if (i < n)
	{
		alignas(32) float x[8] = {0, 0, 0, 0, 0, 0, 0, 0};
		alignas(32) float y[8] = {0, 0, 0, 0, 0, 0, 0, 0};

		for (size_t k = 0; i + k < n; k++)
		{
			x[k] = offset[i + k] + scale[i + k] * static_cast<float>(code[i + k]);
			y[k] = load_float(q, i + k);
		}
		Op::step(lane[1], _mm256_load_ps(x), _mm256_load_ps(y));
	}
}

/* Runs a one-quantity AVX2 operation over a code and a query and sums its lanes. */
template <typename Op>
HANNOY_TARGET_AVX2 HANNOY_INLINE float
avx2_code_sum(const uint8_t *code, const float *offset, const float *scale, const void *q, size_t n)
{
	typename Op::Lane lane[4] = {};

	avx2_code_run<Op>(code, offset, scale, as_bytes(q), n, lane);
	return avx2_reduce(lane[0].s, lane[1].s, lane[2].s, lane[3].s);
}

/* AVX2 code kernels, one per accumulation. */
HANNOY_TARGET_AVX2 float
avx2_code_l2_squared(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
{
	return avx2_code_sum<Avx2L2Op>(c, o, k, q, n);
}

HANNOY_TARGET_AVX2 float
avx2_code_dot(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
{
	return avx2_code_sum<Avx2DotOp>(c, o, k, q, n);
}

HANNOY_TARGET_AVX2 float
avx2_code_l1(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
{
	return avx2_code_sum<Avx2L1Op>(c, o, k, q, n);
}

HANNOY_TARGET_AVX2 void
avx2_code_dot3(const uint8_t *c, const float *o, const float *k, const void *q, size_t n, float *ab,
               float *aa, float *bb)
{
	Avx2Dot3Op::Lane lane[4] = {};

	avx2_code_run<Avx2Dot3Op>(c, o, k, as_bytes(q), n, lane);
	*ab = avx2_reduce(lane[0].ab, lane[1].ab, lane[2].ab, lane[3].ab);
	*aa = avx2_reduce(lane[0].aa, lane[1].aa, lane[2].aa, lane[3].aa);
	*bb = avx2_reduce(lane[0].bb, lane[1].bb, lane[2].bb, lane[3].bb);
}

/* AVX2 squared euclidean distance. */
HANNOY_TARGET_AVX2 float
avx2_l2_squared(const Segment *s, size_t count)
{
	return avx2_sum<Avx2L2Op>(s, count);
}

/* AVX2 dot product. */
HANNOY_TARGET_AVX2 float
avx2_dot(const Segment *s, size_t count)
{
	return avx2_sum<Avx2DotOp>(s, count);
}

/* AVX2 manhattan distance. */
HANNOY_TARGET_AVX2 float
avx2_l1(const Segment *s, size_t count)
{
	return avx2_sum<Avx2L1Op>(s, count);
}

/* AVX2 a.b, a.a and b.b in one pass over memory, for the cosine distance. */
HANNOY_TARGET_AVX2 void
avx2_dot3(const Segment *s, size_t count, float *ab, float *aa, float *bb)
{
	Avx2Dot3Op::Lane lane[4] = {};

	for (size_t k = 0; k < count; k++)
		avx2_run<Avx2Dot3Op>(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n, lane);
	*ab = avx2_reduce(lane[0].ab, lane[1].ab, lane[2].ab, lane[3].ab);
	*aa = avx2_reduce(lane[0].aa, lane[1].aa, lane[2].aa, lane[3].aa);
	*bb = avx2_reduce(lane[0].bb, lane[1].bb, lane[2].bb, lane[3].bb);
}

/* Per-byte bit counts of 32 bytes through a nibble lookup with PSHUFB. */
HANNOY_TARGET_AVX2 HANNOY_INLINE __m256i
avx2_popcount_bytes(__m256i v)
{
	const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
	                                        2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
	const __m256i low = _mm256_set1_epi8(0x0f);
	const __m256i lo = _mm256_and_si256(v, low);
	const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);

	return _mm256_add_epi8(_mm256_shuffle_epi8(lookup, lo), _mm256_shuffle_epi8(lookup, hi));
}

/* Loads 32 bytes of a ^ b from byte offset 'i'. */
HANNOY_TARGET_AVX2 HANNOY_INLINE __m256i
avx2_xor_at(const unsigned char *a, const unsigned char *b, size_t i)
{
	return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(a + i)),
	                        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + i)));
}

/*
 * Counts the set bits of a ^ b: 128 bytes per round through the PSHUFB
 * lookup (per-byte counts stay <= 32 before PSADBW widens them), the rest
 * with POPCNT.
 */
HANNOY_TARGET_AVX2 uint64_t
avx2_popcount_xor(const unsigned char *a, const unsigned char *b, size_t nbytes)
{
	__m256i total = _mm256_setzero_si256();
	size_t  i = 0;

	for (; i + 128 <= nbytes; i += 128)
	{
		__m256i c = avx2_popcount_bytes(avx2_xor_at(a, b, i));

		c = _mm256_add_epi8(c, avx2_popcount_bytes(avx2_xor_at(a, b, i + 32)));
		c = _mm256_add_epi8(c, avx2_popcount_bytes(avx2_xor_at(a, b, i + 64)));
		c = _mm256_add_epi8(c, avx2_popcount_bytes(avx2_xor_at(a, b, i + 96)));
		total = _mm256_add_epi64(total, _mm256_sad_epu8(c, _mm256_setzero_si256()));
	}

	uint64_t part[4];

	_mm256_storeu_si256(reinterpret_cast<__m256i *>(part), total);
	return (part[0] + part[1]) + (part[2] + part[3]) +
	       popcnt_popcount_bytes(a + i, b + i, nbytes - i);
}

/* Sixteen bytes from 'p', widened to sixteen 16-bit lanes. */
HANNOY_TARGET_AVX2 HANNOY_INLINE __m256i
avx2_widen_bytes(const uint8_t *p)
{
	return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

/* Sum of the eight 32-bit lanes of 'v', each non-negative. */
HANNOY_TARGET_AVX2 HANNOY_INLINE uint64_t
avx2_sum_lanes32(__m256i v)
{
	alignas(32) uint32_t part[8];
	uint64_t             total = 0;

	_mm256_store_si256(reinterpret_cast<__m256i *>(part), v);
	for (uint32_t x : part)
		total += x;
	return total;
}

/* Squared differences of widened bytes, summed in pairs into 32-bit lanes. */
struct Avx2BytesL2Op
{
	HANNOY_TARGET_AVX2 HANNOY_INLINE static __m256i
	step(__m256i a, __m256i b)
	{
		__m256i d = _mm256_sub_epi16(a, b);

		return _mm256_madd_epi16(d, d);
	}

	static uint64_t
	tail(const uint8_t *a, const uint8_t *b, size_t n)
	{
		return scalar_bytes_l2_squared(a, b, n);
	}
};

/* Products of widened bytes, summed in pairs into 32-bit lanes. */
struct Avx2BytesDotOp
{
	HANNOY_TARGET_AVX2 HANNOY_INLINE static __m256i
	step(__m256i a, __m256i b)
	{
		return _mm256_madd_epi16(a, b);
	}

	static uint64_t
	tail(const uint8_t *a, const uint8_t *b, size_t n)
	{
		return scalar_bytes_dot(a, b, n);
	}
};

/*
 * AVX2 integer kernels over byte strings: bytes widened to 16 bits, pairs
 * of products summed into 32-bit lanes (vpmaddwd), two accumulators.  A
 * lane takes at most n / 32 pairs of at most 2 x 255^2, far below 2^31 for
 * HANNOY_MAX_DIMS.
 */
template <typename Op>
HANNOY_TARGET_AVX2 uint64_t
avx2_bytes_sum(const uint8_t *a, const uint8_t *b, size_t n)
{
	__m256i acc0 = _mm256_setzero_si256();
	__m256i acc1 = _mm256_setzero_si256();
	size_t  i = 0;

	for (; i + 32 <= n; i += 32)
	{
		acc0 = _mm256_add_epi32(acc0, Op::step(avx2_widen_bytes(a + i), avx2_widen_bytes(b + i)));
		acc1 = _mm256_add_epi32(
		    acc1, Op::step(avx2_widen_bytes(a + i + 16), avx2_widen_bytes(b + i + 16)));
	}
	if (i + 16 <= n)
	{
		acc0 = _mm256_add_epi32(acc0, Op::step(avx2_widen_bytes(a + i), avx2_widen_bytes(b + i)));
		i += 16;
	}
	return avx2_sum_lanes32(_mm256_add_epi32(acc0, acc1)) + Op::tail(a + i, b + i, n - i);
}

HANNOY_TARGET_AVX2 uint64_t
avx2_bytes_l2_squared(const uint8_t *a, const uint8_t *b, size_t n)
{
	return avx2_bytes_sum<Avx2BytesL2Op>(a, b, n);
}

HANNOY_TARGET_AVX2 uint64_t
avx2_bytes_dot(const uint8_t *a, const uint8_t *b, size_t n)
{
	return avx2_bytes_sum<Avx2BytesDotOp>(a, b, n);
}

HANNOY_TARGET_AVX2 uint64_t
avx2_bytes_l1(const uint8_t *a, const uint8_t *b, size_t n)
{
	__m256i acc = _mm256_setzero_si256();
	size_t  i = 0;

	/* vpsadbw: four 64-bit sums of absolute differences per 32 bytes */
	for (; i + 32 <= n; i += 32)
		acc = _mm256_add_epi64(
		    acc, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(a + i)),
		                         _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b + i))));
	alignas(32) uint64_t part[4];

	_mm256_store_si256(reinterpret_cast<__m256i *>(part), acc);
	return (part[0] + part[1]) + (part[2] + part[3]) + scalar_bytes_l1(a + i, b + i, n - i);
}

/* The AVX2+FMA kernel set. */
struct Avx2Kernels
{
	static constexpr const char *name = "avx2";

	static float
	l2_squared(const Segment *s, size_t count)
	{
		return avx2_l2_squared(s, count);
	}

	static float
	dot(const Segment *s, size_t count)
	{
		return avx2_dot(s, count);
	}

	static float
	l1(const Segment *s, size_t count)
	{
		return avx2_l1(s, count);
	}

	static void
	dot3(const Segment *s, size_t count, float *ab, float *aa, float *bb)
	{
		avx2_dot3(s, count, ab, aa, bb);
	}

	static uint64_t
	popcount_xor(const Segment *s, size_t count)
	{
		return sum_bit_counts<avx2_popcount_xor>(s, count);
	}

	/* the integer kernels over byte strings */
	static constexpr ByteSumFn bytes_l2_squared = &avx2_bytes_l2_squared;
	static constexpr ByteSumFn bytes_dot = &avx2_bytes_dot;
	static constexpr ByteSumFn bytes_l1 = &avx2_bytes_l1;

	static float
	code_l2_squared(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return avx2_code_l2_squared(c, o, k, q, n);
	}

	static float
	code_dot(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return avx2_code_dot(c, o, k, q, n);
	}

	static float
	code_l1(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return avx2_code_l1(c, o, k, q, n);
	}

	static void
	code_dot3(const uint8_t *c, const float *o, const float *k, const void *q, size_t n, float *ab,
	          float *aa, float *bb)
	{
		avx2_code_dot3(c, o, k, q, n, ab, aa, bb);
	}
};

/* Loads sixteen floats from float offset 'i' of an unaligned array. */
HANNOY_TARGET_AVX512 HANNOY_INLINE __m512
avx512_load(const unsigned char *p, size_t i)
{
	return _mm512_loadu_ps(reinterpret_cast<const float *>(p + i * sizeof(float)));
}

/*
 * Drives an AVX-512 accumulation: 64 floats per round into four lanes, then
 * 16 at a time, then a masked load of the last 1..15 floats (masked-off
 * elements read as zero and their memory is never touched).
 */
template <typename Op>
HANNOY_TARGET_AVX512 HANNOY_INLINE void
avx512_run(const unsigned char *a, const unsigned char *b, size_t n, typename Op::Lane (&lane)[4])
{
	size_t i = 0;

	for (; i + 64 <= n; i += 64)
	{
		Op::step(lane[0], avx512_load(a, i), avx512_load(b, i));
		Op::step(lane[1], avx512_load(a, i + 16), avx512_load(b, i + 16));
		Op::step(lane[2], avx512_load(a, i + 32), avx512_load(b, i + 32));
		Op::step(lane[3], avx512_load(a, i + 48), avx512_load(b, i + 48));
	}
	for (; i + 16 <= n; i += 16)
		Op::step(lane[0], avx512_load(a, i), avx512_load(b, i));
	if (i < n)
	{
		const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
		const __m512    x =
		    _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float *>(a + i * sizeof(float)));
		const __m512 y =
		    _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float *>(b + i * sizeof(float)));

		Op::step(lane[1], x, y);
	}
}

/* Sums four AVX-512 lanes and their elements in one fixed order. */
HANNOY_TARGET_AVX512 HANNOY_INLINE float
avx512_reduce(__m512 s0, __m512 s1, __m512 s2, __m512 s3)
{
	const __m512 s = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
	/* Vector shuffles rather than the extract intrinsics, which GCC 12 warns about. */
	const __m256 lo = __builtin_shufflevector(s, s, 0, 1, 2, 3, 4, 5, 6, 7);
	const __m256 hi = __builtin_shufflevector(s, s, 8, 9, 10, 11, 12, 13, 14, 15);
	const __m256 h = _mm256_add_ps(lo, hi);
	__m128       v = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));

	v = _mm_add_ps(v, _mm_movehl_ps(v, v));
	v = _mm_add_ss(v, _mm_movehdup_ps(v));
	return _mm_cvtss_f32(v);
}

/* AVX-512 lane of the sum of a[i] * b[i], with fused multiply-adds. */
struct Avx512DotOp
{
	struct Lane
	{
		__m512 s;
	};

	HANNOY_TARGET_AVX512 HANNOY_INLINE static void
	step(Lane &l, __m512 x, __m512 y)
	{
		l.s = _mm512_fmadd_ps(x, y, l.s);
	}
};

/* AVX-512 lane of the sum of (a[i] - b[i])^2. */
struct Avx512L2Op
{
	struct Lane
	{
		__m512 s;
	};

	HANNOY_TARGET_AVX512 HANNOY_INLINE static void
	step(Lane &l, __m512 x, __m512 y)
	{
		const __m512 d = _mm512_sub_ps(x, y);

		l.s = _mm512_fmadd_ps(d, d, l.s);
	}
};

/* AVX-512 lane of the sum of |a[i] - b[i]|. */
struct Avx512L1Op
{
	struct Lane
	{
		__m512 s;
	};

	HANNOY_TARGET_AVX512 HANNOY_INLINE static void
	step(Lane &l, __m512 x, __m512 y)
	{
		l.s = _mm512_add_ps(l.s, _mm512_abs_ps(_mm512_sub_ps(x, y)));
	}
};

/* AVX-512 lanes of a.b, a.a and b.b, each exactly as Avx512DotOp computes it. */
struct Avx512Dot3Op
{
	struct Lane
	{
		__m512 ab, aa, bb;
	};

	HANNOY_TARGET_AVX512 HANNOY_INLINE static void
	step(Lane &l, __m512 x, __m512 y)
	{
		l.ab = _mm512_fmadd_ps(x, y, l.ab);
		l.aa = _mm512_fmadd_ps(x, x, l.aa);
		l.bb = _mm512_fmadd_ps(y, y, l.bb);
	}
};

/* Runs a one-quantity AVX-512 operation over two arrays and sums its lanes. */
template <typename Op>
HANNOY_TARGET_AVX512 HANNOY_INLINE float
avx512_sum(const Segment *s, size_t count)
{
	typename Op::Lane lane[4] = {};

	for (size_t k = 0; k < count; k++)
		avx512_run<Op>(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n, lane);
	return avx512_reduce(lane[0].s, lane[1].s, lane[2].s, lane[3].s);
}

/* Decodes sixteen code bytes from offset 'i' to floats: offset + scale * code. */
HANNOY_TARGET_AVX512 HANNOY_INLINE __m512
avx512_decode(const uint8_t *code, const float *offset, const float *scale, size_t i)
{
	const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(code + i));
	/* the maskz forms: GCC 12 warns about the undefined source of the plain ones */
	const __m512 c = _mm512_maskz_cvtepi32_ps(0xffff, _mm512_maskz_cvtepu8_epi32(0xffff, bytes));

	return _mm512_fmadd_ps(_mm512_loadu_ps(scale + i), c, _mm512_loadu_ps(offset + i));
}

/*
 * Drives an AVX-512 accumulation over an 8-bit code and a float query: 64
 * elements per round into four lanes, 16 at a time, and the last 1..15
 * through a zero-padded copy (masked-off elements decode to zero).
 */
template <typename Op>
HANNOY_TARGET_AVX512 HANNOY_INLINE void
avx512_code_run(const uint8_t *code, const float *offset, const float *scale,
                const unsigned char *q, size_t n, typename Op::Lane (&lane)[4])
{
	size_t i = 0;

	for (; i + 64 <= n; i += 64)
	{
		Op::step(lane[0], avx512_decode(code, offset, scale, i), avx512_load(q, i));
		Op::step(lane[1], avx512_decode(code, offset, scale, i + 16), avx512_load(q, i + 16));
		Op::step(lane[2], avx512_decode(code, offset, scale, i + 32), avx512_load(q, i + 32));
		Op::step(lane[3], avx512_decode(code, offset, scale, i + 48), avx512_load(q, i + 48));
	}
	for (; i + 16 <= n; i += 16)
		Op::step(lane[0], avx512_decode(code, offset, scale, i), avx512_load(q, i));
	if (i < n)
	{
		const __mmask16     mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
		alignas(16) uint8_t tail[16] = {0};

		std::memcpy(tail, code + i, n - i);
		const __m512 c = _mm512_maskz_cvtepi32_ps(
		    0xffff, _mm512_maskz_cvtepu8_epi32(
		                0xffff, _mm_load_si128(reinterpret_cast<const __m128i *>(tail))));
		const __m512 x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, scale + i), c,
		                                 _mm512_maskz_loadu_ps(mask, offset + i));
		const __m512 y =
		    _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float *>(q + i * sizeof(float)));

		Op::step(lane[1], x, y);
	}
}

/* Runs a one-quantity AVX-512 operation over a code and a query and sums its lanes. */
template <typename Op>
HANNOY_TARGET_AVX512 HANNOY_INLINE float
avx512_code_sum(const uint8_t *code, const float *offset, const float *scale, const void *q,
                size_t n)
{
	typename Op::Lane lane[4] = {};

	avx512_code_run<Op>(code, offset, scale, as_bytes(q), n, lane);
	return avx512_reduce(lane[0].s, lane[1].s, lane[2].s, lane[3].s);
}

/* AVX-512 code kernels, one per accumulation. */
HANNOY_TARGET_AVX512 float
avx512_code_l2_squared(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
{
	return avx512_code_sum<Avx512L2Op>(c, o, k, q, n);
}

HANNOY_TARGET_AVX512 float
avx512_code_dot(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
{
	return avx512_code_sum<Avx512DotOp>(c, o, k, q, n);
}

HANNOY_TARGET_AVX512 float
avx512_code_l1(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
{
	return avx512_code_sum<Avx512L1Op>(c, o, k, q, n);
}

HANNOY_TARGET_AVX512 void
avx512_code_dot3(const uint8_t *c, const float *o, const float *k, const void *q, size_t n,
                 float *ab, float *aa, float *bb)
{
	Avx512Dot3Op::Lane lane[4] = {};

	avx512_code_run<Avx512Dot3Op>(c, o, k, as_bytes(q), n, lane);
	*ab = avx512_reduce(lane[0].ab, lane[1].ab, lane[2].ab, lane[3].ab);
	*aa = avx512_reduce(lane[0].aa, lane[1].aa, lane[2].aa, lane[3].aa);
	*bb = avx512_reduce(lane[0].bb, lane[1].bb, lane[2].bb, lane[3].bb);
}

/* AVX-512 squared euclidean distance. */
HANNOY_TARGET_AVX512 float
avx512_l2_squared(const Segment *s, size_t count)
{
	return avx512_sum<Avx512L2Op>(s, count);
}

/* AVX-512 dot product. */
HANNOY_TARGET_AVX512 float
avx512_dot(const Segment *s, size_t count)
{
	return avx512_sum<Avx512DotOp>(s, count);
}

/* AVX-512 manhattan distance. */
HANNOY_TARGET_AVX512 float
avx512_l1(const Segment *s, size_t count)
{
	return avx512_sum<Avx512L1Op>(s, count);
}

/* AVX-512 a.b, a.a and b.b in one pass over memory, for the cosine distance. */
HANNOY_TARGET_AVX512 void
avx512_dot3(const Segment *s, size_t count, float *ab, float *aa, float *bb)
{
	Avx512Dot3Op::Lane lane[4] = {};

	for (size_t k = 0; k < count; k++)
		avx512_run<Avx512Dot3Op>(as_bytes(s[k].a), as_bytes(s[k].b), s[k].n, lane);
	*ab = avx512_reduce(lane[0].ab, lane[1].ab, lane[2].ab, lane[3].ab);
	*aa = avx512_reduce(lane[0].aa, lane[1].aa, lane[2].aa, lane[3].aa);
	*bb = avx512_reduce(lane[0].bb, lane[1].bb, lane[2].bb, lane[3].bb);
}

/* The AVX-512F kernel set; bit strings use the AVX2 counter. */
struct Avx512Kernels : Avx2Kernels
{
	static constexpr const char *name = "avx512";

	static float
	l2_squared(const Segment *s, size_t count)
	{
		return avx512_l2_squared(s, count);
	}

	static float
	dot(const Segment *s, size_t count)
	{
		return avx512_dot(s, count);
	}

	static float
	l1(const Segment *s, size_t count)
	{
		return avx512_l1(s, count);
	}

	static void
	dot3(const Segment *s, size_t count, float *ab, float *aa, float *bb)
	{
		avx512_dot3(s, count, ab, aa, bb);
	}

	static float
	code_l2_squared(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return avx512_code_l2_squared(c, o, k, q, n);
	}

	static float
	code_dot(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return avx512_code_dot(c, o, k, q, n);
	}

	static float
	code_l1(const uint8_t *c, const float *o, const float *k, const void *q, size_t n)
	{
		return avx512_code_l1(c, o, k, q, n);
	}

	static void
	code_dot3(const uint8_t *c, const float *o, const float *k, const void *q, size_t n, float *ab,
	          float *aa, float *bb)
	{
		avx512_code_dot3(c, o, k, q, n, ab, aa, bb);
	}
};

#endif /* HANNOY_HAVE_X86_KERNELS */

/*
 * Turns the three dot products into 1 - cosine similarity, in double so a
 * caller that caches kernel_dot(a, a) gets the same bits.  A zero vector has
 * no direction: NaN.  Rounding may push the similarity just past +-1, so it
 * is clamped (NaN passes through).
 */
inline double
cosine_from_dots(float ab, float aa, float bb)
{
	if (aa == 0.0f || bb == 0.0f)
		return std::numeric_limits<double>::quiet_NaN();

	double similarity =
	    static_cast<double>(ab) / std::sqrt(static_cast<double>(aa) * static_cast<double>(bb));

	if (similarity > 1.0)
		similarity = 1.0;
	else if (similarity < -1.0)
		similarity = -1.0;
	return 1.0 - similarity;
}

/* Euclidean distance of a kernel set: the square root of its float sum. */
template <typename K>
double
l2_segments(const Segment *s, size_t count)
{
	return std::sqrt(static_cast<double>(K::l2_squared(s, count)));
}

/* Cosine distance of a kernel set, from its fused pass over both vectors. */
template <typename K>
double
cosine_segments(const Segment *s, size_t count)
{
	float ab;
	float aa;
	float bb;

	K::dot3(s, count, &ab, &aa, &bb);
	return cosine_from_dots(ab, aa, bb);
}

/* Negative inner product of a kernel set, so that smaller means nearer. */
template <typename K>
double
ip_segments(const Segment *s, size_t count)
{
	/* 0 - x rather than -x: orthogonal vectors give 0, not -0 */
	return 0.0 - static_cast<double>(K::dot(s, count));
}

/* Manhattan distance of a kernel set. */
template <typename K>
double
l1_segments(const Segment *s, size_t count)
{
	return static_cast<double>(K::l1(s, count));
}

/* Hamming distance of a kernel set over whole bytes (pad bits are zero). */
template <typename K>
double
hamming_segments(const Segment *s, size_t count)
{
	return static_cast<double>(K::popcount_xor(s, count));
}

/*
 * A segmented distance applied to two whole vectors of 'dims' dimensions:
 * one segment of 'dims' floats, or of the bytes that hold 'dims' bits.
 */
template <SegmentedDistanceFn F, HannoyElement E>
double
whole(const void *a, const void *b, uint32_t dims)
{
	const size_t  n = E == HANNOY_ELEMENT_BIT ? (static_cast<size_t>(dims) + 7) / 8 : dims;
	const Segment one{a, b, n};

	return F(&one, 1);
}

/* Euclidean distance from a query to a code, in a kernel set. */
template <typename K>
double
l2_code(const uint8_t *c, const float *o, const float *k, const void *q, uint32_t dims)
{
	return std::sqrt(static_cast<double>(K::code_l2_squared(c, o, k, q, dims)));
}

/* Cosine distance from a query to a code, in a kernel set. */
template <typename K>
double
cosine_code(const uint8_t *c, const float *o, const float *k, const void *q, uint32_t dims)
{
	float ab;
	float aa;
	float bb;

	K::code_dot3(c, o, k, q, dims, &ab, &aa, &bb);
	return cosine_from_dots(ab, aa, bb);
}

/* Negative inner product of a query and a code, in a kernel set. */
template <typename K>
double
ip_code(const uint8_t *c, const float *o, const float *k, const void *q, uint32_t dims)
{
	return 0.0 - static_cast<double>(K::code_dot(c, o, k, q, dims));
}

/* Manhattan distance from a query to a code, in a kernel set. */
template <typename K>
double
l1_code(const uint8_t *c, const float *o, const float *k, const void *q, uint32_t dims)
{
	return static_cast<double>(K::code_l1(c, o, k, q, dims));
}

/* Bit strings have no codes: never in a kernel table's use (code_distance_function). */
template <typename K>
double
hamming_code(const uint8_t *, const float *, const float *, const void *, uint32_t)
{
	return std::numeric_limits<double>::quiet_NaN();
}

/* Position of each metric in the tables of a kernel set: its row in the metric table. */
enum MetricSlot
{
#define HANNOY_METRIC_SLOT(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC) SLOT_##NAME,
	HANNOY_METRICS(HANNOY_METRIC_SLOT)
#undef HANNOY_METRIC_SLOT
	    METRIC_COUNT
};

/* The slot of a metric id, or -1 for a number that names no metric. */
int
metric_slot(uint32_t metric)
{
	switch (metric)
	{
#define HANNOY_METRIC_SLOT_CASE(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)         \
	case ID:                                                                                       \
		return SLOT_##NAME;
		HANNOY_METRICS(HANNOY_METRIC_SLOT_CASE)
#undef HANNOY_METRIC_SLOT_CASE
		default:
			return -1;
	}
}

/* One kernel set as the process uses it: primitives and each metric's distances. */
struct KernelSet
{
	const char *name;
	float (*l2_squared)(const Segment *, size_t);
	float (*dot)(const Segment *, size_t);
	float (*l1)(const Segment *, size_t);
	uint64_t (*popcount_xor)(const Segment *, size_t);
	ByteSumFn           bytes_l2_squared;
	ByteSumFn           bytes_dot;
	ByteSumFn           bytes_l1;
	DistanceFn          whole[METRIC_COUNT];
	SegmentedDistanceFn segments[METRIC_COUNT];
	CodeDistanceFn      code[METRIC_COUNT];
};

/* Builds the table of a kernel set from its static functions and the metric table. */
template <typename K>
constexpr KernelSet
make_kernel_set()
{
	return KernelSet{K::name,
	                 &K::l2_squared,
	                 &K::dot,
	                 &K::l1,
	                 &K::popcount_xor,
	                 K::bytes_l2_squared,
	                 K::bytes_dot,
	                 K::bytes_l1,
	                 {
#define HANNOY_METRIC_WHOLE(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)             \
	&whole<KEY##_segments<K>, ELEMENT>,
	                     HANNOY_METRICS(HANNOY_METRIC_WHOLE)
#undef HANNOY_METRIC_WHOLE
	                 },
	                 {
#define HANNOY_METRIC_SEGMENTS(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)          \
	&KEY##_segments<K>,
	                     HANNOY_METRICS(HANNOY_METRIC_SEGMENTS)
#undef HANNOY_METRIC_SEGMENTS
	                 },
	                 {
#define HANNOY_METRIC_CODE(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)              \
	&KEY##_code<K>,
	                     HANNOY_METRICS(HANNOY_METRIC_CODE)
#undef HANNOY_METRIC_CODE
	                 }};
}

constexpr KernelSet scalar_kernel_set = make_kernel_set<ScalarKernels>();
#if HANNOY_HAVE_X86_KERNELS
constexpr KernelSet popcnt_kernel_set = make_kernel_set<PopcntKernels>();
constexpr KernelSet avx2_kernel_set = make_kernel_set<Avx2Kernels>();
constexpr KernelSet avx512_kernel_set = make_kernel_set<Avx512Kernels>();
#endif

/*
 * Picks the best kernel set the CPU (and the OS, which must save the wide
 * registers) supports.  The environment variable HANNOY_SIMD may name a
 * lesser set ("avx2", "popcnt", "scalar"), to test or rule out a kernel;
 * a set the CPU lacks is ignored.
 */
const KernelSet *
choose_kernel_set()
{
	const KernelSet *best = &scalar_kernel_set;
#if HANNOY_HAVE_X86_KERNELS
	const KernelSet *supported[4] = {&scalar_kernel_set, nullptr, nullptr, nullptr};

	__builtin_cpu_init();
	if (__builtin_cpu_supports("popcnt"))
	{
		supported[1] = &popcnt_kernel_set;
		best = supported[1];
		if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		{
			supported[2] = &avx2_kernel_set;
			best = supported[2];
			if (__builtin_cpu_supports("avx512f"))
			{
				supported[3] = &avx512_kernel_set;
				best = supported[3];
			}
		}
	}

	const char *wanted = std::getenv("HANNOY_SIMD");

	if (wanted != nullptr)
	{
		for (const KernelSet *set : supported)
		{
			if (set != nullptr && std::strcmp(set->name, wanted) == 0)
				return set;
		}
	}
#endif
	return best;
}

/*
 * The kernel set of this process, chosen on first use (thread-safely) and
 * never changed, so every distance in a process is computed the same way.
 */
const KernelSet &
kernels()
{
	static const KernelSet *const chosen = choose_kernel_set();

	return *chosen;
}

} // namespace

/* The distance function of a metric, or nullptr for an unknown metric. */
DistanceFn
distance_function(HannoyMetric metric)
{
	const int slot = metric_slot(metric);

	return slot < 0 ? nullptr : kernels().whole[slot];
}

/* The distance of a metric over matching segments of two vectors, or nullptr. */
SegmentedDistanceFn
segmented_distance_function(HannoyMetric metric)
{
	const int slot = metric_slot(metric);

	return slot < 0 ? nullptr : kernels().segments[slot];
}

/* The code kernel of a metric, or nullptr for bit metrics and unknown ones. */
CodeDistanceFn
code_distance_function(HannoyMetric metric)
{
	const int slot = metric_slot(metric);

	if (slot < 0 || hannoy_metric_info(metric).element != HANNOY_ELEMENT_FLOAT4)
		return nullptr;
	return kernels().code[slot];
}

/* The scalar code kernel of a metric, or nullptr (see code_distance_function). */
CodeDistanceFn
scalar_code_distance_function(HannoyMetric metric)
{
	const int slot = metric_slot(metric);

	if (slot < 0 || hannoy_metric_info(metric).element != HANNOY_ELEMENT_FLOAT4)
		return nullptr;
	return scalar_kernel_set.code[slot];
}

double
cosine_distance_from_dots(float ab, float aa, float bb)
{
	return cosine_from_dots(ab, aa, bb);
}

float
kernel_dot_segments(const Segment *segments, size_t count)
{
	return kernels().dot(segments, count);
}

/* Sum of squared differences with the process's kernel set. */
float
kernel_l2_squared(const float *a, const float *b, uint32_t n)
{
	const Segment one{a, b, n};

	return kernels().l2_squared(&one, 1);
}

/* Dot product with the process's kernel set; kernel_dot(a, a) is the squared norm cosine uses. */
float
kernel_dot(const float *a, const float *b, uint32_t n)
{
	const Segment one{a, b, n};

	return kernels().dot(&one, 1);
}

/* Sum of absolute differences with the process's kernel set. */
float
kernel_l1(const float *a, const float *b, uint32_t n)
{
	const Segment one{a, b, n};

	return kernels().l1(&one, 1);
}

/* Number of differing bits of two byte strings with the process's kernel set. */
uint64_t
kernel_popcount_xor(const uint8_t *a, const uint8_t *b, size_t nbytes)
{
	const Segment one{a, b, nbytes};

	return kernels().popcount_xor(&one, 1);
}

/* Exact integer sums over two byte strings with the process's kernel set. */
uint64_t
kernel_bytes_l2_squared(const uint8_t *a, const uint8_t *b, size_t n)
{
	return kernels().bytes_l2_squared(a, b, n);
}

uint64_t
kernel_bytes_dot(const uint8_t *a, const uint8_t *b, size_t n)
{
	return kernels().bytes_dot(a, b, n);
}

uint64_t
kernel_bytes_l1(const uint8_t *a, const uint8_t *b, size_t n)
{
	return kernels().bytes_l1(a, b, n);
}

/* Scalar sum of squared differences, the reference for the SIMD kernels. */
float
scalar_l2_squared(const float *a, const float *b, uint32_t n)
{
	const Segment one{a, b, n};

	return ScalarKernels::l2_squared(&one, 1);
}

/* Scalar dot product, the reference for the SIMD kernels. */
float
scalar_dot(const float *a, const float *b, uint32_t n)
{
	const Segment one{a, b, n};

	return ScalarKernels::dot(&one, 1);
}

/* Scalar sum of absolute differences, the reference for the SIMD kernels. */
float
scalar_l1(const float *a, const float *b, uint32_t n)
{
	const Segment one{a, b, n};

	return ScalarKernels::l1(&one, 1);
}

/* Scalar count of differing bits, the reference for the SIMD kernels. */
uint64_t
scalar_popcount_xor(const uint8_t *a, const uint8_t *b, size_t nbytes)
{
	return scalar_popcount_bytes(a, b, nbytes);
}

} // namespace hannoy

/* The distance of two vectors of a metric (the SQL operators and the index); NaN if unknown. */
double
hannoy_distance(HannoyMetric metric, const void *a, const void *b, uint32_t dims)
{
	const hannoy::DistanceFn f = hannoy::distance_function(metric);

	return f == nullptr ? std::numeric_limits<double>::quiet_NaN() : f(a, b, dims);
}

/* Name of the kernel set this process uses, for diagnostics. */
const char *
hannoy_simd_name(void)
{
	return hannoy::kernels().name;
}
