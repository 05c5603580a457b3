/*
 * distance.hpp
 *	  Distance kernels of the core, chosen once per process by CPU features.
 */
#ifndef HANNOY_DISTANCE_HPP
#define HANNOY_DISTANCE_HPP

#include "hannoy/core_guard.hpp"

#include <cstddef>
#include <cstdint>

#include "hannoy/hannoy.h"

namespace hannoy
{

/* A distance between two stored vectors of 'dims' dimensions (bits for hamming). */
using DistanceFn = double (*)(const void *a, const void *b, uint32_t dims);

/* The distance function of a metric; the same one the SQL operators call. */
DistanceFn distance_function(HannoyMetric metric);

/* Kernel primitives, exposed for tests: float accumulations in a fixed order. */
float    kernel_l2_squared(const float *a, const float *b, uint32_t n);
float    kernel_dot(const float *a, const float *b, uint32_t n);
float    kernel_l1(const float *a, const float *b, uint32_t n);
uint64_t kernel_popcount_xor(const uint8_t *a, const uint8_t *b, size_t nbytes);

/* Plain scalar references, for tests and as the fallback. */
float    scalar_l2_squared(const float *a, const float *b, uint32_t n);
float    scalar_dot(const float *a, const float *b, uint32_t n);
float    scalar_l1(const float *a, const float *b, uint32_t n);
uint64_t scalar_popcount_xor(const uint8_t *a, const uint8_t *b, size_t nbytes);

} // namespace hannoy

#endif /* HANNOY_DISTANCE_HPP */
