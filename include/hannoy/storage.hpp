/*
 * storage.hpp
 *	  The sidecar on LMDB: RAII environment and transactions, the named
 *	  databases, and big-endian key encodings.
 */
#ifndef HANNOY_STORAGE_HPP
#define HANNOY_STORAGE_HPP

#include "hannoy/core_guard.hpp"

#include <lmdb.h>
#include <pthread.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "hannoy/distance.hpp"
#include "hannoy/hannoy.h"

namespace hannoy
{

/* An error the C ABI turns into a status code and a message. */
class Error : public std::runtime_error
{
  public:
	Error(HannoyStatus status, const std::string &message)
	    : std::runtime_error(message), status_(status)
	{
	}
	HannoyStatus
	status() const
	{
		return status_;
	}

  private:
	HannoyStatus status_;
};

/* Throws an Error describing LMDB return code 'rc' during 'what'. */
[[noreturn]] void throw_lmdb(int rc, const char *what);

/* Unindexed row kinds (value of the unindexed database). */
constexpr uint8_t UNINDEXED_NULL = 1; /* NULL vector: NULL distance */
constexpr uint8_t UNINDEXED_NAN = 2;  /* zero vector under cosine: NaN distance */

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

/* Big-endian key of (item id, layer) in the links database. */
struct LinkKey
{
	unsigned char bytes[5];
	LinkKey(uint32_t id, int layer);
	MDB_val
	val()
	{
		return MDB_val{sizeof(bytes), bytes};
	}
};

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

/* A transaction that aborts unless committed. */
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
};

/* A cursor closed with its scope (read cursors must close before their txn ends). */
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
	MDB_cursor *cur_ = nullptr;
};

/*
 * Pointers into one committed LMDB snapshot, kept between read transactions.
 *
 * A read transaction sees the last committed snapshot, and LMDB never
 * reuses a page that snapshot reaches, so a vector or neighbour list found
 * through one read transaction stays at the same address for every later
 * read transaction with the same transaction id: as long as nothing is
 * committed, scans skip the B-tree lookups of the nodes they visit again.
 * A commit changes the id and so empties the cache (in O(1): entries carry
 * the generation they were filled in).  Only read transactions a scan arms
 * use it; write transactions and older snapshots bypass it.
 */
class SnapshotCache
{
  public:
	/* What is known of one item in the armed snapshot. */
	struct Entry
	{
		const void *vector; /* nullptr: the item has no vector */
		const void *links0; /* layer-0 neighbour list, encoded */
		HannoyTid   tid;    /* NO_TID: none (a tombstone) */
		uint32_t    links0_size;
		uint32_t    generation; /* the entry is valid when it equals the cache's */
		uint8_t     known;      /* KNOWN_VECTOR | KNOWN_LINKS0 | KNOWN_TID */
	};
	static constexpr uint8_t   KNOWN_VECTOR = 1;
	static constexpr uint8_t   KNOWN_LINKS0 = 2;
	static constexpr uint8_t   KNOWN_TID = 4;
	static constexpr HannoyTid NO_TID = ~HannoyTid(0);

	/* Makes the cache serve read transaction 'txn', emptying it if 'txn' sees another snapshot. */
	void arm(MDB_txn *txn);
	/* True when lookups through 'txn' may use the cache. */
	bool
	serves(MDB_txn *txn) const
	{
		/* only the arming thread: concurrent inserts of one store must not share it */
		return armed_ && mdb_txn_id(txn) == txn_id_ && pthread_equal(owner_, pthread_self());
	}
	/* The entry of 'id', reset if stale; nullptr when 'id' is beyond the cache's bound. */
	Entry *entry(uint32_t id);
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
	static constexpr size_t MAX_ITEMS = 1u << 21; /* ids cached: 80 MB of entries at most */

	std::vector<std::unique_ptr<Entry[]>> blocks_;
	size_t                                txn_id_ = 0;
	uint32_t                              generation_ = 0;
	bool                                  armed_ = false;
	pthread_t                             owner_{}; /* the thread that armed it */
	GraphState                            state_;
	bool                                  have_state_ = false;
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
	DistanceFn
	distance() const
	{
		return distance_;
	}
	size_t
	vector_bytes() const
	{
		return vector_bytes_;
	}
	uint32_t
	max_links(int layer) const
	{
		return layer == 0 ? meta_.m0 : meta_.m;
	}
	/*
	 * How full a neighbour list is kept at 'layer': the heuristic's choice is
	 * topped up with the nearest candidates it passed over (keepPruned-
	 * Connections), which raises recall per hop for true metrics.  Not for
	 * inner product, which is no metric: its nearest candidates are the
	 * longest vectors, and lists full of them leave short vectors without
	 * in-links.
	 */
	uint32_t
	fill_links(int layer) const
	{
		return meta_.metric == HANNOY_METRIC_IP ? max_links(layer) / 2 : max_links(layer);
	}
	bool
	durable() const
	{
		return config_.durable;
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

	/* Vectors one value of the vectors database holds (see chunk_vectors_for). */
	uint32_t
	vectors_per_chunk() const
	{
		return chunk_;
	}
	/* The stored vector of an item, or nullptr; valid until 'txn' ends. */
	const void *vector(MDB_txn *txn, uint32_t id) const;
	/* Stores the vector of 'id'; 'append' says no higher id has one (a new id). */
	void put_vector(MDB_txn *txn, uint32_t id, const void *v, bool append) const;
	/* Stores 'count' vectors of the consecutive new ids from 'first' (a build batch). */
	void put_vectors(MDB_txn *txn, uint32_t first, size_t count, const void *vectors) const;
	/* Removes the vector of 'id'; false when it had none. */
	bool delete_vector(MDB_txn *txn, uint32_t id) const;
	/*
	 * Calls f(id, vector) for each vector stored under one record (key, data)
	 * of the vectors database; false when the record is malformed.
	 */
	template <class F> bool unpack_vectors(const MDB_val &key, const MDB_val &data, F f) const;
	/* Calls f(id, vector) for every stored vector, in id order; throws when one is malformed. */
	template <class F> void for_each_vector(MDB_txn *txn, F f) const;
	/* Neighbours of (id, layer) into 'out'; empty when the node has no such layer. */
	void links(MDB_txn *txn, uint32_t id, int layer, std::vector<uint32_t> &out) const;
	void put_links(MDB_txn *txn, uint32_t id, int layer, const std::vector<uint32_t> &ids,
	               unsigned flags = 0) const;
	/* True when 'id' is a tombstone (removed by VACUUM, not yet repaired around). */
	bool is_deleted(MDB_txn *txn, uint32_t id) const;
	/* TID of an item; false for tombstones and unknown ids. */
	bool tid_of(MDB_txn *txn, uint32_t id, HannoyTid *tid) const;

	void sync(bool force);

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

	/* Lets lookups through read transaction 'txn' use (and fill) the snapshot cache. */
	void
	arm_cache(MDB_txn *txn) const
	{
		cache_.arm(txn);
	}

	MDB_dbi dbi_meta, dbi_vectors, dbi_links, dbi_tids, dbi_items, dbi_unindexed, dbi_deleted,
	    dbi_free;

  private:
	void open_databases(bool create);
	void set_meta(const HannoyMeta &meta);

	MDB_env              *env_ = nullptr;
	std::string           path_;
	HannoyEnvConfig       config_;
	HannoyMeta            meta_{};
	DistanceFn            distance_ = nullptr;
	size_t                vector_bytes_ = 0;
	uint32_t              chunk_ = 1;       /* vectors per record */
	size_t                chunk_bytes_ = 0; /* bytes of a record when chunk_ > 1 */
	mutable SnapshotCache cache_;
	void                 *idle_scan_ = nullptr;
	void (*idle_scan_free_)(void *) = nullptr;
};

/*
 * Vectors per record of the vectors database for vectors of 'bytes' bytes.
 * A vector that fits one 4 KiB page gets a record of its own.  A larger one
 * would waste much of its last overflow page (1,024 floats, 4,096 bytes,
 * take two pages), so such vectors are packed several to a record, a header
 * of presence bits first, in the fewest pages per vector that records of at
 * most 64 KiB allow.  Part of the on-disk format.
 */
uint32_t chunk_vectors_for(size_t bytes);

/* Bytes before the first vector of a multi-vector record: presence bits (LE u32), zero u32. */
constexpr size_t CHUNK_HEADER = 8;

/* Reads the presence bits of a multi-vector record (little-endian). */
inline uint32_t
chunk_bits(const void *record)
{
	const unsigned char *p = static_cast<const unsigned char *>(record);
	return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

template <class F>
bool
Store::unpack_vectors(const MDB_val &key, const MDB_val &data, F f) const
{
	if (key.mv_size != 4)
		return false;
	uint32_t first = decode_id(key);
	if (chunk_ == 1)
	{
		if (data.mv_size != vector_bytes_)
			return false;
		f(first, static_cast<const void *>(data.mv_data));
		return true;
	}
	if (data.mv_size != chunk_bytes_ || uint64_t(first) * chunk_ > UINT32_MAX)
		return false;
	const unsigned char *p = static_cast<const unsigned char *>(data.mv_data);
	uint32_t             bits = chunk_bits(p);
	if (chunk_ < 32 && (bits >> chunk_) != 0)
		return false;
	for (uint32_t slot = 0; slot < chunk_; slot++)
		if (bits & (uint32_t(1) << slot))
			f(first * chunk_ + slot,
			  static_cast<const void *>(p + CHUNK_HEADER + size_t(slot) * vector_bytes_));
	return true;
}

template <class F>
void
Store::for_each_vector(MDB_txn *txn, F f) const
{
	Cursor  cur(txn, dbi_vectors);
	MDB_val key, data;
	for (bool ok = cur.get(key, data, MDB_FIRST); ok; ok = cur.get(key, data, MDB_NEXT))
		if (!unpack_vectors(key, data, f))
			throw Error(HANNOY_ERR_CORRUPT, "malformed record in the vectors database");
}

/* Puts key/value, throwing on failure. */
void put(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val data, unsigned flags = 0);
/* Deletes key; false when absent. */
bool del(MDB_txn *txn, MDB_dbi dbi, MDB_val key);
/* Gets key; false when absent. */
bool get(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val &data);

/* The graph as stored in LMDB, seen through one transaction (see graph.hpp). */
class StoredGraph
{
  public:
	StoredGraph(const Store &store, MDB_txn *txn)
	    : store_(store), txn_(txn), distance_(store.distance()), dims_(store.meta().dims)
	{
	}
	/* Distance from a stored vector to the query; +inf for a missing item. */
	double
	distance(const void *query, uint32_t id) const
	{
		const void *v = store_.vector(txn_, id);
		return v == nullptr ? HUGE_VAL : distance_(v, query, dims_);
	}
	double
	distance_between(uint32_t a, uint32_t b) const
	{
		const void *va = store_.vector(txn_, a);
		const void *vb = store_.vector(txn_, b);
		return (va == nullptr || vb == nullptr) ? HUGE_VAL : distance_(va, vb, dims_);
	}
	void
	neighbors(uint32_t id, int layer, std::vector<uint32_t> &out) const
	{
		store_.links(txn_, id, layer, out);
	}

  private:
	const Store &store_;
	MDB_txn     *txn_;
	DistanceFn   distance_;
	uint32_t     dims_;
};

/* The level of a new node: -ln(U) / ln(m) with U drawn from (seed, salt). */
int draw_level(uint64_t seed, uint64_t salt, uint32_t m);

} // namespace hannoy

#endif /* HANNOY_STORAGE_HPP */
