/*
 * inspect.cpp
 *	  Inspection of a sidecar: graph statistics and a consistency check.
 *
 *	  A walk holds one read transaction from begin to free, so every count
 *	  it compares comes from the same snapshot, and it never takes LMDB's
 *	  writer lock.  It runs as a sequence of stages, each a cursor pass over
 *	  one database or a pass over the item ids, and stops at a deadline in
 *	  the middle of any stage: the cursor stays open in the read transaction
 *	  and the next slice resumes where it stopped.  Problems queue inside the
 *	  walk (a bounded number at a time) until the caller collects them.
 *
 *	  A verifying walk checks, in order: vectors (size, id below next_id);
 *	  codes (size, checksum, a vector behind each, each the quantization of
 *	  its vector, and every vector with a code when there is a quantizer);
 *	  tids and items (each the inverse of the other); tombstones; unindexed
 *	  rows; the shape of each node's layers; every neighbour list (degree,
 *	  self links, dangling neighbours, neighbours without that layer); that
 *	  every vector has a TID or a tombstone and a layer 0; the entry point
 *	  and the counters of the state record; and, by a breadth-first search
 *	  over layer 0 from the entry point (tombstones are traversed), that
 *	  every live item is reachable.
 */
#include "core_guard.hpp"

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "guarded.hpp"
#include "hannoy/hannoy.h"
#include "links.hpp"
#include "storage.hpp"

static_assert(hannoy::MAX_LEVEL + 1 == HANNOY_MAX_LAYERS,
              "HANNOY_MAX_LAYERS must cover every level a node can have");

namespace
{

using Clock = std::chrono::steady_clock;

/* Entries handled between two looks at the clock. */
constexpr uint32_t CLOCK_EVERY = 64;
/* Problems queued before a slice stops to let the caller collect them. */
constexpr size_t MAX_PENDING = 4096;

/* The stages of a walk, in order. */
enum class Stage
{
	Vectors,    /* vectors: sizes, ids below next_id */
	Codes,      /* codes: sizes, checksums, each its vector's quantization */
	Tids,       /* tids: each maps back through items */
	Items,      /* items: each maps back through tids */
	Tombstones, /* deleted: tombstones have vectors and no TID */
	Unindexed,  /* unindexed: kinds, not also indexed */
	LinkKeys,   /* links keys: each node's layers are 0..top without gaps */
	LinkLists,  /* links values: degree, self links, neighbours */
	Ids,        /* per id: a TID or a tombstone, and a layer 0 */
	State,      /* entry point and counters; starts the search */
	Search,     /* breadth-first search over layer 0 */
	Unreached,  /* per id: live items the search never reached */
	Done
};

/* A plain bitset over item ids below a fixed bound. */
class Bits
{
  public:
	void
	reset(uint64_t n)
	{
		words_.assign((n + 63) / 64, 0);
		size_ = n;
	}
	void
	set(uint64_t i)
	{
		words_[i / 64] |= uint64_t(1) << (i % 64);
	}
	bool
	test(uint64_t i) const
	{
		return i < size_ && (words_[i / 64] >> (i % 64)) & 1;
	}

  private:
	std::vector<uint64_t> words_;
	uint64_t              size_ = 0;
};

/* Formats a heap TID the way PostgreSQL prints a ctid. */
std::string
tid_text(HannoyTid tid)
{
	return "(" + std::to_string(tid >> 16) + "," + std::to_string(tid & 0xFFFF) + ")";
}

} // namespace

struct HannoyInspect
{
	hannoy::Store               *store = nullptr;
	bool                         verify = false;
	std::unique_ptr<hannoy::Txn> txn;
	hannoy::GraphState           state;
	uint64_t                     range = 0; /* ids below this can have a vector */

	Stage                stage = Stage::Vectors;
	hannoy::DatabaseWalk walk;    /* over the database of the current stage */
	uint64_t             pos = 0; /* next id of an id pass */

	/* what the stages learn about each id below 'range' */
	Bits                                     vectors, codes, tids, tombstones, visited;
	std::shared_ptr<const hannoy::Quantizer> quantizer; /* the codes', nullptr when none */
	std::vector<uint8_t>                     code;      /* scratch: a vector's quantization */
	std::vector<unsigned char>               vector;    /* scratch: a vector, gathered */
	std::vector<uint16_t> layers; /* bit L: the node has a neighbour list at layer L */

	/* LinkKeys: the node whose layers are being followed */
	int64_t key_id = -1;
	int     key_layer = -1;
	int     highest = -1; /* highest layer seen on any node */
	int64_t highest_id = -1;

	uint64_t n_vectors = 0, n_tids = 0, n_tombstones = 0, n_unindexed = 0;
	/* the vector whose pieces stage Vectors is reading: its id and the piece expected next */
	uint32_t piece_id = 0, piece_next = 0;

	std::deque<uint32_t> queue; /* Search */

	HannoyInspectSummary      summary{};
	std::deque<HannoyProblem> pending;
	std::vector<uint32_t>     scratch;
};

namespace
{

/* Queues a problem about 'item' (-1: none) with a printf-style detail. */
__attribute__((format(printf, 4, 5))) void
report(HannoyInspect *w, HannoyProblemKind kind, int64_t item, const char *fmt, ...)
{
	HannoyProblem p{};
	p.kind = kind;
	p.item = item;
	va_list ap;
	va_start(ap, fmt);
	std::vsnprintf(p.detail, sizeof(p.detail), fmt, ap);
	va_end(ap);
	w->pending.push_back(p);
}

/* Moves on to 'next', closing the cursor of the stage just finished. */
void
enter(HannoyInspect *w, Stage next)
{
	w->walk.reset();
	w->pos = 0;
	w->stage = next;
}

/* True when item 'id' has a stored vector. */
bool
has_vector(const HannoyInspect *w, uint64_t id)
{
	return w->vectors.test(id);
}

/* Highest layer at which node 'id' has a neighbour list, -1 when none. */
int
top_layer(const HannoyInspect *w, uint32_t id)
{
	int top = -1;
	for (int layer = 0; layer < HANNOY_MAX_LAYERS; layer++)
		if (w->layers[id] & (1u << layer))
			top = layer;
	return top;
}

/* Says why item 'id' cannot be a node: beyond next_id, or no vector. */
std::string
why_not_node(const HannoyInspect *w, uint64_t id)
{
	if (id >= w->state.next_id)
		return "is at or beyond next_id " + std::to_string(w->state.next_id);
	return "has no vector";
}

/* Reads the neighbour list of (id, layer); false when absent or malformed. */
bool
read_links(HannoyInspect *w, uint32_t id, int layer, std::vector<uint32_t> &out)
{
	hannoy::LinkKey key(id, layer);
	MDB_val         data;
	out.clear();
	if (!hannoy::get(w->txn->get(), w->store->dbi_links, key.val(), data))
		return false;
	size_t trailer = w->store->trailer();
	return data.mv_size >= trailer &&
	       hannoy::decode_links(data.mv_data, data.mv_size - trailer, out);
}

/* Reports a vector whose pieces stage Vectors did not all find. */
void
report_incomplete(HannoyInspect *w)
{
	if (w->piece_next != 0)
		report(w, HANNOY_PROBLEM_MALFORMED, w->piece_id, "vector of item %u lacks piece %u",
		       w->piece_id, w->piece_next);
	w->piece_next = 0;
}

/* Stage Vectors: one record, a vector or one of its pieces (see VectorLayout). */
void
check_vector(HannoyInspect *w, const MDB_val &key, const MDB_val &data)
{
	const hannoy::VectorLayout &l = w->store->layout();
	uint32_t                    id, piece;
	if (!hannoy::decode_vector_key(key, &id, &piece) || piece >= l.pieces() ||
	    data.mv_size != l.record_size(piece))
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1,
		       "vectors database has a malformed record (key of %zu bytes, value of %zu bytes)",
		       key.mv_size, data.mv_size);
		return;
	}
	if (w->store->checksummed() && !hannoy::checksum_holds(key, data))
		report(w, HANNOY_PROBLEM_MALFORMED, id,
		       "piece %u of the vector of item %u fails its checksum", piece, id);
	if (piece != w->piece_next || (piece > 0 && id != w->piece_id))
	{
		report_incomplete(w);
		if (piece > 0)
		{
			report(w, HANNOY_PROBLEM_MALFORMED, id, "vector of item %u lacks piece 0", id);
			return;
		}
	}
	w->piece_id = id;
	w->piece_next = piece + 1;
	if (w->piece_next < l.pieces())
		return;
	w->piece_next = 0;
	if (w->quantizer && w->quantizer->heap_rerank())
	{
		report(w, HANNOY_PROBLEM_MALFORMED, id,
		       "item %u has a vector in an index that keeps none (re-ranked from the heap)", id);
		return;
	}
	w->n_vectors++;
	if (id >= w->state.next_id)
		report(w, HANNOY_PROBLEM_COUNTER, id, "item %u has a vector but next_id is %llu", id,
		       static_cast<unsigned long long>(w->state.next_id));
	else
		w->vectors.set(id);
}

/*
 * Stage Codes: one code (format 5): its size and checksum, an item with a
 * vector, and the quantization of that vector, byte for byte.
 */
void
check_code(HannoyInspect *w, const MDB_val &key, const MDB_val &data)
{
	const hannoy::Quantizer *q = w->quantizer.get();
	if (key.mv_size != 4)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1, "codes database has a malformed key of %zu bytes",
		       key.mv_size);
		return;
	}
	uint32_t id = hannoy::decode_id(key);
	if (q == nullptr)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, id,
		       "item %u has a code but the sidecar has no quantizer", id);
		return;
	}
	if (data.mv_size != q->code_bytes() + hannoy::CHECKSUM_BYTES)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, id, "code of item %u has %zu bytes, expected %zu", id,
		       data.mv_size, q->code_bytes() + hannoy::CHECKSUM_BYTES);
		return;
	}
	if (!hannoy::checksum_holds(key, data))
		report(w, HANNOY_PROBLEM_MALFORMED, id, "code of item %u fails its checksum", id);
	if (q->heap_rerank())
	{
		/*
		 * No vectors (format 7): the code stands for the item's vector here;
		 * the heap check compares it with the heap's (DESIGN.md "Heap
		 * re-ranking").
		 */
		w->codes.set(id);
		w->n_vectors++;
		if (id >= w->state.next_id)
			report(w, HANNOY_PROBLEM_COUNTER, id, "item %u has a code but next_id is %llu", id,
			       static_cast<unsigned long long>(w->state.next_id));
		else
			w->vectors.set(id);
		return;
	}
	if (!has_vector(w, id))
	{
		report(w, HANNOY_PROBLEM_MALFORMED, id, "item %u has a code but no vector", id);
		return;
	}
	w->codes.set(id);
	w->vector.resize(w->store->vector_bytes());
	w->code.resize(q->code_bytes());
	if (w->store->copy_vector(w->txn->get(), id, w->vector.data()))
	{
		q->encode(w->vector.data(), w->code.data());
		if (std::memcmp(w->code.data(), data.mv_data, q->code_bytes()) != 0)
			report(w, HANNOY_PROBLEM_MALFORMED, id,
			       "code of item %u is not the quantization of its vector", id);
	}
}

/* Stage Tids: one entry, which items must map back. */
void
check_tid(HannoyInspect *w, const MDB_val &key, const MDB_val &data)
{
	if (key.mv_size != 4 || data.mv_size != 6)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1,
		       "tids database has an entry of %zu and %zu bytes, expected 4 and 6", key.mv_size,
		       data.mv_size);
		return;
	}
	uint32_t  id = hannoy::decode_id(key);
	HannoyTid tid = hannoy::decode_tid(data);
	w->n_tids++;
	if (!has_vector(w, id))
		report(w, HANNOY_PROBLEM_TID_MAP, id, "item %u has TID %s but %s", id,
		       tid_text(tid).c_str(), why_not_node(w, id).c_str());
	else
		w->tids.set(id);
	hannoy::TidKey tkey(tid);
	MDB_val        back;
	if (!hannoy::get(w->txn->get(), w->store->dbi_items, tkey.val(), back))
		report(w, HANNOY_PROBLEM_TID_MAP, id, "item %u has TID %s, which maps to no item", id,
		       tid_text(tid).c_str());
	else if (back.mv_size != 4 || hannoy::decode_id(back) != id)
		report(w, HANNOY_PROBLEM_TID_MAP, id, "item %u has TID %s, which maps to item %lld", id,
		       tid_text(tid).c_str(),
		       back.mv_size == 4 ? static_cast<long long>(hannoy::decode_id(back)) : -1LL);
}

/* Stage Items: one entry, which tids must map back. */
void
check_item(HannoyInspect *w, const MDB_val &key, const MDB_val &data)
{
	if (key.mv_size != 6 || data.mv_size != 4)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1,
		       "items database has an entry of %zu and %zu bytes, expected 6 and 4", key.mv_size,
		       data.mv_size);
		return;
	}
	HannoyTid     tid = hannoy::decode_tid(key);
	uint32_t      id = hannoy::decode_id(data);
	hannoy::IdKey ikey(id);
	MDB_val       back;
	if (!hannoy::get(w->txn->get(), w->store->dbi_tids, ikey.val(), back))
		report(w, HANNOY_PROBLEM_TID_MAP, id, "TID %s maps to item %u, which has no TID",
		       tid_text(tid).c_str(), id);
	else if (back.mv_size == 6 && hannoy::decode_tid(back) != tid)
		report(w, HANNOY_PROBLEM_TID_MAP, id, "TID %s maps to item %u, which has TID %s",
		       tid_text(tid).c_str(), id, tid_text(hannoy::decode_tid(back)).c_str());
}

/* Stage Tombstones: one entry. */
void
check_tombstone(HannoyInspect *w, const MDB_val &key)
{
	if (key.mv_size != 4)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1, "deleted database has a key of %zu bytes",
		       key.mv_size);
		return;
	}
	uint32_t id = hannoy::decode_id(key);
	w->n_tombstones++;
	if (!has_vector(w, id))
	{
		report(w, HANNOY_PROBLEM_TID_MAP, id, "tombstone %u %s", id, why_not_node(w, id).c_str());
		return;
	}
	w->tombstones.set(id);
	if (w->tids.test(id))
		report(w, HANNOY_PROBLEM_TID_MAP, id, "item %u is both live and a tombstone", id);
}

/* Stage Unindexed: one entry. */
void
check_unindexed(HannoyInspect *w, const MDB_val &key, const MDB_val &data)
{
	if (key.mv_size != 6)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1, "unindexed database has a key of %zu bytes",
		       key.mv_size);
		return;
	}
	HannoyTid tid = hannoy::decode_tid(key);
	w->n_unindexed++;
	uint8_t kind = data.mv_size == 1 ? *static_cast<const uint8_t *>(data.mv_data) : 0;
	if (kind != HANNOY_ROW_UNINDEXED_NULL && kind != HANNOY_ROW_UNINDEXED_NAN)
		report(w, HANNOY_PROBLEM_MALFORMED, -1, "unindexed row %s has a malformed kind",
		       tid_text(tid).c_str());
	MDB_val item;
	if (hannoy::get(w->txn->get(), w->store->dbi_items, key, item) && item.mv_size == 4)
		report(w, HANNOY_PROBLEM_TID_MAP, hannoy::decode_id(item),
		       "TID %s is both an unindexed row and item %u", tid_text(tid).c_str(),
		       hannoy::decode_id(item));
}

/* Stage LinkKeys: one key; a node's layers must be 0, 1, ... without a gap. */
void
check_link_key(HannoyInspect *w, const MDB_val &key)
{
	if (key.mv_size != 5)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, -1, "links database has a key of %zu bytes",
		       key.mv_size);
		return;
	}
	uint32_t id = hannoy::decode_id(key);
	int      layer = static_cast<const unsigned char *>(key.mv_data)[4];
	if (layer > hannoy::MAX_LEVEL)
	{
		report(w, HANNOY_PROBLEM_MALFORMED, id, "item %u has a neighbour list at layer %d", id,
		       layer);
		return;
	}
	if (!has_vector(w, id))
	{
		report(w, HANNOY_PROBLEM_ORPHAN_LINKS, id,
		       "item %u has a neighbour list at layer %d but %s", id, layer,
		       why_not_node(w, id).c_str());
		return;
	}
	int expected = w->key_id == static_cast<int64_t>(id) ? w->key_layer + 1 : 0;
	if (layer != expected)
		report(w, HANNOY_PROBLEM_MISSING_LAYER, id,
		       "item %u has a neighbour list at layer %d but none at layer %d", id, layer,
		       expected);
	w->key_id = id;
	w->key_layer = layer;
	w->layers[id] |= static_cast<uint16_t>(1u << layer);
	if (layer > w->highest)
	{
		w->highest = layer;
		w->highest_id = id;
	}
}

/* Stage LinkLists: one neighbour list; counts it and, when verifying, checks it. */
void
check_link_list(HannoyInspect *w, const MDB_val &key, const MDB_val &data)
{
	if (key.mv_size != 5)
		return; /* reported by LinkKeys */
	uint32_t id = hannoy::decode_id(key);
	int      layer = static_cast<const unsigned char *>(key.mv_data)[4];
	if (layer > hannoy::MAX_LEVEL || (w->verify && !has_vector(w, id)))
		return; /* reported by LinkKeys */
	std::vector<uint32_t> &list = w->scratch;
	size_t                 trailer = w->store->trailer();
	if (w->verify && trailer != 0 && !hannoy::checksum_holds(key, data))
		report(w, HANNOY_PROBLEM_MALFORMED, id,
		       "neighbour list of item %u at layer %d fails its checksum", id, layer);
	if (data.mv_size < trailer || !hannoy::decode_links(data.mv_data, data.mv_size - trailer, list))
	{
		if (w->verify)
			report(w, HANNOY_PROBLEM_MALFORMED, id,
			       "neighbour list of item %u at layer %d is malformed", id, layer);
		return;
	}
	w->summary.lists[layer]++;
	w->summary.edges[layer] += list.size();
	if (static_cast<uint32_t>(layer) + 1 > w->summary.layers)
		w->summary.layers = static_cast<uint32_t>(layer) + 1;
	if (!w->verify)
		return;

	uint32_t bound = w->store->max_links(layer);
	if (list.size() > bound)
		report(w, HANNOY_PROBLEM_DEGREE, id,
		       "item %u has %zu neighbours at layer %d, more than the bound of %u", id, list.size(),
		       layer, bound);
	for (uint32_t n : list)
	{
		if (n == id)
			report(w, HANNOY_PROBLEM_SELF_LINK, id, "item %u lists itself at layer %d", id, layer);
		else if (!has_vector(w, n))
			report(w, HANNOY_PROBLEM_DANGLING_LINK, id,
			       "item %u links to item %u at layer %d, which %s", id, n, layer,
			       why_not_node(w, n).c_str());
		else if (!(w->layers[n] & (1u << layer)))
			report(w, HANNOY_PROBLEM_MISSING_LAYER, id,
			       "item %u links to item %u at layer %d, which has no neighbour list there", id, n,
			       layer);
	}
}

/* Stage Ids: item 'id' needs a TID or a tombstone, and a layer 0. */
void
check_id(HannoyInspect *w, uint32_t id)
{
	if (!has_vector(w, id))
		return;
	if (w->quantizer && !w->codes.test(id))
		report(w, HANNOY_PROBLEM_MALFORMED, id, "item %u has a vector but no code", id);
	if (!w->tids.test(id) && !w->tombstones.test(id))
		report(w, HANNOY_PROBLEM_TID_MAP, id,
		       "item %u has a vector but neither a TID nor a tombstone", id);
	/* a node with some layers but not layer 0 was reported by LinkKeys */
	if (w->layers[id] == 0)
		report(w, HANNOY_PROBLEM_MISSING_LAYER, id, "item %u has a vector but no neighbour list",
		       id);
}

/* Stage State: entry point and counters; queues the entry point for the search. */
void
check_state(HannoyInspect *w)
{
	const hannoy::GraphState &st = w->state;
	bool                      searchable = false;
	if (st.max_level < -1 || st.max_level > hannoy::MAX_LEVEL)
		report(w, HANNOY_PROBLEM_ENTRY_POINT, -1, "the state record has max_level %d",
		       st.max_level);
	else if (st.max_level == -1)
	{
		if (w->n_vectors > 0)
			report(w, HANNOY_PROBLEM_ENTRY_POINT, -1,
			       "the state record has no entry point but %llu items have vectors",
			       static_cast<unsigned long long>(w->n_vectors));
	}
	else if (!has_vector(w, st.entry_point))
		report(w, HANNOY_PROBLEM_ENTRY_POINT, st.entry_point, "entry point %u %s", st.entry_point,
		       why_not_node(w, st.entry_point).c_str());
	else
	{
		searchable = true;
		if (top_layer(w, st.entry_point) != st.max_level)
			report(w, HANNOY_PROBLEM_ENTRY_POINT, st.entry_point,
			       "entry point %u has layers up to %d but max_level is %d", st.entry_point,
			       top_layer(w, st.entry_point), st.max_level);
		if (w->highest > st.max_level)
			report(w, HANNOY_PROBLEM_ENTRY_POINT, w->highest_id,
			       "item %lld has layers up to %d, above max_level %d",
			       static_cast<long long>(w->highest_id), w->highest, st.max_level);
	}

	struct
	{
		const char *what;
		uint64_t    recorded, actual;
		const char *where;
	} counters[] = {
	    {"live items", st.items, w->n_tids, "the tids database holds"},
	    {"tombstones", st.deleted, w->n_tombstones, "the deleted database holds"},
	    {"unindexed rows", st.unindexed, w->n_unindexed, "the unindexed database holds"},
	};
	for (const auto &c : counters)
		if (c.recorded != c.actual)
			report(w, HANNOY_PROBLEM_COUNTER, -1, "the state record counts %llu %s, %s %llu",
			       static_cast<unsigned long long>(c.recorded), c.what, c.where,
			       static_cast<unsigned long long>(c.actual));

	if (searchable)
	{
		w->visited.set(st.entry_point);
		w->queue.push_back(st.entry_point);
		enter(w, Stage::Search);
	}
	else
		enter(w, Stage::Done);
}

/* Stage Search: expands one node of the breadth-first search over layer 0. */
void
search_one(HannoyInspect *w)
{
	uint32_t id = w->queue.front();
	w->queue.pop_front();
	read_links(w, id, 0, w->scratch); /* a malformed list was reported: walk past it */
	for (uint32_t n : w->scratch)
	{
		if (!has_vector(w, n) || w->visited.test(n))
			continue;
		w->visited.set(n);
		w->queue.push_back(n);
	}
}

/* Runs stages until the deadline, the end, or enough problems queued. */
void
run_slice(HannoyInspect *w, Clock::time_point deadline)
{
	hannoy::Store &s = *w->store;
	MDB_val        key, data;
	uint32_t       n = 0;
	while (w->stage != Stage::Done && w->pending.size() < MAX_PENDING)
	{
		if (++n % CLOCK_EVERY == 0 && Clock::now() >= deadline)
			return;
		switch (w->stage)
		{
			case Stage::Vectors:
				if (w->walk.step(w->txn->get(), s.dbi_vectors, key, data))
					check_vector(w, key, data);
				else
				{
					report_incomplete(w);
					enter(w, s.has_codes_db() ? Stage::Codes : Stage::Tids);
				}
				break;
			case Stage::Codes:
				if (w->walk.step(w->txn->get(), s.dbi_codes, key, data))
					check_code(w, key, data);
				else
					enter(w, Stage::Tids);
				break;
			case Stage::Tids:
				if (w->walk.step(w->txn->get(), s.dbi_tids, key, data))
					check_tid(w, key, data);
				else
					enter(w, Stage::Items);
				break;
			case Stage::Items:
				if (w->walk.step(w->txn->get(), s.dbi_items, key, data))
					check_item(w, key, data);
				else
					enter(w, Stage::Tombstones);
				break;
			case Stage::Tombstones:
				if (w->walk.step(w->txn->get(), s.dbi_deleted, key, data))
					check_tombstone(w, key);
				else
					enter(w, Stage::Unindexed);
				break;
			case Stage::Unindexed:
				if (w->walk.step(w->txn->get(), s.dbi_unindexed, key, data))
					check_unindexed(w, key, data);
				else
					enter(w, Stage::LinkKeys);
				break;
			case Stage::LinkKeys:
				if (w->walk.step(w->txn->get(), s.dbi_links, key, data))
					check_link_key(w, key);
				else
					enter(w, Stage::LinkLists);
				break;
			case Stage::LinkLists:
				if (w->walk.step(w->txn->get(), s.dbi_links, key, data))
					check_link_list(w, key, data);
				else
					enter(w, w->verify ? Stage::Ids : Stage::Done);
				break;
			case Stage::Ids:
				if (w->pos < w->range)
					check_id(w, static_cast<uint32_t>(w->pos++));
				else
					enter(w, Stage::State);
				break;
			case Stage::State:
				check_state(w);
				break;
			case Stage::Search:
				if (!w->queue.empty())
					search_one(w);
				else
					enter(w, Stage::Unreached);
				break;
			case Stage::Unreached:
				if (w->pos < w->range)
				{
					uint32_t id = static_cast<uint32_t>(w->pos++);
					if (w->tids.test(id) && !w->visited.test(id))
						report(w, HANNOY_PROBLEM_UNREACHABLE, id,
						       "item %u is live but not reachable from entry point %u at layer 0",
						       id, w->state.entry_point);
				}
				else
					enter(w, Stage::Done);
				break;
			case Stage::Done:
				break;
		}
	}
}

/* Starts a walk: the read transaction, the state record, the id range. */
std::unique_ptr<HannoyInspect>
begin_walk(hannoy::Store &s, bool verify)
{
	auto w = std::make_unique<HannoyInspect>();
	w->store = &s;
	w->verify = verify;
	w->txn = std::make_unique<hannoy::Txn>(s.env(), true);
	s.reload_meta(w->txn->get());
	w->stage = verify ? Stage::Vectors : Stage::LinkLists;
	w->quantizer = s.quantizer();
	try
	{
		w->state = s.read_state(w->txn->get());
	}
	catch (const hannoy::Error &e)
	{
		/* a check reports a broken state record; statistics cannot do without it */
		if (!verify || e.status() != HANNOY_ERR_CORRUPT)
			throw;
		report(w.get(), HANNOY_PROBLEM_MALFORMED, -1, "%s", e.what());
		w->stage = Stage::Done;
		return w;
	}
	if (!verify)
		return w;

	/* ids at or beyond next_id are reported, never indexed: bound the arrays by both */
	bool           heap = w->quantizer && w->quantizer->heap_rerank();
	hannoy::Cursor last(w->txn->get(), heap ? s.dbi_codes : s.dbi_vectors);
	MDB_val        key, data;
	uint64_t       max_id = 0;
	/* an index without vectors (format 7): its codes stand for them */
	if (last.get(key, data, MDB_LAST) && key.mv_size == (heap ? 4u : 5u))
		max_id = uint64_t(hannoy::decode_id(key)) + 1;
	w->range = std::min(w->state.next_id, max_id);
	w->vectors.reset(w->range);
	w->codes.reset(w->range);
	w->tids.reset(w->range);
	w->tombstones.reset(w->range);
	w->visited.reset(w->range);
	w->layers.assign(w->range, 0);
	return w;
}

} // namespace

extern "C" HannoyStatus
hannoy_inspect_begin(HannoyEnv *env, bool verify, HannoyInspect **inspect, HannoyError *err)
{
	*inspect = nullptr;
	return hannoy::run_guarded(
	    err,
	    [&] { *inspect = begin_walk(*reinterpret_cast<hannoy::Store *>(env), verify).release(); });
}

extern "C" HannoyStatus
hannoy_inspect_step(HannoyInspect *w, uint32_t budget_ms, HannoyProblem *problems,
                    uint32_t capacity, uint32_t *count, bool *done, HannoyError *err)
{
	*count = 0;
	*done = false;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           if (w->pending.size() < capacity)
			                           run_slice(w, Clock::now() +
			                                            std::chrono::milliseconds(budget_ms));
		                           uint32_t n = 0;
		                           while (n < capacity && !w->pending.empty())
		                           {
			                           problems[n++] = w->pending.front();
			                           w->pending.pop_front();
		                           }
		                           *count = n;
		                           *done = w->stage == Stage::Done && w->pending.empty();
	                           });
}

extern "C" HannoyStatus
hannoy_inspect_summary(HannoyInspect *w, HannoyInspectSummary *summary, HannoyError *err)
{
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    *summary = w->summary;
		    HannoyStats &st = summary->stats;
		    st.items = w->state.items;
		    st.unindexed = w->state.unindexed;
		    st.deleted = w->state.deleted;
		    MDB_stat free_stat;
		    MDB_env *e = w->store->env();
		    int      rc = hannoy::guarded(
		             e, [&] { return mdb_stat(w->txn->get(), w->store->dbi_free, &free_stat); });
		    if (rc != 0)
			    hannoy::throw_lmdb(rc, "counting free ids");
		    st.free_ids = free_stat.ms_entries;
		    w->store->count_codes(w->txn->get(), &st);
		    st.next_id = w->state.next_id;
		    st.max_level = w->state.max_level;
		    st.entry_point = w->state.entry_point;
		    MDB_envinfo info;
		    MDB_stat    mst;
		    rc = hannoy::guarded(e,
		                         [&]
		                         {
			                         mdb_env_info(e, &info);
			                         return mdb_env_stat(e, &mst);
		                         });
		    if (rc != 0)
			    hannoy::throw_lmdb(rc, "reading the environment's state");
		    st.used_pages = static_cast<uint64_t>(info.me_last_pgno) + 1;
		    struct stat fst;
		    st.file_bytes = stat((w->store->path() + "/data.mdb").c_str(), &fst) == 0
		                        ? static_cast<uint64_t>(fst.st_size)
		                        : st.used_pages * mst.ms_psize;
	    });
}

namespace
{

/* LMDB's free list: a database of its own, the first handle (the mdb_stat tool reads it so). */
constexpr MDB_dbi FREE_DBI = 0;

/* Appends a part to hannoy_env_space's answer. */
void
add_part(HannoySpacePart *parts, uint32_t *count, const std::string &name, uint64_t entries,
         uint64_t pages, uint64_t bytes)
{
	if (*count >= HANNOY_SPACE_PARTS)
		throw hannoy::Error(HANNOY_ERR_CORRUPT,
		                    "the sidecar has more databases than a hannoy sidecar can have");
	HannoySpacePart &p = parts[(*count)++];
	std::snprintf(p.name, sizeof(p.name), "%s", name.c_str());
	p.entries = entries;
	p.pages = pages;
	p.bytes = bytes;
}

/* The pages of a database as mdb_stat counts them. */
uint64_t
pages_of(const MDB_stat &st)
{
	return static_cast<uint64_t>(st.ms_branch_pages) + st.ms_leaf_pages + st.ms_overflow_pages;
}

/* The size of file 'name' of the sidecar (0 when it is missing). */
uint64_t
file_size(const hannoy::Store &s, const char *name)
{
	struct stat st;
	return stat((s.path() + "/" + name).c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

/* A free-list walk's cursor, closed however the walk ends. */
struct FreeListCursor
{
	MDB_cursor *cur = nullptr;
	~FreeListCursor()
	{
		if (cur != nullptr)
			mdb_cursor_close(cur);
	}
};

/*
 * The pages LMDB's free list lists in read transaction 'txn': each record
 * (keyed by the transaction that freed them, in rising order) holds their
 * count, then their numbers.  Damage is HANNOY_ERR_CORRUPT: keys that do not
 * rise, or a count the record cannot hold.
 */
uint64_t
free_list_pages(MDB_txn *txn, MDB_env *e)
{
	FreeListCursor c;
	int            rc = hannoy::guarded(e, [&] { return mdb_cursor_open(txn, FREE_DBI, &c.cur); });
	if (rc != 0)
		hannoy::throw_lmdb(rc, "reading LMDB's free list");
	uint64_t pages = 0;
	size_t   last = 0;
	bool     first = true;
	for (;;)
	{
		MDB_val key, data;
		rc = hannoy::guarded(e, [&] { return mdb_cursor_get(c.cur, &key, &data, MDB_NEXT); });
		if (rc == MDB_NOTFOUND)
			break;
		if (rc != 0)
			hannoy::throw_lmdb(rc, "reading LMDB's free list");
		hannoy::check_span(e, key.mv_data, key.mv_size);
		hannoy::check_span(e, data.mv_data, data.mv_size);
		size_t id, n;
		if (key.mv_size != sizeof(id) || data.mv_size < sizeof(n))
			throw hannoy::Error(
			    HANNOY_ERR_CORRUPT,
			    "the sidecar is damaged (LMDB's free list holds a malformed record)");
		std::memcpy(&id, key.mv_data, sizeof(id));
		std::memcpy(&n, data.mv_data, sizeof(n));
		if ((!first && id <= last) || n > data.mv_size / sizeof(n) - 1)
			throw hannoy::Error(
			    HANNOY_ERR_CORRUPT,
			    "the sidecar is damaged (LMDB's free list holds a malformed record)");
		first = false;
		last = id;
		pages += n;
	}
	return pages;
}

/*
 * Fills 'parts' from one read snapshot of 's'; false when a commit came
 * between the snapshot and the reading of LMDB's page count, which then
 * belongs to a later snapshot, unless 'last_try' (then the pages the later
 * commits added show as "lmdb unaccounted": LMDB's page count never falls).
 */
bool
space_of(hannoy::Store &s, HannoySpacePart *parts, uint32_t *count, bool last_try)
{
	*count = 0;
	MDB_env    *e = s.env();
	hannoy::Txn txn(e, true);
	MDB_envinfo info;
	MDB_stat    names;
	MDB_dbi     main_dbi;
	int         rc = hannoy::guarded(e,
	                                 [&]
	                                 {
                                 mdb_env_info(e, &info);
                                 int r = mdb_dbi_open(txn.get(), nullptr, 0, &main_dbi);
                                 return r != 0 ? r : mdb_stat(txn.get(), main_dbi, &names);
                             });
	if (rc != 0)
		hannoy::throw_lmdb(rc, "reading the environment's state");
	/* mdb_env_info reads the newest meta page, which may be a later commit's */
	if (info.me_last_txnid != mdb_txn_id(txn.get()) && !last_try)
		return false;
	const uint64_t psize = names.ms_psize;
	const uint64_t used = static_cast<uint64_t>(info.me_last_pgno) + 1;

	/* the named databases, listed by the unnamed one */
	std::vector<std::string> dbs;
	{
		hannoy::Cursor cur(txn.get(), main_dbi);
		MDB_val        key, data;
		for (bool more = cur.get(key, data, MDB_FIRST); more; more = cur.get(key, data, MDB_NEXT))
			dbs.emplace_back(static_cast<const char *>(key.mv_data), key.mv_size);
	}
	uint64_t counted = 0;
	for (const std::string &name : dbs)
	{
		MDB_dbi  dbi;
		MDB_stat st;
		rc = hannoy::guarded(e,
		                     [&]
		                     {
			                     int r = mdb_dbi_open(txn.get(), name.c_str(), 0, &dbi);
			                     return r != 0 ? r : mdb_stat(txn.get(), dbi, &st);
		                     });
		if (rc != 0)
			hannoy::throw_lmdb(rc, "reading a database's size");
		add_part(parts, count, name, st.ms_entries, pages_of(st), pages_of(st) * psize);
		counted += pages_of(st);
	}

	/* LMDB's own pages: two meta pages, the names, the free list and its pages */
	MDB_stat freelist;
	rc = hannoy::guarded(e, [&] { return mdb_stat(txn.get(), FREE_DBI, &freelist); });
	if (rc != 0)
		hannoy::throw_lmdb(rc, "reading LMDB's free list");
	const uint64_t free_pages = free_list_pages(txn.get(), e);
	add_part(parts, count, "lmdb meta pages", 0, 2, 2 * psize);
	add_part(parts, count, "lmdb names", names.ms_entries, pages_of(names),
	         pages_of(names) * psize);
	add_part(parts, count, "lmdb free list", freelist.ms_entries, pages_of(freelist),
	         pages_of(freelist) * psize);
	add_part(parts, count, "lmdb free pages", 0, free_pages, free_pages * psize);
	counted += 2 + pages_of(names) + pages_of(freelist) + free_pages;
	if (counted > used)
		throw hannoy::Error(HANNOY_ERR_CORRUPT, "the sidecar is damaged (its parts take " +
		                                            std::to_string(counted) + " pages, LMDB uses " +
		                                            std::to_string(used) + ")");
	if (counted < used)
		add_part(parts, count, "lmdb unaccounted", 0, used - counted, (used - counted) * psize);
	const uint64_t data_bytes = file_size(s, "data.mdb");
	add_part(parts, count, "file tail", 0, 0,
	         data_bytes > used * psize ? data_bytes - used * psize : 0);
	add_part(parts, count, "lock file", 0, 0, file_size(s, "lock.mdb"));
	return true;
}

} // namespace

extern "C" HannoyStatus
hannoy_env_space(HannoyEnv *env, HannoySpacePart *parts, uint32_t *count, HannoyError *err)
{
	*count = 0;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store &s = *reinterpret_cast<hannoy::Store *>(env);
		                           /* a busy writer may commit between; a few tries, then as is */
		                           for (int attempt = 0; !space_of(s, parts, count, attempt == 19);
		                                attempt++)
			                           ;
	                           });
}

extern "C" void
hannoy_inspect_free(HannoyInspect *w)
{
	delete w;
}

extern "C" const char *
hannoy_problem_name(HannoyProblemKind kind)
{
	switch (kind)
	{
		case HANNOY_PROBLEM_UNREACHABLE:
			return "unreachable";
		case HANNOY_PROBLEM_DANGLING_LINK:
			return "dangling link";
		case HANNOY_PROBLEM_DEGREE:
			return "degree over bound";
		case HANNOY_PROBLEM_SELF_LINK:
			return "self link";
		case HANNOY_PROBLEM_MISSING_LAYER:
			return "missing layer";
		case HANNOY_PROBLEM_ORPHAN_LINKS:
			return "orphan links";
		case HANNOY_PROBLEM_TID_MAP:
			return "tid map mismatch";
		case HANNOY_PROBLEM_COUNTER:
			return "counter mismatch";
		case HANNOY_PROBLEM_ENTRY_POINT:
			return "entry point";
		case HANNOY_PROBLEM_MALFORMED:
			return "malformed record";
		case HANNOY_PROBLEM_SIDECAR_MISSING:
			return "sidecar missing";
		case HANNOY_PROBLEM_META_MISMATCH:
			return "metapage/sidecar mismatch";
	}
	return "unknown";
}
