/*
 * env.cpp
 *	  The C ABI of environments: create, open, close, remove, meta and
 *	  counters; and VACUUM's walk over the indexed rows.
 */
#include "core_guard.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "guarded.hpp"
#include "hannoy/hannoy.h"
#include "storage.hpp"

namespace
{

/* Casts the opaque C handle to the core object. */
hannoy::Store &
store_of(HannoyEnv *env)
{
	return *reinterpret_cast<hannoy::Store *>(env);
}

/* Removes one file; a missing file is fine. */
void
remove_file(const std::string &path)
{
	if (unlink(path.c_str()) != 0 && errno != ENOENT)
		throw hannoy::Error(HANNOY_ERR_STORAGE,
		                    "could not remove file \"" + path + "\": " + std::strerror(errno));
}

/*
 * Records the owning index's OID in a small file beside LMDB's, so a sweep
 * can find the owner of a sidecar without opening its environment.
 */
void
write_owner(const std::string &path, uint32_t index_oid, uint32_t mode)
{
	std::string file = path + "/owner";
	std::string text = std::to_string(index_oid) + "\n";
	int         fd = open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		throw hannoy::Error(HANNOY_ERR_STORAGE,
		                    "could not create file \"" + file + "\": " + std::strerror(errno));
	ssize_t written = write(fd, text.data(), text.size());
	int     saved = errno;
	close(fd);
	if (written != static_cast<ssize_t>(text.size()))
		throw hannoy::Error(HANNOY_ERR_STORAGE,
		                    "could not write file \"" + file + "\": " + std::strerror(saved));
}

/* Removes an environment's files and its directory. */
void
remove_env(const std::string &path)
{
	/* the replica marker first: a half-removed sidecar is never trusted as a replica */
	remove_file(path + "/replica");
	remove_file(path + "/staged");
	remove_file(path + "/data.mdb");
	remove_file(path + "/lock.mdb");
	/* dirty markers after the data: a torn file is never left without one */
	hannoy::remove_dirty_markers(path);
	remove_file(path + "/owner");
	if (rmdir(path.c_str()) != 0 && errno != ENOENT)
		throw hannoy::Error(HANNOY_ERR_STORAGE,
		                    "could not remove directory \"" + path + "\": " + std::strerror(errno));
}

} // namespace

extern "C" HannoyStatus
hannoy_env_create(const char *path, const HannoyEnvConfig *config, const HannoyMeta *meta,
                  HannoyEnv **env, HannoyError *err)
{
	*env = nullptr;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    if (meta->dims > HANNOY_MAX_DIMS &&
		        !(hannoy_metric_info(meta->metric).element == HANNOY_ELEMENT_BIT &&
		          meta->dims <= HANNOY_MAX_BITS))
			    throw hannoy::Error(HANNOY_ERR_INVALID, "too many dimensions");
		    if (meta->options.m < 2 || meta->m0 < meta->options.m ||
		        meta->options.ef_construction < 1)
			    throw hannoy::Error(HANNOY_ERR_INVALID, "invalid graph parameters");
		    remove_env(path);
		    /* the owner file first: a crash never leaves LMDB files without one */
		    if (mkdir(path, config->dir_mode) != 0 && errno != EEXIST)
			    throw hannoy::Error(HANNOY_ERR_STORAGE,
			                        std::string("could not create directory \"") + path +
			                            "\": " + std::strerror(errno));
		    write_owner(path, meta->index_oid, config->file_mode);
		    auto s = std::make_unique<hannoy::Store>(path, *config, true, meta);
		    *env = reinterpret_cast<HannoyEnv *>(s.release());
	    });
}

extern "C" HannoyStatus
hannoy_env_open(const char *path, const HannoyEnvConfig *config, HannoyEnv **env, HannoyError *err)
{
	*env = nullptr;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           auto s = std::make_unique<hannoy::Store>(path, *config, false,
		                                                                    nullptr);
		                           *env = reinterpret_cast<HannoyEnv *>(s.release());
	                           });
}

extern "C" void
hannoy_env_close(HannoyEnv *env)
{
	delete reinterpret_cast<hannoy::Store *>(env);
}

extern "C" HannoyStatus
hannoy_env_remove(const char *path, HannoyError *err)
{
	return hannoy::run_guarded(err, [&] { remove_env(path); });
}

extern "C" bool
hannoy_env_owner(const char *path, uint32_t *index_oid)
{
	char file[PATH_MAX];
	char buf[32] = {0};
	if (std::snprintf(file, sizeof(file), "%s/owner", path) >= static_cast<int>(sizeof(file)))
		return false;
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	char         *end = nullptr;
	unsigned long v = std::strtoul(buf, &end, 10);
	if (end == buf || v > UINT32_MAX)
		return false;
	*index_oid = static_cast<uint32_t>(v);
	return true;
}

extern "C" void
hannoy_env_file_id(HannoyEnv *env, uint64_t *dev, uint64_t *ino)
{
	*dev = 0;
	*ino = 0;
	mdb_filehandle_t fd;
	struct stat      st;
	MDB_env         *e = reinterpret_cast<hannoy::Store *>(env)->env();
	if (mdb_env_get_fd(e, &fd) == 0 && fstat(fd, &st) == 0)
	{
		*dev = static_cast<uint64_t>(st.st_dev);
		*ino = static_cast<uint64_t>(st.st_ino);
	}
}

extern "C" bool
hannoy_env_exists(const char *path)
{
	char        file[PATH_MAX];
	struct stat st;
	if (std::snprintf(file, sizeof(file), "%s/data.mdb", path) >= static_cast<int>(sizeof(file)))
		return false;
	return stat(file, &st) == 0;
}

extern "C" HannoyStatus
hannoy_env_meta(HannoyEnv *env, HannoyMeta *meta, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store &s = store_of(env);
		                           hannoy::Txn    txn(s.env(), true);
		                           s.reload_meta(txn.get());
		                           *meta = s.meta();
	                           });
}

extern "C" HannoyStatus
hannoy_env_stats(HannoyEnv *env, HannoyStats *stats, HannoyError *err)
{
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store     &s = store_of(env);
		    hannoy::Txn        txn(s.env(), true);
		    hannoy::GraphState st = s.read_state(txn.get());
		    stats->items = st.items;
		    stats->unindexed = st.unindexed;
		    stats->deleted = st.deleted;
		    MDB_stat fst_free;
		    int      rc = hannoy::guarded(s.env(),
		                                  [&] { return mdb_stat(txn.get(), s.dbi_free, &fst_free); });
		    if (rc != 0)
			    hannoy::throw_lmdb(rc, "counting free ids");
		    stats->free_ids = fst_free.ms_entries;
		    s.count_codes(txn.get(), stats);
		    stats->next_id = st.next_id;
		    stats->max_level = st.max_level;
		    stats->entry_point = st.entry_point;
		    MDB_envinfo info;
		    MDB_stat    mst;
		    rc = hannoy::guarded(s.env(),
		                         [&]
		                         {
			                         mdb_env_info(s.env(), &info);
			                         return mdb_env_stat(s.env(), &mst);
		                         });
		    if (rc != 0)
			    hannoy::throw_lmdb(rc, "reading the environment's state");
		    stats->used_pages = static_cast<uint64_t>(info.me_last_pgno) + 1;
		    struct stat fst;
		    stats->file_bytes = stat((s.path() + "/data.mdb").c_str(), &fst) == 0
		                            ? static_cast<uint64_t>(fst.st_size)
		                            : stats->used_pages * mst.ms_psize;
	    });
}

extern "C" HannoyStatus
hannoy_env_check(HannoyEnv *env, HannoyError *err)
{
	return hannoy::run_guarded(err, [&] { store_of(env).check_file(); });
}

extern "C" HannoyStatus
hannoy_env_check_size(HannoyEnv *env, uint64_t size, HannoyError *err)
{
	return hannoy::run_guarded(err, [&] { store_of(env).check_file(static_cast<int64_t>(size)); });
}

extern "C" HannoyStatus
hannoy_env_sync(HannoyEnv *env, HannoyError *err)
{
	return hannoy::run_guarded(err, [&] { store_of(env).sync(true); });
}

extern "C" HannoyStatus
hannoy_env_last_commit(HannoyEnv *env, uint64_t *txnid, HannoyError *err)
{
	*txnid = 0;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           MDB_envinfo info;
		                           MDB_env    *e = store_of(env).env();
		                           int         rc =
		                               hannoy::guarded(e, [&] { return mdb_env_info(e, &info); });
		                           if (rc != 0)
			                           hannoy::throw_lmdb(rc, "reading the environment's state");
		                           *txnid = info.me_last_txnid;
	                           });
}

extern "C" HannoyStatus
hannoy_env_set_dims(HannoyEnv *env, uint32_t dims, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store &s = store_of(env);
		                           hannoy::Txn    txn(s.env(), false);
		                           s.reload_meta(txn.get());
		                           HannoyMeta meta = s.meta();
		                           if (meta.dims == dims)
			                           return;
		                           if (meta.dims != 0)
			                           throw hannoy::Error(
			                               HANNOY_ERR_INVALID,
			                               "index already has " + std::to_string(meta.dims) +
			                                   " dimensions, not " + std::to_string(dims));
		                           meta.dims = dims;
		                           s.write_meta(txn.get(), meta);
		                           txn.commit();
	                           });
}

extern "C" HannoyStatus
hannoy_entries_next(HannoyEnv *env, HannoyEntryPosition *pos, HannoyEntry *entries,
                    uint32_t capacity, uint32_t *count, HannoyError *err)
{
	*count = 0;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    hannoy::Txn    txn(s.env(), true);
		    uint32_t       n = 0;
		    while (pos->source < HANNOY_ENTRIES_DONE && n < capacity)
		    {
			    hannoy::Cursor cur(
			        txn.get(), pos->source == HANNOY_ENTRIES_GRAPH ? s.dbi_items : s.dbi_unindexed);
			    hannoy::TidKey start(pos->started ? pos->after : 0);
			    MDB_val        key = start.val(), data;
			    bool           ok = cur.get(key, data, MDB_SET_RANGE);
			    if (ok && pos->started && hannoy::decode_tid(key) == pos->after)
				    ok = cur.get(key, data, MDB_NEXT);
			    while (ok && n < capacity)
			    {
				    /* a damaged tree can hand keys out of order: the walk must move on */
				    if (key.mv_size != 6 ||
				        (pos->source == HANNOY_ENTRIES_GRAPH && data.mv_size != 4) ||
				        (pos->started && hannoy::decode_tid(key) <= pos->after))
					    throw hannoy::Error(
					        HANNOY_ERR_CORRUPT,
					        std::string("the ") +
					            (pos->source == HANNOY_ENTRIES_GRAPH ? "items" : "unindexed") +
					            " database is damaged (a malformed or misplaced key)");
				    entries[n].tid = hannoy::decode_tid(key);
				    entries[n].id =
				        pos->source == HANNOY_ENTRIES_GRAPH ? hannoy::decode_id(data) : UINT32_MAX;
				    pos->after = entries[n].tid;
				    pos->started = true;
				    n++;
				    ok = cur.get(key, data, MDB_NEXT);
			    }
			    if (!ok)
			    {
				    pos->source++;
				    pos->started = false;
				    pos->after = 0;
			    }
		    }
		    *count = n;
	    });
}

extern "C" HannoyStatus
hannoy_delete_entries(HannoyEnv *env, const HannoyEntry *entries, uint32_t count, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store     &s = store_of(env);
		                           hannoy::Txn        txn(s.env(), false);
		                           hannoy::GraphState state = s.read_state(txn.get());
		                           for (uint32_t i = 0; i < count; i++)
		                           {
			                           hannoy::TidKey tkey(entries[i].tid);
			                           if (entries[i].id == UINT32_MAX)
			                           {
				                           if (hannoy::del(txn.get(), s.dbi_unindexed, tkey.val()))
					                           state.unindexed--;
				                           continue;
			                           }
			                           MDB_val data;
			                           if (!hannoy::get(txn.get(), s.dbi_items, tkey.val(), data) ||
			                               hannoy::decode_id(data) != entries[i].id)
				                           continue;
			                           s.tombstone(txn.get(), entries[i].tid, entries[i].id, state);
		                           }
		                           s.write_state(txn.get(), state);
		                           txn.commit();
		                           s.sync(true);
	                           });
}
