/*
 * links.hpp
 *	  Neighbour lists as CRoaring bitmaps in the portable serialisation
 *	  format (the format CRoaring 0.2.66 writes with
 *	  roaring_bitmap_portable_serialize), and a decoder that reads them into
 *	  a reused vector without allocating per call.
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

/* Appends the portable Roaring serialisation of 'ids' (any order, no duplicates) to 'out'. */
void encode_links(const uint32_t *ids, size_t count, std::string &out);

/*
 * Decodes a portable Roaring bitmap into 'out' (cleared first; ascending
 * ids).  Returns false if the bytes are not a well-formed bitmap.  'data'
 * may be unaligned.
 */
bool decode_links(const void *data, size_t size, std::vector<uint32_t> &out);

} // namespace hannoy

#endif /* HANNOY_LINKS_HPP */
