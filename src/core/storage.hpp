/*
 * storage.hpp
 *	  The sidecar on LMDB: RAII environment and transactions, the named
 *	  databases, and big-endian key encodings.
 */
#ifndef HANNOY_STORAGE_HPP
#define HANNOY_STORAGE_HPP

#include "core_guard.hpp"

#include <lmdb.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "distance.hpp"
#include "hannoy/hannoy.h"
#include "pagecheck.hpp"
#include "quantizer.hpp"

namespace hannoy
{

/*
 * An error the C ABI turns into a status code and a message, with the
 * operating system's error number behind it when there is one.
 */
class Error : public std::runtime_error
{
  public:
	Error(HannoyStatus status, const std::string &message, int sys_errno = 0)
	    : std::runtime_error(message), status_(status), sys_errno_(sys_errno)
	{
	}
	HannoyStatus
	status() const
	{
		return status_;
	}
	int
	sys_errno() const
	{
		return sys_errno_;
	}

  private:
	HannoyStatus status_;
	int          sys_errno_;
};

/* Throws an Error describing LMDB return code 'rc' during 'what'. */
[[noreturn]] void throw_lmdb(int rc, const char *what);

/*
 * The fault guard (fault.cpp, DESIGN.md "Damaged sidecars").  What it knows
 * of one environment's map, kept in the environment's Store (the LMDB user
 * context is the Store; map_bounds_of reaches the bounds): the reserved
 * address range and, below it, where the file ended when it was last looked
 * at (a sound record never lies beyond the file's end).
 */
struct MapBounds
{
	uintptr_t lo = 0, hi = 0;   /* the map's address range, 0 before it is known */
	uintptr_t used_end = 0;     /* where the file last ended in the map */
	size_t    page_size = 4096; /* LMDB's page size */
	bool      damaged = false;  /* a guarded call faulted or failed an LMDB assertion */
	/* the newest meta page the last file check saw (a file rewritten in place differs) */
	uint64_t seen_txnid = 0, seen_last_pg = 0, seen_roots[2] = {0, 0};
	bool     seen = false;
};

/* What a guarded LMDB call returns when it faulted or failed an assertion (no LMDB code). */
constexpr int GUARD_FAULT_BUS = -30700, GUARD_FAULT_SEGV = -30701, GUARD_ASSERT = -30702;

/* Installs the fault handlers (once) and LMDB's assert callback on 'env'. */
void guard_environment(MDB_env *env);
/* The message of the last LMDB assertion a guarded call caught. */
const char *guard_assert_message();
/* Runs fn(arg), an LMDB call, under the guard of 'env' (see fault.cpp). */
int guarded_call(MDB_env *env, int (*fn)(void *), void *arg);
/* Runs 'f' (returning an LMDB code; owning nothing with a destructor) under the guard of 'env'. */
template <class F>
int
guarded(MDB_env *env, F &&f)
{
	using Fn = std::remove_reference_t<F>;
	return guarded_call(
	    env, [](void *p) -> int { return (*static_cast<Fn *>(p))(); }, &f);
}

/*
 * Throws HANNOY_ERR_CORRUPT unless the 'bytes' bytes at 'p', a record
 * LMDB handed out through a transaction of 'env', lie inside the file (or
 * outside the map: a write transaction's own pages), so that reading them
 * can never fault.  Two compares, and one fstat when the file has grown.
 */
void check_span_slow(MDB_env *env, const void *p, size_t bytes);
/* Records where LMDB mapped the file of 'env' (after opening it or moving its map). */
void note_map_of(MDB_env *env);
/* The map bounds of 'env', a Store's environment (its user context); nullptr for any other. */
inline MapBounds *map_bounds_of(MDB_env *env);
inline void
check_span(MDB_env *env, const void *p, size_t bytes)
{
	const MapBounds *b = map_bounds_of(env);
	uintptr_t        at = reinterpret_cast<uintptr_t>(p);
	if (b != nullptr && at >= b->lo && at < b->hi && (at + bytes > b->used_end || at + bytes < at))
		check_span_slow(env, p, bytes);
}

/* Highest layer a node may get; far above what 2^32 items need. */
constexpr int MAX_LEVEL = 15;

/* Mutable graph state, one record in the meta database. */
struct GraphState
{
	uint64_t items = 0;      /* live graph nodes */
	uint64_t unindexed = 0;  /* unindexed rows */
	uint64_t deleted = 0;    /* tombstones */
	uint64_t next_id = 0;    /* first id never used */
	int32_t  max_level = -1; /* level of the entry point, -1 when empty */
	uint32_t entry_point = 0;
};

/* Big-endian key of an item id. */
struct IdKey
{
	unsigned char bytes[4];
	explicit IdKey(uint32_t id);
	MDB_val
	val()
	{
		return MDB_val{sizeof(bytes), bytes};
	}
};

/* A big-endian item id, then one byte: the layer or the vector piece. */
struct IdByteKey
{
	unsigned char bytes[5];
	IdByteKey(uint32_t id, uint32_t byte);
	MDB_val
	val()
	{
		return MDB_val{sizeof(bytes), bytes};
	}
};

/* Key of (item id, layer) in the links database. */
using LinkKey = IdByteKey;

/* Key of piece 'piece' of the vector of item 'id'. */
using VectorKey = IdByteKey;

/* Big-endian 6-byte key of a heap TID. */
struct TidKey
{
	unsigned char bytes[6];
	explicit TidKey(HannoyTid tid);
	MDB_val
	val()
	{
		return MDB_val{sizeof(bytes), bytes};
	}
};

uint32_t  decode_id(const MDB_val &v);
HannoyTid decode_tid(const MDB_val &v);

/*
 * The kind of a staged row's value (a replica's `staged` database: the kind
 * byte, then the vector for a row with one), checked: kind 0 with exactly
 * 'vector_bytes' (non-zero) bytes after it, kind 1 or 2 with nothing after
 * it; anything else is HANNOY_ERR_CORRUPT.
 */
uint8_t staged_kind(const MDB_val &data, size_t vector_bytes);

class Store;

/*
 * A transaction that aborts unless committed.  On a Store's environment it
 * counts as one of the store's open transactions while it lives (the map
 * is never moved under it), and a write transaction first gives the map
 * room to grow (Store::before_write).
 */
class Txn
{
  public:
	Txn(MDB_env *env, bool read_only);
	~Txn();
	Txn(const Txn &) = delete;
	Txn &operator=(const Txn &) = delete;
	void commit();
	void abort();
	MDB_txn *
	get() const
	{
		return txn_;
	}

  private:
	MDB_txn *txn_ = nullptr;
	Store   *store_ = nullptr; /* counted in the store's open transactions */
	bool     write_ = false;   /* a write transaction (Store::write_ended when it ends) */
};

/*
 * Begins a transaction on a Store's environment ('parent' none): counts it
 * among the store's open transactions, adopts a map another process grew,
 * and for a write transaction first gives the map room to grow.  The
 * caller calls Store::txn_ended after ending it (Txn does both).
 */
MDB_txn *begin_txn(Store *store, MDB_env *env, bool read_only);

/* Flushes a file or a directory ('directory') to disk (dirty.cpp). */
void sync_path(const std::string &path, bool directory);

/* Removes every dirty marker in sidecar directory 'dir' (dirty.cpp). */
void remove_dirty_markers(const std::string &dir);

/*
 * Something that keeps a read transaction of a store between core calls (a
 * scan) and can end it when asked, to go on later in a new one: a map that
 * must move (grow) asks every holder on its thread first.
 */
class SnapshotHolder
{
  public:
	virtual void release_snapshot() = 0;

  protected:
	~SnapshotHolder() = default;
};

/*
 * A cursor closed with its scope (read cursors must close before their txn
 * ends).  MDB_NEXT must hand out a key above the last one: a damaged tree
 * can hand keys out of order or in a cycle, and every walk must end.
 */
class Cursor
{
  public:
	Cursor(MDB_txn *txn, MDB_dbi dbi);
	~Cursor();
	Cursor(const Cursor &) = delete;
	Cursor &operator=(const Cursor &) = delete;
	/* Positions with 'op'; false at the end or when not found. */
	bool get(MDB_val &key, MDB_val &data, MDB_cursor_op op);
	MDB_cursor *
	get() const
	{
		return cur_;
	}

  private:
	static constexpr size_t NO_KEY = ~size_t(0);
	MDB_cursor             *cur_ = nullptr;
	unsigned char           last_[16]; /* the last key handed out (hannoy's keys are short) */
	size_t                  last_size_ = NO_KEY; /* NO_KEY: none, or longer than last_ */
};

/*
 * A walk over one database that goes on where it stopped, across calls: the
 * first step opens a cursor on the first record, each later one moves to
 * the next; reset() ends the walk.
 */
class DatabaseWalk
{
  public:
	/* The next record of 'dbi' (opened in 'txn' on the first step); false at the end. */
	bool
	step(MDB_txn *txn, MDB_dbi dbi, MDB_val &key, MDB_val &data)
	{
		if (!cursor_)
		{
			cursor_ = std::make_unique<Cursor>(txn, dbi);
			return cursor_->get(key, data, MDB_FIRST);
		}
		return cursor_->get(key, data, MDB_NEXT);
	}
	void
	reset()
	{
		cursor_.reset();
	}

  private:
	std::unique_ptr<Cursor> cursor_;
};

/*
 * How a vector is cut into records of the vectors database (format 3).
 *
 * A vector that fits a B-tree leaf is one record.  A larger one would take
 * LMDB overflow pages of its own and waste the end of the last one (a
 * 784-float vector, 3,136 bytes, takes a whole 4 KiB page), so it is cut
 * into pieces that leaf pages pack several to a page: 'pieces' records of
 * 'piece_bytes' bytes, the last one taking the rest.  Pieces are multiples
 * of SEGMENT_ALIGN bytes, so distances computed piece by piece equal the
 * SQL operators' bit for bit.  Rewrites and deletes touch single leaf pages,
 * which LMDB's free list always has, unlike the runs of contiguous pages
 * multi-page records need.  Part of the on-disk format.
 */
class VectorLayout
{
  public:
	/* The most pieces a vector is cut into. */
	static constexpr uint32_t MAX_PIECES = 32;

	VectorLayout() = default;
	/* 'trailer': bytes each record carries after its piece (a checksum, format 4) */
	VectorLayout(HannoyMetric metric, uint32_t dims, size_t trailer = 0);

	uint32_t
	pieces() const
	{
		return pieces_;
	}
	size_t
	bytes() const
	{
		return bytes_;
	}
	size_t
	piece_offset(uint32_t piece) const
	{
		return piece * piece_bytes_;
	}
	size_t
	piece_size(uint32_t piece) const
	{
		return piece + 1 < pieces_ ? piece_bytes_ : bytes_ - piece_bytes_ * (pieces_ - 1);
	}
	/* Bytes of the record of piece 'piece': the piece and its trailer. */
	size_t
	record_size(uint32_t piece) const
	{
		return piece_size(piece) + trailer_;
	}
	size_t
	trailer() const
	{
		return trailer_;
	}
	/* The pieces of a whole vector at 'whole', as pointers into it, into 'out'. */
	void
	split(const void *whole, const void **out) const
	{
		for (uint32_t i = 0; i < pieces_; i++)
			out[i] = static_cast<const char *>(whole) + piece_offset(i);
	}
	/* Distance from a vector in pieces to a whole one ('query'). */
	double distance(const void *const *a, const void *query) const;
	/* Distance between two vectors in pieces. */
	double distance(const void *const *a, const void *const *b) const;
	/* Dot product of two float vectors in pieces (a.a: the squared norm cosine uses). */
	float dot(const void *const *a, const void *const *b) const;
	/* Asks the CPU to start loading the first 'bytes' of a vector in pieces (none when a[0] is
	 * nullptr). */
	void
	prefetch(const void *const *a, size_t bytes) const
	{
		if (a[0] == nullptr)
			return;
		for (uint32_t i = 0; i < pieces_ && bytes > 0; i++)
		{
			const char *p = static_cast<const char *>(a[i]);
			size_t      end = std::min(bytes, piece_size(i));
			for (size_t off = 0; off < end; off += 64)
				__builtin_prefetch(p + off);
			bytes -= end;
		}
	}
	/* Copies a vector in pieces into 'out' (bytes() bytes). */
	void gather(const void *const *a, void *out) const;

  private:
	uint32_t            pieces_ = 1;
	size_t              piece_bytes_ = 0;
	size_t              bytes_ = 0;
	size_t              trailer_ = 0;
	size_t              unit_ = 1; /* bytes per element of a Segment */
	uint32_t            dims_ = 0;
	DistanceFn          whole_ = nullptr;
	SegmentedDistanceFn segmented_ = nullptr;
};

/*
 * Bytes of every piece but the last of a vector of 'bytes' bytes whose
 * records carry 'trailer' bytes more (see VectorLayout).
 */
size_t vector_piece_bytes(size_t bytes, size_t trailer = 0);

/*
 * Record checksums (format 4, DESIGN.md "Storage format"): CRC32C of the
 * key and the value, stored as 4 bytes after the value.  Scans never read
 * them; hannoy_verify checks them.
 */
constexpr size_t CHECKSUM_BYTES = 4;
uint32_t         crc32c(uint32_t crc, const void *data, size_t n);
/* The checksum of record (key, value[0 .. size)). */
uint32_t record_checksum(const MDB_val &key, const void *value, size_t size);
/* True when the last CHECKSUM_BYTES of 'data' are the checksum of (key, the rest). */
bool checksum_holds(const MDB_val &key, const MDB_val &data);

/*
 * Pointers into one committed LMDB snapshot, kept between read transactions.
 *
 * A read transaction sees the last committed snapshot, and LMDB never
 * reuses a page that snapshot reaches, so a vector or neighbour list found
 * through one read transaction stays at the same address for every later
 * read transaction with the same transaction id: as long as nothing is
 * committed, scans skip the B-tree lookups of the nodes they visit again.
 * A commit changes the id and so empties the cache (in O(1): entries carry
 * the generation they were filled in).  A scan arms it; read transactions
 * of the arming thread on the armed snapshot use it (an insert's search on
 * that snapshot too), write transactions and other snapshots bypass it.
 */
class SnapshotCache
{
  public:
	/* What is known of one item in the armed snapshot. */
	struct Entry
	{
		const void *vector; /* nullptr: no vector; else the vector, or its piece table */
		const void *code;   /* nullptr: no code; else the code (format 5) */
		/*
		 * The layer-0 neighbour list: encoded as stored (KNOWN_LINKS0,
		 * links0_size bytes), or decoded and checked (KNOWN_DECODED0,
		 * links0_size ids), nullptr when there is none.
		 */
		const void *links0;
		HannoyTid   tid; /* NO_TID: none (a tombstone) */
		uint32_t    links0_size;
		uint32_t    generation; /* the entry is valid when it equals the cache's */
		uint8_t     known;      /* KNOWN_* bits */
	};
	static constexpr uint8_t   KNOWN_VECTOR = 1;
	static constexpr uint8_t   KNOWN_LINKS0 = 2;
	static constexpr uint8_t   KNOWN_TID = 4;
	static constexpr uint8_t   KNOWN_CODE = 8;
	static constexpr uint8_t   KNOWN_DECODED0 = 16;
	static constexpr HannoyTid NO_TID = ~HannoyTid(0);

	/* Makes the cache serve read transaction 'txn', emptying it if 'txn' sees another snapshot. */
	void arm(MDB_txn *txn);
	/* Forgets the armed snapshot (the map moved: every pointer is stale). */
	void
	disarm()
	{
		armed_ = false;
	}
	/* True when lookups through 'txn' may use the cache. */
	bool
	serves(MDB_txn *txn) const
	{
		/* only the arming thread: concurrent inserts of one store must not share it */
		return armed_ && mdb_txn_id(txn) == txn_id_ && pthread_equal(owner_, pthread_self());
	}
	/* The entry of 'id', reset if stale; nullptr when 'id' is beyond the cache's bound. */
	Entry *entry(uint32_t id);
	/* Room for a table of 'n' piece pointers, valid while the armed snapshot is. */
	const void **piece_table(uint32_t n);
	/*
	 * The decoded neighbour list of 'id' at 'layer' (above 0: few nodes, but
	 * every scan's descent reads them) kept in the armed snapshot, nullptr
	 * when none is; keep_upper_links keeps one, once it passed its checks (at
	 * most MAX_UPPER lists).
	 */
	const std::vector<uint32_t> *upper_links(uint32_t id, int layer) const;
	void keep_upper_links(uint32_t id, int layer, const std::vector<uint32_t> &list);
	/*
	 * A copy of decoded layer-0 list 'list', valid while the armed snapshot
	 * is, nullptr when the snapshot's room for lists is used up (at most
	 * MAX_LIST_IDS ids): a walk that meets a node again, in this scan or a
	 * later one of the same snapshot, then neither decodes nor checks it.
	 */
	const uint32_t *keep_list(const std::vector<uint32_t> &list);
	/* The graph state record of the armed snapshot, if read already. */
	const GraphState *
	state() const
	{
		return have_state_ ? &state_ : nullptr;
	}
	void
	set_state(const GraphState &state)
	{
		state_ = state;
		have_state_ = true;
	}

  private:
	static constexpr size_t BLOCK = 4096;         /* entries per block */
	static constexpr size_t MAX_ITEMS = 1u << 21; /* ids cached: 100 MB of entries at most */

	static constexpr size_t TABLE_BLOCK = 64 * 1024; /* piece pointers per block */
	static constexpr size_t MAX_UPPER = 64 * 1024;   /* upper lists kept per snapshot */
	static constexpr size_t LIST_BLOCK = 64 * 1024;  /* ids per block of kept lists */
	static constexpr size_t MAX_LIST_IDS = 8u << 20; /* 32 MB of kept lists at most */

	std::vector<std::unique_ptr<Entry[]>>        blocks_;
	std::vector<std::unique_ptr<const void *[]>> tables_; /* piece tables of this snapshot */
	std::unordered_map<uint64_t, std::vector<uint32_t>>
	                                         upper_; /* upper_links; key id << 8 | layer */
	std::vector<std::unique_ptr<uint32_t[]>> lists_; /* blocks of kept layer-0 lists */
	size_t                                   table_block_ = 0, table_used_ = 0;
	size_t                                   list_block_ = 0, list_used_ = 0;
	size_t                                   txn_id_ = 0;
	uint32_t                                 generation_ = 0;
	bool                                     armed_ = false;
	pthread_t                                owner_{}; /* the thread that armed it */
	GraphState                               state_;
	bool                                     have_state_ = false;
};

/*
 * Copies of stored vectors that outlive their transaction: what the
 * searches of one process's inserts read, kept for its later inserts (each
 * insert's search reads about a thousand vectors, most of them read by the
 * insert before, and every read is a B-tree descent).  A stored vector
 * changes only when VACUUM frees its id and an insert takes the id again,
 * so a copy holds while the sidecar's count of freed ids (Store::read_frees)
 * is the one the copies were taken under; open() empties the copies when it
 * is not, or when next_id went back.  Only committed vectors are kept: the
 * copies are filled from read transactions, and from write transactions
 * with every vector but the ones they wrote.  One thread (the first to
 * open them) uses them, at most MAX_BYTES of copies; others bypass them.
 * Not in an index without vectors (its pieces are decoded codes), nor for
 * vectors in pieces (see Store::vector_copies).  A second set holds codes,
 * which change under the same rule, in indexes with vectors
 * (Store::code_copies).
 */
class VectorCopies
{
  public:
	/*
	 * Makes the copies serve a transaction whose count of freed ids is
	 * 'frees' and whose next_id is 'next_id'; false for any thread but the
	 * owner's, and when next_id is beyond MAX_IDS: the caller must then not
	 * use them.
	 */
	bool open(const VectorLayout &layout, uint64_t frees, uint64_t next_id);
	/* The same for copies of codes of 'bytes' bytes (add_whole only). */
	bool open_codes(size_t bytes, uint64_t frees, uint64_t next_id);
	/* The copy of the vector of 'id', nullptr when there is none. */
	const char *
	find(uint32_t id) const
	{
		return id < slots_.size() && slots_[id] != 0 ? block_data(slots_[id] - 1) : nullptr;
	}
	/* Keeps a copy of the vector of 'id' given by its pieces, if there is room. */
	void add(uint32_t id, const void *const *pieces);
	/* The same for a vector given whole ('vector': the bytes open() was given). */
	void add_whole(uint32_t id, const void *vector);
	/* Bytes the copies take now, slots included. */
	size_t bytes() const;

	static constexpr size_t MAX_BYTES = size_t(32) << 20; /* copies and slots, per store */
	/* no copies in a store with more ids: their slots would take over a quarter of MAX_BYTES */
	static constexpr uint64_t MAX_IDS = MAX_BYTES / 4 / sizeof(uint32_t);

  private:
	static constexpr size_t BLOCK_BYTES = size_t(1) << 20;

	const char *
	block_data(uint32_t slot) const
	{
		return blocks_[slot / per_block_].get() + size_t(slot % per_block_) * stride_;
	}
	void clear();
	/* open() for records of 'bytes' bytes given as 'layout' */
	bool open_sized(const VectorLayout &layout, size_t bytes, uint64_t frees, uint64_t next_id);
	/* Room for the copy of 'id', nullptr when it has one or there is no room. */
	char *room_for(uint32_t id);

	std::atomic<int>                     owner_state_{0}; /* 0: unclaimed, 1: claiming, 2: owned */
	pthread_t                            owner_{};
	VectorLayout                         layout_;
	size_t                               bytes_ = 0;     /* bytes of a copy */
	size_t                               stride_ = 0;    /* bytes from one copy to the next */
	uint32_t                             per_block_ = 0; /* copies per block */
	uint32_t                             used_ = 0;      /* copies kept */
	uint64_t                             frees_ = 0, next_id_ = 0;
	bool                                 valid_ = false;
	std::vector<uint32_t>                slots_; /* by id: 0 none, else the copy's slot + 1 */
	std::vector<std::unique_ptr<char[]>> blocks_;
};

/* An open environment: the object behind the C ABI's HannoyEnv. */
class Store
{
  public:
	Store(const std::string &path, const HannoyEnvConfig &config, bool create,
	      const HannoyMeta *meta);
	~Store();
	Store(const Store &) = delete;
	Store &operator=(const Store &) = delete;

	MDB_env *
	env() const
	{
		return env_;
	}
	const HannoyMeta &
	meta() const
	{
		return meta_;
	}
	size_t
	vector_bytes() const
	{
		return layout_.bytes();
	}
	const VectorLayout &
	layout() const
	{
		return layout_;
	}
	/* True when the records carry checksums (format 4 and later). */
	bool
	checksummed() const
	{
		return meta_.format_version >= 4;
	}
	/* True when the sidecar has a codes database (format 5 and later). */
	bool
	has_codes_db() const
	{
		return meta_.format_version >= 5;
	}
	/*
	 * The quantizer of the codes, or nullptr when the sidecar has none (formats
	 * 3 and 4, an index built without codes): searches then walk on vectors.
	 */
	std::shared_ptr<const Quantizer>
	quantizer() const
	{
		return std::atomic_load(&quantizer_);
	}
	/*
	 * Looks for a quantizer record a build committed since this store read the
	 * meta database (a handle opened during another backend's build); cheap
	 * when there is one already.
	 */
	void refresh_quantizer(MDB_txn *txn) const;
	/*
	 * Fills the codes' part of 'stats': how many codes 'txn' sees, the bytes
	 * of one, the quantizer's kind and record bytes (all 0 without codes).
	 */
	void count_codes(MDB_txn *txn, HannoyStats *stats) const;
	/* Stores the quantizer record (the build, once it fitted one). */
	void write_quantizer(MDB_txn *txn, const Quantizer &q);
	/* The code of 'id' (a pointer into the map, valid until 'txn' ends); false when it has none. */
	bool code_of(MDB_txn *txn, uint32_t id, const uint8_t **out) const;
	/* Stores the code of 'id'; 'append': no higher id has one. */
	void put_code(MDB_txn *txn, uint32_t id, const uint8_t *code, bool append) const;
	/*
	 * Removes the code of 'id'; false when it had none.  Looks only when the
	 * store knows a quantizer (a repair refreshes it when it starts).
	 */
	bool delete_code(MDB_txn *txn, uint32_t id) const;
	/* Bytes after each vector piece and neighbour list: the checksum, or none (format 3). */
	size_t
	trailer() const
	{
		return checksummed() ? CHECKSUM_BYTES : 0;
	}
	uint32_t
	max_links(int layer) const
	{
		return layer == 0 ? meta_.m0 : meta_.options.m;
	}
	/*
	 * How full a neighbour list is kept at 'layer': the heuristic's choice is
	 * topped up with the nearest candidates it passed over (keepPruned-
	 * Connections), which raises recall per hop for true metrics.  The metric
	 * table's FILL says how far: inner product, which is no metric, fills
	 * only half, since its nearest candidates are the longest vectors and
	 * lists full of them leave short vectors without in-links.
	 */
	uint32_t
	fill_links(int layer) const
	{
		return max_links(layer) / hannoy_metric_info(meta_.metric).fill;
	}
	const std::string &
	path() const
	{
		return path_;
	}

	/* Re-reads the meta record (dims may have been set by another backend). */
	void       reload_meta(MDB_txn *txn);
	void       write_meta(MDB_txn *txn, const HannoyMeta &meta);
	GraphState read_state(MDB_txn *txn) const;
	GraphState read_state_record(MDB_txn *txn) const;
	void       write_state(MDB_txn *txn, const GraphState &state) const;

	/*
	 * Makes node 'id' of row 'tid' a tombstone in write transaction 'txn':
	 * its TID mappings go, so scans never return it, while its vector and
	 * links stay for searches to walk through until a repair frees the id.
	 */
	void tombstone(MDB_txn *txn, HannoyTid tid, uint32_t id, GraphState &state) const;

	/*
	 * The pieces of the vector of 'id' into out[0 .. layout().pieces() - 1]
	 * (pointers into the map, valid until 'txn' ends); false when it has none.
	 * In an index without vectors, the pieces of its decoded code, in one of
	 * DECODED_SLOTS buffers of the calling thread: valid until that many
	 * more calls.
	 */
	bool vector_pieces(MDB_txn *txn, uint32_t id, const void **out) const;
	/*
	 * Whether 'id' has a vector.  Asked of its code where the sidecar has
	 * codes: an index without vectors (format 7, DESIGN.md "Heap
	 * re-ranking") keeps only those, and in one with both, the build and
	 * inserts write a row's code with its vector and VACUUM removes them
	 * together; a code is one record where a vector may be several.
	 */
	bool
	has_vector(MDB_txn *txn, uint32_t id) const
	{
		if (heap_rerank() || code_bytes_.load(std::memory_order_acquire) != 0)
		{
			const uint8_t *code;
			return code_of(txn, id, &code);
		}
		const void *pieces[VectorLayout::MAX_PIECES];
		return vector_pieces(txn, id, pieces);
	}
	/*
	 * True when the sidecar stores no vectors (format 7, the quantizer
	 * record's flag): vector_pieces and copy_vector then give the decoded
	 * code, put_vector and delete_vector do nothing, and scans ask their
	 * caller for exact distances.  Known once the quantizer is.
	 */
	bool
	heap_rerank() const
	{
		return heap_rerank_.load(std::memory_order_acquire);
	}
	/* Copies the vector of 'id' into 'out' (vector_bytes() bytes); false when it has none. */
	bool copy_vector(MDB_txn *txn, uint32_t id, void *out) const;
	/* Distance from the vector of 'id' to 'query'; +inf when it has none. */
	double
	distance_to(MDB_txn *txn, uint32_t id, const void *query) const
	{
		const void *pieces[VectorLayout::MAX_PIECES];
		return vector_pieces(txn, id, pieces) ? layout_.distance(pieces, query) : HUGE_VAL;
	}
	/* Stores the vector of 'id'; 'append' says no higher id has one (a new id). */
	void put_vector(MDB_txn *txn, uint32_t id, const void *v, bool append) const;
	/* Stores 'count' vectors of the consecutive new ids from 'first' (a build batch). */
	void put_vectors(MDB_txn *txn, uint32_t first, size_t count, const void *vectors) const;
	/* Removes the vector of 'id'; false when it had none. */
	bool delete_vector(MDB_txn *txn, uint32_t id) const;
	/*
	 * Calls f(id, pieces) for every stored vector, in id order, with its
	 * piece pointers (valid until 'txn' ends, the table only during the call);
	 * throws when a record is malformed.
	 */
	template <class F> void for_each_vector(MDB_txn *txn, F f) const;
	/* Neighbours of (id, layer) into 'out'; empty when the node has no such layer. */
	void links(MDB_txn *txn, uint32_t id, int layer, std::vector<uint32_t> &out) const;
	/*
	 * The layer-0 neighbours of 'id', '*count' of them: where the snapshot
	 * cache keeps the list, a pointer to it (valid while the snapshot is
	 * armed); else the list decoded into 'buf' (links), and buf's data.
	 */
	const uint32_t *links0(MDB_txn *txn, uint32_t id, std::vector<uint32_t> &buf,
	                       size_t *count) const;
	void put_links(MDB_txn *txn, uint32_t id, int layer, const std::vector<uint32_t> &ids,
	               unsigned flags = 0) const;
	/* Raises the bound on ids in neighbour lists to cover 'id', a new item's. */
	void
	note_id(uint64_t id) const
	{
		uint64_t bound = id_bound_.load(std::memory_order_relaxed);
		while (id + 1 > bound && !id_bound_.compare_exchange_weak(bound, id + 1))
		{
		}
	}
	/* True when 'id' is a tombstone (removed by VACUUM, not yet repaired around). */
	bool is_deleted(MDB_txn *txn, uint32_t id) const;
	/* TID of an item; false for tombstones and unknown ids. */
	bool tid_of(MDB_txn *txn, uint32_t id, HannoyTid *tid) const;

	void sync(bool force);

	/*
	 * Throws HANNOY_ERR_CORRUPT when data.mdb ends before the root pages its
	 * newest meta page names, or a meta page is not LMDB's or names the
	 * wrong transaction, or a guarded call found the sidecar damaged: run
	 * at open and whenever a cached environment is used again, before any
	 * transaction, so the usual truncation is found before LMDB reads
	 * through the map (DESIGN.md "Damaged sidecars").  One stat.
	 */
	void check_file(int64_t known_size = -1);
	/*
	 * Records where LMDB mapped the file: after opening it and after every
	 * mdb_env_set_mapsize (move_map), so that the fault guard and the
	 * record checks know the current map.
	 */
	void note_map();
	/* The fault guard's view of the map (the environment's user context is this Store). */
	MapBounds *
	bounds()
	{
		return &bounds_;
	}

	/*
	 * One finished scan kept for the next one (scan.cpp): a query's scan
	 * then starts without allocating, and renews its reset read transaction
	 * in the reader slot it keeps instead of taking a new one.  Scans of one
	 * store are created and freed on one thread (a backend's).
	 */
	void *
	take_idle_scan()
	{
		void *scan = idle_scan_;
		idle_scan_ = nullptr;
		return scan;
	}
	/* Keeps 'scan' (freed by 'free_scan' with the store); false when one is kept already. */
	bool
	keep_idle_scan(void *scan, void (*free_scan)(void *))
	{
		if (idle_scan_ != nullptr)
			return false;
		idle_scan_ = scan;
		idle_scan_free_ = free_scan;
		return true;
	}

	/*
	 * The memory map (DESIGN.md "The LMDB environment").  It is sized from
	 * the data with room to grow (config.map_room, or half the data if
	 * more), and moved to a larger size before a write transaction once
	 * less than half that room is left, or when another process grew the
	 * file past it.  Moving it invalidates every pointer into it, so it
	 * moves only while this process has no transaction open on the store:
	 * scans (SnapshotHolders) are asked to end theirs first, and the
	 * snapshot cache is emptied.
	 */
	/*
	 * Called before a write transaction begins: marks the sidecar dirty
	 * (dirty.cpp) and grows the map if its room runs low.
	 */
	void before_write();
	/*
	 * The dirty marker (dirty.cpp): mark_dirty creates this store's marker,
	 * durably, unless it has one, and counts the write transaction;
	 * note_synced removes it once every commit of this store is on disk
	 * (after a second, unless 'closing', so that a busy writer does not pay
	 * two syncs per transaction), unless a write transaction began since
	 * the count 'writes_before' (dirty_writes) was read before the sync;
	 * clear_dirty_on_close syncs and removes it as the store closes.
	 */
	void     mark_dirty();
	uint64_t dirty_writes() const;
	void     note_synced(bool closing, uint64_t writes_before);
	/*
	 * marker_covers: this store's marker, younger than a second, stands for
	 * its commits not yet synced, so a commit need not sync now (an operating
	 * system crash rebuilds the sidecar; a process crash keeps the page
	 * cache).  False without a marker (no boot id to write in one), and once
	 * it is a second old: the next sync removes it.
	 */
	bool marker_covers() const;
	void clear_dirty_on_close();
	/*
	 * Removes the marker if every write transaction of this store is ended
	 * and synced, and the marker is a second old.
	 */
	void release_marker();
	/* Called when a write transaction of this store ended (committed or not). */
	void write_ended();
	/* Grows the map to hold the data (another process grew it); throws if it cannot move. */
	void adopt_growth();
	/* Makes room for 'bytes' more data before a long read transaction (the build's) is opened. */
	void reserve(uint64_t bytes);
	/* Bytes the map covers now. */
	uint64_t map_size() const;
	/* How many times this handle's map has moved: pointers into it from before a move dangle. */
	uint64_t
	map_moves() const
	{
		return map_moves_.load(std::memory_order_relaxed);
	}
	/* Counting this process's open transactions of the store (see begin_txn). */
	void txn_began();
	void txn_ended();
	/* Holders asked to end their snapshot before the map moves (only those of the calling thread).
	 */
	void add_holder(SnapshotHolder *holder);
	void remove_holder(SnapshotHolder *holder);
	/* Names a failed write's real cause: EIO with a full file system is ENOSPC. */
	[[noreturn]] void throw_write_error(int rc, const char *what) const;

	/* Called when a write transaction began: its page checks start afresh. */
	void
	write_began()
	{
		page_check_.begin();
		dirty_open_.fetch_add(1);
	}
	/*
	 * Before LMDB writes or deletes 'key' of 'dbi' ('append': with
	 * MDB_APPEND) in write transaction 'txn': throws HANNOY_ERR_CORRUPT, and
	 * marks the sidecar damaged, when a committed page the write may change
	 * is not sound (pagecheck.cpp).
	 */
	void check_write(MDB_txn *txn, MDB_dbi dbi, const MDB_val &key, bool append);

	/* Lets lookups through read transaction 'txn' use (and fill) the snapshot cache. */
	void
	arm_cache(MDB_txn *txn) const
	{
		cache_.arm(txn);
	}
	/*
	 * The copies of vectors that outlive transactions (VectorCopies), made
	 * to serve 'txn' of graph state 'state'; nullptr for other threads than
	 * the one using them, in an index without vectors, and when vectors are
	 * cut into pieces.
	 */
	VectorCopies *vector_copies(MDB_txn *txn, const GraphState &state) const;
	/*
	 * The same for codes: copies of the codes read in a read transaction
	 * 'txn' whose state is 'state' (an insert's walk on codes; its linking's
	 * write transaction only looks them up, before it takes an id); nullptr
	 * when the sidecar has no codes or no vectors (heap re-ranking), or the
	 * calling thread may not use them.
	 */
	VectorCopies *code_copies(MDB_txn *txn, const GraphState &state) const;
	/* How many ids VACUUM has freed in this sidecar, ever (0 when none was). */
	uint64_t read_frees(MDB_txn *txn) const;
	/* Counts 'n' more freed ids, in the caller's write transaction. */
	void add_frees(MDB_txn *txn, uint64_t n) const;
	/*
	 * How many rows were inserted whose 8-bit codes do not describe them
	 * (insert.cpp, choose_on_codes: they walk on their vectors, and their
	 * codes, clamped, would mislead a choice made on codes), ever; counts
	 * one more in the caller's write transaction.
	 */
	uint64_t read_far_codes(MDB_txn *txn) const;
	void     add_far_code(MDB_txn *txn) const;

	MDB_dbi dbi_meta, dbi_vectors, dbi_links, dbi_tids, dbi_items, dbi_unindexed, dbi_deleted,
	    dbi_free;
	MDB_dbi dbi_codes = 0;  /* format 5 and later */
	MDB_dbi dbi_staged = 0; /* a sidecar staged from WAL (replica.cpp) */
	/* TIDs redo removed while a replica is rebuilt from its table (replica.cpp) */
	MDB_dbi dbi_seeding = 0;

	/* True when the sidecar was staged from WAL: it has the staged rows database. */
	bool
	has_staged() const
	{
		return staged_found_;
	}
	/* Creates the staged rows database and writes the applied-LSN stamp (a new replica). */
	void create_staged(uint64_t lsn);
	/* The applied-LSN stamp of a sidecar staged from WAL (0 when it has none). */
	uint64_t read_applied(MDB_txn *txn) const;
	/* Records that WAL up to 'lsn' is applied, in the caller's write transaction. */
	void write_applied(MDB_txn *txn, uint64_t lsn) const;
	/*
	 * A replica being rebuilt from its table (replica.cpp, "seeding"): the
	 * database of TIDs redo removed meanwhile, and a meta record saying so.
	 */
	void create_seeding(MDB_txn *txn);
	/* True while the replica is being rebuilt from its table. */
	bool read_seeding(MDB_txn *txn) const;
	/* Ends the rebuild: the removed TIDs and the meta record go. */
	void end_seeding(MDB_txn *txn) const;

	/*
	 * Unflushed rows (insert.cpp, DESIGN.md "WAL before sidecar"): while an
	 * insert mode is set, each row an insert records is noted in the
	 * "unflushed" database with the server lifetime and the WAL position
	 * its heap row's WAL ends before.  unflushed_db opens that database,
	 * creating it when 'create' (in a write transaction of its own); false
	 * when the sidecar has none.
	 */
	bool    unflushed_db(bool create);
	MDB_dbi dbi_unflushed = 0;
	/* the insert mode of hannoy_env_set_unflushed: 0 lifetime is off */
	uint64_t unflushed_lifetime = 0;
	uint64_t unflushed_lsn = 0;
	uint64_t unflushed_flushed = 0; /* trims entries of this lifetime up to here, then 0 */
	std::chrono::steady_clock::time_point unflushed_trimmed; /* the last trim that walked */

  private:
	/* The most named databases an environment has (LMDB's maxdbs). */
	static constexpr unsigned DATABASES = 16;

	/* Opens the named databases; 'format', when creating, says whether codes get one. */
	void open_databases(bool create, uint32_t format);
	void set_meta(const HannoyMeta &meta);
	/* Writes record 'key' of the meta database: 'value', then its checksum when records have one.
	 */
	void put_meta_record(MDB_txn *txn, MDB_val key, const void *value, size_t size) const;
	/* The count in meta record 'name' (0 when absent; 'what' names it in errors), and adding to it.
	 */
	uint64_t read_count(MDB_txn *txn, const char *name, const char *what) const;
	void     add_count(MDB_txn *txn, const char *name, const char *what, uint64_t n) const;
	/* Bytes of data the environment holds (its last page), as last committed. */
	uint64_t used_bytes() const;
	/* The room the map keeps beyond 'used' bytes of data. */
	uint64_t room_for(uint64_t used) const;
	/* Moves the map to 'size' bytes if no transaction is open (after asking holders); false if one
	 * is. */
	bool move_map(uint64_t size);
	/*
	 * Reads, decodes and checks the list of (id, layer) into 'out': from
	 * the encoded list cache entry 'e' knows (layer 0), else from the
	 * B-tree, noting it in 'e' when given; throws when it is malformed.
	 */
	void read_links(MDB_txn *txn, uint32_t id, int layer, SnapshotCache::Entry *e,
	                std::vector<uint32_t> &out) const;

	MDB_env              *env_ = nullptr;
	std::atomic<uint64_t> map_moves_{0}; /* see map_moves */
	MapBounds             bounds_;       /* the fault guard's, reached through the user context */
	PageCheck             page_check_;   /* of the write transactions */
	const char           *db_names_[DATABASES] = {nullptr}; /* by handle, for the page check */
	std::string           path_;
	HannoyEnvConfig       config_;
	HannoyMeta            meta_{};
	VectorLayout          layout_;
	mutable SnapshotCache cache_;
	mutable VectorCopies  copies_;      /* see vector_copies */
	mutable VectorCopies  code_copies_; /* see code_copies */
	/* the codes' quantizer (format 5), read with the meta record or found later */
	mutable std::shared_ptr<const Quantizer> quantizer_;
	bool                                     codes_db_found_ = false;
	bool                                     staged_found_ = false;
	/* the quantizer's flag: no vectors, re-ranking from the heap (format 7) */
	mutable std::atomic<bool> heap_rerank_{false};
	/* the quantizer's code size, for the record checks of code_of (0: no quantizer yet) */
	mutable std::atomic<size_t> code_bytes_{0};
	/* the largest next_id any state record read showed (ids in lists lie below it) */
	mutable std::atomic<uint64_t> id_bound_{0};
	void                         *idle_scan_ = nullptr;
	void (*idle_scan_free_)(void *) = nullptr;
	/* this store's dirty marker ("" when none) and when it was made */
	mutable std::mutex                    dirty_mu_;
	uint64_t                              dirty_writes_ = 0;  /* write transactions begun */
	uint64_t                              synced_writes_ = 0; /* of those, the ones synced */
	std::atomic<int>                      dirty_open_{0};     /* write transactions open */
	std::string                           dirty_marker_;
	std::chrono::steady_clock::time_point dirty_since_;

	struct Holder
	{
		SnapshotHolder *holder;
		pthread_t       thread;
	};
	mutable std::mutex  map_lock_; /* guards open_txns_, holders_ and moves of the map */
	int                 open_txns_ = 0;
	std::vector<Holder> holders_;
	uint64_t            map_size_ = 0;
	size_t              page_size_ = 4096;
};

/*
 * One user context per environment: the Store (Txn, begin_txn and the
 * fault guard all read it).  The guard's bounds live in the Store.
 */
inline MapBounds *
map_bounds_of(MDB_env *env)
{
	Store *store = env != nullptr ? static_cast<Store *>(mdb_env_get_userctx(env)) : nullptr;
	return store != nullptr ? store->bounds() : nullptr;
}

/* Reads piece number and id of a key of the vectors database; false when malformed. */
bool decode_vector_key(const MDB_val &key, uint32_t *id, uint32_t *piece);

template <class F>
void
Store::for_each_vector(MDB_txn *txn, F f) const
{
	Cursor      cur(txn, dbi_vectors);
	MDB_val     key, data;
	const void *pieces[VectorLayout::MAX_PIECES];
	uint32_t    n = layout_.pieces(), have = 0, current = 0;
	for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
	{
		uint32_t id, piece;
		if (!decode_vector_key(key, &id, &piece) || piece != have || (have > 0 && id != current) ||
		    data.mv_size != layout_.record_size(piece))
			throw Error(HANNOY_ERR_CORRUPT, "malformed record in the vectors database");
		current = id;
		pieces[have++] = data.mv_data;
		if (have == n)
		{
			f(current, static_cast<const void *const *>(pieces));
			have = 0;
		}
	}
	if (have != 0)
		throw Error(HANNOY_ERR_CORRUPT, "vector " + std::to_string(current) + " lacks pieces");
}

/* Puts key/value, throwing on failure. */
void put(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val data, unsigned flags = 0);
/* Puts key/value under the guard; LMDB's return code. */
int put_rc(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags);
/* Deletes key; false when absent. */
bool del(MDB_txn *txn, MDB_dbi dbi, MDB_val key);
/* Gets key; false when absent. */
bool get(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val &data);

/*
 * The piece pointers of the vectors one transaction returned, by id: what
 * an insert's search read, for its linking (StoredEditor::trust_seen).
 * Pointers into the map of a committed snapshot hold until the next commit
 * after it: LMDB reuses no page that snapshot reaches before then, and the
 * map moves only between transactions.
 */
class SeenVectors
{
  public:
	void
	clear()
	{
		index_.clear();
		pieces_.clear();
		snapshot = 0;
	}
	/* The pieces of 'id', nullptr when it was not seen. */
	const void *const *
	find(uint32_t id) const
	{
		auto it = index_.find(id);
		return it == index_.end() ? nullptr : &pieces_[it->second];
	}
	void
	add(uint32_t id, const void *const *pieces, uint32_t n)
	{
		if (index_.emplace(id, static_cast<uint32_t>(pieces_.size())).second)
			pieces_.insert(pieces_.end(), pieces, pieces + n);
	}
	/* Notes that the pointers came from read transaction 'txn' of 's'. */
	void
	taken_in(const Store &s, MDB_txn *txn)
	{
		snapshot = mdb_txn_id(txn);
		map_moves = s.map_moves();
	}
	/*
	 * True when write transaction 'txn' of 's' began right on the snapshot
	 * the pointers came from (its id is the snapshot's plus one: no commit
	 * came between, so VACUUM freed no id and no insert reused one since)
	 * and the map has not moved since (a write may grow it first).
	 */
	bool
	hold_in(const Store &s, MDB_txn *txn) const
	{
		return snapshot != 0 && mdb_txn_id(txn) == snapshot + 1 && s.map_moves() == map_moves;
	}

  private:
	size_t   snapshot = 0; /* the read transaction's id; 0: none, never trusted */
	uint64_t map_moves = 0;

	std::unordered_map<uint32_t, uint32_t> index_; /* id -> its first piece in pieces_ */
	std::vector<const void *>              pieces_;
};

/* The graph as stored in LMDB, seen through one transaction (see graph.hpp). */
class StoredGraph
{
  public:
	StoredGraph(const Store &store, MDB_txn *txn) : store_(store), txn_(txn) {}
	/* Distance from a stored vector to the query; +inf for a missing item. */
	double
	distance(const void *query, uint32_t id) const
	{
		const void *p[VectorLayout::MAX_PIECES];
		return pieces(id, p) ? store_.layout().distance(p, query) : HUGE_VAL;
	}
	double
	distance_between(uint32_t a, uint32_t b) const
	{
		const void *pa[VectorLayout::MAX_PIECES], *pb[VectorLayout::MAX_PIECES];
		if (!pieces(a, pa) || !pieces(b, pb))
			return HUGE_VAL;
		return store_.layout().distance(pa, pb);
	}
	void
	neighbors(uint32_t id, int layer, std::vector<uint32_t> &out) const
	{
		store_.links(txn_, id, layer, out);
	}
	/*
	 * In an index without vectors, keeps each decoded code for the rest of
	 * this accessor's life instead of decoding it at every distance (an
	 * insert's neighbour selection measures the same candidates against
	 * each other many times; 1-bit codes decode through three inverse
	 * rotations).  Only while no code changes under the accessor: a read
	 * transaction, or a write transaction before it edits codes.
	 */
	void
	keep_decoded(bool yes)
	{
		keep_ = yes && store_.heap_rerank();
		decoded_.clear();
	}
	/*
	 * Notes in 'seen' the pieces of every stored vector this accessor reads
	 * (an insert's search measures many nodes more than once, and its
	 * linking reads them again); also serves repeated reads from there.
	 * Not in an index without vectors, whose pieces are decoded codes.
	 */
	void
	remember_in(SeenVectors *seen)
	{
		seen_ = store_.heap_rerank() ? nullptr : seen;
	}
	/*
	 * Reads vectors from 'copies' first and keeps there the ones it reads
	 * from the B-tree (Store::vector_copies): only in a read transaction,
	 * whose vectors are all committed.
	 */
	void
	use_copies(VectorCopies *copies)
	{
		copies_ = copies;
	}

  private:
	bool
	pieces(uint32_t id, const void **out) const
	{
		if (copies_ != nullptr)
		{
			if (const char *copy = copies_->find(id))
			{
				store_.layout().split(copy, out);
				return true;
			}
		}
		if (seen_ != nullptr)
		{
			uint32_t n = store_.layout().pieces();
			if (const void *const *p = seen_->find(id))
			{
				std::copy(p, p + n, out);
				return true;
			}
			if (!store_.vector_pieces(txn_, id, out))
				return false;
			seen_->add(id, out, n);
			if (copies_ != nullptr)
				copies_->add(id, out);
			return true;
		}
		if (copies_ != nullptr)
		{
			if (!store_.vector_pieces(txn_, id, out))
				return false;
			copies_->add(id, out);
			return true;
		}
		if (!keep_)
			return store_.vector_pieces(txn_, id, out);
		auto it = decoded_.find(id);
		if (it == decoded_.end())
		{
			std::string buf(store_.vector_bytes(), '\0');
			if (!store_.copy_vector(txn_, id, &buf[0]))
				buf.clear();
			it = decoded_.emplace(id, std::move(buf)).first;
		}
		if (it->second.empty())
			return false;
		store_.layout().split(it->second.data(), out);
		return true;
	}

	const Store                                      &store_;
	MDB_txn                                          *txn_;
	bool                                              keep_ = false;
	mutable std::unordered_map<uint32_t, std::string> decoded_;
	SeenVectors                                      *seen_ = nullptr;   /* see remember_in */
	VectorCopies                                     *copies_ = nullptr; /* see use_copies */
};

/*
 * The stored graph as searches walk it when the sidecar has codes: the
 * distance to a node is the query's distance to its code (to its vector
 * when a node lacks one).  Its distances choose an insert's neighbours
 * only from CODES_MIN_DIMS dimensions on, where rounding errors average
 * out, and only while no row's code is far from its vector (insert.cpp,
 * choose_on_codes; DESIGN.md "Insert").
 */
class CodedGraph
{
  public:
	/* 'form': the query as prepare() made it ready; distance() gets the float query itself */
	CodedGraph(const Store &store, MDB_txn *txn, const Quantizer &q, const QueryForm &form)
	    : store_(store), txn_(txn), q_(q), form_(form)
	{
	}
	/*
	 * Takes codes from 'copies' (Store::code_copies, made to serve this
	 * read transaction) and keeps there the ones it reads from the B-tree.
	 */
	void
	use_copies(VectorCopies *copies)
	{
		copies_ = copies;
	}
	double
	distance(const void *query, uint32_t id) const
	{
		const uint8_t *code;
		if (copies_ != nullptr)
		{
			if (const char *copy = copies_->find(id))
				return q_.distance(reinterpret_cast<const uint8_t *>(copy), form_);
		}
		if (store_.code_of(txn_, id, &code))
		{
			if (copies_ != nullptr)
				copies_->add_whole(id, code);
			return q_.distance(code, form_);
		}
		return store_.distance_to(txn_, id, query);
	}
	void
	neighbors(uint32_t id, int layer, std::vector<uint32_t> &out) const
	{
		store_.links(txn_, id, layer, out);
	}

  private:
	const Store     &store_;
	MDB_txn         *txn_;
	const Quantizer &q_;
	const QueryForm &form_;
	VectorCopies    *copies_ = nullptr; /* see use_copies */
};

/*
 * Distances between stored rows measured on their decoded 8-bit codes, for
 * an insert's neighbour choice and prunes in an index of CODES_MIN_DIMS
 * dimensions or more whose new row walks on codes (DESIGN.md "Insert"): a
 * code is one B-tree read of a byte per dimension where a vector is
 * several reads of four bytes per dimension.  Each code is decoded once for
 * this object's life: only while no code changes under it (an insert's
 * search, or its linking, which writes only the new node's code before it
 * measures).  Float vectors only (vector_bytes is dims floats).
 */
class DecodedCodes
{
  public:
	DecodedCodes(const Store &store, MDB_txn *txn, const Quantizer &q)
	    : store_(store), txn_(txn), q_(q)
	{
	}
	/* Takes codes from 'copies' (Store::code_copies serving a read transaction), never adds. */
	void
	use_copies(const VectorCopies *copies)
	{
		copies_ = copies;
	}
	/* The decoded code of 'id', nullptr when it has none. */
	const float *
	decoded(uint32_t id)
	{
		auto it = decoded_.find(id);
		if (it == decoded_.end())
		{
			std::vector<float> out;
			const uint8_t     *code = nullptr;
			if (const char *copy = copies_ != nullptr ? copies_->find(id) : nullptr)
				code = reinterpret_cast<const uint8_t *>(copy);
			else if (!store_.code_of(txn_, id, &code))
				code = nullptr;
			out.resize(q_.dims());
			/* a row without a code (CodedGraph::distance allows one) is measured on its vector */
			if (code != nullptr)
				q_.decode(code, out.data());
			else if (!store_.copy_vector(txn_, id, out.data()))
				out.clear();
			it = decoded_.emplace(id, std::move(out)).first;
		}
		return it->second.empty() ? nullptr : it->second.data();
	}
	double
	distance_between(uint32_t a, uint32_t b)
	{
		const float *va = decoded(a), *vb = decoded(b);
		if (va == nullptr || vb == nullptr)
			return HUGE_VAL;
		const void *pa[VectorLayout::MAX_PIECES];
		store_.layout().split(va, pa);
		return store_.layout().distance(pa, vb);
	}

  private:
	const Store                                     &store_;
	MDB_txn                                         *txn_;
	const Quantizer                                 &q_;
	const VectorCopies                              *copies_ = nullptr;
	std::unordered_map<uint32_t, std::vector<float>> decoded_;
};

/* The level of a new node: -ln(U) / ln(m) with U drawn from (seed, salt). */
int draw_level(uint64_t seed, uint64_t salt, uint32_t m);

/*
 * Inserts row 'tid' in write transaction 'txn' with the graph state
 * 'state' (insert.cpp): a node linked with neighbours searched in the same
 * transaction, or an unindexed row when 'vector' is nullptr; whatever the
 * TID named before goes (forget_row).  The replica linker's insert.
 */
void insert_in_txn(Store &s, MDB_txn *txn, GraphState &state, HannoyTid tid, const void *vector,
                   uint8_t unindexed_kind);

/*
 * Removes what row 'tid' is in the graph, in write transaction 'txn': its
 * node becomes a tombstone, or its unindexed entry goes; nothing when the
 * TID names neither.
 */
void forget_row(Store &s, MDB_txn *txn, HannoyTid tid, GraphState &state);
/* forget_row that keeps the TID's staged row (a rebuild's end: replica.cpp). */
void forget_graph_row(Store &s, MDB_txn *txn, HannoyTid tid, GraphState &state);

} // namespace hannoy

#endif /* HANNOY_STORAGE_HPP */
