/*
 * links.hpp
 *	  Neighbour lists as CRoaring bitmaps: in CRoaring's own tagged
 *	  serialisation (roaring_bitmap_serialize; storage format 8) or in the
 *	  portable format (roaring_bitmap_portable_serialize; earlier formats),
 *	  and a decoder that reads either into a reused vector without
 *	  allocating per call.
 */
#ifndef HANNOY_LINKS_HPP
#define HANNOY_LINKS_HPP

#include "core_guard.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hannoy
{

/*
 * Appends the Roaring serialisation of 'ids' (any order, no duplicates) to
 * 'out': CRoaring's tagged form when 'tagged', else the portable format.
 */
void encode_links(const uint32_t *ids, size_t count, std::string &out, bool tagged);

/*
 * Decodes a neighbour list, tagged or portable, into 'out' (cleared first;
 * ascending ids).  Returns false if the bytes are not a well-formed bitmap.  'data'
 * may be unaligned.
 */
bool decode_links(const void *data, size_t size, std::vector<uint32_t> &out);

} // namespace hannoy

#endif /* HANNOY_LINKS_HPP */
