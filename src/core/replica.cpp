/*
 * replica.cpp
 *	  The C ABI of replica sidecars: a standby's WAL redo creates them and
 *	  stages the primary's rows in them (DESIGN.md "Replication and
 *	  recovery").  Every change is one synced write transaction that also
 *	  moves the applied-LSN stamp, so replaying a record twice changes
 *	  nothing.
 */
#include "core_guard.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

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

/* The marker file that says redo made the sidecar in 'path'. */
std::string
marker_of(const std::string &path)
{
	return path + "/replica";
}

/*
 * The hint file that says an adopted replica still has staged rows, so the
 * linker of a primary knows where to look without opening every sidecar.
 * Only a hint: it is not synced, and trust never depends on it.
 */
std::string
staged_hint_of(const std::string &path)
{
	return path + "/staged";
}

/* The number of staged rows in 'txn'. */
uint64_t
count_staged(hannoy::Store &s, MDB_txn *txn)
{
	MDB_stat st;
	int      rc = hannoy::guarded(s.env(), [&] { return mdb_stat(txn, s.dbi_staged, &st); });
	if (rc != 0)
		hannoy::throw_lmdb(rc, "counting staged rows");
	return st.ms_entries;
}

/*
 * hannoy_replica_adopt's work on the sidecar: true when it is (now) a
 * primary's sidecar on 'timeline'; *hint when staged rows are left.
 */
bool
adopt(hannoy::Store &s, uint32_t timeline, uint64_t replayed_to, bool *hint)
{
	if (!s.has_staged() || timeline == 0)
		return false;
	hannoy::Txn txn(s.env(), false);
	/* a rebuild from the table cut short holds only part of the rows */
	if (s.read_seeding(txn.get()))
		return false;
	s.reload_meta(txn.get());
	HannoyMeta meta = s.meta();
	*hint = count_staged(s, txn.get()) > 0;
	/* stamped before a crash that came before the marker went */
	if (meta.timeline == timeline)
		return true;
	/* a stamp past the replayed WAL: rows the heap may not have (not this history) */
	if (meta.timeline != 0 || s.read_applied(txn.get()) > replayed_to)
		return false;
	meta.timeline = timeline;
	s.write_meta(txn.get(), meta);
	txn.commit();
	s.sync(true);
	return true;
}

/*
 * Begins the write transaction of one redo record: false (nothing to do)
 * when the sidecar's stamp shows WAL up to 'lsn' applied already.  'lsn' 0
 * is a primary's own write to a replica being rebuilt: always applied.
 */
bool
needs_apply(hannoy::Store &s, MDB_txn *txn, uint64_t lsn)
{
	if (!s.has_staged())
		throw hannoy::Error(HANNOY_ERR_INVALID, "the sidecar was not made by WAL redo");
	return lsn == 0 || s.read_applied(txn) < lsn;
}

} // namespace

namespace
{

/* hannoy_replica_create and hannoy_replica_create_seeding. */
HannoyStatus
create_replica(const char *path, const HannoyEnvConfig *config, const HannoyMeta *meta,
               uint64_t lsn, bool seeding, HannoyError *err)
{
	HannoyEnv   *env = nullptr;
	HannoyStatus st = hannoy_env_create(path, config, meta, &env, err);
	if (st != HANNOY_OK)
		return st;
	st = hannoy::run_guarded(err,
	                         [&]
	                         {
		                         hannoy::Store &s = store_of(env);
		                         s.create_staged(lsn);
		                         if (seeding)
		                         {
			                         hannoy::Txn txn(s.env(), false);
			                         s.create_seeding(txn.get());
			                         txn.commit();
		                         }
		                         s.sync(true);
	                         });
	hannoy_env_close(env);
	if (st != HANNOY_OK)
		return st;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    /* the marker last: a crash before it leaves a sidecar nobody trusts */
		    std::string marker = marker_of(path);
		    int         fd = open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		                          static_cast<mode_t>(config->file_mode));
		    if (fd < 0)
			    throw hannoy::Error(
			        HANNOY_ERR_STORAGE,
			        "could not create file \"" + marker + "\": " + std::strerror(errno), errno);
		    close(fd);
		    if (config->durable)
		    {
			    hannoy::sync_path(marker, false);
			    hannoy::sync_path(path, true);
		    }
	    });
}

} // namespace

extern "C" HannoyStatus
hannoy_replica_create(const char *path, const HannoyEnvConfig *config, const HannoyMeta *meta,
                      uint64_t lsn, HannoyError *err)
{
	return create_replica(path, config, meta, lsn, false, err);
}

extern "C" HannoyStatus
hannoy_replica_create_seeding(const char *path, const HannoyEnvConfig *config,
                              const HannoyMeta *meta, HannoyError *err)
{
	/* stamp 0: every record redo reads from now on is applied */
	return create_replica(path, config, meta, 0, true, err);
}

namespace
{

/*
 * True when the file 'name_of(path)' names exists; building the name may
 * throw std::bad_alloc, which counts as absent (a marker not there is not
 * trusted, a hint not there only costs a wait).
 */
bool
file_there(const char *path, std::string (*name_of)(const std::string &))
{
	bool there = false;
	return hannoy::run_guarded(nullptr,
	                           [&]
	                           {
		                           struct stat st;
		                           there = stat(name_of(path).c_str(), &st) == 0;
	                           }) == HANNOY_OK &&
	       there;
}

} // namespace

extern "C" bool
hannoy_replica_marked(const char *path)
{
	return file_there(path, marker_of);
}

extern "C" HannoyStatus
hannoy_replica_unmark(const char *path, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           std::string marker = marker_of(path);
		                           if (unlink(marker.c_str()) != 0)
		                           {
			                           if (errno == ENOENT)
				                           return;
			                           throw hannoy::Error(HANNOY_ERR_STORAGE,
			                                               "could not remove file \"" + marker +
			                                                   "\": " + std::strerror(errno),
			                                               errno);
		                           }
		                           hannoy::sync_path(path, true);
	                           });
}

extern "C" HannoyStatus
hannoy_replica_stage(HannoyEnv *env, uint64_t lsn, uint32_t dims, const HannoyStagedRow *rows,
                     uint32_t count, bool *applied, HannoyError *err)
{
	*applied = false;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    hannoy::Txn    txn(s.env(), false);
		    if (!needs_apply(s, txn.get(), lsn))
			    return;
		    s.reload_meta(txn.get());
		    HannoyMeta meta = s.meta();
		    bool       vectors = false;
		    for (uint32_t i = 0; i < count && !vectors; i++)
			    vectors = rows[i].vector != nullptr;
		    if (vectors && meta.dims == 0)
		    {
			    if (dims == 0)
				    throw hannoy::Error(HANNOY_ERR_INVALID, "staged vectors without dimensions");
			    meta.dims = dims;
			    s.write_meta(txn.get(), meta);
		    }
		    else if (vectors && meta.dims != dims)
			    throw hannoy::Error(HANNOY_ERR_INVALID,
			                        "staged vectors of " + std::to_string(dims) +
			                            " dimensions in an index of " + std::to_string(meta.dims));
		    size_t                     bytes = hannoy_vector_bytes(meta.metric, meta.dims);
		    std::vector<unsigned char> value;
		    /* a rebuild's graph is its build's until it ends (hannoy_replica_seed_end) */
		    bool               seeding = s.read_seeding(txn.get());
		    hannoy::GraphState state = s.read_state(txn.get());
		    for (uint32_t i = 0; i < count; i++)
		    {
			    const HannoyStagedRow &row = rows[i];
			    hannoy::TidKey         key(row.tid);
			    if (row.vector == nullptr && row.kind != HANNOY_ROW_UNINDEXED_NULL &&
			        row.kind != HANNOY_ROW_UNINDEXED_NAN)
				    throw hannoy::Error(HANNOY_ERR_INVALID,
				                        "a staged row without a vector has kind " +
				                            std::to_string(row.kind) + ", not 1 or 2");
			    /* a linked row of the same TID is replaced too: never one row twice */
			    if (!seeding)
				    hannoy::forget_row(s, txn.get(), row.tid, state);
			    value.assign(1, row.vector != nullptr ? static_cast<uint8_t>(HANNOY_ROW_INDEXED)
			                                          : row.kind);
			    if (row.vector != nullptr)
				    value.insert(value.end(), static_cast<const unsigned char *>(row.vector),
				                 static_cast<const unsigned char *>(row.vector) + bytes);
			    hannoy::put(txn.get(), s.dbi_staged, key.val(),
			                MDB_val{value.size(), value.data()});
		    }
		    if (!seeding)
			    s.write_state(txn.get(), state);
		    if (lsn != 0)
			    s.write_applied(txn.get(), lsn);
		    txn.commit();
		    s.sync(true);
		    *applied = true;
	    });
}

extern "C" HannoyStatus
hannoy_replica_unstage(HannoyEnv *env, uint64_t lsn, const HannoyTid *tids, uint32_t count,
                       bool *applied, HannoyError *err)
{
	*applied = false;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    hannoy::Txn    txn(s.env(), false);
		    if (!needs_apply(s, txn.get(), lsn))
			    return;
		    /* a row linked already becomes a tombstone, as VACUUM's do */
		    hannoy::GraphState state = s.read_state(txn.get());
		    bool               seeding = s.read_seeding(txn.get());
		    if (seeding && s.dbi_seeding == 0)
			    throw hannoy::Error(HANNOY_ERR_CORRUPT, "a replica being rebuilt has no "
			                                            "\"seeding\" database");
		    for (uint32_t i = 0; i < count; i++)
		    {
			    hannoy::TidKey key(tids[i]);
			    hannoy::del(txn.get(), s.dbi_staged, key.val());
			    /* a rebuild's row leaves its graph when it ends (hannoy_replica_seed_end) */
			    if (seeding)
				    hannoy::put(txn.get(), s.dbi_seeding, key.val(), MDB_val{0, nullptr});
			    else
				    hannoy::forget_row(s, txn.get(), tids[i], state);
		    }
		    if (!seeding)
			    s.write_state(txn.get(), state);
		    if (lsn != 0)
			    s.write_applied(txn.get(), lsn);
		    txn.commit();
		    s.sync(true);
		    *applied = true;
	    });
}

extern "C" HannoyStatus
hannoy_replica_link(HannoyEnv *env, uint32_t budget_ms, uint64_t *linked, uint64_t *staged,
                    HannoyError *err)
{
	*linked = 0;
	*staged = 0;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    if (!s.has_staged())
			    throw hannoy::Error(HANNOY_ERR_INVALID, "the sidecar was not made by WAL redo");
		    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(budget_ms);
		    hannoy::Txn txn(s.env(), false);
		    /* a replica being rebuilt links once the table's rows are all staged */
		    if (s.read_seeding(txn.get()))
			    return;
		    s.reload_meta(txn.get());
		    size_t             bytes = s.vector_bytes();
		    hannoy::GraphState state = s.read_state(txn.get());
		    /* floats: the kernels read the vector aligned */
		    std::vector<float> vector((bytes + sizeof(float) - 1) / sizeof(float) + 1);
		    bool               more = true;
		    while (more)
		    {
			    HannoyTid tid;
			    uint8_t   kind;
			    {
				    hannoy::Cursor cur(txn.get(), s.dbi_staged);
				    MDB_val        key, data;
				    if (!cur.get(key, data, MDB_FIRST))
					    break;
				    /* never a row linked as what it is not: kind and size checked */
				    kind = hannoy::staged_kind(data, bytes);
				    tid = hannoy::decode_tid(key);
				    if (kind == HANNOY_ROW_INDEXED)
					    std::memcpy(vector.data(),
					                static_cast<const unsigned char *>(data.mv_data) + 1, bytes);
			    }
			    hannoy::TidKey key(tid);
			    hannoy::del(txn.get(), s.dbi_staged, key.val());
			    hannoy::insert_in_txn(s, txn.get(), state, tid,
			                          kind == HANNOY_ROW_INDEXED ? vector.data() : nullptr, kind);
			    /* the next row's search reads the state this one left */
			    s.write_state(txn.get(), state);
			    (*linked)++;
			    more = std::chrono::steady_clock::now() < deadline;
		    }
		    MDB_stat st;
		    int      rc =
		        hannoy::guarded(s.env(), [&] { return mdb_stat(txn.get(), s.dbi_staged, &st); });
		    if (rc != 0)
			    hannoy::throw_lmdb(rc, "counting staged rows");
		    *staged = st.ms_entries;
		    if (*linked > 0)
		    {
			    txn.commit();
			    s.sync(true);
		    }
		    /* an adopted replica's hint goes with its last staged row */
		    if (*staged == 0)
			    unlink(staged_hint_of(s.path()).c_str());
	    });
}

extern "C" HannoyStatus
hannoy_replica_adopt(HannoyEnv *env, const char *path, uint32_t timeline, uint64_t replayed_to,
                     bool *adopted, HannoyError *err)
{
	*adopted = false;
	bool         hint = false;
	HannoyStatus st = hannoy::run_guarded(
	    err, [&] { *adopted = adopt(store_of(env), timeline, replayed_to, &hint); });
	if (st != HANNOY_OK)
	{
		*adopted = false;
		return st;
	}
	/* best effort: without the hint the linker of a restarted primary leaves them to VACUUM */
	if (hint)
		hannoy::run_guarded(nullptr,
		                    [&]
		                    {
			                    int fd = open(staged_hint_of(path).c_str(),
			                                  O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
			                    if (fd >= 0)
				                    close(fd);
		                    });
	/* the stamp first: a crash before the marker goes leaves an adopted sidecar, not a lost one */
	return hannoy_replica_unmark(path, err);
}

extern "C" bool
hannoy_replica_has_staged_hint(const char *path)
{
	return file_there(path, staged_hint_of);
}

extern "C" HannoyStatus
hannoy_replica_state(HannoyEnv *env, uint64_t *staged, uint64_t *lsn, HannoyError *err)
{
	*staged = 0;
	*lsn = 0;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    if (!s.has_staged())
			    return;
		    hannoy::Txn txn(s.env(), true);
		    MDB_stat    st;
		    int         rc =
		        hannoy::guarded(s.env(), [&] { return mdb_stat(txn.get(), s.dbi_staged, &st); });
		    if (rc != 0)
			    hannoy::throw_lmdb(rc, "counting staged rows");
		    *staged = st.ms_entries;
		    *lsn = s.read_applied(txn.get());
	    });
}

extern "C" HannoyStatus
hannoy_replica_seed_end(HannoyEnv *env, HannoyError *err)
{
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    hannoy::Txn    txn(s.env(), false);
		    if (!s.has_staged() || !s.read_seeding(txn.get()) || s.dbi_seeding == 0)
			    throw hannoy::Error(HANNOY_ERR_INVALID,
			                        "the sidecar is not a replica being rebuilt from its table");
		    s.reload_meta(txn.get());
		    /*
		     * What redo did since the rebuild began is newer than the table's
		     * copy: a TID it staged or removed leaves the built graph (a
		     * tombstone, or its unindexed entry goes); a staged row is linked
		     * later, as any.
		     */
		    hannoy::GraphState state = s.read_state(txn.get());
		    for (MDB_dbi dbi : {s.dbi_staged, s.dbi_seeding})
		    {
			    std::vector<HannoyTid> tids;
			    {
				    hannoy::Cursor cur(txn.get(), dbi);
				    MDB_val        key, data;
				    for (bool more = cur.get(key, data, MDB_FIRST); more;
				         more = cur.get(key, data, MDB_NEXT))
					    tids.push_back(hannoy::decode_tid(key));
			    }
			    for (HannoyTid tid : tids)
				    hannoy::forget_graph_row(s, txn.get(), tid, state);
		    }
		    s.write_state(txn.get(), state);
		    s.end_seeding(txn.get());
		    txn.commit();
		    s.sync(true);
	    });
}

extern "C" HannoyStatus
hannoy_replica_seeding(HannoyEnv *env, bool *seeding, HannoyError *err)
{
	*seeding = false;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store &s = store_of(env);
		                           if (!s.has_staged())
			                           return;
		                           hannoy::Txn txn(s.env(), true);
		                           *seeding = s.read_seeding(txn.get());
	                           });
}
