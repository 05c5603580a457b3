/*
 * pagecheck.cpp
 *	  The page check (DESIGN.md "Damaged sidecars"): before LMDB writes or
 *	  deletes a record, the committed pages the write may change are checked
 *	  for a sound structure, so that LMDB never edits a damaged page.
 *
 *	  LMDB copies a committed page into the heap before it changes it, and
 *	  then trusts the copy's header: a garbage free-space bound or node
 *	  offset makes it copy, move or write bytes beyond the copy's end, which
 *	  corrupts the heap (glibc aborts later) and which no signal guard sees.
 *	  The check reads only committed pages, through the map, under the fault
 *	  guard; it keeps the pages it found sound during one write transaction,
 *	  so that a path many keys share is read once.  What it checks and why
 *	  that suffices is in DESIGN.md.
 */
#include "core_guard.hpp"

#include "pagecheck.hpp"

#include <sys/stat.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <new>

#include "storage.hpp"

namespace hannoy
{

namespace
{

using namespace lmdb_format;

/* What run() returns besides 0 (sound) and the guard's codes. */
constexpr int CHECK_DAMAGED = 1, CHECK_NOMEM = 2;

uint16_t
u16_at(const unsigned char *p)
{
	uint16_t v;
	std::memcpy(&v, p, sizeof(v));
	return v;
}

uint32_t
u32_at(const unsigned char *p)
{
	uint32_t v;
	std::memcpy(&v, p, sizeof(v));
	return v;
}

uint64_t
u64_at(const unsigned char *p)
{
	uint64_t v;
	std::memcpy(&v, p, sizeof(v));
	return v;
}

/* A branch node's child: the data-size halves and, on 64-bit hosts, the flags as the top word. */
uint64_t
child_of(const unsigned char *node)
{
	return uint64_t(u16_at(node)) | (uint64_t(u16_at(node + 2)) << 16) |
	       (uint64_t(u16_at(node + 4)) << 32);
}

/* A leaf node's data size. */
uint64_t
data_size_of(const unsigned char *node)
{
	return uint64_t(u16_at(node)) | (uint64_t(u16_at(node + 2)) << 16);
}

/* The node at index 'i' of a page whose header was checked. */
const unsigned char *
node_at(const unsigned char *page, unsigned i)
{
	return page + u16_at(page + PAGE_HEADER + 2 * i);
}

unsigned
keys_of(const unsigned char *page)
{
	return (u16_at(page + 12) - PAGE_HEADER) / 2;
}

/* LMDB's default key order: bytes as unsigned, then the shorter first. */
int
compare_keys(const MDB_val &a, const unsigned char *b, size_t b_size)
{
	size_t n = a.mv_size < b_size ? a.mv_size : b_size;
	int    c = n == 0 ? 0 : std::memcmp(a.mv_data, b, n);
	if (c != 0)
		return c;
	return a.mv_size < b_size ? -1 : a.mv_size > b_size ? 1 : 0;
}

/* The child of a checked branch page that LMDB's search takes for 'key'. */
unsigned
branch_index(const unsigned char *page, const MDB_val &key)
{
	/* the first node's key is never compared: it stands for everything below the second */
	unsigned lo = 1, hi = keys_of(page);
	while (lo < hi)
	{
		unsigned             mid = lo + (hi - lo) / 2;
		const unsigned char *node = node_at(page, mid);
		if (compare_keys(key, node + NODE_HEADER, u16_at(node + 6)) < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo - 1; /* the last node whose key is at most 'key' (0 when none) */
}

/* The node of 'key' in a checked leaf page, or nullptr. */
const unsigned char *
leaf_node(const unsigned char *page, const MDB_val &key)
{
	unsigned lo = 0, hi = keys_of(page);
	while (lo < hi)
	{
		unsigned             mid = lo + (hi - lo) / 2;
		const unsigned char *node = node_at(page, mid);
		int                  c = compare_keys(key, node + NODE_HEADER, u16_at(node + 6));
		if (c == 0)
			return node;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return nullptr;
}

/* The key under which a page is remembered: the page and the rules it passed. */
uint64_t
checked_key(uint64_t pgno, unsigned rules)
{
	return (pgno << 3) | rules;
}

} // namespace

LmdbDb
read_lmdb_db(const unsigned char *p)
{
	LmdbDb db;
	db.pad = u32_at(p);
	db.flags = u16_at(p + 4);
	db.depth = u16_at(p + 6);
	db.root = u64_at(p + 40);
	return db;
}

LmdbMeta
read_lmdb_meta(const unsigned char *page)
{
	LmdbMeta             m;
	const unsigned char *meta = page + PAGE_HEADER;
	m.flags = u16_at(page + 10);
	m.magic = u32_at(meta);
	m.version = u32_at(meta + 4);
	/* after magic and version: the fixed-map address and the map size, 8 bytes each */
	m.free_db = read_lmdb_db(meta + 24);
	m.main_db = read_lmdb_db(meta + 24 + DB_RECORD);
	m.last_pg = u64_at(meta + 24 + 2 * DB_RECORD);
	m.txnid = u64_at(meta + 24 + 2 * DB_RECORD + 8);
	return m;
}

bool
PageCheck::fail(uint64_t pgno, const char *what, ...)
{
	char    detail[160];
	va_list ap;
	va_start(ap, what);
	std::vsnprintf(detail, sizeof(detail), what, ap);
	va_end(ap);
	if (pgno == P_INVALID)
		std::snprintf(message_, sizeof(message_), "%s", detail);
	else
		std::snprintf(message_, sizeof(message_), "page %llu of the %s database %s",
		              static_cast<unsigned long long>(pgno), tree_name_, detail);
	return false;
}

void
PageCheck::before_write(MDB_env *env, MapBounds &bounds, MDB_txn *txn, const char *db_name,
                        const MDB_val &key, bool append)
{
	int rc = guarded(env, [&] { return run(env, bounds, txn, db_name, key, append); });
	if (rc == 0)
		return;
	if (rc == CHECK_NOMEM)
		throw Error(HANNOY_ERR_NOMEM, "out of memory checking the sidecar's pages");
	if (rc != CHECK_DAMAGED)
		throw_lmdb(rc, "checking a page before a write"); /* the guard marked it damaged */
	/* as after a fault: no more writes, and the file check fails until it is opened afresh */
	bounds.damaged = true;
	throw Error(HANNOY_ERR_CORRUPT, std::string("the sidecar is damaged (") + message_ + ")");
}

/* The check under the fault guard: owns nothing with a destructor, throws nothing. */
int
PageCheck::run(MDB_env *env, MapBounds &bounds, MDB_txn *txn, const char *db_name,
               const MDB_val &key, bool append)
{
	try
	{
		if (!ready_)
		{
			if (!setup(env, bounds, txn))
				return CHECK_DAMAGED;
			ready_ = true;
		}
		if (map_ == nullptr)
			return 0; /* the map is unknown (no guard): nothing can be read safely */
		LmdbDb db;
		if (!find_named(db_name, &db))
			return CHECK_DAMAGED;
		tree_name_ = db_name;
		return check_path(db, key, append) ? 0 : CHECK_DAMAGED;
	}
	catch (const std::bad_alloc &)
	{
		return CHECK_NOMEM;
	}
}

/*
 * Once per write transaction: the newest meta page (the one the transaction
 * began from), the file's size, and the whole free list and main database,
 * which the commit rewrites.
 */
bool
PageCheck::setup(MDB_env *env, MapBounds &bounds, MDB_txn *txn)
{
	map_ = nullptr;
	int         fd;
	struct stat st;
	psize_ = bounds.page_size;
	if (bounds.lo == 0 || mdb_env_get_fd(env, &fd) != 0 || fstat(fd, &st) != 0 ||
	    static_cast<uint64_t>(st.st_size) < 2 * psize_)
		return true; /* the file check reports a file too short for its meta pages */
	const unsigned char *map = reinterpret_cast<const unsigned char *>(bounds.lo);
	LmdbMeta             m[2] = {read_lmdb_meta(map), read_lmdb_meta(map + psize_)};
	const LmdbMeta      &newest = m[0].txnid > m[1].txnid ? m[0] : m[1];
	tree_name_ = "main";
	if (!(newest.flags & P_META) || newest.magic != MAGIC || newest.version != DATA_VERSION ||
	    newest.free_db.pad != psize_)
		return fail(P_INVALID, "the newest LMDB meta page is not one");
	/* a write transaction is numbered one past the snapshot it began from */
	if (newest.txnid + 1 != mdb_txn_id(txn))
		return fail(P_INVALID,
		            "the newest LMDB meta page names transaction %llu, but the write "
		            "transaction began from %llu",
		            static_cast<unsigned long long>(newest.txnid),
		            static_cast<unsigned long long>(mdb_txn_id(txn) - 1));
	meta_ = newest;
	last_pg_ = newest.last_pg;
	file_pages_ = static_cast<uint64_t>(st.st_size) / psize_;
	if (last_pg_ >= (bounds.hi - bounds.lo) / psize_)
		return fail(P_INVALID, "the newest LMDB meta page names last page %llu, beyond the map",
		            static_cast<unsigned long long>(last_pg_));
	map_ = map;
	tree_name_ = "free-list";
	if (!check_db_record(meta_.free_db, Tree::FREE) || !check_tree(meta_.free_db, Tree::FREE))
		return false;
	tree_name_ = "main";
	return check_db_record(meta_.main_db, Tree::MAIN) && check_tree(meta_.main_db, Tree::MAIN);
}

/*
 * A database record: the flags hannoy's databases have (none; the free list
 * has integer keys, and its record's flags field holds the environment's
 * persistent flags beside), and a root and depth that agree.
 */
bool
PageCheck::check_db_record(const LmdbDb &db, Tree tree)
{
	constexpr uint16_t KEY_ORDER =
	    MDB_REVERSEKEY | MDB_DUPSORT | MDB_DUPFIXED | MDB_INTEGERDUP | MDB_REVERSEDUP;
	bool flags_ok = tree == Tree::FREE ? (db.flags & KEY_ORDER) == 0 && (db.flags & MDB_INTEGERKEY)
	                                   : db.flags == 0;
	if (!flags_ok)
		return fail(P_INVALID, "the record of the %s database has flags 0x%x", tree_name_,
		            db.flags);
	if ((db.depth == 0) != (db.root == P_INVALID) || db.depth > MAX_DEPTH ||
	    (db.root != P_INVALID && (db.root < FIRST_DATA_PAGE || db.root > last_pg_)))
		return fail(P_INVALID, "the record of the %s database names root page %llu at depth %u",
		            tree_name_, static_cast<unsigned long long>(db.root), db.depth);
	return true;
}

/* Every page of a tree (the free list's, the main database's). */
bool
PageCheck::check_tree(const LmdbDb &db, Tree tree)
{
	if (db.depth == 0)
		return true;
	stack_.clear();
	stack_.emplace_back(db.root, 0);
	while (!stack_.empty())
	{
		auto [pgno, level] = stack_.back();
		stack_.pop_back();
		Role role = level + 1 < db.depth ? Role::BRANCH : Role::LEAF;
		if (checked_.count(
		        checked_key(pgno, static_cast<unsigned>(role) * 4 + static_cast<unsigned>(tree))))
			continue; /* reached twice: the walk goes on elsewhere (and ends) */
		if (!check_page(pgno, role, tree))
			return false;
		if (role == Role::BRANCH)
		{
			const unsigned char *p = page(pgno);
			for (unsigned i = 0, n = keys_of(p); i < n; i++)
				stack_.emplace_back(child_of(node_at(p, i)), level + 1);
		}
	}
	return true;
}

/* The record of the named database 'name' in the main database, checked; cached per transaction. */
bool
PageCheck::find_named(const char *name, LmdbDb *out)
{
	for (const NamedRoot &r : names_)
		if (std::strcmp(r.name, name) == 0)
		{
			*out = r.db;
			return true;
		}
	tree_name_ = "main";
	const LmdbDb &main = meta_.main_db;
	MDB_val       key{std::strlen(name), const_cast<char *>(name)};
	if (main.depth == 0)
		return fail(P_INVALID, "the main database is empty: no record of the %s database", name);
	/* the main database's pages were all checked in setup() */
	uint64_t pgno = main.root;
	for (int level = 0; level + 1 < main.depth; level++)
		pgno = child_of(node_at(page(pgno), branch_index(page(pgno), key)));
	const unsigned char *node = leaf_node(page(pgno), key);
	if (node == nullptr)
		return fail(P_INVALID, "the main database has no record of the %s database", name);
	*out = read_lmdb_db(node + NODE_HEADER + u16_at(node + 6));
	tree_name_ = name;
	if (!check_db_record(*out, Tree::NAMED))
		return false;
	names_.push_back(NamedRoot{name, *out});
	return true;
}

/*
 * The path of 'key' (or the rightmost path, for an append) from the root to
 * its leaf, the neighbours left and right of it on every level with their
 * edges toward the path (what a rebalance touches, and where a key goes
 * after one moved a separator), and the old value's overflow pages.
 */
bool
PageCheck::check_path(const LmdbDb &db, const MDB_val &key, bool append)
{
	if (db.depth == 0)
		return true;
	uint64_t pgno = db.root;
	for (int level = 0; level < db.depth; level++)
	{
		if (level + 1 < db.depth)
		{
			if (!check_page(pgno, Role::BRANCH, Tree::NAMED))
				return false;
			const unsigned char *p = page(pgno);
			unsigned             n = keys_of(p);
			unsigned             c = append ? n - 1 : branch_index(p, key);
			if (c > 0 && !check_edge(child_of(node_at(p, c - 1)), level + 1, db.depth, true))
				return false;
			if (c + 1 < n && !check_edge(child_of(node_at(p, c + 1)), level + 1, db.depth, false))
				return false;
			pgno = child_of(node_at(p, c));
			continue;
		}
		if (!check_page(pgno, Role::LEAF, Tree::NAMED))
			return false;
		const unsigned char *node = append ? nullptr : leaf_node(page(pgno), key);
		if (node != nullptr && (u16_at(node + 4) & F_BIGDATA))
			return check_overflow(u64_at(node + NODE_HEADER + u16_at(node + 6)),
			                      data_size_of(node));
	}
	return true;
}

/* A neighbour of the path and its edge toward the path, down to the leaf level. */
bool
PageCheck::check_edge(uint64_t pgno, int level, int depth, bool rightmost)
{
	for (; level < depth; level++)
	{
		Role role = level + 1 < depth ? Role::BRANCH : Role::LEAF;
		if (!check_page(pgno, role, Tree::NAMED))
			return false;
		if (role == Role::LEAF)
			break;
		const unsigned char *p = page(pgno);
		pgno = child_of(node_at(p, rightmost ? keys_of(p) - 1 : 0));
	}
	return true;
}

/*
 * One branch or leaf page: its number, its flags (exactly the role's: no
 * meta, dirty, sub-page or LEAF2 flag), free-space bounds inside the page
 * and in order, every node inside the page with its key and inline data,
 * children among the file's data pages, and the nodes' flags and sizes
 * the database allows (the free list's records are checked whole).
 */
bool
PageCheck::check_page(uint64_t pgno, Role role, Tree tree)
{
	uint64_t seen =
	    checked_key(pgno, static_cast<unsigned>(role) * 4 + static_cast<unsigned>(tree));
	if (checked_.count(seen))
		return true;
	bool branch = role == Role::BRANCH;
	if (pgno < FIRST_DATA_PAGE || pgno > last_pg_)
		return fail(P_INVALID, "a page of the %s database names page %llu, outside %llu..%llu",
		            tree_name_, static_cast<unsigned long long>(pgno),
		            static_cast<unsigned long long>(FIRST_DATA_PAGE),
		            static_cast<unsigned long long>(last_pg_));
	if (pgno >= file_pages_)
		return fail(pgno, "lies beyond the end of data.mdb (%llu pages)",
		            static_cast<unsigned long long>(file_pages_));
	const unsigned char *p = page(pgno);
	uint16_t             flags = u16_at(p + 10), lower = u16_at(p + 12), upper = u16_at(p + 14);
	if (u64_at(p) != pgno)
		return fail(pgno, "holds the header of page %llu",
		            static_cast<unsigned long long>(u64_at(p)));
	if (flags != (branch ? P_BRANCH : P_LEAF))
		return fail(pgno, "is not a %s page (flags 0x%x)", branch ? "branch" : "leaf", flags);
	if (lower < PAGE_HEADER || (lower - PAGE_HEADER) % 2 != 0 || lower > upper || upper > psize_)
		return fail(pgno, "has free space from %u to %u", lower, upper);
	unsigned n = (lower - PAGE_HEADER) / 2;
	if (branch && n == 0)
		return fail(pgno, "is a branch page without children");
	uint64_t used = 0;
	for (unsigned i = 0; i < n; i++)
	{
		uint16_t off = u16_at(p + PAGE_HEADER + 2 * i);
		if (off < upper || off % 2 != 0 || off + NODE_HEADER > psize_)
			return fail(pgno, "has node %u at offset %u, outside %u..%zu", i, off, upper, psize_);
		const unsigned char *node = p + off;
		uint16_t             nflags = u16_at(node + 4), ksize = u16_at(node + 6);
		uint64_t             size = NODE_HEADER + ksize;
		if (branch)
		{
			uint64_t child = child_of(node);
			if (child < FIRST_DATA_PAGE || child > last_pg_)
				return fail(pgno, "has node %u naming page %llu, outside %llu..%llu", i,
				            static_cast<unsigned long long>(child),
				            static_cast<unsigned long long>(FIRST_DATA_PAGE),
				            static_cast<unsigned long long>(last_pg_));
		}
		else
		{
			uint64_t dsize = data_size_of(node);
			bool     big = nflags & F_BIGDATA;
			if (tree == Tree::MAIN ? nflags != F_SUBDATA || dsize != DB_RECORD
			                       : (nflags & ~F_BIGDATA) != 0)
				return fail(pgno, "has node %u with flags 0x%x and %llu bytes of data", i, nflags,
				            static_cast<unsigned long long>(dsize));
			if (tree == Tree::FREE && ksize != sizeof(uint64_t))
				return fail(pgno, "has node %u with a key of %u bytes", i, ksize);
			size += big ? sizeof(uint64_t) : dsize;
		}
		if (off + size > psize_)
			return fail(pgno, "has node %u of %llu bytes at offset %u, past the page's end", i,
			            static_cast<unsigned long long>(size), off);
		used += (size + 1) & ~uint64_t(1);
	}
	if (used > psize_ - upper)
		return fail(pgno, "has nodes of %llu bytes in %zu bytes: they overlap",
		            static_cast<unsigned long long>(used), psize_ - upper);
	/* the records: the free list's page lists, the main database's database records */
	if (!branch && tree != Tree::NAMED)
		for (unsigned i = 0; i < n; i++)
		{
			const unsigned char *node = node_at(p, i);
			const unsigned char *data = node + NODE_HEADER + u16_at(node + 6);
			uint64_t             dsize = data_size_of(node);
			if (tree == Tree::MAIN)
			{
				const char *name = tree_name_;
				tree_name_ = "named";
				bool ok = check_db_record(read_lmdb_db(data), Tree::NAMED);
				tree_name_ = name;
				if (!ok)
					return false;
				continue;
			}
			if (u16_at(node + 4) & F_BIGDATA)
			{
				uint64_t over = u64_at(data);
				if (!check_overflow(over, dsize))
					return false;
				data = page(over) + PAGE_HEADER;
			}
			if (!check_free_record(pgno, data, dsize))
				return false;
		}
	checked_.insert(seen);
	return true;
}

/*
 * The overflow pages of a record of 'bytes' bytes: the first one's header
 * (number, flags, page count) and a run that ends by the last page in use
 * and holds the record inside the file.
 */
bool
PageCheck::check_overflow(uint64_t pgno, uint64_t bytes)
{
	uint64_t seen = checked_key(pgno, 7);
	if (checked_.count(seen))
		return true;
	uint64_t need = (PAGE_HEADER - 1 + bytes) / psize_ + 1;
	if (pgno < FIRST_DATA_PAGE || pgno > last_pg_ || need > last_pg_ + 1 - pgno)
		return fail(P_INVALID,
		            "a record of the %s database names overflow page %llu, outside %llu..%llu",
		            tree_name_, static_cast<unsigned long long>(pgno),
		            static_cast<unsigned long long>(FIRST_DATA_PAGE),
		            static_cast<unsigned long long>(last_pg_));
	if (pgno + need > file_pages_)
		return fail(pgno, "(overflow) lies beyond the end of data.mdb (%llu pages)",
		            static_cast<unsigned long long>(file_pages_));
	const unsigned char *p = page(pgno);
	uint32_t             count = u32_at(p + 12);
	if (u64_at(p) != pgno)
		return fail(pgno, "(overflow) holds the header of page %llu",
		            static_cast<unsigned long long>(u64_at(p)));
	if (u16_at(p + 10) != P_OVERFLOW)
		return fail(pgno, "is not an overflow page (flags 0x%x)", u16_at(p + 10));
	if (count < need || count > last_pg_ + 1 - pgno)
		return fail(pgno, "(overflow) counts %u pages for a record of %llu bytes", count,
		            static_cast<unsigned long long>(bytes));
	checked_.insert(seen);
	return true;
}

/*
 * A free-list record: a count, then that many page numbers, each a data
 * page in use before the snapshot, in descending order (as LMDB keeps them).
 */
bool
PageCheck::check_free_record(uint64_t pgno, const unsigned char *data, uint64_t bytes)
{
	if (bytes < sizeof(uint64_t))
		return fail(pgno, "has a free-list record of %llu bytes",
		            static_cast<unsigned long long>(bytes));
	uint64_t count = u64_at(data);
	if (count > bytes / sizeof(uint64_t) - 1)
		return fail(pgno, "has a free-list record of %llu bytes counting %llu pages",
		            static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(count));
	uint64_t previous = last_pg_ + 1;
	for (uint64_t i = 1; i <= count; i++)
	{
		uint64_t free = u64_at(data + i * sizeof(uint64_t));
		if (free < FIRST_DATA_PAGE || free >= previous)
			return fail(pgno, "has a free-list record naming page %llu after %llu",
			            static_cast<unsigned long long>(free),
			            static_cast<unsigned long long>(previous));
		previous = free;
	}
	return true;
}

} // namespace hannoy
