/*
 * quantizer.hpp
 *	  Codes: a short copy of every vector that searches walk on (DESIGN.md
 *	  "Codes (storage format 5)" and "1-bit codes (storage format 6)").
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
	QUANTIZER_SCALAR8 = 1, /* one byte per dimension: offset + scale * code */
	QUANTIZER_BINARY = 2   /* one bit per rotated, centred dimension (format 6) */
};

/* How many sign-flip + Walsh-Hadamard rounds the 1-bit quantizer's rotation makes. */
constexpr uint32_t BINARY_ROTATION_ROUNDS = 3;

/* Bits of the query's quantization in the 1-bit kernel: bit planes of 4-bit values. */
constexpr uint32_t BINARY_QUERY_BITS = 4;

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
 * The kind of codes a build of 'metric' with 'dims' dimensions makes for
 * the index option 'choice' (a HannoyQuantizerChoice): 0 for none.  Throws
 * HANNOY_ERR_INVALID when the choice does not fit the metric (bit strings).
 */
uint32_t quantizer_kind_for(uint32_t choice, HannoyMetric metric, uint32_t dims);

/*
 * A query made ready for one quantizer's kernel, once per scan: the float
 * query itself for 8-bit codes; for 1-bit codes its rotated, centred copy
 * quantized to BINARY_QUERY_BITS-bit values held as bit planes, and the
 * scalars the estimates need.
 */
struct QueryForm
{
	std::vector<float>    query;            /* the float query (8-bit codes) */
	std::vector<uint64_t> planes;           /* 1-bit codes: plane j holds bit j of every value */
	float                 lo = 0, step = 0; /* value i stands for lo + step * u_i */
	float                 sum = 0;          /* sum of the dequantized values */
	float                 centred_sq = 0;   /* |q - mean|^2 */
	float                 mean_dot = 0;     /* <mean, q> */
	float                 norm_sq = 0;      /* |q|^2 */
};

/*
 * A quantizer of one of two kinds.  8-bit scalar: per dimension an offset
 * (the smallest value the build saw) and a scale (the range over 255), so
 * each element becomes one byte, clamped to the range.  1-bit: the vector
 * minus the mean the build saw, padded to a power of two and rotated
 * (random signs and a Walsh-Hadamard transform, BINARY_ROTATION_ROUNDS
 * times, drawn from a stored seed), becomes its sign bits plus three
 * floats; distances are estimated as RaBitQ does.  Immutable once made: a
 * store shares it between its scans and inserts.
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
	QuantizerKind
	kind() const
	{
		return kind_;
	}
	/* Bytes of one code. */
	size_t
	code_bytes() const
	{
		return kind_ == QUANTIZER_BINARY ? padded_ / 8 + BINARY_EXTRA_BYTES : dims_;
	}
	/* Bytes the quantizer itself takes in the sidecar (its record, without checksum). */
	size_t record_bytes() const;
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
	/*
	 * 8-bit codes: how far the code of float vector 'v' is from it, as the
	 * squared error of its decoded code over the squared distance from 'v'
	 * to the middle of the code range (both on 'v' scaled to length 1 where
	 * the codes are of unit vectors): about 1e-5 for rows inside the range
	 * the build saw, 1 for a quantizer that saw no spread.  1 when 'v' has a
	 * NaN or an infinity, and for 1-bit codes.
	 */
	double code_error(const void *v) const;
	/*
	 * The float vector a code stands for, into 'out' (dims floats): 8-bit,
	 * offset + scale x code; 1-bit, the mean plus the signs rotated back,
	 * scaled to the stored length |x - mean| (a reconstruction the
	 * neighbour choice of an index without vectors measures, DESIGN.md
	 * "Heap re-ranking").
	 */
	void decode(const uint8_t *code, float *out) const;
	/* Format 7: the index stores no vectors and re-ranks from the heap (the record's flag). */
	bool
	heap_rerank() const
	{
		return heap_rerank_;
	}
	void
	set_heap_rerank(bool yes)
	{
		heap_rerank_ = yes;
	}
	/* Makes float vector 'query' ready for distance(code, form). */
	void prepare(const void *query, QueryForm &form) const;
	/* The approximate distance from a prepared query to the vector behind 'code'. */
	double
	distance(const uint8_t *code, const QueryForm &form) const
	{
		if (kind_ == QUANTIZER_SCALAR8)
			return fn_(code, offset_.data(), scale_.data(), form.query.data(), dims_);
		return binary_distance(code, form);
	}
	/*
	 * The approximate distance from float vector 'query' to the vector
	 * behind 'code', preparing the query on each call (8-bit codes need
	 * nothing prepared; for 1-bit codes prefer prepare() once).
	 */
	double
	distance(const uint8_t *code, const void *query) const
	{
		if (kind_ == QUANTIZER_SCALAR8)
			return fn_(code, offset_.data(), scale_.data(), query, dims_);
		QueryForm form;
		prepare(query, form);
		return binary_distance(code, form);
	}
	/* 1-bit: the rotation of 'in' (padded() floats) into 'out', in place allowed. */
	void rotate(const float *in, float *out) const;
	/* 1-bit: the inverse rotation (the transpose), in place allowed. */
	void unrotate(const float *in, float *out) const;
	/* 1-bit: the rotated length, dims rounded up to a power of two (at least 64). */
	uint32_t
	padded() const
	{
		return padded_;
	}
	/* 1-bit: the bytes after the sign bits: |x - mean|^2, its RaBitQ factor, <x - mean, mean>. */
	static constexpr size_t BINARY_EXTRA_BYTES = 3 * sizeof(float);

  private:
	friend class QuantizerFit;
	Quantizer(QuantizerKind kind, HannoyMetric metric, uint32_t dims);
	double binary_distance(const uint8_t *code, const QueryForm &form) const;
	void   draw_signs();

	QuantizerKind      kind_ = QUANTIZER_SCALAR8;
	HannoyMetric       metric_;
	uint32_t           dims_ = 0;
	std::vector<float> offset_, scale_; /* 8-bit: per dimension */
	CodeDistanceFn     fn_ = nullptr;
	/* 1-bit: the mean, the seed of the rotation, the rotated length and the signs it draws */
	std::vector<float>   mean_;
	uint64_t             seed_ = 0;
	uint32_t             padded_ = 0;
	std::vector<uint8_t> signs_; /* BINARY_ROTATION_ROUNDS x padded_: 1 flips the sign */
	float                mean_norm_sq_ = 0;
	bool                 heap_rerank_ = false; /* the record's flag HEAP_RERANK (format 7) */
	bool unit_length_ = false; /* cosine: vectors scaled to length 1 (FLAG_UNIT_LENGTH) */
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
	/* The 8-bit quantizer of the ranges seen. */
	Quantizer quantizer(HannoyMetric metric) const;
	/* The 1-bit quantizer of the mean seen, its rotation drawn from 'seed'. */
	Quantizer binary(HannoyMetric metric, uint64_t seed) const;
	/*
	 * True when that quantizer encodes every vector seen without loss: every
	 * value finite, and every dimension constant or of integers spanning at
	 * most 255 (steps of 1).
	 */
	bool lossless() const;

  private:
	uint32_t              dims_;
	std::vector<float>    lo_, hi_;
	std::vector<uint8_t>  fraction_; /* per dimension: a value that is no integer was seen */
	std::vector<double>   sum_;      /* per dimension: the sum of the finite values seen */
	std::vector<double>   unit_sum_; /* the same of the vectors scaled to length 1 */
	std::vector<float>    unit_lo_, unit_hi_; /* the ranges of the vectors scaled to length 1 */
	std::vector<uint64_t> count_;             /* per dimension: how many finite values were seen */
	bool                  nonfinite_ = false; /* a NaN or an infinity was seen */
};

/*
 * Distances between two vectors held as lossless 8-bit codes (every element
 * is offset + code: QuantizerFit::lossless), from exact integer sums over
 * the codes: the build measures its nodes this way, as exactly as with
 * their float vectors and a few times faster.  Offsets cancel in L2 and L1;
 * inner product and cosine add each code's offset_dot (kept by the
 * caller) and the offsets' own sum of squares, and cosine takes each
 * vector's squared norm.
 */
class LosslessCodes
{
  public:
	LosslessCodes(const Quantizer &q, HannoyMetric metric);
	/* Whether distance() needs offset_dot() of its codes (inner product, cosine). */
	bool
	needs_offset_dots() const
	{
		return metric_ == HANNOY_METRIC_IP || metric_ == HANNOY_METRIC_COSINE;
	}
	/* The sum of offset x code over the dimensions of 'code'. */
	double offset_dot(const uint8_t *code) const;
	/*
	 * The metric's distance between the vectors behind codes 'a' and 'b',
	 * given their offset_dot and (cosine) squared norms; the other metrics
	 * ignore those.
	 */
	double distance(const uint8_t *a, const uint8_t *b, double a_offset_dot, double b_offset_dot,
	                float a_sq_norm, float b_sq_norm) const;

  private:
	HannoyMetric       metric_;
	uint32_t           dims_;
	std::vector<float> offset_;
	double             offset_sq_ = 0; /* sum of offset^2 */
};

} // namespace hannoy

#endif /* HANNOY_QUANTIZER_HPP */
