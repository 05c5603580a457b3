/*
 * distance.hpp
 *	  Distance kernels of the core, chosen once per process by CPU features.
 */
#ifndef HANNOY_DISTANCE_HPP
#define HANNOY_DISTANCE_HPP

#include "core_guard.hpp"

#include <cstddef>
#include <cstdint>

#include "hannoy/hannoy.h"

namespace hannoy
{

/* A distance between two stored vectors of 'dims' dimensions (bits for hamming). */
using DistanceFn = double (*)(const void *a, const void *b, uint32_t dims);

/* The distance function of a metric; the same one the SQL operators call. */
DistanceFn distance_function(HannoyMetric metric);

/*
 * One stretch of two vectors compared piece by piece: 'n' floats (bytes for
 * hamming) at 'a' and at 'b'.
 */
struct Segment
{
	const void *a;
	const void *b;
	size_t      n;
};

/*
 * A distance over matching segments of two vectors.  When every segment but
 * the last holds a multiple of SEGMENT_ALIGN bytes, it equals the metric's
 * DistanceFn on the whole vectors bit for bit (the kernels' unrolled rounds
 * then fall on the same elements), which keeps a vector stored in pieces
 * (storage.hpp) ordered exactly as the SQL operator orders it.
 */
using SegmentedDistanceFn = double (*)(const Segment *segments, size_t count);
constexpr size_t SEGMENT_ALIGN = 256;

SegmentedDistanceFn segmented_distance_function(HannoyMetric metric);

/*
 * A distance from a float query to a vector held as an 8-bit code
 * (quantizer.hpp): element i of the vector stands for offset[i] + scale[i] *
 * code[i].  Each kernel decodes the code in float lanes and applies its
 * metric's accumulation to (decoded vector, query), so it approximates the
 * metric's distance to the decoded vector; nullptr for metrics whose
 * elements are bits.
 */
using CodeDistanceFn = double (*)(const uint8_t *code, const float *offset, const float *scale,
                                  const void *query, uint32_t dims);

CodeDistanceFn code_distance_function(HannoyMetric metric);
/* The scalar code kernel of a metric, the reference for the SIMD ones (tests). */
CodeDistanceFn scalar_code_distance_function(HannoyMetric metric);

/*
 * The cosine distance from the three dot products a.b, a.a and b.b, as the
 * cosine kernels compute it: a caller that caches a.a (kernel_dot or
 * kernel_dot_segments of a vector with itself) gets the same result.
 */
double cosine_distance_from_dots(float ab, float aa, float bb);
/* Dot product over matching segments with the process's kernel set. */
float kernel_dot_segments(const Segment *segments, size_t count);

/* Kernel primitives, exposed for tests: float accumulations in a fixed order. */
float    kernel_l2_squared(const float *a, const float *b, uint32_t n);
float    kernel_dot(const float *a, const float *b, uint32_t n);
float    kernel_l1(const float *a, const float *b, uint32_t n);
uint64_t kernel_popcount_xor(const uint8_t *a, const uint8_t *b, size_t nbytes);

/*
 * Exact integer sums over two byte strings: the squared differences, the
 * products and the absolute differences of 8-bit codes whose steps are
 * whole (a lossless fit, quantizer.hpp), from which the build measures
 * distances between its nodes.  The same in every kernel set.
 */
uint64_t kernel_bytes_l2_squared(const uint8_t *a, const uint8_t *b, size_t n);
uint64_t kernel_bytes_dot(const uint8_t *a, const uint8_t *b, size_t n);
uint64_t kernel_bytes_l1(const uint8_t *a, const uint8_t *b, size_t n);

/* Plain scalar references, for tests and as the fallback. */
float    scalar_l2_squared(const float *a, const float *b, uint32_t n);
float    scalar_dot(const float *a, const float *b, uint32_t n);
float    scalar_l1(const float *a, const float *b, uint32_t n);
uint64_t scalar_popcount_xor(const uint8_t *a, const uint8_t *b, size_t nbytes);

} // namespace hannoy

#endif /* HANNOY_DISTANCE_HPP */
