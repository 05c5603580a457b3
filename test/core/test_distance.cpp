/*
 * test_distance.cpp
 *	  The distance kernels against plain double-precision references, on
 *	  aligned and unaligned inputs, and the C ABI against distance_function.
 */
#include "distance.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

namespace
{

/* Vector lengths that cover every tail of the 8-, 16-, 32- and 64-float loops. */
const std::vector<uint32_t> test_lengths = {1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 100, 784, 16000};

/* Metrics whose vectors are floats. */
const HannoyMetric float_metrics[] = {HANNOY_METRIC_L2, HANNOY_METRIC_COSINE, HANNOY_METRIC_IP,
                                      HANNOY_METRIC_L1};

/* Random floats in [-1, 1] from a fixed seed. */
std::vector<float>
random_vector(std::mt19937 &rng, uint32_t n)
{
	std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
	std::vector<float>                    v(n);

	for (float &x : v)
		x = uniform(rng);
	return v;
}

/* Random bit string of 'nbits' bits with zero pad bits, as PostgreSQL stores it. */
std::vector<uint8_t>
random_bits(std::mt19937 &rng, uint32_t nbits)
{
	std::vector<uint8_t> v((nbits + 7) / 8);

	for (uint8_t &x : v)
		x = static_cast<uint8_t>(rng());
	if (nbits % 8 != 0)
		v.back() &= static_cast<uint8_t>(0xFF << (8 - nbits % 8));
	return v;
}

/* A copy of 'v' that starts 2 bytes past an aligned address, like an LMDB value. */
struct UnalignedCopy
{
	std::vector<char> storage;

	explicit UnalignedCopy(const std::vector<float> &v) : storage(v.size() * sizeof(float) + 64)
	{
		std::memcpy(storage.data() + 2, v.data(), v.size() * sizeof(float));
	}

	const float *
	get() const
	{
		return reinterpret_cast<const float *>(storage.data() + 2);
	}
};

/* Double-precision reference of the sum of squared differences. */
double
reference_l2_squared(const std::vector<float> &a, const std::vector<float> &b)
{
	double s = 0.0;

	for (size_t i = 0; i < a.size(); i++)
	{
		const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);

		s += d * d;
	}
	return s;
}

/* Double-precision reference of the dot product. */
double
reference_dot(const std::vector<float> &a, const std::vector<float> &b)
{
	double s = 0.0;

	for (size_t i = 0; i < a.size(); i++)
		s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
	return s;
}

/* Sum of |a[i] * b[i]|: the scale of the rounding error of a float dot product. */
double
dot_magnitude(const std::vector<float> &a, const std::vector<float> &b)
{
	double s = 0.0;

	for (size_t i = 0; i < a.size(); i++)
		s += std::fabs(static_cast<double>(a[i]) * static_cast<double>(b[i]));
	return s;
}

/* Double-precision reference of the sum of absolute differences. */
double
reference_l1(const std::vector<float> &a, const std::vector<float> &b)
{
	double s = 0.0;

	for (size_t i = 0; i < a.size(); i++)
		s += std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
	return s;
}

/* Double-precision reference of 1 - cosine similarity. */
double
reference_cosine(const std::vector<float> &a, const std::vector<float> &b)
{
	return 1.0 - reference_dot(a, b) / std::sqrt(reference_dot(a, a) * reference_dot(b, b));
}

/* Bit-by-bit reference of the hamming distance (bits are numbered from the high bit). */
uint64_t
reference_hamming(const std::vector<uint8_t> &a, const std::vector<uint8_t> &b, uint32_t nbits)
{
	uint64_t count = 0;

	for (uint32_t i = 0; i < nbits; i++)
	{
		const int x = (a[i / 8] >> (7 - i % 8)) & 1;
		const int y = (b[i / 8] >> (7 - i % 8)) & 1;

		count += x != y ? 1 : 0;
	}
	return count;
}

/* True when two doubles have the same bits (NaN equals NaN). */
bool
same_bits(double x, double y)
{
	return std::memcmp(&x, &y, sizeof(double)) == 0;
}

/* True when two floats have the same bits. */
bool
same_bits(float x, float y)
{
	return std::memcmp(&x, &y, sizeof(float)) == 0;
}

/* The C ABI distance of a float metric. */
double
abi_distance(HannoyMetric metric, const void *a, const void *b, uint32_t dims)
{
	return hannoy_distance(metric, a, b, dims);
}

/* Reports which kernel set the process uses, and that HANNOY_SIMD=scalar is obeyed. */
TEST(DistanceKernels, ReportsKernelSet)
{
	const char *name = hannoy_simd_name();
	const char *wanted = std::getenv("HANNOY_SIMD");

	ASSERT_NE(name, nullptr);
	std::cout << "[          ] kernel set: " << name << std::endl;
	if (wanted != nullptr && std::strcmp(wanted, "scalar") == 0)
	{
		EXPECT_STREQ(name, "scalar");
	}
	EXPECT_STREQ(hannoy_simd_name(), name);
}

/* Every float distance is within float-accumulation error of a double reference. */
TEST(DistanceKernels, FloatMetricsMatchReference)
{
	std::mt19937 rng(42);

	for (uint32_t n : test_lengths)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		const double             tolerance = 1e-4;

		const double l2 = std::sqrt(reference_l2_squared(a, b));
		EXPECT_NEAR(abi_distance(HANNOY_METRIC_L2, a.data(), b.data(), n), l2, tolerance * l2);

		const double l1 = reference_l1(a, b);
		EXPECT_NEAR(abi_distance(HANNOY_METRIC_L1, a.data(), b.data(), n), l1, tolerance * l1);

		EXPECT_NEAR(abi_distance(HANNOY_METRIC_IP, a.data(), b.data(), n), -reference_dot(a, b),
		            tolerance * dot_magnitude(a, b));

		/* The similarity's error is bounded by the dot's error over |a||b|. */
		EXPECT_NEAR(abi_distance(HANNOY_METRIC_COSINE, a.data(), b.data(), n),
		            reference_cosine(a, b), tolerance);
	}
}

/* The kernel primitives agree with the reference for every length up to 200. */
TEST(DistanceKernels, EveryTailLength)
{
	std::mt19937 rng(7);

	for (uint32_t n = 0; n <= 200; n++)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		const double             l2 = reference_l2_squared(a, b);
		const double             dot = reference_dot(a, b);
		const double             l1 = reference_l1(a, b);
		const double             scale = dot_magnitude(a, b);

		EXPECT_NEAR(hannoy::kernel_l2_squared(a.data(), b.data(), n), l2, 1e-5 * l2 + 1e-30);
		EXPECT_NEAR(hannoy::kernel_dot(a.data(), b.data(), n), dot, 1e-5 * scale + 1e-30);
		EXPECT_NEAR(hannoy::kernel_l1(a.data(), b.data(), n), l1, 1e-5 * l1 + 1e-30);
		EXPECT_NEAR(hannoy::scalar_l2_squared(a.data(), b.data(), n), l2, 1e-5 * l2 + 1e-30);
		EXPECT_NEAR(hannoy::scalar_dot(a.data(), b.data(), n), dot, 1e-5 * scale + 1e-30);
		EXPECT_NEAR(hannoy::scalar_l1(a.data(), b.data(), n), l1, 1e-5 * l1 + 1e-30);
	}
}

/* The scalar fallback and the dispatched kernels agree within float rounding. */
TEST(DistanceKernels, ScalarAndDispatchedAgree)
{
	std::mt19937 rng(3);

	for (uint32_t n : test_lengths)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		const double             scale = dot_magnitude(a, b);
		const float              l2 = hannoy::scalar_l2_squared(a.data(), b.data(), n);
		const float              l1 = hannoy::scalar_l1(a.data(), b.data(), n);

		EXPECT_NEAR(hannoy::kernel_l2_squared(a.data(), b.data(), n), l2, 1e-4 * l2);
		EXPECT_NEAR(hannoy::kernel_l1(a.data(), b.data(), n), l1, 1e-4 * l1);
		EXPECT_NEAR(hannoy::kernel_dot(a.data(), b.data(), n),
		            hannoy::scalar_dot(a.data(), b.data(), n), 1e-4 * scale);
	}
}

/* Unaligned vectors give exactly the bits aligned ones give. */
TEST(DistanceKernels, UnalignedInputsGiveIdenticalResults)
{
	std::mt19937 rng(11);

	for (uint32_t n : test_lengths)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		const UnalignedCopy      ua(a);
		const UnalignedCopy      ub(b);

		ASSERT_NE(reinterpret_cast<uintptr_t>(ua.get()) % alignof(float), 0u);
		for (HannoyMetric metric : float_metrics)
		{
			EXPECT_TRUE(same_bits(abi_distance(metric, ua.get(), ub.get(), n),
			                      abi_distance(metric, a.data(), b.data(), n)))
			    << "metric " << metric;
		}
		EXPECT_TRUE(same_bits(hannoy::scalar_dot(ua.get(), ub.get(), n),
		                      hannoy::scalar_dot(a.data(), b.data(), n)));
		EXPECT_TRUE(same_bits(hannoy::scalar_l2_squared(ua.get(), ub.get(), n),
		                      hannoy::scalar_l2_squared(a.data(), b.data(), n)));
		EXPECT_TRUE(same_bits(hannoy::scalar_l1(ua.get(), ub.get(), n),
		                      hannoy::scalar_l1(a.data(), b.data(), n)));
	}
}

/* distance_function(metric) is the C ABI function, bit for bit. */
TEST(DistanceKernels, DistanceFunctionMatchesAbi)
{
	std::mt19937 rng(5);

	for (uint32_t n : test_lengths)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		const UnalignedCopy      ua(a);

		for (HannoyMetric metric : float_metrics)
		{
			const hannoy::DistanceFn fn = hannoy::distance_function(metric);

			ASSERT_NE(fn, nullptr);
			EXPECT_TRUE(
			    same_bits(fn(a.data(), b.data(), n), abi_distance(metric, a.data(), b.data(), n)))
			    << "metric " << metric;
			EXPECT_TRUE(
			    same_bits(fn(ua.get(), b.data(), n), abi_distance(metric, ua.get(), b.data(), n)))
			    << "metric " << metric;
		}

		const std::vector<uint8_t> x = random_bits(rng, n);
		const std::vector<uint8_t> y = random_bits(rng, n);
		const hannoy::DistanceFn   hamming = hannoy::distance_function(HANNOY_METRIC_HAMMING);

		ASSERT_NE(hamming, nullptr);
		EXPECT_TRUE(same_bits(hamming(x.data(), y.data(), n),
		                      abi_distance(HANNOY_METRIC_HAMMING, x.data(), y.data(), n)));
	}
	EXPECT_EQ(hannoy::distance_function(static_cast<HannoyMetric>(0)), nullptr);
	EXPECT_EQ(hannoy::distance_function(static_cast<HannoyMetric>(99)), nullptr);
}

/*
 * The cosine distance equals the formula on kernel_dot(a, b), kernel_dot(a,
 * a) and kernel_dot(b, b) bit for bit, so callers may cache norms.
 */
TEST(DistanceKernels, CosineMatchesCachedNorms)
{
	std::mt19937 rng(13);

	for (uint32_t n = 1; n <= 1100; n += (n < 140 ? 1 : 97))
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		const double             ab = hannoy::kernel_dot(a.data(), b.data(), n);
		const double             aa = hannoy::kernel_dot(a.data(), a.data(), n);
		const double             bb = hannoy::kernel_dot(b.data(), b.data(), n);
		double                   similarity = ab / std::sqrt(aa * bb);

		similarity = std::fmin(1.0, std::fmax(-1.0, similarity));
		EXPECT_TRUE(
		    same_bits(abi_distance(HANNOY_METRIC_COSINE, a.data(), b.data(), n), 1.0 - similarity));
	}
}

/*
 * A vector stored in pieces: the dot product over its segments gives the
 * cosine distance of the segmented kernel from cached norms, bit for bit.
 */
TEST(DistanceKernels, SegmentedDotMatchesSegmentedCosine)
{
	std::mt19937                rng(17);
	const uint32_t              n = 784;
	const std::vector<float>    a = random_vector(rng, n);
	const std::vector<float>    b = random_vector(rng, n);
	hannoy::SegmentedDistanceFn cosine = hannoy::segmented_distance_function(HANNOY_METRIC_COSINE);
	for (uint32_t cut : {64u, 256u, 320u, 512u})
	{
		SCOPED_TRACE("cut " + std::to_string(cut));
		hannoy::Segment ab[2] = {{a.data(), b.data(), cut},
		                         {a.data() + cut, b.data() + cut, n - cut}};
		hannoy::Segment aa[2] = {{a.data(), a.data(), cut},
		                         {a.data() + cut, a.data() + cut, n - cut}};
		hannoy::Segment bb[2] = {{b.data(), b.data(), cut},
		                         {b.data() + cut, b.data() + cut, n - cut}};
		EXPECT_TRUE(same_bits(
		    cosine(ab, 2), hannoy::cosine_distance_from_dots(hannoy::kernel_dot_segments(ab, 2),
		                                                     hannoy::kernel_dot_segments(aa, 2),
		                                                     hannoy::kernel_dot_segments(bb, 2))));
	}
}

/* Cosine: NaN for a zero vector, ~0 against itself, ~2 against its negation. */
TEST(DistanceKernels, CosineSpecialCases)
{
	std::mt19937 rng(17);

	for (uint32_t n : test_lengths)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> zero(n, 0.0f);
		std::vector<float>       negated(a);

		for (float &x : negated)
			x = -x;
		EXPECT_TRUE(std::isnan(abi_distance(HANNOY_METRIC_COSINE, a.data(), zero.data(), n)));
		EXPECT_TRUE(std::isnan(abi_distance(HANNOY_METRIC_COSINE, zero.data(), a.data(), n)));
		EXPECT_TRUE(std::isnan(abi_distance(HANNOY_METRIC_COSINE, zero.data(), zero.data(), n)));

		const double self = abi_distance(HANNOY_METRIC_COSINE, a.data(), a.data(), n);
		const double opposite = abi_distance(HANNOY_METRIC_COSINE, a.data(), negated.data(), n);

		EXPECT_GE(self, 0.0);
		EXPECT_NEAR(self, 0.0, 1e-6);
		EXPECT_LE(opposite, 2.0);
		EXPECT_NEAR(opposite, 2.0, 1e-6);
		EXPECT_EQ(abi_distance(HANNOY_METRIC_L2, a.data(), a.data(), n), 0.0);
		EXPECT_EQ(abi_distance(HANNOY_METRIC_L1, a.data(), a.data(), n), 0.0);
	}
}

/* Known small values, computed by hand. */
TEST(DistanceKernels, HandComputedValues)
{
	const float a[3] = {1.0f, 2.0f, 3.0f};
	const float b[3] = {4.0f, 6.0f, 3.0f};

	EXPECT_DOUBLE_EQ(abi_distance(HANNOY_METRIC_L2, a, b, 3), 5.0);
	EXPECT_DOUBLE_EQ(abi_distance(HANNOY_METRIC_L1, a, b, 3), 7.0);
	EXPECT_DOUBLE_EQ(abi_distance(HANNOY_METRIC_IP, a, b, 3), -25.0);
	/* orthogonal vectors: +0, which PostgreSQL prints as 0 rather than -0 */
	const float ox[2] = {1.0f, 0.0f};
	const float oy[2] = {0.0f, 1.0f};
	EXPECT_EQ(abi_distance(HANNOY_METRIC_IP, ox, oy, 2), 0.0);
	EXPECT_FALSE(std::signbit(abi_distance(HANNOY_METRIC_IP, ox, oy, 2)));
	EXPECT_NEAR(abi_distance(HANNOY_METRIC_COSINE, a, b, 3), 1.0 - 25.0 / std::sqrt(14.0 * 61.0),
	            1e-7);
	EXPECT_DOUBLE_EQ(abi_distance(HANNOY_METRIC_L2, a, b, 0), 0.0);
	EXPECT_TRUE(std::isnan(abi_distance(HANNOY_METRIC_COSINE, a, b, 0)));

	const uint8_t x[2] = {0xF0, 0x80};
	const uint8_t y[2] = {0x0F, 0x00};

	EXPECT_EQ(abi_distance(HANNOY_METRIC_HAMMING, x, y, 9), 9.0);
	EXPECT_EQ(abi_distance(HANNOY_METRIC_HAMMING, x, y, 0), 0.0);
}

/* Hamming equals a bit-by-bit count for every length from 1 to 130 bits and a few larger ones. */
TEST(DistanceKernels, HammingMatchesBitByBit)
{
	std::mt19937          rng(19);
	std::vector<uint32_t> lengths;

	for (uint32_t n = 1; n <= 130; n++)
		lengths.push_back(n);
	for (uint32_t n : {1000u, 1024u, 1025u, 4096u, 8191u, 100000u, uint32_t(HANNOY_MAX_BITS)})
		lengths.push_back(n);

	for (uint32_t nbits : lengths)
	{
		SCOPED_TRACE("bits " + std::to_string(nbits));
		const std::vector<uint8_t> a = random_bits(rng, nbits);
		const std::vector<uint8_t> b = random_bits(rng, nbits);
		const uint64_t             expected = reference_hamming(a, b, nbits);
		std::vector<uint8_t>       shifted(a.size() + 3);

		std::memcpy(shifted.data() + 3, a.data(), a.size());
		EXPECT_EQ(abi_distance(HANNOY_METRIC_HAMMING, a.data(), b.data(), nbits),
		          static_cast<double>(expected));
		EXPECT_EQ(abi_distance(HANNOY_METRIC_HAMMING, shifted.data() + 3, b.data(), nbits),
		          static_cast<double>(expected));
		EXPECT_EQ(hannoy::kernel_popcount_xor(a.data(), b.data(), a.size()), expected);
		EXPECT_EQ(hannoy::scalar_popcount_xor(a.data(), b.data(), a.size()), expected);
		EXPECT_EQ(abi_distance(HANNOY_METRIC_HAMMING, a.data(), a.data(), nbits), 0.0);
	}
}

/*
 * Kernels never read past the end of a vector: each one ends right before
 * an inaccessible page, so a stray read would crash the test.
 */
TEST(DistanceKernels, NoReadPastTheEnd)
{
	const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
	void *mem = mmap(nullptr, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(mem, MAP_FAILED);
	char *base = static_cast<char *>(mem);

	ASSERT_EQ(mprotect(base + page, page, PROT_NONE), 0);
	ASSERT_EQ(mprotect(base + 3 * page, page, PROT_NONE), 0);

	char        *end_a = base + page;
	char        *end_b = base + 3 * page;
	std::mt19937 rng(23);

	for (uint32_t n = 0; n <= 200; n++)
	{
		SCOPED_TRACE("dims " + std::to_string(n));
		const std::vector<float> a = random_vector(rng, n);
		const std::vector<float> b = random_vector(rng, n);
		/* 'a' ends at the guard page; 'b' ends 2 bytes before its guard page, unaligned. */
		char *pa = end_a - n * sizeof(float);
		char *pb = end_b - n * sizeof(float) - 2;

		if (n > 0)
		{
			std::memcpy(pa, a.data(), n * sizeof(float));
			std::memcpy(pb, b.data(), n * sizeof(float));
		}

		const float *fa = reinterpret_cast<const float *>(pa);
		const float *fb = reinterpret_cast<const float *>(pb);

		for (HannoyMetric metric : float_metrics)
		{
			EXPECT_TRUE(same_bits(abi_distance(metric, fa, fb, n),
			                      abi_distance(metric, a.data(), b.data(), n)));
		}
		EXPECT_TRUE(
		    same_bits(hannoy::scalar_dot(fa, fb, n), hannoy::scalar_dot(a.data(), b.data(), n)));
	}

	for (uint32_t nbits = 0; nbits <= 2100; nbits += 7)
	{
		const size_t               nbytes = (nbits + 7) / 8;
		const std::vector<uint8_t> a = random_bits(rng, nbits);
		const std::vector<uint8_t> b = random_bits(rng, nbits);
		uint8_t                   *pa = reinterpret_cast<uint8_t *>(end_a) - nbytes;
		uint8_t                   *pb = reinterpret_cast<uint8_t *>(end_b) - nbytes;

		if (nbytes > 0)
		{
			std::memcpy(pa, a.data(), nbytes);
			std::memcpy(pb, b.data(), nbytes);
		}
		EXPECT_EQ(abi_distance(HANNOY_METRIC_HAMMING, pa, pb, nbits),
		          static_cast<double>(reference_hamming(a, b, nbits)));
		EXPECT_EQ(hannoy::scalar_popcount_xor(pa, pb, nbytes), reference_hamming(a, b, nbits));
	}
	ASSERT_EQ(munmap(mem, 4 * page), 0);
}

/* Repeated calls give the same bits: one kernel set per process. */
TEST(DistanceKernels, Deterministic)
{
	std::mt19937             rng(29);
	const std::vector<float> a = random_vector(rng, 784);
	const std::vector<float> b = random_vector(rng, 784);

	for (HannoyMetric metric : float_metrics)
	{
		const double first = abi_distance(metric, a.data(), b.data(), 784);

		for (int i = 0; i < 100; i++)
			ASSERT_TRUE(same_bits(abi_distance(metric, a.data(), b.data(), 784), first));
	}
}

/* Bytes of one stored vector per metric. */
TEST(DistanceKernels, VectorBytes)
{
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_L2, 3), 12u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_COSINE, 784), 3136u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_IP, HANNOY_MAX_DIMS), 64000u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_L1, 0), 0u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_HAMMING, 0), 0u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_HAMMING, 1), 1u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_HAMMING, 8), 1u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_HAMMING, 9), 2u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_HAMMING, HANNOY_MAX_BITS), 128000u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_HAMMING, UINT32_MAX), 536870912u);
	EXPECT_EQ(hannoy_vector_bytes(HANNOY_METRIC_L2, UINT32_MAX), size_t(UINT32_MAX) * 4);
	EXPECT_EQ(hannoy_vector_bytes(static_cast<HannoyMetric>(0), 10), 0u);
}

/*
 * Every row of the metric table has kernels, whole and by segments, that
 * agree bit for bit; the C ABI answers with them; a number that names no
 * metric has none (NaN, no bytes).
 */
TEST(DistanceKernels, EveryMetricOfTheTableHasKernels)
{
	std::mt19937              rng(7);
	const std::vector<float>  a = random_vector(rng, 100);
	const std::vector<float>  b = random_vector(rng, 100);
	std::vector<HannoyMetric> ids;
#define HANNOY_METRIC_ID(NAME, KEY, ID, STRATEGY, ELEMENT, ZERO_NAN, FILL, SQLFUNC)                \
	ids.push_back(HANNOY_METRIC_##NAME);
	HANNOY_METRICS(HANNOY_METRIC_ID)
#undef HANNOY_METRIC_ID

	for (HannoyMetric metric : ids)
	{
		const HannoyMetricInfo            info = hannoy_metric_info(metric);
		const bool                        bits = info.element == HANNOY_ELEMENT_BIT;
		const hannoy::DistanceFn          whole = hannoy::distance_function(metric);
		const hannoy::SegmentedDistanceFn pieces = hannoy::segmented_distance_function(metric);
		const uint32_t                    dims = bits ? 800 : 100;
		const size_t                      bytes = hannoy_vector_bytes(metric, dims);
		const hannoy::Segment             one{a.data(), b.data(), bits ? bytes : size_t(dims)};

		EXPECT_EQ(info.id, uint32_t(metric));
		EXPECT_GE(info.fill, 1u);
		ASSERT_NE(whole, nullptr) << "metric " << metric;
		ASSERT_NE(pieces, nullptr) << "metric " << metric;
		EXPECT_EQ(bytes, bits ? 100u : 400u);
		EXPECT_TRUE(same_bits(whole(a.data(), b.data(), dims), pieces(&one, 1)));
		EXPECT_TRUE(same_bits(hannoy_distance(metric, a.data(), b.data(), dims),
		                      whole(a.data(), b.data(), dims)));
	}
	EXPECT_EQ(hannoy_metric_info(0).id, 0u);
	EXPECT_EQ(hannoy::distance_function(static_cast<HannoyMetric>(99)), nullptr);
	EXPECT_TRUE(std::isnan(hannoy_distance(static_cast<HannoyMetric>(99), a.data(), b.data(), 10)));
	EXPECT_EQ(hannoy_vector_bytes(99, 10), 0u);
}

} // namespace

/* The integer kernels over byte strings give the exact sums, tails included. */
TEST(DistanceKernels, ByteSumsAreExact)
{
	std::mt19937 rng(11);
	for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(31),
	                 size_t(32), size_t(33), size_t(784), size_t(1000), size_t(16000)})
	{
		std::vector<uint8_t> a(n), b(n);
		for (size_t i = 0; i < n; i++)
		{
			a[i] = static_cast<uint8_t>(rng());
			b[i] = static_cast<uint8_t>(rng());
		}
		if (n > 0)
		{
			a[0] = 255; /* the extremes: the largest square and product */
			b[0] = 0;
		}
		uint64_t l2 = 0, dot = 0, l1 = 0;
		for (size_t i = 0; i < n; i++)
		{
			int64_t d = int64_t(a[i]) - int64_t(b[i]);
			l2 += uint64_t(d * d);
			dot += uint64_t(a[i]) * b[i];
			l1 += uint64_t(d < 0 ? -d : d);
		}
		EXPECT_EQ(hannoy::kernel_bytes_l2_squared(a.data(), b.data(), n), l2) << n;
		EXPECT_EQ(hannoy::kernel_bytes_dot(a.data(), b.data(), n), dot) << n;
		EXPECT_EQ(hannoy::kernel_bytes_l1(a.data(), b.data(), n), l1) << n;
		/* all 255: every lane at its largest */
		std::vector<uint8_t> full(n, 255), zero(n, 0);
		EXPECT_EQ(hannoy::kernel_bytes_l2_squared(full.data(), zero.data(), n),
		          uint64_t(n) * 65025);
		EXPECT_EQ(hannoy::kernel_bytes_dot(full.data(), full.data(), n), uint64_t(n) * 65025);
	}
}
