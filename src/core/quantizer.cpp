#include "core_guard.hpp"

/*
 * quantizer.cpp
 *	  The quantizers of the codes: the 8-bit scalar one (storage format 5)
 *	  and the 1-bit one (format 6): fitted by the build, stored in the meta
 *	  database, used to encode every vector's code and to estimate the
 *	  distance from a query to a code (DESIGN.md "Codes").
 */
#include "quantizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "storage.hpp"

namespace hannoy
{

namespace
{

/*
 * The quantizer record: this header, then for 8-bit codes dims offsets and
 * dims scales (floats), for 1-bit codes the rotation's seed (8 bytes) and
 * dims means (floats).
 */
struct QuantizerHeader
{
	uint32_t kind, dims, code_bytes, flags; /* flags: 0 before format 7 */
};

/* Flag of the quantizer record (format 7): the index stores no vectors, scans re-rank from the
 * heap. */
constexpr uint32_t FLAG_HEAP_RERANK = 1;
/*
 * Flag of a cosine quantizer's record: vectors are scaled to length 1
 * before they are encoded, and the mean (1-bit) or the ranges (8-bit) are
 * those of the scaled vectors; 1-bit queries are scaled too (DESIGN.md
 * "Codes", "1-bit codes").  Records without it (written before it existed,
 * or 8-bit codes that are lossless as the rows come) encode vectors as they
 * come.
 */
constexpr uint32_t FLAG_UNIT_LENGTH = 2;

/*
 * The factor that scales float vector 'p' (dims floats, possibly unaligned)
 * to length 1: 1 / |p| over its finite values, or 1 when that length is 0.
 * A double: for a vector shorter than about 3e-39 it is beyond a float's
 * range, while each scaled element, computed in double, stays in [-1, 1].
 */
double
unit_factor(const unsigned char *p, uint32_t dims)
{
	double sq = 0;
	for (uint32_t i = 0; i < dims; i++)
	{
		float x;
		std::memcpy(&x, p + i * sizeof(float), sizeof(x));
		if (std::isfinite(x))
			sq += double(x) * x;
	}
	return sq > 0 ? 1.0 / std::sqrt(sq) : 1.0;
}

/* The largest code value. */
constexpr float CODE_MAX = 255.0f;

/* The largest value of the 1-bit kernel's quantized query. */
constexpr float QUERY_MAX = float((1u << BINARY_QUERY_BITS) - 1);

/* The next value of a splitmix64 sequence (the rotation's signs). */
uint64_t
splitmix64(uint64_t &state)
{
	uint64_t z = (state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* The fast Walsh-Hadamard transform of 'v' (n a power of two), scaled to keep lengths. */
void
walsh_hadamard(float *v, uint32_t n)
{
	for (uint32_t h = 1; h < n; h *= 2)
		for (uint32_t i = 0; i < n; i += 2 * h)
			for (uint32_t j = i; j < i + h; j++)
			{
				float a = v[j], b = v[j + h];
				v[j] = a + b;
				v[j + h] = a - b;
			}
	float scale = 1.0f / std::sqrt(static_cast<float>(n));
	for (uint32_t i = 0; i < n; i++)
		v[i] *= scale;
}

/* The length a 1-bit quantizer rotates 'dims' dimensions in: a power of two, at least 64. */
uint32_t
padded_length(uint32_t dims)
{
	uint32_t p = 64;
	while (p < dims)
		p *= 2;
	return p;
}

/*
 * <bits, u> for the query's bit planes: the sum over j of 2^j x
 * popcount(bits & plane j); and popcount(bits) into 'ones'.  Two copies,
 * one compiled for the popcnt instruction.
 */
#define HANNOY_PLANES_DOT_BODY                                                                     \
	uint64_t total = 0, n1 = 0;                                                                    \
	for (size_t w = 0; w < words; w++)                                                             \
		n1 += static_cast<uint64_t>(__builtin_popcountll(bits[w]));                                \
	for (uint32_t j = 0; j < BINARY_QUERY_BITS; j++)                                               \
	{                                                                                              \
		const uint64_t *plane = planes + j * words;                                                \
		uint64_t        n = 0;                                                                     \
		for (size_t w = 0; w < words; w++)                                                         \
			n += static_cast<uint64_t>(__builtin_popcountll(bits[w] & plane[w]));                  \
		total += n << j;                                                                           \
	}                                                                                              \
	*ones = n1;                                                                                    \
	return total;

uint64_t
planes_dot(const uint64_t *bits, const uint64_t *planes, size_t words, uint64_t *ones)
{
	HANNOY_PLANES_DOT_BODY
}

__attribute__((target("popcnt"))) uint64_t
planes_dot_popcnt(const uint64_t *bits, const uint64_t *planes, size_t words, uint64_t *ones)
{
	HANNOY_PLANES_DOT_BODY
}

#undef HANNOY_PLANES_DOT_BODY

/* Whether the CPU has popcnt (read once). */
bool
have_popcnt()
{
	static const bool yes = __builtin_cpu_supports("popcnt");
	return yes;
}

} // namespace

bool
codes_pay(HannoyMetric metric, uint32_t dims)
{
	return code_distance_function(metric) != nullptr && dims >= CODES_MIN_DIMS;
}

uint32_t
quantizer_kind_for(uint32_t choice, HannoyMetric metric, uint32_t dims)
{
	bool fits = code_distance_function(metric) != nullptr;
	switch (choice)
	{
		case HANNOY_QUANTIZER_AUTO:
			return codes_pay(metric, dims) ? uint32_t(QUANTIZER_SCALAR8) : 0u;
		case HANNOY_QUANTIZER_NONE:
			return 0;
		case HANNOY_QUANTIZER_SCALAR8:
		case HANNOY_QUANTIZER_BINARY:
			if (!fits)
				throw Error(
				    HANNOY_ERR_INVALID,
				    "quantizer \"" +
				        std::string(choice == HANNOY_QUANTIZER_BINARY ? "binary" : "scalar8") +
				        "\" does not fit bit strings: only float vectors have codes");
			return choice == HANNOY_QUANTIZER_BINARY ? QUANTIZER_BINARY : QUANTIZER_SCALAR8;
		default:
			throw Error(HANNOY_ERR_INVALID, "unknown quantizer " + std::to_string(choice));
	}
}

Quantizer::Quantizer(QuantizerKind kind, HannoyMetric metric, uint32_t dims)
    : kind_(kind), metric_(metric), dims_(dims), fn_(code_distance_function(metric))
{
	if (fn_ == nullptr)
		throw Error(HANNOY_ERR_INVALID, "this metric has no codes");
	if (kind == QUANTIZER_SCALAR8)
	{
		offset_.assign(dims, 0.0f);
		scale_.assign(dims, 0.0f);
	}
	else
	{
		mean_.assign(dims, 0.0f);
		padded_ = padded_length(dims);
	}
}

/* Draws the rotation's signs from the seed: one bit per element and round. */
void
Quantizer::draw_signs()
{
	uint64_t state = seed_;
	signs_.resize(size_t(BINARY_ROTATION_ROUNDS) * padded_);
	uint64_t bits = 0;
	for (size_t i = 0; i < signs_.size(); i++)
	{
		if (i % 64 == 0)
			bits = splitmix64(state);
		signs_[i] = static_cast<uint8_t>((bits >> (i % 64)) & 1);
	}
	double sq = 0;
	for (float m : mean_)
		sq += double(m) * m;
	mean_norm_sq_ = static_cast<float>(sq);
}

void
Quantizer::rotate(const float *in, float *out) const
{
	if (out != in)
		std::memcpy(out, in, padded_ * sizeof(float));
	for (uint32_t r = 0; r < BINARY_ROTATION_ROUNDS; r++)
	{
		const uint8_t *flip = &signs_[size_t(r) * padded_];
		for (uint32_t i = 0; i < padded_; i++)
			if (flip[i])
				out[i] = -out[i];
		walsh_hadamard(out, padded_);
	}
}

void
Quantizer::unrotate(const float *in, float *out) const
{
	if (out != in)
		std::memcpy(out, in, padded_ * sizeof(float));
	/* each round is W D (W the scaled Walsh-Hadamard matrix, symmetric and its own inverse) */
	for (uint32_t r = BINARY_ROTATION_ROUNDS; r-- > 0;)
	{
		walsh_hadamard(out, padded_);
		const uint8_t *flip = &signs_[size_t(r) * padded_];
		for (uint32_t i = 0; i < padded_; i++)
			if (flip[i])
				out[i] = -out[i];
	}
}

void
Quantizer::decode(const uint8_t *code, float *out) const
{
	if (kind_ == QUANTIZER_SCALAR8)
	{
		for (uint32_t i = 0; i < dims_; i++)
			out[i] = offset_[i] + scale_[i] * static_cast<float>(code[i]);
		return;
	}
	/*
	 * The signs, scaled so that the rotated copy has the stored length
	 * |x - mean|, rotated back; padding coordinates are dropped.
	 */
	float extra[3];
	std::memcpy(extra, code + padded_ / 8, sizeof(extra));
	float              unit = std::sqrt(std::max(0.0f, extra[0]) / static_cast<float>(padded_));
	std::vector<float> y(padded_);
	for (uint32_t i = 0; i < padded_; i++)
		y[i] = (code[i / 8] >> (i % 8)) & 1 ? unit : -unit;
	unrotate(y.data(), y.data());
	for (uint32_t i = 0; i < dims_; i++)
		out[i] = mean_[i] + y[i];
}

size_t
Quantizer::record_bytes() const
{
	if (kind_ == QUANTIZER_SCALAR8)
		return sizeof(QuantizerHeader) + 2 * size_t(dims_) * sizeof(float);
	return sizeof(QuantizerHeader) + sizeof(uint64_t) + size_t(dims_) * sizeof(float);
}

QuantizerFit::QuantizerFit(uint32_t dims)
    : dims_(dims), lo_(dims, HUGE_VALF), hi_(dims, -HUGE_VALF), fraction_(dims, 0), sum_(dims, 0.0),
      unit_sum_(dims, 0.0), unit_lo_(dims, HUGE_VALF), unit_hi_(dims, -HUGE_VALF), count_(dims, 0)
{
}

void
QuantizerFit::add(const void *v)
{
	const unsigned char *p = static_cast<const unsigned char *>(v);
	const double         unit = unit_factor(p, dims_);
	for (uint32_t i = 0; i < dims_; i++)
	{
		float x;
		std::memcpy(&x, p + i * sizeof(float), sizeof(x));
		if (!std::isfinite(x))
		{
			nonfinite_ = true;
			continue;
		}
		lo_[i] = std::min(lo_[i], x);
		hi_[i] = std::max(hi_[i], x);
		sum_[i] += x;
		const float u = static_cast<float>(x * unit);
		unit_sum_[i] += u;
		unit_lo_[i] = std::min(unit_lo_[i], u);
		unit_hi_[i] = std::max(unit_hi_[i], u);
		count_[i]++;
		if (x != std::nearbyint(x))
			fraction_[i] = 1;
	}
}

bool
QuantizerFit::lossless() const
{
	if (nonfinite_)
		return false;
	for (uint32_t i = 0; i < dims_; i++)
		if (lo_[i] < hi_[i] && (fraction_[i] || hi_[i] - lo_[i] > CODE_MAX))
			return false;
	return true;
}

Quantizer
QuantizerFit::quantizer(HannoyMetric metric) const
{
	Quantizer q(QUANTIZER_SCALAR8, metric, dims_);
	/*
	 * cosine ignores lengths: the ranges of the rows scaled to length 1
	 * (FLAG_UNIT_LENGTH), unless the codes of the rows as they come are
	 * lossless (pixels: exact codes beat any scaling)
	 */
	q.unit_length_ = metric == HANNOY_METRIC_COSINE && !lossless();
	for (uint32_t i = 0; i < dims_; i++)
	{
		float lo = q.unit_length_ ? unit_lo_[i] : lo_[i];
		float hi = q.unit_length_ ? unit_hi_[i] : hi_[i];
		if (lo > hi)
			lo = hi = 0.0f; /* no finite value seen */
		float scale = (hi - lo) / CODE_MAX;
		/* integers with a range of at most 255 (pixels, counts) take one step each: exact codes */
		if (!q.unit_length_ && !fraction_[i] && hi - lo <= CODE_MAX && hi > lo)
			scale = 1.0f;
		q.offset_[i] = lo;
		q.scale_[i] = std::isfinite(scale) ? scale : 0.0f;
	}
	return q;
}

Quantizer
QuantizerFit::binary(HannoyMetric metric, uint64_t seed) const
{
	Quantizer q(QUANTIZER_BINARY, metric, dims_);
	/* cosine ignores lengths: the mean of the rows scaled to length 1 (FLAG_UNIT_LENGTH) */
	q.unit_length_ = metric == HANNOY_METRIC_COSINE;
	const std::vector<double> &sums = q.unit_length_ ? unit_sum_ : sum_;
	for (uint32_t i = 0; i < dims_; i++)
		q.mean_[i] = count_[i] > 0 ? static_cast<float>(sums[i] / double(count_[i])) : 0.0f;
	q.seed_ = seed;
	q.draw_signs();
	return q;
}

Quantizer
Quantizer::from_record(HannoyMetric metric, uint32_t dims, const void *data, size_t size)
{
	QuantizerHeader h;
	if (size < sizeof(h))
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record is malformed");
	std::memcpy(&h, data, sizeof(h));
	if ((h.kind != QUANTIZER_SCALAR8 && h.kind != QUANTIZER_BINARY) || h.dims != dims)
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record is malformed (kind " +
		                                    std::to_string(h.kind) + ", " + std::to_string(h.dims) +
		                                    " dimensions)");
	if ((h.flags & ~(FLAG_HEAP_RERANK | FLAG_UNIT_LENGTH)) != 0 ||
	    ((h.flags & FLAG_UNIT_LENGTH) != 0 && metric != HANNOY_METRIC_COSINE))
		throw Error(HANNOY_ERR_CORRUPT,
		            "quantizer record has unknown flags " + std::to_string(h.flags));
	Quantizer q(static_cast<QuantizerKind>(h.kind), metric, dims);
	q.heap_rerank_ = (h.flags & FLAG_HEAP_RERANK) != 0;
	q.unit_length_ = (h.flags & FLAG_UNIT_LENGTH) != 0;
	const char *p = static_cast<const char *>(data) + sizeof(h);
	if (h.code_bytes != q.code_bytes() || size != q.record_bytes())
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record is malformed (kind " +
		                                    std::to_string(h.kind) + ", " +
		                                    std::to_string(h.code_bytes) + " bytes per code, " +
		                                    std::to_string(size) + " bytes)");
	if (q.kind_ == QUANTIZER_BINARY)
	{
		std::memcpy(&q.seed_, p, sizeof(q.seed_));
		std::memcpy(q.mean_.data(), p + sizeof(q.seed_), dims * sizeof(float));
		for (uint32_t i = 0; i < dims; i++)
			if (!std::isfinite(q.mean_[i]))
				throw Error(HANNOY_ERR_CORRUPT, "quantizer record holds an invalid mean");
		q.draw_signs();
		return q;
	}
	std::memcpy(q.offset_.data(), p, dims * sizeof(float));
	std::memcpy(q.scale_.data(), p + dims * sizeof(float), dims * sizeof(float));
	for (uint32_t i = 0; i < dims; i++)
		if (!std::isfinite(q.offset_[i]) || !std::isfinite(q.scale_[i]) || q.scale_[i] < 0.0f)
			throw Error(HANNOY_ERR_CORRUPT, "quantizer record holds an invalid range");
	return q;
}

std::string
Quantizer::record() const
{
	QuantizerHeader h{kind_, dims_, static_cast<uint32_t>(code_bytes()),
	                  (heap_rerank_ ? FLAG_HEAP_RERANK : 0) |
	                      (unit_length_ ? FLAG_UNIT_LENGTH : 0)};
	std::string     r(reinterpret_cast<const char *>(&h), sizeof(h));
	if (kind_ == QUANTIZER_BINARY)
	{
		r.append(reinterpret_cast<const char *>(&seed_), sizeof(seed_));
		r.append(reinterpret_cast<const char *>(mean_.data()), dims_ * sizeof(float));
		return r;
	}
	r.append(reinterpret_cast<const char *>(offset_.data()), dims_ * sizeof(float));
	r.append(reinterpret_cast<const char *>(scale_.data()), dims_ * sizeof(float));
	return r;
}

void
Quantizer::encode(const void *v, uint8_t *out) const
{
	const unsigned char *p = static_cast<const unsigned char *>(v);
	if (kind_ == QUANTIZER_BINARY)
	{
		/*
		 * x - mean, rotated: the code is its sign bits, |x - mean|^2, the
		 * RaBitQ factor |x~|^2 / |x~|_1 that turns <signs, q~> into an
		 * estimate of <x~, q~>, and <x - mean, mean> (inner product, cosine).
		 * A NaN or an infinity counts as the mean.  A cosine quantizer first
		 * scales x to length 1.
		 */
		std::vector<float> y(padded_, 0.0f);
		double             sq = 0, dot_mean = 0;
		const double       unit = unit_length_ ? unit_factor(p, dims_) : 1.0;
		for (uint32_t i = 0; i < dims_; i++)
		{
			float x;
			std::memcpy(&x, p + i * sizeof(float), sizeof(x));
			float c = std::isfinite(x) ? static_cast<float>(x * unit) - mean_[i] : 0.0f;
			y[i] = c;
			sq += double(c) * c;
			dot_mean += double(c) * mean_[i];
		}
		rotate(y.data(), y.data());
		size_t bytes = padded_ / 8;
		std::memset(out, 0, bytes);
		double l1 = 0, rsq = 0;
		for (uint32_t i = 0; i < padded_; i++)
		{
			if (y[i] > 0.0f)
				out[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
			l1 += std::fabs(double(y[i]));
			rsq += double(y[i]) * y[i];
		}
		float extra[3] = {static_cast<float>(sq), l1 > 0 ? static_cast<float>(rsq / l1) : 0.0f,
		                  static_cast<float>(dot_mean)};
		std::memcpy(out + bytes, extra, sizeof(extra));
		return;
	}
	const double unit = unit_length_ ? unit_factor(p, dims_) : 1.0;
	for (uint32_t i = 0; i < dims_; i++)
	{
		float x;
		std::memcpy(&x, p + i * sizeof(float), sizeof(x));
		x *= unit;
		float c = scale_[i] > 0.0f ? (x - offset_[i]) / scale_[i] : 0.0f;
		/* NaN and values outside the fitted range clamp (inserts after the build) */
		if (!(c > 0.0f))
			out[i] = 0;
		else if (c >= CODE_MAX)
			out[i] = 255;
		else
			out[i] = static_cast<uint8_t>(std::lrint(c));
	}
}

double
Quantizer::code_error(const void *v) const
{
	if (kind_ != QUANTIZER_SCALAR8)
		return 1.0;
	const unsigned char *p = static_cast<const unsigned char *>(v);
	const double         unit = unit_length_ ? unit_factor(p, dims_) : 1.0;
	std::vector<uint8_t> code(dims_);
	encode(v, code.data());
	double err = 0, spread = 0;
	for (uint32_t i = 0; i < dims_; i++)
	{
		float x;
		std::memcpy(&x, p + i * sizeof(float), sizeof(x));
		double y = double(x) * unit;
		if (!std::isfinite(y))
			return 1.0;
		double back = double(offset_[i]) + double(scale_[i]) * code[i];
		double mid = double(offset_[i]) + double(scale_[i]) * (CODE_MAX / 2.0);
		err += (y - back) * (y - back);
		spread += (y - mid) * (y - mid);
	}
	if (spread == 0)
		return err == 0 ? 0.0 : 1.0;
	return std::min(1.0, err / spread);
}

void
Quantizer::prepare(const void *query, QueryForm &form) const
{
	const unsigned char *p = static_cast<const unsigned char *>(query);
	if (kind_ == QUANTIZER_SCALAR8)
	{
		form.query.resize(dims_);
		std::memcpy(form.query.data(), p, dims_ * sizeof(float));
		return;
	}
	std::vector<float> y(padded_, 0.0f);
	double             csq = 0, mdot = 0, nsq = 0;
	const double       unit = unit_length_ ? unit_factor(p, dims_) : 1.0;
	for (uint32_t i = 0; i < dims_; i++)
	{
		float x;
		std::memcpy(&x, p + i * sizeof(float), sizeof(x));
		x *= unit;
		float c = x - mean_[i];
		y[i] = c;
		csq += double(c) * c;
		mdot += double(mean_[i]) * x;
		nsq += double(x) * x;
	}
	rotate(y.data(), y.data());
	float lo = HUGE_VALF, hi = -HUGE_VALF;
	for (float v : y)
	{
		lo = std::min(lo, v);
		hi = std::max(hi, v);
	}
	if (!(lo <= hi))
		lo = hi = 0.0f; /* NaN in the query: every estimate NaN-free but meaningless */
	float  step = hi > lo ? (hi - lo) / QUERY_MAX : 0.0f;
	size_t words = padded_ / 64;
	form.planes.assign(size_t(BINARY_QUERY_BITS) * words, 0);
	double sum = 0;
	for (uint32_t i = 0; i < padded_; i++)
	{
		float    u = step > 0.0f ? std::nearbyint((y[i] - lo) / step) : 0.0f;
		uint32_t v = !(u > 0.0f) ? 0u : u >= QUERY_MAX ? uint32_t(QUERY_MAX) : uint32_t(u);
		for (uint32_t j = 0; j < BINARY_QUERY_BITS; j++)
			if (v & (1u << j))
				form.planes[j * words + i / 64] |= uint64_t(1) << (i % 64);
		sum += double(lo) + double(step) * v;
	}
	form.lo = lo;
	form.step = step;
	form.sum = static_cast<float>(sum);
	form.centred_sq = static_cast<float>(csq);
	form.mean_dot = static_cast<float>(mdot);
	form.norm_sq = static_cast<float>(nsq);
}

/*
 * The 1-bit estimate (DESIGN.md "1-bit codes"): <x~, q~> ~ factor x
 * <signs, q~>, with <signs, q~> = 2 <bits, q~> - sum(q~) and <bits, q~>
 * from popcounts of the bits against the query's planes; then each
 * metric's distance from it.  L1 has no rotation-invariant form: it walks
 * on the Euclidean estimate, and re-ranking measures L1 exactly.
 */
double
Quantizer::binary_distance(const uint8_t *code, const QueryForm &form) const
{
	/* codes are only 2-byte aligned in the map; padded_ is at most 16384 (HANNOY_MAX_DIMS) */
	size_t   words = padded_ / 64;
	uint64_t bits[16384 / 64];
	std::memcpy(bits, code, words * 8);
	uint64_t ones;
	uint64_t dot_u = have_popcnt() ? planes_dot_popcnt(bits, form.planes.data(), words, &ones)
	                               : planes_dot(bits, form.planes.data(), words, &ones);
	float    extra[3];
	std::memcpy(extra, code + padded_ / 8, sizeof(extra));
	double bits_dot = double(form.lo) * double(ones) + double(form.step) * double(dot_u);
	double centred_dot = double(extra[1]) * (2.0 * bits_dot - double(form.sum));
	switch (metric_)
	{
		case HANNOY_METRIC_IP:
			return -(centred_dot + extra[2] + form.mean_dot);
		case HANNOY_METRIC_COSINE:
		{
			double dot = centred_dot + extra[2] + form.mean_dot;
			double xx = double(extra[0]) + 2.0 * extra[2] + mean_norm_sq_;
			if (xx <= 0.0 || form.norm_sq <= 0.0f)
				return 1.0;
			double sim = dot / std::sqrt(xx * double(form.norm_sq));
			return 1.0 - std::max(-1.0, std::min(1.0, sim));
		}
		default:
		{
			double d2 = double(extra[0]) + double(form.centred_sq) - 2.0 * centred_dot;
			return std::sqrt(std::max(d2, 0.0));
		}
	}
}

LosslessCodes::LosslessCodes(const Quantizer &q, HannoyMetric metric)
    : metric_(metric), dims_(q.dims()), offset_(q.offset(), q.offset() + q.dims())
{
	for (float o : offset_)
		offset_sq_ += double(o) * o;
}

double
LosslessCodes::offset_dot(const uint8_t *code) const
{
	double sum = 0;
	for (uint32_t i = 0; i < dims_; i++)
		sum += double(offset_[i]) * code[i];
	return sum;
}

double
LosslessCodes::distance(const uint8_t *a, const uint8_t *b, double a_offset_dot,
                        double b_offset_dot, float a_sq_norm, float b_sq_norm) const
{
	switch (metric_)
	{
		case HANNOY_METRIC_L2:
			return std::sqrt(static_cast<double>(kernel_bytes_l2_squared(a, b, dims_)));
		case HANNOY_METRIC_L1:
			return static_cast<double>(kernel_bytes_l1(a, b, dims_));
		default:
			break;
	}
	/* <o + a, o + b> = <a, b> + <o, a> + <o, b> + <o, o> */
	double dot = static_cast<double>(kernel_bytes_dot(a, b, dims_)) + a_offset_dot + b_offset_dot +
	             offset_sq_;
	if (metric_ == HANNOY_METRIC_COSINE)
		return cosine_distance_from_dots(static_cast<float>(dot), a_sq_norm, b_sq_norm);
	return 0.0 - dot; /* inner product, as its kernel gives it */
}

} // namespace hannoy
