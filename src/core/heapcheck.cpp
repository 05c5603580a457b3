/*
 * heapcheck.cpp
 *	  The rows a sidecar holds, handed out in heap TID order for the shim to
 *	  compare with the heap: each live graph row with a copy of its stored
 *	  vector, and each unindexed row with its kind.
 *
 *	  Every call reads one bounded batch in its own short read transaction
 *	  and remembers only the last TID it handed out, so the caller can check
 *	  for interrupts and read the heap between batches while writers go on.
 *	  Graph rows come from the items database (heap TID -> item id), checked
 *	  against the tids database (the map scans return TIDs from), and their
 *	  vectors through Store::vector; unindexed rows come from the unindexed
 *	  database.  Both are keyed by big-endian TIDs, so two cursors merge
 *	  them into one stream in TID order.
 */
#include "core_guard.hpp"

#include <cstring>

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

/* A cursor over one TID-keyed database, positioned after a given TID. */
class TidStream
{
  public:
	TidStream(MDB_txn *txn, MDB_dbi dbi, const char *name, const HannoyRowPosition &pos)
	    : cursor_(txn, dbi), name_(name)
	{
		hannoy::TidKey start(pos.started ? pos.after : 0);
		key_ = start.val();
		valid_ = cursor_.get(key_, data_, MDB_SET_RANGE);
		if (valid_ && pos.started && hannoy::decode_tid(key_) <= pos.after)
			valid_ = cursor_.get(key_, data_, MDB_NEXT);
	}
	bool
	valid() const
	{
		return valid_;
	}
	HannoyTid
	tid() const
	{
		return hannoy::decode_tid(key_);
	}
	const MDB_val &
	data() const
	{
		return data_;
	}
	/* Moves on; a damaged tree can hand keys out of order (or in a cycle): the walk must end. */
	void
	next()
	{
		HannoyTid before = tid();
		valid_ = cursor_.get(key_, data_, MDB_NEXT);
		if (valid_ && (key_.mv_size != 6 || tid() <= before))
			throw hannoy::Error(HANNOY_ERR_CORRUPT,
			                    std::string("the ") + name_ +
			                        " database is damaged (a malformed or misplaced key)");
	}

  private:
	hannoy::Cursor cursor_;
	const char    *name_;
	MDB_val        key_{}, data_{};
	bool           valid_ = false;
};

} // namespace

extern "C" HannoyStatus
hannoy_stored_rows_next(HannoyEnv *env, HannoyRowPosition *pos, HannoyStoredRow *rows,
                        uint32_t capacity, void *vectors, size_t vectors_size, uint32_t *count,
                        size_t *vector_bytes, HannoyError *err)
{
	*count = 0;
	*vector_bytes = 0;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    hannoy::Store &s = store_of(env);
		    hannoy::Txn    txn(s.env(), true);

		    /* the dimension count of an index built empty is set by its first insert */
		    s.reload_meta(txn.get());
		    /* an index without vectors hands out its codes (DESIGN.md "Heap re-ranking") */
		    std::shared_ptr<const hannoy::Quantizer> q = s.quantizer();
		    bool                                     heap = q && q->heap_rerank();
		    size_t stride = heap ? q->code_bytes() : s.vector_bytes();
		    *vector_bytes = stride;
		    if (pos->done)
			    return;
		    if (stride > 0 && vectors_size / stride < capacity)
			    capacity = static_cast<uint32_t>(vectors_size / stride);

		    TidStream graph(txn.get(), s.dbi_items, "items", *pos);
		    TidStream unindexed(txn.get(), s.dbi_unindexed, "unindexed", *pos);
		    uint32_t  n = 0;
		    while (n < capacity && (graph.valid() || unindexed.valid()))
		    {
			    HannoyStoredRow row{};
			    /*
			     * A TID in both databases is a corruption the walk reports; the
			     * next batch starts after it, so its unindexed twin may be skipped.
			     */
			    if (graph.valid() && (!unindexed.valid() || graph.tid() <= unindexed.tid()))
			    {
				    if (graph.data().mv_size != 4)
					    throw hannoy::Error(HANNOY_ERR_CORRUPT,
					                        "an items record has a malformed item id");
				    row.tid = graph.tid();
				    row.id = hannoy::decode_id(graph.data());
				    graph.next();
				    HannoyTid mapped = 0;
				    /* a row the TID maps disagree on, or without a vector: the walk reports it */
				    unsigned char *out = static_cast<unsigned char *>(vectors) + n * stride;
				    const uint8_t *code = nullptr;
				    if (!s.tid_of(txn.get(), row.id, &mapped) || mapped != row.tid || stride == 0)
					    row.vector_missing = true;
				    else if (heap)
				    {
					    if (s.code_of(txn.get(), row.id, &code))
						    std::memcpy(out, code, stride);
					    else
						    row.vector_missing = true;
				    }
				    else if (!s.copy_vector(txn.get(), row.id, out))
					    row.vector_missing = true;
			    }
			    else
			    {
				    const MDB_val &kind = unindexed.data();
				    row.tid = unindexed.tid();
				    row.id = UINT32_MAX;
				    row.unindexed_kind =
				        kind.mv_size >= 1 ? *static_cast<const uint8_t *>(kind.mv_data) : 0;
				    /* a malformed record: the walk reports it */
				    if (row.unindexed_kind != HANNOY_ROW_UNINDEXED_NULL &&
				        row.unindexed_kind != HANNOY_ROW_UNINDEXED_NAN)
					    row.vector_missing = true;
				    unindexed.next();
			    }
			    rows[n++] = row;
			    pos->started = true;
			    pos->after = row.tid;
		    }
		    if (!graph.valid() && !unindexed.valid())
			    pos->done = true;
		    *count = n;
	    });
}

extern "C" HannoyStatus
hannoy_env_encode(HannoyEnv *env, const void *vector, uint8_t *out, size_t size, size_t *code_bytes,
                  HannoyError *err)
{
	*code_bytes = 0;
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           hannoy::Store                           &s = store_of(env);
		                           std::shared_ptr<const hannoy::Quantizer> q = s.quantizer();
		                           if (!q)
		                           {
			                           hannoy::Txn txn(s.env(), true);
			                           s.reload_meta(txn.get());
			                           q = s.quantizer();
		                           }
		                           if (!q || q->code_bytes() > size)
			                           return;
		                           q->encode(vector, out);
		                           *code_bytes = q->code_bytes();
	                           });
}
