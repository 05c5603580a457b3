/*
 * pagecheck.hpp
 *	  LMDB's on-disk format as hannoy reads it (meta pages, database records,
 *	  branch, leaf and overflow pages), and the page check that runs before
 *	  every write (DESIGN.md "Damaged sidecars").
 *
 *	  LMDB trusts the header and the node offsets of every page it copies and
 *	  edits, so a write that meets a damaged page can write out of bounds of
 *	  its heap copy of it, where no signal guard can see it.  Before a write
 *	  transaction lets LMDB change a record, the page check walks the same
 *	  key's path through the committed tree (and the pages a rebalance may
 *	  take) and refuses the write when one of those pages is not sound.
 */
#ifndef HANNOY_PAGECHECK_HPP
#define HANNOY_PAGECHECK_HPP

#include "core_guard.hpp"

#include <lmdb.h>

#include <cstddef>
#include <cstdint>
#include <unordered_set>
#include <vector>

namespace hannoy
{

struct MapBounds;

/*
 * LMDB's data format 1 (liblmdb 0.9), little or big endian as the host: the
 * facts the file check and the page check rely on.
 */
namespace lmdb_format
{
constexpr uint32_t MAGIC = 0xBEEFC0DE, DATA_VERSION = 1;
/* page header: pgno (8), pad (2), flags (2), lower and upper (2 + 2) or overflow pages (4) */
constexpr size_t   PAGE_HEADER = 16;
constexpr uint16_t P_BRANCH = 0x01, P_LEAF = 0x02, P_OVERFLOW = 0x04, P_META = 0x08;
/* node header: data size or child pgno (2 + 2, and flags for a pgno's top word), flags, key size */
constexpr size_t   NODE_HEADER = 8;
constexpr uint16_t F_BIGDATA = 0x01, F_SUBDATA = 0x02, F_DUPDATA = 0x04;
/* a database record (MDB_db): pad, flags, depth, three page counts, entries, root */
constexpr size_t   DB_RECORD = 48;
constexpr uint64_t P_INVALID = ~uint64_t(0);
/* pages 0 and 1 are the meta pages */
constexpr uint64_t FIRST_DATA_PAGE = 2;
/* the deepest tree a cursor can walk (LMDB's CURSOR_STACK) */
constexpr uint16_t MAX_DEPTH = 32;
} // namespace lmdb_format

/* One database record (MDB_db), as far as hannoy reads it. */
struct LmdbDb
{
	uint32_t pad;   /* the page size, in the free list's record of a meta page */
	uint16_t flags; /* the database's flags */
	uint16_t depth; /* 0 for an empty database */
	uint64_t root;  /* P_INVALID for an empty database */
};

/* One meta page: its header flags, and the meta record behind the page header. */
struct LmdbMeta
{
	uint16_t flags;
	uint32_t magic, version;
	LmdbDb   free_db, main_db;
	uint64_t last_pg, txnid;
};

/* Reads the database record at 'p' (unaligned). */
LmdbDb read_lmdb_db(const unsigned char *p);
/* Reads the meta page at 'page' (unaligned). */
LmdbMeta read_lmdb_meta(const unsigned char *page);

/*
 * The page check of one environment's write transactions.  A Store owns
 * one; begin() forgets what the last write transaction checked, and
 * before_write() runs before each record LMDB writes or deletes.  Pages once
 * found sound are not checked again in the same transaction.
 */
class PageCheck
{
  public:
	/* Starts the checks of a new write transaction. */
	void
	begin()
	{
		ready_ = false;
		/* clear() would wipe every bucket a large transaction (a build's) made */
		if (checked_.bucket_count() > 4096)
			checked_ = std::unordered_set<uint64_t>();
		else
			checked_.clear();
		names_.clear();
	}
	/*
	 * Before key 'key' of the database named 'db_name' is written ('append':
	 * with MDB_APPEND) or deleted in write transaction 'txn' of 'env': throws
	 * HANNOY_ERR_CORRUPT, and marks the environment damaged in 'bounds', when
	 * a committed page the write may change or follow is not sound.
	 */
	void before_write(MDB_env *env, MapBounds &bounds, MDB_txn *txn, const char *db_name,
	                  const MDB_val &key, bool append);

  private:
	/* What a walk expects of a page. */
	enum class Role
	{
		BRANCH,
		LEAF
	};
	/* The database a page belongs to, for its node rules and messages. */
	enum class Tree
	{
		FREE,
		MAIN,
		NAMED
	};
	struct NamedRoot
	{
		const char *name;
		LmdbDb      db;
	};

	int  run(MDB_env *env, MapBounds &bounds, MDB_txn *txn, const char *db_name, const MDB_val &key,
	         bool append);
	bool setup(MDB_env *env, MapBounds &bounds, MDB_txn *txn);
	bool check_db_record(const LmdbDb &db, Tree tree);
	bool check_tree(const LmdbDb &db, Tree tree);
	bool find_named(const char *name, LmdbDb *out);
	bool check_path(const LmdbDb &db, const MDB_val &key, bool append);
	bool check_edge(uint64_t pgno, int level, int depth, bool rightmost);
	bool check_page(uint64_t pgno, Role role, Tree tree);
	bool check_overflow(uint64_t pgno, uint64_t bytes);
	bool check_free_record(uint64_t pgno, const unsigned char *data, uint64_t bytes);
	const unsigned char *
	page(uint64_t pgno) const
	{
		return map_ + pgno * psize_;
	}
	/* Words the damage into message_ ('pgno' P_INVALID: no page named); false. */
	bool fail(uint64_t pgno, const char *what, ...) __attribute__((format(printf, 3, 4)));

	bool                                  ready_ = false;
	const unsigned char                  *map_ = nullptr;
	size_t                                psize_ = 4096;
	uint64_t                              last_pg_ = 0, file_pages_ = 0;
	LmdbMeta                              meta_{};
	const char                           *tree_name_ = "";
	std::unordered_set<uint64_t>          checked_;
	std::vector<NamedRoot>                names_;
	std::vector<std::pair<uint64_t, int>> stack_; /* a whole-tree walk's pages and levels */
	char                                  message_[256] = {0};
};

} // namespace hannoy

#endif /* HANNOY_PAGECHECK_HPP */
