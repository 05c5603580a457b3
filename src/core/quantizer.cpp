#include "core_guard.hpp"

/*
 * quantizer.cpp
 *	  The 8-bit scalar quantizer of storage format 5: fitted by the build,
 *	  stored in the meta database, used to encode every vector's code.
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

/* The quantizer record: this header, then dims offsets and dims scales (floats). */
struct QuantizerHeader
{
	uint32_t kind, dims, code_bytes, reserved;
};

/* The largest code value. */
constexpr float CODE_MAX = 255.0f;

} // namespace

bool
codes_pay(HannoyMetric metric, uint32_t dims)
{
	return code_distance_function(metric) != nullptr && dims >= CODES_MIN_DIMS;
}

Quantizer::Quantizer(HannoyMetric metric, uint32_t dims)
    : dims_(dims), offset_(dims, 0.0f), scale_(dims, 0.0f), fn_(code_distance_function(metric)),
      dot_fn_(code_distance_function(HANNOY_METRIC_IP))
{
	if (fn_ == nullptr)
		throw Error(HANNOY_ERR_INVALID, "this metric has no codes");
}

QuantizerFit::QuantizerFit(uint32_t dims)
    : dims_(dims), lo_(dims, HUGE_VALF), hi_(dims, -HUGE_VALF), fraction_(dims, 0)
{
}

void
QuantizerFit::add(const void *v)
{
	const unsigned char *p = static_cast<const unsigned char *>(v);
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
	Quantizer q(metric, dims_);
	for (uint32_t i = 0; i < dims_; i++)
	{
		float lo = lo_[i], hi = hi_[i];
		if (lo > hi)
			lo = hi = 0.0f; /* no finite value seen */
		float scale = (hi - lo) / CODE_MAX;
		/* integers with a range of at most 255 (pixels, counts) take one step each: exact codes */
		if (!fraction_[i] && hi - lo <= CODE_MAX && hi > lo)
			scale = 1.0f;
		q.offset_[i] = lo;
		q.scale_[i] = std::isfinite(scale) ? scale : 0.0f;
	}
	return q;
}

Quantizer
Quantizer::from_record(HannoyMetric metric, uint32_t dims, const void *data, size_t size)
{
	QuantizerHeader h;
	if (size < sizeof(h))
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record is malformed");
	std::memcpy(&h, data, sizeof(h));
	if (h.kind != QUANTIZER_SCALAR8 || h.dims != dims || h.code_bytes != dims ||
	    size != sizeof(h) + 2 * size_t(dims) * sizeof(float))
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record is malformed (kind " +
		                                    std::to_string(h.kind) + ", " + std::to_string(h.dims) +
		                                    " dimensions)");
	Quantizer   q(metric, dims);
	const char *p = static_cast<const char *>(data) + sizeof(h);
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
	QuantizerHeader h{QUANTIZER_SCALAR8, dims_, static_cast<uint32_t>(code_bytes()), 0};
	std::string     r(reinterpret_cast<const char *>(&h), sizeof(h));
	r.append(reinterpret_cast<const char *>(offset_.data()), dims_ * sizeof(float));
	r.append(reinterpret_cast<const char *>(scale_.data()), dims_ * sizeof(float));
	return r;
}

void
Quantizer::encode(const void *v, uint8_t *out) const
{
	const unsigned char *p = static_cast<const unsigned char *>(v);
	for (uint32_t i = 0; i < dims_; i++)
	{
		float x;
		std::memcpy(&x, p + i * sizeof(float), sizeof(x));
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

} // namespace hannoy
