/*
 * storage.cpp
 *	  LMDB environment and transaction wrappers for the sidecar.
 */
#include "core_guard.hpp"

#include "storage.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>

#include "links.hpp"

namespace hannoy
{

namespace
{

const char META_KEY[] = "meta";
/* The smallest page LMDB uses. */
constexpr uint64_t PAGE_SIZE_MIN = 4096;
const char         STATE_KEY[] = "state";
/* key of the applied-LSN stamp of a sidecar staged from WAL (replica.cpp) */
const char APPLIED_KEY[] = "applied";
/* key of the record that says a replica is being rebuilt from its table (replica.cpp) */
const char SEEDING_KEY[] = "seeding";
const char QUANTIZER_KEY[] = "quantizer";
/* key of the count of ids VACUUM freed, ever (VectorCopies); absent: none */
const char FREES_KEY[] = "frees";
const char FAR_CODES_KEY[] = "far_codes";

/* Stores a u32 big-endian. */
void
store_be32(unsigned char *p, uint32_t v)
{
	p[0] = static_cast<unsigned char>(v >> 24);
	p[1] = static_cast<unsigned char>(v >> 16);
	p[2] = static_cast<unsigned char>(v >> 8);
	p[3] = static_cast<unsigned char>(v);
}

/* A fixed little-endian on-disk image of HannoyMeta, independent of padding. */
struct MetaRecord
{
	uint32_t format_version, metric, dims, m, m0, ef_construction;
	uint64_t generation, system_id;
	uint32_t timeline, index_oid;
	uint64_t seed;
};

/* A fixed on-disk image of GraphState. */
struct StateRecord
{
	uint64_t items, unindexed, deleted, next_id;
	int32_t  max_level;
	uint32_t entry_point;
};

/* Room the map keeps beyond the data when the configuration names none. */
constexpr uint64_t DEFAULT_MAP_ROOM = uint64_t(64) << 20;
/* Map sizes are whole multiples of this. */
constexpr uint64_t MAP_GRAIN = uint64_t(1) << 20;
/* A write that fails with EIO while less than this is free found a full file system. */
constexpr uint64_t FULL_BELOW = uint64_t(1) << 20;

uint64_t
round_map(uint64_t bytes)
{
	return (bytes + MAP_GRAIN - 1) / MAP_GRAIN * MAP_GRAIN;
}

std::string
mib(uint64_t bytes)
{
	return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB";
}

/* The splitmix64 finaliser: a good 64-bit mix for seeding. */
uint64_t
mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

} // namespace

void
throw_lmdb(int rc, const char *what)
{
	if (rc == GUARD_FAULT_BUS || rc == GUARD_FAULT_SEGV)
		throw Error(HANNOY_ERR_CORRUPT,
		            std::string("LMDB ") + what + ": the sidecar is damaged (" +
		                (rc == GUARD_FAULT_BUS ? "a read past the end of data.mdb"
		                                       : "a read outside its map") +
		                ")");
	if (rc == GUARD_ASSERT)
		throw Error(HANNOY_ERR_CORRUPT, std::string("LMDB ") + what +
		                                    ": the sidecar is damaged (LMDB assertion: " +
		                                    guard_assert_message() + ")");
	HannoyStatus status = HANNOY_ERR_STORAGE;
	if (rc == MDB_MAP_FULL)
		status = HANNOY_ERR_MAP_FULL;
	/*
	 * MDB_BAD_TXN: LMDB failed the transaction in a call that hid the cause
	 * (a read transaction's first look at a named database whose record it
	 * could not reach); the core never uses a transaction after an error
	 */
	else if (rc == MDB_CORRUPTED || rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ||
	         rc == MDB_PAGE_NOTFOUND || rc == MDB_PAGE_FULL || rc == MDB_CURSOR_FULL ||
	         rc == MDB_BAD_TXN)
		status = HANNOY_ERR_CORRUPT;
	else if (rc == ENOMEM)
		status = HANNOY_ERR_NOMEM;
	/* LMDB passes the operating system's errors on as they are */
	throw Error(status, std::string("LMDB ") + what + ": " + mdb_strerror(rc), rc > 0 ? rc : 0);
}

MDB_txn *
begin_txn(Store *store, MDB_env *env, bool read_only)
{
	if (!read_only)
	{
		const MapBounds *b = map_bounds_of(env);
		if (b != nullptr && b->damaged)
			throw Error(HANNOY_ERR_CORRUPT, "the sidecar is damaged (an earlier read of it "
			                                "failed): no more writes");
		/*
		 * A write transaction takes LMDB's writer lock before it reads the
		 * meta pages: read them first (before_write does, through
		 * used_bytes), so that a fault there comes while no lock is held.
		 */
		if (store != nullptr)
			store->before_write();
		else
		{
			MDB_envinfo info;
			int         rc = guarded(env, [&] { return mdb_env_info(env, &info); });
			if (rc != 0)
				throw_lmdb(rc, "reading the environment's state");
		}
	}
	for (int attempt = 0;; attempt++)
	{
		MDB_txn *txn = nullptr;
		if (store != nullptr)
			store->txn_began();
		int rc = guarded(env, [&]
		                 { return mdb_txn_begin(env, nullptr, read_only ? MDB_RDONLY : 0, &txn); });
		if (rc == 0)
		{
			if (store != nullptr && !read_only)
				store->write_began();
			return txn;
		}
		if (store != nullptr)
			store->txn_ended();
		if (rc == MDB_MAP_RESIZED && attempt == 0)
		{
			/* another process grew the file past this map (no txn of ours is open here) */
			if (store != nullptr)
				store->adopt_growth(); /* moves the map and notes where it went */
			else
			{
				rc = mdb_env_set_mapsize(env, 0);
				note_map_of(env);
				if (rc != 0)
					throw_lmdb(rc, "adopting the map size");
			}
			continue;
		}
		throw_lmdb(rc,
		           read_only ? "beginning a read transaction" : "beginning a write transaction");
	}
}

IdKey::IdKey(uint32_t id)
{
	store_be32(bytes, id);
}

IdByteKey::IdByteKey(uint32_t id, uint32_t byte)
{
	store_be32(bytes, id);
	bytes[4] = static_cast<unsigned char>(byte);
}

bool
decode_vector_key(const MDB_val &key, uint32_t *id, uint32_t *piece)
{
	if (key.mv_size != 5)
		return false;
	*id = decode_id(key);
	*piece = static_cast<const unsigned char *>(key.mv_data)[4];
	return true;
}

TidKey::TidKey(HannoyTid tid)
{
	for (int i = 0; i < 6; i++)
		bytes[i] = static_cast<unsigned char>(tid >> (8 * (5 - i)));
}

/* A damaged record may be shorter than its type: only its own bytes are read, zeros after. */
uint32_t
decode_id(const MDB_val &v)
{
	unsigned char p[4] = {0, 0, 0, 0};
	std::memcpy(p, v.mv_data, std::min<size_t>(v.mv_size, 4));
	return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

HannoyTid
decode_tid(const MDB_val &v)
{
	unsigned char p[6] = {0, 0, 0, 0, 0, 0};
	std::memcpy(p, v.mv_data, std::min<size_t>(v.mv_size, 6));
	HannoyTid tid = 0;
	for (int i = 0; i < 6; i++)
		tid = (tid << 8) | p[i];
	return tid;
}

uint8_t
staged_kind(const MDB_val &data, size_t vector_bytes)
{
	if (data.mv_size < 1)
		throw Error(HANNOY_ERR_CORRUPT, "a staged row has no kind byte");
	uint8_t kind = *static_cast<const unsigned char *>(data.mv_data);
	size_t  want;
	if (kind == HANNOY_ROW_INDEXED)
	{
		if (vector_bytes == 0)
			throw Error(HANNOY_ERR_CORRUPT, "a staged vector in an index without dimensions");
		want = 1 + vector_bytes;
	}
	else if (kind == HANNOY_ROW_UNINDEXED_NULL || kind == HANNOY_ROW_UNINDEXED_NAN)
		want = 1;
	else
		throw Error(HANNOY_ERR_CORRUPT,
		            "a staged row has kind " + std::to_string(kind) + ", not 0, 1 or 2");
	if (data.mv_size != want)
		throw Error(HANNOY_ERR_CORRUPT, "a staged row of kind " + std::to_string(kind) + " has " +
		                                    std::to_string(data.mv_size) + " bytes, not " +
		                                    std::to_string(want));
	return kind;
}

Txn::Txn(MDB_env *env, bool read_only) : store_(static_cast<Store *>(mdb_env_get_userctx(env)))
{
	txn_ = begin_txn(store_, env, read_only);
	write_ = !read_only;
}

Txn::~Txn()
{
	abort();
}

void
Txn::commit()
{
	MDB_txn *t = txn_;
	int      rc = guarded(mdb_txn_env(t), [&] { return mdb_txn_commit(t); });
	/* a commit that faulted did not end: abort it, which releases the writer lock */
	if (rc == GUARD_FAULT_BUS || rc == GUARD_FAULT_SEGV || rc == GUARD_ASSERT)
		mdb_txn_abort(t);
	txn_ = nullptr;
	if (store_ != nullptr)
	{
		store_->txn_ended();
		if (write_)
			store_->write_ended();
	}
	if (rc != 0)
	{
		if (store_ != nullptr)
			store_->throw_write_error(rc, "committing");
		throw_lmdb(rc, "committing");
	}
}

void
Txn::abort()
{
	MDB_txn *t = txn_;
	txn_ = nullptr;
	if (t != nullptr)
	{
		guarded(mdb_txn_env(t),
		        [&]
		        {
			        mdb_txn_abort(t);
			        return 0;
		        });
		if (store_ != nullptr)
		{
			store_->txn_ended();
			if (write_)
				store_->write_ended();
		}
	}
}

Cursor::Cursor(MDB_txn *txn, MDB_dbi dbi)
{
	int rc = guarded(mdb_txn_env(txn), [&] { return mdb_cursor_open(txn, dbi, &cur_); });
	if (rc != 0)
		throw_lmdb(rc, "opening a cursor");
}

Cursor::~Cursor()
{
	if (cur_ != nullptr)
		mdb_cursor_close(cur_);
}

bool
Cursor::get(MDB_val &key, MDB_val &data, MDB_cursor_op op)
{
	MDB_env *env = mdb_txn_env(mdb_cursor_txn(cur_));
	int      rc = guarded(env, [&] { return mdb_cursor_get(cur_, &key, &data, op); });
	if (rc == MDB_NOTFOUND)
		return false;
	if (rc != 0)
		throw_lmdb(rc, "moving a cursor");
	check_span(env, key.mv_data, key.mv_size);
	check_span(env, data.mv_data, data.mv_size);
	if (op == MDB_NEXT && last_size_ != NO_KEY)
	{
		/* LMDB's key order: bytes as unsigned, then the shorter first */
		size_t n = std::min(key.mv_size, last_size_);
		int    c = n == 0 ? 0 : std::memcmp(key.mv_data, last_, n);
		if (c < 0 || (c == 0 && key.mv_size <= last_size_))
			throw Error(HANNOY_ERR_CORRUPT,
			            "the sidecar is damaged (a database hands out its keys out of order)");
	}
	last_size_ = key.mv_size <= sizeof(last_) ? key.mv_size : NO_KEY;
	if (last_size_ != NO_KEY && key.mv_size > 0)
		std::memcpy(last_, key.mv_data, key.mv_size);
	return true;
}

/*
 * Runs the page check (pagecheck.cpp) of a Store's environment before
 * LMDB writes or deletes 'key' of 'dbi' in write transaction 'txn'.
 */
static void
check_before_write(MDB_txn *txn, MDB_dbi dbi, const MDB_val &key, bool append)
{
	Store *store = static_cast<Store *>(mdb_env_get_userctx(mdb_txn_env(txn)));
	if (store != nullptr)
		store->check_write(txn, dbi, key, append);
}

/*
 * Writes go through a cursor of their own, never mdb_put or mdb_del: those
 * hang a cursor on their stack frame into the transaction's list, which a
 * jump out of a damaged page would leave behind for mdb_txn_abort to free.
 */
int
put_rc(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *data, unsigned flags)
{
	check_before_write(txn, dbi, *key, flags & MDB_APPEND);
	return guarded(mdb_txn_env(txn),
	               [&]
	               {
		               MDB_cursor *c;
		               int         rc = mdb_cursor_open(txn, dbi, &c);
		               if (rc != 0)
			               return rc;
		               rc = mdb_cursor_put(c, key, data, flags);
		               mdb_cursor_close(c);
		               return rc;
	               });
}

void
put(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val data, unsigned flags)
{
	int rc = put_rc(txn, dbi, &key, &data, flags);
	if (rc != 0)
		throw_lmdb(rc, "writing");
}

bool
del(MDB_txn *txn, MDB_dbi dbi, MDB_val key)
{
	check_before_write(txn, dbi, key, false);
	int rc = guarded(mdb_txn_env(txn),
	                 [&]
	                 {
		                 MDB_cursor *c;
		                 MDB_val     data;
		                 int         rc2 = mdb_cursor_open(txn, dbi, &c);
		                 if (rc2 != 0)
			                 return rc2;
		                 rc2 = mdb_cursor_get(c, &key, &data, MDB_SET);
		                 /*
		                  * the record is there: "not found" from the delete is
		                  * a rebalance that met a damaged page, and LMDB has
		                  * failed the transaction
		                  */
		                 if (rc2 == 0 && (rc2 = mdb_cursor_del(c, 0)) == MDB_NOTFOUND)
			                 rc2 = MDB_CORRUPTED;
		                 mdb_cursor_close(c);
		                 return rc2;
	                 });
	if (rc == MDB_NOTFOUND)
		return false;
	if (rc != 0)
		throw_lmdb(rc, "deleting");
	return true;
}

bool
get(MDB_txn *txn, MDB_dbi dbi, MDB_val key, MDB_val &data)
{
	MDB_env *env = mdb_txn_env(txn);
	int      rc = guarded(env, [&] { return mdb_get(txn, dbi, &key, &data); });
	if (rc == MDB_NOTFOUND)
		return false;
	if (rc != 0)
		throw_lmdb(rc, "reading");
	check_span(env, data.mv_data, data.mv_size);
	return true;
}

int
draw_level(uint64_t seed, uint64_t salt, uint32_t m)
{
	uint64_t r = mix64(seed ^ mix64(salt));
	/* 53 random bits -> U in (0, 1] */
	double u = (static_cast<double>(r >> 11) + 1.0) * (1.0 / 9007199254740992.0);
	double level = -std::log(u) / std::log(static_cast<double>(m < 2 ? 2 : m));
	int    l = static_cast<int>(level);
	return l > MAX_LEVEL ? MAX_LEVEL : l;
}

Store::Store(const std::string &path, const HannoyEnvConfig &config, bool create,
             const HannoyMeta *meta)
    : path_(path), config_(config)
{
	if (create)
	{
		if (mkdir(path.c_str(), config.dir_mode) != 0 && errno != EEXIST)
			throw Error(HANNOY_ERR_STORAGE,
			            "could not create directory \"" + path + "\": " + strerror(errno));
	}
	uint64_t data_bytes = 0;
	if (!create)
	{
		/* only a file that is not there is missing: EACCES, EIO... are errors as they are */
		struct stat st;
		std::string file = path + "/data.mdb";
		if (stat(file.c_str(), &st) != 0)
		{
			int e = errno;
			if (e == ENOENT || e == ENOTDIR)
				throw Error(HANNOY_ERR_NOT_FOUND, "no sidecar at \"" + path + "\"", e);
			throw Error(HANNOY_ERR_STORAGE,
			            "could not access \"" + file + "\": " + std::strerror(e), e);
		}
		data_bytes = static_cast<uint64_t>(st.st_size);
	}

	int rc = mdb_env_create(&env_);
	if (rc != 0)
		throw_lmdb(rc, "creating an environment handle");
	try
	{
		if ((rc = mdb_env_set_maxdbs(env_, DATABASES)) != 0)
			throw_lmdb(rc, "setting maxdbs");
		if ((rc = mdb_env_set_maxreaders(env_, config.max_readers ? config.max_readers : 126)) != 0)
			throw_lmdb(rc, "setting maxreaders");
		/* the map covers the data and room to grow; it grows as the data does */
		if ((rc = mdb_env_set_mapsize(env_, round_map(data_bytes + room_for(data_bytes)))) != 0)
			throw_lmdb(rc, "setting the map size");
		/* the one user context: Txn, begin_txn and the fault guard (bounds_) reach the store */
		if ((rc = mdb_env_set_userctx(env_, this)) != 0)
			throw_lmdb(rc, "setting the environment's context");
		/*
		 * MDB_NOTLS: a backend holds several read transactions at once.
		 * MDB_NOSYNC: commits are synced explicitly, grouped per PostgreSQL
		 * transaction.  No MDB_WRITEMAP: a full disk must be an error, not
		 * SIGBUS.
		 */
		rc = mdb_env_open(env_, path.c_str(), MDB_NOTLS | MDB_NOSYNC | MDB_NORDAHEAD,
		                  static_cast<mdb_mode_t>(config.file_mode));
		if (rc != 0)
			throw_lmdb(rc, ("opening \"" + path + "\"").c_str());
		guard_environment(env_);
		note_map();
		check_file();
		MDB_envinfo info;
		MDB_stat    est;
		rc = guarded(env_,
		             [&]
		             {
			             int r = mdb_env_info(env_, &info);
			             return r != 0 ? r : mdb_env_stat(env_, &est);
		             });
		if (rc != 0)
			throw_lmdb(rc, "reading the environment's state");
		map_size_ = info.me_mapsize;
		page_size_ = est.ms_psize;
		int dead = 0;
		mdb_reader_check(env_, &dead);
		open_databases(create, create ? meta->format_version : 0);
		if (create)
		{
			Txn txn(env_, false);
			write_meta(txn.get(), *meta);
			write_state(txn.get(), GraphState{});
			txn.commit();
		}
		else
		{
			Txn txn(env_, true);
			reload_meta(txn.get());
		}
	}
	catch (...)
	{
		mdb_env_close(env_);
		env_ = nullptr;
		throw;
	}
}

Store::~Store()
{
	/* the kept scan's read transaction must end before the environment closes */
	if (idle_scan_ != nullptr)
		idle_scan_free_(idle_scan_);
	clear_dirty_on_close();
	if (env_ != nullptr)
		mdb_env_close(env_);
}

uint64_t
Store::room_for(uint64_t used) const
{
	uint64_t room = config_.map_room != 0 ? config_.map_room : DEFAULT_MAP_ROOM;
	return std::max(room, used / 2);
}

uint64_t
Store::used_bytes() const
{
	MDB_envinfo info;
	int         rc = guarded(env_, [&] { return mdb_env_info(env_, &info); });
	if (rc != 0)
		throw_lmdb(rc, "reading the environment's state");
	return (static_cast<uint64_t>(info.me_last_pgno) + 1) * page_size_;
}

uint64_t
Store::map_size() const
{
	std::lock_guard<std::mutex> guard(map_lock_);
	return map_size_;
}

void
Store::txn_began()
{
	std::lock_guard<std::mutex> guard(map_lock_);
	open_txns_++;
}

void
Store::txn_ended()
{
	std::lock_guard<std::mutex> guard(map_lock_);
	open_txns_--;
}

void
Store::add_holder(SnapshotHolder *holder)
{
	std::lock_guard<std::mutex> guard(map_lock_);
	holders_.push_back(Holder{holder, pthread_self()});
}

void
Store::remove_holder(SnapshotHolder *holder)
{
	std::lock_guard<std::mutex> guard(map_lock_);
	for (size_t i = 0; i < holders_.size(); i++)
		if (holders_[i].holder == holder)
		{
			holders_[i] = holders_.back();
			holders_.pop_back();
			return;
		}
}

bool
Store::move_map(uint64_t size)
{
	/* scans of this thread end their snapshots; they go on in new ones */
	std::vector<SnapshotHolder *> mine;
	{
		std::lock_guard<std::mutex> guard(map_lock_);
		for (const Holder &h : holders_)
			if (pthread_equal(h.thread, pthread_self()))
				mine.push_back(h.holder);
	}
	for (SnapshotHolder *h : mine)
		h->release_snapshot();
	std::lock_guard<std::mutex> guard(map_lock_);
	if (open_txns_ != 0)
		return false;
	/* the cached pointers point into the old map */
	cache_.disarm();
	map_moves_.fetch_add(1, std::memory_order_relaxed);
	int rc = mdb_env_set_mapsize(env_, size);
	/* the map moved (or is gone): the fault guard and the record checks must know where */
	note_map();
	if (rc != 0)
		throw_lmdb(rc, "growing the memory map");
	MDB_envinfo info;
	if ((rc = guarded(env_, [&] { return mdb_env_info(env_, &info); })) != 0)
		throw_lmdb(rc, "reading the environment's state");
	map_size_ = info.me_mapsize;
	return true;
}

void
Store::before_write()
{
	mark_dirty();
	uint64_t used = used_bytes();
	uint64_t room = room_for(used);
	if (map_size() < used + room / 2)
		move_map(round_map(used + room)); /* else the write may still fit */
}

void
Store::reserve(uint64_t bytes)
{
	uint64_t used = used_bytes();
	uint64_t room = room_for(used);
	if (map_size() < used + bytes + room / 2)
		move_map(round_map(used + bytes + room));
}

void
Store::adopt_growth()
{
	uint64_t used = used_bytes();
	if (!move_map(round_map(used + room_for(used))))
		throw Error(HANNOY_ERR_MAP_FULL,
		            "the sidecar grew to " + mib(used) + ", past this backend's memory map of " +
		                mib(map_size()) +
		                ", while the backend held a read transaction on it (the map cannot move "
		                "under one)");
}

void
Store::throw_write_error(int rc, const char *what) const
{
	/* LMDB reports a short write, which is how a full file system shows, as EIO */
	struct statvfs fs;
	if (rc == EIO && statvfs(path_.c_str(), &fs) == 0 &&
	    static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < FULL_BELOW)
		throw Error(HANNOY_ERR_STORAGE,
		            std::string("LMDB ") + what + ": " + std::strerror(ENOSPC) +
		                " (the file system of \"" + path_ + "\" is full)",
		            ENOSPC);
	if (rc == MDB_MAP_FULL)
		throw Error(HANNOY_ERR_MAP_FULL,
		            std::string("LMDB ") + what + ": the sidecar's memory map of " +
		                mib(map_size()) +
		                " is full (it grows before a write transaction, but not while this "
		                "backend holds a read transaction on the sidecar)");
	throw_lmdb(rc, what);
}

void
Store::open_databases(bool create, uint32_t format)
{
	Txn      txn(env_, !create);
	unsigned flags = create ? MDB_CREATE : 0;
	struct
	{
		const char *name;
		MDB_dbi    *dbi;
	} dbs[] = {{"meta", &dbi_meta},       {"vectors", &dbi_vectors}, {"links", &dbi_links},
	           {"tids", &dbi_tids},       {"items", &dbi_items},     {"unindexed", &dbi_unindexed},
	           {"deleted", &dbi_deleted}, {"free", &dbi_free}};
	for (auto &db : dbs)
	{
		int rc = guarded(env_, [&] { return mdb_dbi_open(txn.get(), db.name, flags, db.dbi); });
		if (rc == 0 && *db.dbi < DATABASES)
			db_names_[*db.dbi] = db.name;
		if (rc == MDB_NOTFOUND)
			throw Error(HANNOY_ERR_CORRUPT,
			            std::string("sidecar has no \"") + db.name + "\" database");
		if (rc != 0)
			throw_lmdb(rc, "opening a database");
	}
	/* the codes of format 5: reload_meta finds a format 5 sidecar without them damaged */
	if (!create || format >= 5)
	{
		int rc = guarded(env_, [&] { return mdb_dbi_open(txn.get(), "codes", flags, &dbi_codes); });
		if (rc == MDB_NOTFOUND)
			codes_db_found_ = false;
		else if (rc != 0)
			throw_lmdb(rc, "opening a database");
		else
			codes_db_found_ = true;
	}
	/* the staged rows of a sidecar that redo made (replica.cpp); none elsewhere */
	if (!create)
	{
		int rc = guarded(env_, [&] { return mdb_dbi_open(txn.get(), "staged", 0, &dbi_staged); });
		if (rc == 0)
		{
			staged_found_ = true;
			if (dbi_staged < DATABASES)
				db_names_[dbi_staged] = "staged";
		}
		else if (rc != MDB_NOTFOUND)
			throw_lmdb(rc, "opening a database");
		rc = guarded(env_, [&] { return mdb_dbi_open(txn.get(), "seeding", 0, &dbi_seeding); });
		if (rc == 0)
		{
			if (dbi_seeding < DATABASES)
				db_names_[dbi_seeding] = "seeding";
		}
		else if (rc != MDB_NOTFOUND)
			throw_lmdb(rc, "opening a database");
	}
	txn.commit();
}

bool
Store::unflushed_db(bool create)
{
	if (dbi_unflushed != 0)
		return true;
	Txn      txn(env_, !create);
	MDB_dbi  dbi = 0;
	unsigned flags = create ? MDB_CREATE : 0;
	int      rc = guarded(env_, [&] { return mdb_dbi_open(txn.get(), "unflushed", flags, &dbi); });
	if (rc == MDB_NOTFOUND)
		return false;
	if (rc != 0)
		throw_lmdb(rc, "opening a database");
	txn.commit();
	if (dbi < DATABASES)
		db_names_[dbi] = "unflushed";
	dbi_unflushed = dbi;
	return true;
}

void
Store::create_staged(uint64_t lsn)
{
	Txn txn(env_, false);
	int rc =
	    guarded(env_, [&] { return mdb_dbi_open(txn.get(), "staged", MDB_CREATE, &dbi_staged); });
	if (rc != 0)
		throw_lmdb(rc, "creating a database");
	if (dbi_staged < DATABASES)
		db_names_[dbi_staged] = "staged";
	write_applied(txn.get(), lsn);
	txn.commit();
	staged_found_ = true;
}

uint64_t
Store::read_applied(MDB_txn *txn) const
{
	MDB_val  key{sizeof(APPLIED_KEY) - 1, const_cast<char *>(APPLIED_KEY)};
	MDB_val  data;
	uint64_t lsn = 0;
	if (!hannoy::get(txn, dbi_meta, key, data))
		return 0;
	if (data.mv_size != sizeof(lsn))
		throw Error(HANNOY_ERR_CORRUPT,
		            "the applied-LSN record has " + std::to_string(data.mv_size) + " bytes, not 8");
	std::memcpy(&lsn, data.mv_data, sizeof(lsn));
	return lsn;
}

void
Store::write_applied(MDB_txn *txn, uint64_t lsn) const
{
	MDB_val key{sizeof(APPLIED_KEY) - 1, const_cast<char *>(APPLIED_KEY)};
	put(txn, dbi_meta, key, MDB_val{sizeof(lsn), &lsn});
}

uint64_t
Store::read_count(MDB_txn *txn, const char *name, const char *what) const
{
	MDB_val  key{std::strlen(name), const_cast<char *>(name)}, data;
	uint64_t n = 0;
	if (!hannoy::get(txn, dbi_meta, key, data))
		return 0;
	if (data.mv_size != sizeof(n) + trailer() || (checksummed() && !checksum_holds(key, data)))
		throw Error(HANNOY_ERR_CORRUPT,
		            std::string("the ") + what + " record is malformed or fails its checksum");
	std::memcpy(&n, data.mv_data, sizeof(n));
	return n;
}

void
Store::add_count(MDB_txn *txn, const char *name, const char *what, uint64_t n) const
{
	uint64_t total = read_count(txn, name, what) + n;
	put_meta_record(txn, MDB_val{std::strlen(name), const_cast<char *>(name)}, &total,
	                sizeof(total));
}

uint64_t
Store::read_frees(MDB_txn *txn) const
{
	return read_count(txn, FREES_KEY, "freed-ids");
}

void
Store::add_frees(MDB_txn *txn, uint64_t n) const
{
	add_count(txn, FREES_KEY, "freed-ids", n);
}

uint64_t
Store::read_far_codes(MDB_txn *txn) const
{
	return read_count(txn, FAR_CODES_KEY, "far-codes");
}

void
Store::add_far_code(MDB_txn *txn) const
{
	add_count(txn, FAR_CODES_KEY, "far-codes", 1);
}

void
Store::put_meta_record(MDB_txn *txn, MDB_val key, const void *value, size_t size) const
{
	std::string record(static_cast<const char *>(value), size);
	if (checksummed())
	{
		uint32_t sum = record_checksum(key, value, size);
		record.append(reinterpret_cast<const char *>(&sum), sizeof(sum));
	}
	put(txn, dbi_meta, key, MDB_val{record.size(), &record[0]});
}

VectorCopies *
Store::vector_copies(MDB_txn *txn, const GraphState &state) const
{
	/*
	 * Vectors in pieces (beyond about 500 floats) keep none: gathering a
	 * copy costs about what the read it saves does, and 32 MB hold few
	 * (interleaved pgbench runs on Fashion-MNIST inserted faster without).
	 */
	if (heap_rerank() || layout_.pieces() > 1)
		return nullptr;
	return copies_.open(layout_, read_frees(txn), state.next_id) ? &copies_ : nullptr;
}

VectorCopies *
Store::code_copies(MDB_txn *txn, const GraphState &state) const
{
	/* heap-reranked indexes walk on codes too, but were not measured with copies */
	size_t bytes = code_bytes_.load(std::memory_order_acquire);
	if (!has_codes_db() || bytes == 0 || heap_rerank())
		return nullptr;
	return code_copies_.open_codes(bytes, read_frees(txn), state.next_id) ? &code_copies_ : nullptr;
}

bool
VectorCopies::open(const VectorLayout &layout, uint64_t frees, uint64_t next_id)
{
	return open_sized(layout, layout.bytes(), frees, next_id);
}

bool
VectorCopies::open_codes(size_t bytes, uint64_t frees, uint64_t next_id)
{
	return open_sized(VectorLayout(), bytes, frees, next_id);
}

bool
VectorCopies::open_sized(const VectorLayout &layout, size_t bytes, uint64_t frees, uint64_t next_id)
{
	int state = owner_state_.load(std::memory_order_acquire);
	if (state == 0)
	{
		if (owner_state_.compare_exchange_strong(state, 1, std::memory_order_acq_rel))
		{
			owner_ = pthread_self();
			owner_state_.store(2, std::memory_order_release);
			state = 2;
		}
		else
			return false;
	}
	if (state != 2 || !pthread_equal(owner_, pthread_self()))
		return false;
	/* the slots are by id: past MAX_IDS they would take most of the room for copies */
	if (next_id > MAX_IDS)
	{
		clear();
		return false;
	}
	if (!valid_ || frees != frees_ || next_id < next_id_ || bytes != bytes_ ||
	    layout.pieces() != layout_.pieces())
	{
		clear();
		layout_ = layout;
		bytes_ = bytes;
		/* copies a multiple of 64 bytes apart (a 128-byte vector takes two cache lines) */
		stride_ = (bytes + 63) & ~size_t(63);
		per_block_ = static_cast<uint32_t>(std::max<size_t>(1, BLOCK_BYTES / stride_));
		frees_ = frees;
		valid_ = true;
	}
	next_id_ = next_id;
	return true;
}

void
VectorCopies::clear()
{
	slots_.clear();
	slots_.shrink_to_fit();
	blocks_.clear();
	used_ = 0;
	valid_ = false;
}

size_t
VectorCopies::bytes() const
{
	return slots_.capacity() * sizeof(uint32_t) + blocks_.size() * size_t(per_block_) * stride_;
}

void
VectorCopies::add(uint32_t id, const void *const *pieces)
{
	if (char *copy = room_for(id))
	{
		layout_.gather(pieces, copy);
		slots_[id] = ++used_;
	}
}

void
VectorCopies::add_whole(uint32_t id, const void *vector)
{
	if (char *copy = room_for(id))
	{
		std::memcpy(copy, vector, bytes_);
		slots_[id] = ++used_;
	}
}

char *
VectorCopies::room_for(uint32_t id)
{
	if (!valid_ || (id < slots_.size() && slots_[id] != 0))
		return nullptr;
	if (id >= slots_.size())
	{
		/* room for the ids inserts will add too, so that the table grows seldom */
		size_t want = std::max<size_t>(size_t(id) + 1, next_id_ + next_id_ / 8 + 1024);
		want = std::min<size_t>(want, std::max<size_t>(size_t(id) + 1, MAX_IDS));
		if (bytes() + (want - slots_.size()) * sizeof(uint32_t) > MAX_BYTES)
			return nullptr;
		/* a copy saves a read, no more: without memory there is none */
		try
		{
			slots_.reserve(want); /* exactly: bytes() counts the capacity */
			slots_.resize(want, 0);
		}
		catch (const std::bad_alloc &)
		{
			return nullptr;
		}
	}
	if (used_ == blocks_.size() * size_t(per_block_))
	{
		if (bytes() + size_t(per_block_) * stride_ > MAX_BYTES)
			return nullptr;
		std::unique_ptr<char[]> block(new (std::nothrow) char[size_t(per_block_) * stride_]);
		if (!block)
			return nullptr;
		try
		{
			blocks_.push_back(std::move(block));
		}
		catch (const std::bad_alloc &)
		{
			return nullptr;
		}
	}
	return const_cast<char *>(block_data(used_));
}

void
Store::create_seeding(MDB_txn *txn)
{
	int rc = guarded(env_, [&] { return mdb_dbi_open(txn, "seeding", MDB_CREATE, &dbi_seeding); });
	if (rc != 0)
		throw_lmdb(rc, "creating a database");
	if (dbi_seeding < DATABASES)
		db_names_[dbi_seeding] = "seeding";
	uint8_t one = 1;
	MDB_val key{sizeof(SEEDING_KEY) - 1, const_cast<char *>(SEEDING_KEY)};
	put(txn, dbi_meta, key, MDB_val{sizeof(one), &one});
}

bool
Store::read_seeding(MDB_txn *txn) const
{
	MDB_val key{sizeof(SEEDING_KEY) - 1, const_cast<char *>(SEEDING_KEY)};
	MDB_val data;
	return hannoy::get(txn, dbi_meta, key, data);
}

void
Store::end_seeding(MDB_txn *txn) const
{
	/* emptied, not deleted: other processes keep their handle on it */
	if (dbi_seeding != 0)
	{
		int rc = guarded(env_, [&] { return mdb_drop(txn, dbi_seeding, 0); });
		if (rc != 0)
			throw_lmdb(rc, "emptying a database");
	}
	MDB_val key{sizeof(SEEDING_KEY) - 1, const_cast<char *>(SEEDING_KEY)};
	hannoy::del(txn, dbi_meta, key);
}

void
Store::check_write(MDB_txn *txn, MDB_dbi dbi, const MDB_val &key, bool append)
{
	if (dbi < DATABASES && db_names_[dbi] != nullptr)
		page_check_.before_write(env_, bounds_, txn, db_names_[dbi], key, append);
}

void
Store::set_meta(const HannoyMeta &meta)
{
	if (hannoy_metric_info(meta.metric).id == 0)
		throw Error(HANNOY_ERR_CORRUPT, "unknown metric " + std::to_string(meta.metric));
	meta_ = meta;
	layout_ = VectorLayout(static_cast<HannoyMetric>(meta.metric), meta.dims,
	                       meta.format_version >= 4 ? CHECKSUM_BYTES : 0);
}

void
Store::reload_meta(MDB_txn *txn)
{
	MDB_val key{sizeof(META_KEY) - 1, const_cast<char *>(META_KEY)}, data;
	if (!hannoy::get(txn, dbi_meta, key, data))
		throw Error(HANNOY_ERR_CORRUPT, "sidecar meta record is missing");
	MetaRecord r;
	if (data.mv_size < sizeof(r.format_version))
		throw Error(HANNOY_ERR_CORRUPT, "sidecar meta record is malformed");
	std::memcpy(&r.format_version, data.mv_data, sizeof(r.format_version));
	if (r.format_version < HANNOY_MIN_FORMAT_VERSION || r.format_version > HANNOY_FORMAT_VERSION)
		throw Error(HANNOY_ERR_CORRUPT,
		            "sidecar format version " + std::to_string(r.format_version) +
		                " is not supported (expected " + std::to_string(HANNOY_MIN_FORMAT_VERSION) +
		                " to " + std::to_string(HANNOY_FORMAT_VERSION) + ")");
	size_t trailer = r.format_version >= 4 ? CHECKSUM_BYTES : 0;
	if (data.mv_size != sizeof(MetaRecord) + trailer ||
	    (trailer != 0 && !checksum_holds(key, data)))
		throw Error(HANNOY_ERR_CORRUPT, "sidecar meta record is malformed or fails its checksum");
	std::memcpy(&r, data.mv_data, sizeof(r));
	HannoyMeta m{};
	m.format_version = r.format_version;
	m.metric = r.metric;
	m.dims = r.dims;
	m.options.m = r.m;
	m.m0 = r.m0;
	m.options.ef_construction = r.ef_construction;
	m.generation = r.generation;
	m.system_id = r.system_id;
	m.timeline = r.timeline;
	m.index_oid = r.index_oid;
	m.seed = r.seed;
	if (m.format_version >= 5 && !codes_db_found_)
		throw Error(HANNOY_ERR_CORRUPT, "sidecar has no \"codes\" database");
	set_meta(m);
	/* a sidecar's quantizer never changes once written: one found already stays */
	refresh_quantizer(txn);
}

void
Store::refresh_quantizer(MDB_txn *txn) const
{
	if (!has_codes_db() || meta_.dims == 0 || std::atomic_load(&quantizer_))
		return;
	MDB_val key{sizeof(QUANTIZER_KEY) - 1, const_cast<char *>(QUANTIZER_KEY)}, data;
	if (!hannoy::get(txn, dbi_meta, key, data))
		return;
	if (data.mv_size < CHECKSUM_BYTES || !checksum_holds(key, data))
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record is malformed or fails its checksum");
	auto q = std::make_shared<const Quantizer>(
	    Quantizer::from_record(static_cast<HannoyMetric>(meta_.metric), meta_.dims, data.mv_data,
	                           data.mv_size - CHECKSUM_BYTES));
	if (q->heap_rerank() && meta_.format_version < 7)
		throw Error(HANNOY_ERR_CORRUPT, "quantizer record of a format " +
		                                    std::to_string(meta_.format_version) +
		                                    " sidecar says it has no vectors");
	std::atomic_store(&quantizer_, std::shared_ptr<const Quantizer>(q));
	code_bytes_.store(q->code_bytes(), std::memory_order_release);
	heap_rerank_.store(q->heap_rerank(), std::memory_order_release);
}

void
Store::write_quantizer(MDB_txn *txn, const Quantizer &q)
{
	if (!has_codes_db())
		throw Error(HANNOY_ERR_INVALID, "a sidecar of format " +
		                                    std::to_string(meta_.format_version) +
		                                    " holds no codes");
	if (q.heap_rerank() && meta_.format_version < 7)
		throw Error(HANNOY_ERR_INVALID, "a sidecar of format " +
		                                    std::to_string(meta_.format_version) +
		                                    " keeps its vectors");
	MDB_val     key{sizeof(QUANTIZER_KEY) - 1, const_cast<char *>(QUANTIZER_KEY)};
	std::string record = q.record();
	uint32_t    sum = record_checksum(key, record.data(), record.size());
	record.append(reinterpret_cast<const char *>(&sum), sizeof(sum));
	put(txn, dbi_meta, key, MDB_val{record.size(), record.data()});
	std::atomic_store(&quantizer_, std::make_shared<const Quantizer>(q));
	code_bytes_.store(q.code_bytes(), std::memory_order_release);
	heap_rerank_.store(q.heap_rerank(), std::memory_order_release);
}

void
Store::count_codes(MDB_txn *txn, HannoyStats *stats) const
{
	stats->codes = 0;
	stats->code_bytes = 0;
	stats->quantizer = 0;
	stats->quantizer_bytes = 0;
	stats->heap_rerank = false;
	refresh_quantizer(txn);
	std::shared_ptr<const Quantizer> q = quantizer();
	if (!q)
		return;
	MDB_stat st;
	int      rc = guarded(env_, [&] { return mdb_stat(txn, dbi_codes, &st); });
	if (rc != 0)
		throw_lmdb(rc, "counting codes");
	stats->codes = st.ms_entries;
	stats->code_bytes = static_cast<uint32_t>(q->code_bytes());
	stats->quantizer = q->kind();
	stats->quantizer_bytes = q->record_bytes();
	stats->heap_rerank = q->heap_rerank();
}

bool
Store::code_of(MDB_txn *txn, uint32_t id, const uint8_t **out) const
{
	if (!has_codes_db())
		return false;
	SnapshotCache::Entry *e = cache_.serves(txn) ? cache_.entry(id) : nullptr;
	if (e != nullptr && (e->known & SnapshotCache::KNOWN_CODE))
	{
		*out = static_cast<const uint8_t *>(e->code);
		return e->code != nullptr;
	}
	IdKey   key(id);
	MDB_val data;
	bool    found = hannoy::get(txn, dbi_codes, key.val(), data);
	if (found)
	{
		size_t bytes = code_bytes_.load(std::memory_order_acquire);
		if (bytes == 0 || data.mv_size != bytes + CHECKSUM_BYTES)
			throw Error(HANNOY_ERR_CORRUPT, "code of item " + std::to_string(id) + " has " +
			                                    std::to_string(data.mv_size) +
			                                    " bytes, or the sidecar has no quantizer");
		*out = static_cast<const uint8_t *>(data.mv_data);
	}
	if (e != nullptr)
	{
		e->known |= SnapshotCache::KNOWN_CODE;
		e->code = found ? data.mv_data : nullptr;
	}
	return found;
}

void
Store::put_code(MDB_txn *txn, uint32_t id, const uint8_t *code, bool append) const
{
	std::shared_ptr<const Quantizer> q = quantizer();
	IdKey                            key(id);
	MDB_val                          k = key.val();
	std::string                      record(reinterpret_cast<const char *>(code), q->code_bytes());
	uint32_t                         sum = record_checksum(k, record.data(), record.size());
	record.append(reinterpret_cast<const char *>(&sum), sizeof(sum));
	put(txn, dbi_codes, k, MDB_val{record.size(), record.data()}, append ? MDB_APPEND : 0);
}

bool
Store::delete_code(MDB_txn *txn, uint32_t id) const
{
	/* no quantizer, no codes (the record comes before any code): no lookup */
	if (!quantizer())
		return false;
	IdKey key(id);
	return del(txn, dbi_codes, key.val());
}

void
Store::write_meta(MDB_txn *txn, const HannoyMeta &meta)
{
	/* a sidecar keeps its format: format 3 stays without checksums */
	uint32_t format = meta.format_version;
	if (format < HANNOY_MIN_FORMAT_VERSION || format > HANNOY_FORMAT_VERSION)
		throw Error(HANNOY_ERR_INVALID,
		            "sidecar format version " + std::to_string(format) + " is not supported");
	MetaRecord r{};
	r.format_version = format;
	r.metric = meta.metric;
	r.dims = meta.dims;
	r.m = meta.options.m;
	r.m0 = meta.m0;
	r.ef_construction = meta.options.ef_construction;
	r.generation = meta.generation;
	r.system_id = meta.system_id;
	r.timeline = meta.timeline;
	r.index_oid = meta.index_oid;
	r.seed = meta.seed;
	MDB_val     key{sizeof(META_KEY) - 1, const_cast<char *>(META_KEY)};
	std::string record(reinterpret_cast<const char *>(&r), sizeof(r));
	if (format >= 4)
	{
		uint32_t sum = record_checksum(key, record.data(), record.size());
		record.append(reinterpret_cast<const char *>(&sum), sizeof(sum));
	}
	put(txn, dbi_meta, key, MDB_val{record.size(), record.data()});
	set_meta(meta);
}

void
Store::tombstone(MDB_txn *txn, HannoyTid tid, uint32_t id, GraphState &state) const
{
	TidKey tkey(tid);
	IdKey  key(id);

	del(txn, dbi_items, tkey.val());
	del(txn, dbi_tids, key.val());
	put(txn, dbi_deleted, key.val(), MDB_val{0, nullptr});
	state.items--;
	state.deleted++;
}

GraphState
Store::read_state(MDB_txn *txn) const
{
	bool cached = cache_.serves(txn);
	if (cached && cache_.state() != nullptr)
		return *cache_.state();
	GraphState s = read_state_record(txn);
	if (cached)
		cache_.set_state(s);
	return s;
}

GraphState
Store::read_state_record(MDB_txn *txn) const
{
	MDB_val key{sizeof(STATE_KEY) - 1, const_cast<char *>(STATE_KEY)}, data;
	if (!hannoy::get(txn, dbi_meta, key, data) || data.mv_size != sizeof(StateRecord) + trailer() ||
	    (checksummed() && !checksum_holds(key, data)))
		throw Error(HANNOY_ERR_CORRUPT,
		            "sidecar state record is missing, malformed or fails its checksum");
	StateRecord r;
	std::memcpy(&r, data.mv_data, sizeof(r));
	/* next_id never shrinks: the largest seen bounds every id a sound snapshot holds */
	uint64_t bound = id_bound_.load(std::memory_order_relaxed);
	while (r.next_id > bound && !id_bound_.compare_exchange_weak(bound, r.next_id))
	{
	}
	GraphState s;
	s.items = r.items;
	s.unindexed = r.unindexed;
	s.deleted = r.deleted;
	s.next_id = r.next_id;
	s.max_level = r.max_level;
	s.entry_point = r.entry_point;
	return s;
}

void
Store::write_state(MDB_txn *txn, const GraphState &s) const
{
	StateRecord r{};
	r.items = s.items;
	r.unindexed = s.unindexed;
	r.deleted = s.deleted;
	r.next_id = s.next_id;
	r.max_level = s.max_level;
	r.entry_point = s.entry_point;
	put_meta_record(txn, MDB_val{sizeof(STATE_KEY) - 1, const_cast<char *>(STATE_KEY)}, &r,
	                sizeof(r));
}

namespace
{

/* CRC32C (Castagnoli), reflected, one table. */
struct Crc32cTable
{
	uint32_t t[256];
	Crc32cTable()
	{
		for (uint32_t i = 0; i < 256; i++)
		{
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
			t[i] = c;
		}
	}
};

uint32_t
crc32c_table(uint32_t crc, const unsigned char *p, size_t n)
{
	static const Crc32cTable table;
	for (size_t i = 0; i < n; i++)
		crc = table.t[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t
crc32c_sse42(uint32_t crc, const unsigned char *p, size_t n)
{
	uint64_t c = crc;
	for (; n >= 8; n -= 8, p += 8)
	{
		uint64_t word;
		std::memcpy(&word, p, 8);
		c = __builtin_ia32_crc32di(c, word);
	}
	uint32_t c32 = static_cast<uint32_t>(c);
	for (; n > 0; n--, p++)
		c32 = __builtin_ia32_crc32qi(c32, *p);
	return c32;
}
#endif

} // namespace

uint32_t
crc32c(uint32_t crc, const void *data, size_t n)
{
	const unsigned char *p = static_cast<const unsigned char *>(data);
#if defined(__x86_64__)
	static const bool hardware = __builtin_cpu_supports("sse4.2");
	if (hardware)
		return crc32c_sse42(crc, p, n);
#endif
	return crc32c_table(crc, p, n);
}

uint32_t
record_checksum(const MDB_val &key, const void *value, size_t size)
{
	uint32_t crc = crc32c(0xFFFFFFFFu, key.mv_data, key.mv_size);
	return ~crc32c(crc, value, size);
}

bool
checksum_holds(const MDB_val &key, const MDB_val &data)
{
	if (data.mv_size < CHECKSUM_BYTES)
		return false;
	size_t   size = data.mv_size - CHECKSUM_BYTES;
	uint32_t stored;
	std::memcpy(&stored, static_cast<const char *>(data.mv_data) + size, sizeof(stored));
	return stored == record_checksum(key, data.mv_data, size);
}

void
SnapshotCache::arm(MDB_txn *txn)
{
	size_t id = mdb_txn_id(txn);
	if (armed_ && id == txn_id_ && pthread_equal(owner_, pthread_self()))
		return;
	owner_ = pthread_self();
	txn_id_ = id;
	armed_ = true;
	have_state_ = false;
	table_block_ = 0;
	table_used_ = 0;
	list_block_ = 0;
	list_used_ = 0;
	upper_.clear();
	if (++generation_ == 0)
	{
		/* after 2^32 snapshots: forget every entry before stamps repeat */
		blocks_.clear();
		generation_ = 1;
	}
}

SnapshotCache::Entry *
SnapshotCache::entry(uint32_t id)
{
	if (id >= MAX_ITEMS)
		return nullptr;
	size_t b = id / BLOCK;
	if (b >= blocks_.size())
		blocks_.resize(b + 1);
	if (!blocks_[b])
		blocks_[b].reset(new Entry[BLOCK]());
	Entry &e = blocks_[b][id % BLOCK];
	if (e.generation != generation_)
	{
		e.generation = generation_;
		e.known = 0;
	}
	return &e;
}

const std::vector<uint32_t> *
SnapshotCache::upper_links(uint32_t id, int layer) const
{
	auto it = upper_.find((uint64_t(id) << 8) | uint8_t(layer));
	return it == upper_.end() ? nullptr : &it->second;
}

void
SnapshotCache::keep_upper_links(uint32_t id, int layer, const std::vector<uint32_t> &list)
{
	if (upper_.size() < MAX_UPPER)
		upper_.emplace((uint64_t(id) << 8) | uint8_t(layer), list);
}

const uint32_t *
SnapshotCache::keep_list(const std::vector<uint32_t> &list)
{
	size_t n = list.size();
	if (n > LIST_BLOCK)
		return nullptr;
	if (list_used_ + n > LIST_BLOCK)
	{
		list_block_++;
		list_used_ = 0;
	}
	if ((list_block_ + 1) * LIST_BLOCK > MAX_LIST_IDS)
		return nullptr;
	if (list_block_ >= lists_.size())
		lists_.emplace_back(new uint32_t[LIST_BLOCK]);
	uint32_t *kept = &lists_[list_block_][list_used_];
	std::copy(list.begin(), list.end(), kept);
	list_used_ += n;
	return kept;
}

const void **
SnapshotCache::piece_table(uint32_t n)
{
	if (table_used_ + n > TABLE_BLOCK)
	{
		table_block_++;
		table_used_ = 0;
	}
	if (table_block_ >= tables_.size())
		tables_.emplace_back(new const void *[TABLE_BLOCK]);
	const void **t = &tables_[table_block_][table_used_];
	table_used_ += n;
	return t;
}

namespace
{

/* LMDB's 4 KiB page as the layout assumes it (other page sizes only pack less well). */
constexpr size_t PAGE = 4096, PAGE_HEADER = 16;
/* The largest leaf node LMDB keeps in its page: (page - header) / 2, even, less a slot. */
constexpr size_t NODE_MAX = ((PAGE - PAGE_HEADER) / 2 & ~size_t(1)) - 2;
/* A leaf node's header, the vectors database's key, a slot in the page's index. */
constexpr size_t NODE_HEADER = 8, VECTOR_KEY = 5, NODE_SLOT = 2;

/* Bytes a leaf record of 'data' bytes takes in its page. */
size_t
leaf_cost(size_t data)
{
	return ((NODE_HEADER + VECTOR_KEY + data + 1) & ~size_t(1)) + NODE_SLOT;
}

/*
 * Pages per vector when vectors of 'bytes' are cut into pieces of 'piece',
 * each record 'trailer' bytes longer, and appended in order.
 */
double
pages_per_vector(size_t bytes, size_t piece, size_t trailer)
{
	constexpr int VECTORS = 64;
	size_t        n = bytes / piece, pages = 1, used = 0;
	for (int v = 0; v < VECTORS; v++)
		for (size_t i = 0; i < n; i++)
		{
			size_t cost = leaf_cost((i + 1 < n ? piece : bytes - piece * (n - 1)) + trailer);
			if (used + cost > PAGE - PAGE_HEADER)
			{
				pages++;
				used = 0;
			}
			used += cost;
		}
	return double(pages) / VECTORS;
}

} // namespace

size_t
vector_piece_bytes(size_t bytes, size_t trailer)
{
	/* a vector that fits a leaf page stays whole */
	if (NODE_HEADER + VECTOR_KEY + bytes + trailer <= NODE_MAX)
		return bytes;
	/* else whole in overflow pages, or cut: the fewest pieces within 3% of the fewest pages */
	constexpr size_t SIZES = NODE_MAX / SEGMENT_ALIGN;
	double           cost[SIZES + 1];
	double           best = double((PAGE_HEADER + bytes + trailer + PAGE - 1) / PAGE);
	for (size_t k = 1; k <= SIZES; k++)
	{
		size_t piece = k * SEGMENT_ALIGN, n = bytes / piece;
		cost[k] = HUGE_VAL;
		if (piece >= bytes || n > VectorLayout::MAX_PIECES ||
		    NODE_HEADER + VECTOR_KEY + bytes - piece * (n - 1) + trailer > NODE_MAX ||
		    NODE_HEADER + VECTOR_KEY + piece + trailer > NODE_MAX)
			continue;
		cost[k] = pages_per_vector(bytes, piece, trailer);
		best = std::min(best, cost[k]);
	}
	/* larger pieces first: fewer records to read per vector */
	for (size_t k = SIZES; k >= 1; k--)
		if (cost[k] <= best * 1.03)
			return k * SEGMENT_ALIGN;
	return bytes;
}

VectorLayout::VectorLayout(HannoyMetric metric, uint32_t dims, size_t trailer)
    : bytes_(hannoy_vector_bytes(metric, dims)), trailer_(trailer),
      unit_(hannoy_metric_info(metric).element == HANNOY_ELEMENT_BIT ? 1 : 4), dims_(dims),
      whole_(distance_function(metric)), segmented_(segmented_distance_function(metric))
{
	piece_bytes_ = bytes_ == 0 ? 0 : vector_piece_bytes(bytes_, trailer_);
	pieces_ = piece_bytes_ == 0 ? 1 : static_cast<uint32_t>(bytes_ / piece_bytes_);
}

double
VectorLayout::distance(const void *const *a, const void *query) const
{
	if (pieces_ == 1)
		return whole_(a[0], query, dims_);
	Segment seg[MAX_PIECES];
	for (uint32_t i = 0; i < pieces_; i++)
		seg[i] = Segment{a[i], static_cast<const char *>(query) + piece_offset(i),
		                 piece_size(i) / unit_};
	return segmented_(seg, pieces_);
}

double
VectorLayout::distance(const void *const *a, const void *const *b) const
{
	if (pieces_ == 1)
		return whole_(a[0], b[0], dims_);
	Segment seg[MAX_PIECES];
	for (uint32_t i = 0; i < pieces_; i++)
		seg[i] = Segment{a[i], b[i], piece_size(i) / unit_};
	return segmented_(seg, pieces_);
}

float
VectorLayout::dot(const void *const *a, const void *const *b) const
{
	Segment seg[MAX_PIECES];
	for (uint32_t i = 0; i < pieces_; i++)
		seg[i] = Segment{a[i], b[i], piece_size(i) / unit_};
	return kernel_dot_segments(seg, pieces_);
}

void
VectorLayout::gather(const void *const *a, void *out) const
{
	for (uint32_t i = 0; i < pieces_; i++)
		std::memcpy(static_cast<char *>(out) + piece_offset(i), a[i], piece_size(i));
}

/* Looks up the pieces of the vector of 'id' in LMDB, checking their sizes; false when absent. */
static bool
lookup_vector(const Store &s, MDB_txn *txn, uint32_t id, const void **out)
{
	const VectorLayout &l = s.layout();
	VectorKey           key(id, 0);
	MDB_val             k = key.val(), data;
	auto                take = [&](uint32_t i)
	{
		if (data.mv_size != l.record_size(i))
			throw Error(HANNOY_ERR_CORRUPT, "piece " + std::to_string(i) + " of vector " +
			                                    std::to_string(id) + " has " +
			                                    std::to_string(data.mv_size) + " bytes, expected " +
			                                    std::to_string(l.record_size(i)));
		out[i] = data.mv_data;
	};
	if (l.pieces() == 1)
	{
		if (!hannoy::get(txn, s.dbi_vectors, k, data))
			return false;
		take(0);
		return true;
	}
	/* one descent, then the next records: the pieces are adjacent */
	Cursor cur(txn, s.dbi_vectors);
	if (!cur.get(k, data, MDB_SET_KEY))
		return false;
	take(0);
	for (uint32_t i = 1; i < l.pieces(); i++)
	{
		uint32_t got_id, got_piece;
		if (!cur.get(k, data, MDB_NEXT) || !decode_vector_key(k, &got_id, &got_piece) ||
		    got_id != id || got_piece != i)
			throw Error(HANNOY_ERR_CORRUPT,
			            "vector " + std::to_string(id) + " lacks piece " + std::to_string(i));
		take(i);
	}
	return true;
}

/* Decoded codes a thread keeps at once (vector_pieces in an index without vectors). */
constexpr size_t DECODED_SLOTS = 4;

bool
Store::vector_pieces(MDB_txn *txn, uint32_t id, const void **out) const
{
	if (heap_rerank())
	{
		/* no vectors: the decoded code, in the next of this thread's buffers */
		thread_local std::vector<float>  slots[DECODED_SLOTS];
		thread_local size_t              next_slot = 0;
		const uint8_t                   *code;
		std::shared_ptr<const Quantizer> q = quantizer();
		if (!code_of(txn, id, &code))
			return false;
		std::vector<float> &buf = slots[next_slot];
		next_slot = (next_slot + 1) % DECODED_SLOTS;
		buf.resize(q->dims());
		q->decode(code, buf.data());
		layout_.split(buf.data(), out);
		return true;
	}
	SnapshotCache::Entry *e = cache_.serves(txn) ? cache_.entry(id) : nullptr;
	uint32_t              n = layout_.pieces();
	if (e == nullptr || !(e->known & SnapshotCache::KNOWN_VECTOR))
	{
		bool found = lookup_vector(*this, txn, id, out);
		if (e == nullptr)
			return found;
		e->known |= SnapshotCache::KNOWN_VECTOR;
		if (!found)
			e->vector = nullptr;
		else if (n == 1)
			e->vector = out[0];
		else
		{
			const void **table = cache_.piece_table(n);
			std::memcpy(table, out, n * sizeof(*out));
			e->vector = table;
		}
		return found;
	}
	if (e->vector == nullptr)
		return false;
	if (n == 1)
		out[0] = e->vector;
	else
		std::memcpy(out, e->vector, n * sizeof(*out));
	return true;
}

bool
Store::copy_vector(MDB_txn *txn, uint32_t id, void *out) const
{
	const void *pieces[VectorLayout::MAX_PIECES];
	if (!vector_pieces(txn, id, pieces))
		return false;
	layout_.gather(pieces, out);
	return true;
}

void
Store::put_vector(MDB_txn *txn, uint32_t id, const void *v, bool append) const
{
	if (heap_rerank())
		return; /* an index without vectors: the code is all it keeps */
	std::string record;
	for (uint32_t i = 0; i < layout_.pieces(); i++)
	{
		VectorKey   key(id, i);
		MDB_val     k = key.val();
		const char *piece = static_cast<const char *>(v) + layout_.piece_offset(i);
		MDB_val     data{layout_.piece_size(i), const_cast<char *>(piece)};
		if (checksummed())
		{
			uint32_t sum = record_checksum(k, piece, layout_.piece_size(i));
			record.assign(piece, layout_.piece_size(i));
			record.append(reinterpret_cast<const char *>(&sum), sizeof(sum));
			data = MDB_val{record.size(), record.data()};
		}
		/*
		 * Appended when no higher key exists, even for a reused id (a refill
		 * after VACUUM freed everything): LMDB then leaves the full page full
		 * when it splits, where an ordinary put moves its last record over.
		 */
		if (i == 0 && !append)
		{
			int rc = put_rc(txn, dbi_vectors, &k, &data, MDB_APPEND);
			if (rc == 0)
			{
				append = true;
				continue;
			}
			if (rc != MDB_KEYEXIST)
				throw_lmdb(rc, "writing");
		}
		put(txn, dbi_vectors, k, data, append ? MDB_APPEND : 0);
	}
}

void
Store::put_vectors(MDB_txn *txn, uint32_t first, size_t count, const void *vectors) const
{
	const char *src = static_cast<const char *>(vectors);
	for (size_t i = 0; i < count; i++)
		put_vector(txn, first + static_cast<uint32_t>(i), src + i * layout_.bytes(), true);
}

bool
Store::delete_vector(MDB_txn *txn, uint32_t id) const
{
	if (heap_rerank())
		return false;
	bool had = false;
	for (uint32_t i = 0; i < layout_.pieces(); i++)
	{
		VectorKey key(id, i);
		had = del(txn, dbi_vectors, key.val()) || had;
	}
	return had;
}

void
Store::links(MDB_txn *txn, uint32_t id, int layer, std::vector<uint32_t> &out) const
{
	if (layer == 0)
	{
		size_t          count;
		const uint32_t *list = links0(txn, id, out, &count);
		if (list != out.data())
			out.assign(list, list + count);
		return;
	}
	bool cached = cache_.serves(txn);
	if (cached)
		if (const std::vector<uint32_t> *kept = cache_.upper_links(id, layer))
		{
			out = *kept;
			return;
		}
	read_links(txn, id, layer, nullptr, out);
	if (cached)
		cache_.keep_upper_links(id, layer, out);
}

const uint32_t *
Store::links0(MDB_txn *txn, uint32_t id, std::vector<uint32_t> &buf, size_t *count) const
{
	SnapshotCache::Entry *e = cache_.serves(txn) ? cache_.entry(id) : nullptr;
	if (e != nullptr && (e->known & SnapshotCache::KNOWN_DECODED0))
	{
		*count = e->links0_size;
		return static_cast<const uint32_t *>(e->links0);
	}
	read_links(txn, id, 0, e, buf);
	if (e != nullptr && (e->known & SnapshotCache::KNOWN_LINKS0) && e->links0 != nullptr)
		if (const uint32_t *kept = cache_.keep_list(buf))
		{
			/* checked: a malformed list is never kept, and fails every walk that meets it */
			e->links0 = kept;
			e->links0_size = static_cast<uint32_t>(buf.size());
			e->known = (e->known & ~SnapshotCache::KNOWN_LINKS0) | SnapshotCache::KNOWN_DECODED0;
		}
	*count = buf.size();
	return buf.data();
}

void
Store::read_links(MDB_txn *txn, uint32_t id, int layer, SnapshotCache::Entry *e,
                  std::vector<uint32_t> &out) const
{
	MDB_val data;
	if (e != nullptr && (e->known & SnapshotCache::KNOWN_LINKS0))
		data = MDB_val{e->links0_size, const_cast<void *>(e->links0)};
	else
	{
		LinkKey key(id, layer);
		if (!hannoy::get(txn, dbi_links, key.val(), data))
			data = MDB_val{0, nullptr};
		if (e != nullptr)
		{
			e->links0 = data.mv_data;
			e->links0_size = static_cast<uint32_t>(data.mv_size);
			e->known |= SnapshotCache::KNOWN_LINKS0;
		}
	}
	if (data.mv_data == nullptr)
	{
		out.clear();
		return;
	}
	if (data.mv_size < trailer() || !decode_links(data.mv_data, data.mv_size - trailer(), out))
		throw Error(HANNOY_ERR_CORRUPT, "neighbour list of item " + std::to_string(id) +
		                                    " at layer " + std::to_string(layer) + " is malformed");
	/*
	 * A damaged list can name any id; searches size their visited sets by
	 * the ids they meet, so one beyond next_id is refused (the list is
	 * sorted: one compare, and a look at the state record only when the
	 * bound seen so far is passed).
	 */
	if (!out.empty() && out.back() >= id_bound_.load(std::memory_order_relaxed))
	{
		read_state_record(txn);
		if (out.back() >= id_bound_.load(std::memory_order_relaxed))
			throw Error(HANNOY_ERR_CORRUPT, "neighbour list of item " + std::to_string(id) +
			                                    " at layer " + std::to_string(layer) +
			                                    " names item " + std::to_string(out.back()) +
			                                    ", beyond next_id");
	}
}

void
Store::put_links(MDB_txn *txn, uint32_t id, int layer, const std::vector<uint32_t> &ids,
                 unsigned flags) const
{
	std::string buf;
	encode_links(ids.data(), ids.size(), buf, meta_.format_version >= 8);
	LinkKey key(id, layer);
	if (checksummed())
	{
		uint32_t sum = record_checksum(key.val(), buf.data(), buf.size());
		buf.append(reinterpret_cast<const char *>(&sum), sizeof(sum));
	}
	put(txn, dbi_links, key.val(), MDB_val{buf.size(), buf.data()}, flags);
}

bool
Store::is_deleted(MDB_txn *txn, uint32_t id) const
{
	IdKey   key(id);
	MDB_val data;
	return hannoy::get(txn, dbi_deleted, key.val(), data);
}

bool
Store::tid_of(MDB_txn *txn, uint32_t id, HannoyTid *tid) const
{
	SnapshotCache::Entry *e = cache_.serves(txn) ? cache_.entry(id) : nullptr;
	if (e == nullptr || !(e->known & SnapshotCache::KNOWN_TID))
	{
		IdKey     key(id);
		MDB_val   data;
		HannoyTid found = SnapshotCache::NO_TID;
		if (hannoy::get(txn, dbi_tids, key.val(), data))
		{
			if (data.mv_size != 6)
				throw Error(HANNOY_ERR_CORRUPT, "the TID of item " + std::to_string(id) + " has " +
				                                    std::to_string(data.mv_size) +
				                                    " bytes, expected 6");
			found = decode_tid(data);
		}
		if (e == nullptr)
		{
			*tid = found;
			return found != SnapshotCache::NO_TID;
		}
		e->tid = found;
		e->known |= SnapshotCache::KNOWN_TID;
	}
	*tid = e->tid;
	return e->tid != SnapshotCache::NO_TID;
}

void
note_map_of(MDB_env *env)
{
	MapBounds  *b = map_bounds_of(env);
	int         fd;
	struct stat st;
	if (b == nullptr || mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &st) != 0)
		return;
	/* LMDB does not say where it mapped the file: the process's map table does */
	FILE *maps = std::fopen("/proc/self/maps", "re");
	if (maps == nullptr)
		return;
	char      line[1024];
	uintptr_t lo = 0, hi = 0;
	while (std::fgets(line, sizeof(line), maps) != nullptr)
	{
		unsigned long start, end, offset, inode;
		unsigned int  major_no, minor_no;
		char          perms[8];
		if (std::sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &major_no,
		                &minor_no, &inode) != 7 ||
		    inode != st.st_ino || makedev(major_no, minor_no) != st.st_dev || offset != 0)
			continue;
		if (end - start > hi - lo)
		{
			lo = start;
			hi = end;
		}
	}
	std::fclose(maps);
	b->lo = lo;
	b->hi = hi;
	b->used_end = lo;
}

void
Store::note_map()
{
	note_map_of(env_);
}

void
Store::check_file(int64_t known_size)
{
	MapBounds  &b = bounds_;
	struct stat st;
	int         fd;
	if (b.damaged)
		throw Error(HANNOY_ERR_CORRUPT, "the sidecar is damaged (an earlier read of it failed)");
	/* the file LMDB has open and mapped, whatever its path names now */
	int rc = mdb_env_get_fd(env_, &fd);
	if (rc != 0)
		throw_lmdb(rc, "reading the file descriptor");
	if (known_size < 0 && fstat(fd, &st) != 0)
		throw Error(HANNOY_ERR_STORAGE,
		            "could not stat file \"" + path_ + "/data.mdb\": " + strerror(errno));
	uint64_t size = static_cast<uint64_t>(known_size >= 0 ? known_size : st.st_size);
	if (size < 2 * PAGE_SIZE_MIN)
		throw Error(HANNOY_ERR_CORRUPT, "the sidecar is damaged (data.mdb has " +
		                                    std::to_string(size) +
		                                    " bytes, less than LMDB's two meta pages)");
	MDB_stat ms;
	rc = guarded(env_, [&] { return mdb_env_stat(env_, &ms); });
	if (rc != 0)
		throw_lmdb(rc, "reading the environment's state");
	size_t psize = ms.ms_psize;
	if (b.lo == 0 || size < 2 * psize)
		return; /* the map is unknown (no guard) or the page size unusual: nothing more to read */
	/*
	 * Another process may be writing a meta page while this one reads it
	 * (LMDB writes a commit's meta page in place, the transaction id last):
	 * a reading that looks damaged is taken again a few times, a millisecond
	 * or more apart, before it counts.
	 */
	constexpr int META_READS = 5;
	LmdbMeta      current;
	for (int attempt = 0;; attempt++)
	{
		try
		{
			LmdbMeta m[2];
			rc = guarded(env_,
			             [&]
			             {
				             for (int i = 0; i < 2; i++)
					             m[i] = read_lmdb_meta(
					                 reinterpret_cast<const unsigned char *>(b.lo) + i * psize);
				             return 0;
			             });
			if (rc != 0)
				throw_lmdb(rc, "reading the meta pages");
			if (attempt > 0 && fstat(fd, &st) == 0)
				size = static_cast<uint64_t>(st.st_size);
			uint64_t pages = size / psize;
			for (int i = 0; i < 2; i++)
			{
				auto which = [i] { return "LMDB meta page " + std::to_string(i); };
				if (!(m[i].flags & lmdb_format::P_META) || m[i].magic != lmdb_format::MAGIC ||
				    m[i].version != lmdb_format::DATA_VERSION)
					throw Error(HANNOY_ERR_CORRUPT,
					            "the sidecar is damaged (" + which() + " is not one)");
				/* LMDB writes transaction t's meta into page t % 2 (both hold 0 when created) */
				if (m[i].txnid % 2 != static_cast<uint64_t>(i) && m[i].txnid != 0)
					throw Error(HANNOY_ERR_CORRUPT, "the sidecar is damaged (" + which() +
					                                    " names transaction " +
					                                    std::to_string(m[i].txnid) + ")");
				for (uint64_t root : {m[i].free_db.root, m[i].main_db.root})
					if (root != lmdb_format::P_INVALID && root > m[i].last_pg)
						throw Error(HANNOY_ERR_CORRUPT,
						            "the sidecar is damaged (" + which() +
						                " has a root page beyond its last page)");
			}
			uint64_t newer = std::max(m[0].txnid, m[1].txnid),
			         older = std::min(m[0].txnid, m[1].txnid);
			if (newer - older != 1 && newer != 0)
				throw Error(HANNOY_ERR_CORRUPT,
				            "the sidecar is damaged (its meta pages name transactions " +
				                std::to_string(m[0].txnid) + " and " + std::to_string(m[1].txnid) +
				                ")");
			/*
			 * Every page a snapshot reaches was written, so the file holds the root
			 * pages of the newest one.  (The last page in use need not be in the
			 * file: a page a transaction took at the end and freed again is never
			 * written.  A read of a page past the end is the guard's.)
			 */
			current = m[0].txnid > m[1].txnid ? m[0] : m[1];
			for (uint64_t root : {current.free_db.root, current.main_db.root})
				if (root != lmdb_format::P_INVALID && root >= pages)
				{
					/*
					 * Another process may have committed between the fstat and the
					 * read of the meta pages, growing the file first: look again.
					 */
					if (fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) / psize > root)
					{
						pages = static_cast<uint64_t>(st.st_size) / psize;
						continue;
					}
					throw Error(HANNOY_ERR_CORRUPT,
					            "the sidecar is damaged (data.mdb has " + std::to_string(pages) +
					                " pages, but its root page " + std::to_string(root) +
					                " lies beyond them; truncated?)");
				}
			/*
			 * Transaction ids only grow, and a meta page once written for one never
			 * changes: a file rewritten in place (another sidecar's copied over
			 * it) shows otherwise, and pointers kept into the old one (the
			 * snapshot cache's) must not be followed.
			 */
			if (b.seen &&
			    (current.txnid < b.seen_txnid ||
			     (current.txnid == b.seen_txnid &&
			      (current.last_pg != b.seen_last_pg || current.free_db.root != b.seen_roots[0] ||
			       current.main_db.root != b.seen_roots[1]))))
			{
				if (attempt == META_READS - 1)
					b.damaged = true;
				throw Error(HANNOY_ERR_CORRUPT,
				            "the sidecar is damaged (its newest transaction went from " +
				                std::to_string(b.seen_txnid) + " to " +
				                std::to_string(current.txnid) +
				                ": data.mdb was rewritten in place)");
			}
			break;
		}
		catch (const Error &e)
		{
			if (e.status() != HANNOY_ERR_CORRUPT || attempt == META_READS - 1)
				throw;
			usleep(1000u << attempt);
		}
	}
	b.seen = true;
	b.seen_txnid = current.txnid;
	b.seen_last_pg = current.last_pg;
	b.seen_roots[0] = current.free_db.root;
	b.seen_roots[1] = current.main_db.root;
	b.page_size = psize;
	b.used_end = b.lo + std::min<uint64_t>(size, b.hi - b.lo);
}

void
check_span_slow(MDB_env *env, const void *p, size_t bytes)
{
	MapBounds  *b = map_bounds_of(env);
	uintptr_t   at = reinterpret_cast<uintptr_t>(p);
	int         fd;
	struct stat st;
	/* the file may have grown since it was last looked at */
	if (mdb_env_get_fd(env, &fd) == 0 && fstat(fd, &st) == 0)
	{
		uintptr_t end =
		    b->lo + std::min<uint64_t>(static_cast<uint64_t>(st.st_size), b->hi - b->lo);
		if (end > b->used_end)
			b->used_end = end;
	}
	if (at + bytes > b->used_end || at + bytes < at)
		throw Error(HANNOY_ERR_CORRUPT, "the sidecar is damaged (a record of " +
		                                    std::to_string(bytes) +
		                                    " bytes lies past the end of data.mdb)");
}

void
Store::sync(bool force)
{
	if (!config_.durable)
		return;
	uint64_t writes = dirty_writes();
	int      rc = mdb_env_sync(env_, force ? 1 : 0);
	if (rc != 0)
		throw_lmdb(rc, "syncing");
	note_synced(false, writes);
}

} // namespace hannoy
