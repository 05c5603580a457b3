/*
 * quantizer.hpp
 *	  Codes: a short copy of every vector that searches walk on (DESIGN.md
 *	  "Codes (storage format 5)").
 */
#ifndef HANNOY_QUANTIZER_HPP
#define HANNOY_QUANTIZER_HPP

#include "core_guard.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "distance.hpp"
#include "hannoy/hannoy.h"

namespace hannoy
{

/* Kinds of quantizer, as stored in the quantizer record. */
enum QuantizerKind : uint32_t
{
	QUANTIZER_SCALAR8 = 1 /* one byte per dimension: offset + scale * code */
};

/*
 * The fewest dimensions for which a build gives an index codes.  Below it a
 * float vector is a few cache lines, and walking on codes (whose kernel does
 * more arithmetic than the float one) plus re-ranking saves too little
 * (measured: DESIGN.md "Codes").
 */
constexpr uint32_t CODES_MIN_DIMS = 256;

/* Whether a build of 'metric' with 'dims' dimensions gives the index codes. */
bool codes_pay(HannoyMetric metric, uint32_t dims);

/*
 * An 8-bit scalar quantizer: per dimension an offset (the smallest value
 * the build saw) and a scale (the range over 255), so each element becomes
 * one byte, clamped to the range.  Immutable once made: a store shares it
 * between its scans and inserts.
 */
class Quantizer
{
  public:
	/* The quantizer a record holds; throws HANNOY_ERR_CORRUPT when the record is malformed. */
	static Quantizer from_record(HannoyMetric metric, uint32_t dims, const void *data, size_t size);
	/* The record (without checksum) that stores this quantizer in the meta database. */
	std::string record() const;

	uint32_t
	dims() const
	{
		return dims_;
	}
	/* Bytes of one code. */
	size_t
	code_bytes() const
	{
		return dims_;
	}
	const float *
	offset() const
	{
		return offset_.data();
	}
	const float *
	scale() const
	{
		return scale_.data();
	}
	/* The code of float vector 'v' (code_bytes() bytes into 'out'). */
	void encode(const void *v, uint8_t *out) const;
	/* The approximate distance from float vector 'query' to the vector behind 'code'. */
	double
	distance(const uint8_t *code, const void *query) const
	{
		return fn_(code, offset_.data(), scale_.data(), query, dims_);
	}

	/* The dot product of float vector 'query' and the vector behind 'code'. */
	float
	dot(const uint8_t *code, const void *query) const
	{
		/* the inner product kernel's distance is 0 - the float dot product: exact to negate */
		return static_cast<float>(-dot_fn_(code, offset_.data(), scale_.data(), query, dims_));
	}

  private:
	friend class QuantizerFit;
	Quantizer(HannoyMetric metric, uint32_t dims);

	uint32_t           dims_ = 0;
	std::vector<float> offset_, scale_;
	CodeDistanceFn     fn_ = nullptr;
	CodeDistanceFn     dot_fn_ = nullptr; /* the inner product's code kernel */
};

/*
 * Fits a quantizer to vectors seen one at a time: the range of each
 * dimension, over 255 steps; a dimension of integers whose range is at most
 * 255 (pixels, counts) gets steps of 1, so its codes are exact.
 */
class QuantizerFit
{
  public:
	explicit QuantizerFit(uint32_t dims);
	/* Takes in float vector 'v' (dims floats, possibly unaligned); NaN and infinities are skipped.
	 */
	void add(const void *v);
	/* The quantizer of the ranges seen. */
	Quantizer quantizer(HannoyMetric metric) const;
	/*
	 * True when that quantizer encodes every vector seen without loss: every
	 * value finite, and every dimension constant or of integers spanning at
	 * most 255 (steps of 1).
	 */
	bool lossless() const;

  private:
	uint32_t             dims_;
	std::vector<float>   lo_, hi_;
	std::vector<uint8_t> fraction_; /* per dimension: a value that is no integer was seen */
	bool                 nonfinite_ = false; /* a NaN or an infinity was seen */
};

} // namespace hannoy

#endif /* HANNOY_QUANTIZER_HPP */
