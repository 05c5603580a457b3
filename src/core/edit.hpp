/*
 * edit.hpp
 *	  The stored graph as the list edits of graph.hpp see it: the accessor
 *	  inserts and VACUUM's repair use inside one LMDB write transaction.
 *	  It goes through the Store API only (vectors, lists, tombstones).
 */
#ifndef HANNOY_EDIT_HPP
#define HANNOY_EDIT_HPP

#include "core_guard.hpp"

#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "graph.hpp"
#include "storage.hpp"

namespace hannoy
{

/*
 * The graph in 'txn', editable.  Searches through it skip the nodes in
 * 'hidden' (a repair's tombstones, about to be deleted), so what they reach
 * is reached without them; links never go to a tombstone.
 */
class StoredEditor
{
  public:
	StoredEditor(const Store &store, MDB_txn *txn,
	             const std::unordered_set<uint32_t> *hidden = nullptr)
	    : store_(store), txn_(txn), graph_(store, txn), hidden_(hidden)
	{
	}
	double
	distance(const void *query, uint32_t id) const
	{
		return graph_.distance(query, id);
	}
	double
	distance_between(uint32_t a, uint32_t b) const
	{
		if (decoded_)
			return decoded_->distance_between(a, b);
		if (!cache_vectors_)
			return graph_.distance_between(a, b);
		const std::string *va = cached_vector(a), *vb = cached_vector(b);
		if (va == nullptr || vb == nullptr)
			return HUGE_VAL;
		const void *pieces[VectorLayout::MAX_PIECES];
		store_.layout().split(va->data(), pieces);
		return store_.layout().distance(pieces, vb->data());
	}
	/*
	 * Keeps a copy of each vector distance_between reads for the rest of
	 * this editor's life.  Linking a new node prunes up to m0 lists, each
	 * measuring the same few dozen vectors against each other hundreds of
	 * times, and every read is a B-tree descent.  Only for edits that
	 * change no vector while the editor lives (an insert's linking).
	 */
	void
	cache_vectors(bool yes)
	{
		cache_vectors_ = yes;
		vectors_.clear();
	}
	/*
	 * Measures distance_between on the rows' decoded 8-bit codes of 'q'
	 * (DecodedCodes) instead of their vectors: an insert's linking, when its
	 * neighbours were chosen so (insert.cpp, choose_on_codes).  Only for
	 * edits that change no code but the new node's, written before.
	 */
	void
	measure_codes(std::shared_ptr<const Quantizer> q)
	{
		quantizer_ = std::move(q);
		decoded_ = quantizer_ ? std::make_unique<DecodedCodes>(store_, txn_, *quantizer_) : nullptr;
	}
	/*
	 * With cache_vectors: takes a vector from 'seen' (what an insert's
	 * search read) when this write transaction began right on the snapshot
	 * it came from (SeenVectors::hold_in), saving the B-tree descent; never
	 * for 'written', the one vector the transaction wrote.
	 */
	void
	trust_seen(const SeenVectors *seen, uint32_t written)
	{
		seen_ = seen != nullptr && seen->hold_in(store_, txn_) ? seen : nullptr;
		written_ = written;
	}
	/*
	 * With cache_vectors and trust_seen: takes vectors from 'copies' (made
	 * to serve this transaction, Store::vector_copies) and keeps there the
	 * ones it reads from the B-tree, never 'written', the vector this
	 * transaction wrote (should it abort, the id would come again with
	 * another vector).
	 */
	void
	use_copies(VectorCopies *copies)
	{
		copies_ = copies;
	}
	/*
	 * In an index without vectors, keeps each decoded code while the editor
	 * lives (see StoredGraph::keep_decoded): only for edits that change no
	 * code meanwhile (links only).
	 */
	void
	keep_decoded(bool yes)
	{
		graph_.keep_decoded(yes);
	}
	/* Neighbours a search follows: the stored list without hidden nodes. */
	void
	neighbors(uint32_t id, int layer, std::vector<uint32_t> &out) const
	{
		store_.links(txn_, id, layer, out);
		if (hidden_ != nullptr && !hidden_->empty())
			out.erase(std::remove_if(out.begin(), out.end(),
			                         [this](uint32_t n) { return hidden_->count(n) > 0; }),
			          out.end());
	}
	/* The stored list as it is. */
	bool
	peek(uint32_t id, int layer, std::vector<uint32_t> &out) const
	{
		store_.links(txn_, id, layer, out);
		return true;
	}
	/* Tombstones go away with the next repair: their links prove nothing. */
	bool
	may_cover(uint32_t id) const
	{
		return !tombstones_ || !store_.is_deleted(txn_, id);
	}
	/* Says whether the index may hold tombstones (true unless told otherwise). */
	void
	may_have_tombstones(bool yes)
	{
		tombstones_ = yes;
	}
	/*
	 * Adds 'x' (never a tombstone) to the list of 'into' when it has room.
	 * The node being inserted (see new_node) can also make room: its
	 * farthest entry that no edit relies on gives way, since links from it
	 * are new and nothing needs them yet.
	 */
	bool
	adopt(uint32_t into, int layer, uint32_t x, bool make_room)
	{
		if (!may_cover(x))
			return false;
		store_.links(txn_, into, layer, adopt_);
		if (!holds(adopt_, x))
		{
			if (adopt_.size() < max_links(layer))
				adopt_.push_back(x);
			else if (!make_room || into != new_node_ || !make_room_in(into))
				return false;
			else
				adopt_.push_back(x);
			store_.put_links(txn_, into, layer, adopt_);
		}
		relies(into, layer, x);
		return true;
	}
	/* Notes that an edit relies on the new node's list holding 'x'. */
	void
	relies(uint32_t y, int layer, uint32_t x)
	{
		if (y == new_node_ && layer == new_layer_ && !holds(relied_, x))
			relied_.push_back(x);
	}
	/* Starts linking node 'id' at 'layer': its list may make room for adoptions. */
	void
	new_node(uint32_t id, int layer)
	{
		new_node_ = id;
		new_layer_ = layer;
		relied_.clear();
	}
	void
	set_links(uint32_t id, int layer, const std::vector<uint32_t> &list)
	{
		store_.put_links(txn_, id, layer, list);
	}
	size_t
	max_links(int layer) const
	{
		return store_.max_links(layer);
	}
	const void *
	vector(uint32_t id, std::string &buf) const
	{
		buf.resize(store_.vector_bytes());
		return store_.copy_vector(txn_, id, &buf[0]) ? buf.data() : nullptr;
	}

  private:
	/* The copy of the vector of 'id', read on first use; nullptr when it has none. */
	const std::string *
	cached_vector(uint32_t id) const
	{
		auto it = vectors_.find(id);
		if (it == vectors_.end())
		{
			std::string        buf(store_.vector_bytes(), '\0');
			bool               mine = id != written_;
			const void *const *seen = seen_ != nullptr && mine ? seen_->find(id) : nullptr;
			const char        *copy = copies_ != nullptr && mine ? copies_->find(id) : nullptr;
			if (copy != nullptr)
				std::memcpy(&buf[0], copy, buf.size());
			else if (seen != nullptr)
				store_.layout().gather(seen, &buf[0]);
			else if (!store_.copy_vector(txn_, id, &buf[0]))
				buf.clear();
			else if (copies_ != nullptr && mine)
				copies_->add_whole(id, buf.data());
			it = vectors_.emplace(id, std::move(buf)).first;
		}
		return it->second.empty() ? nullptr : &it->second;
	}

	/* Removes from adopt_ the farthest entry of 'into' that no edit relies on. */
	bool
	make_room_in(uint32_t into)
	{
		size_t victim = adopt_.size();
		double worst = -1;
		for (size_t i = 0; i < adopt_.size(); i++)
		{
			if (holds(relied_, adopt_[i]))
				continue;
			double d = sort_key(distance_between(into, adopt_[i])); /* as the prunes measure */
			if (d > worst)
			{
				worst = d;
				victim = i;
			}
		}
		if (victim == adopt_.size())
			return false;
		adopt_.erase(adopt_.begin() + victim);
		return true;
	}

	const Store                                      &store_;
	MDB_txn                                          *txn_;
	StoredGraph                                       graph_;
	const std::unordered_set<uint32_t>               *hidden_;
	std::vector<uint32_t>                             adopt_, relied_;
	uint32_t                                          new_node_ = NO_NODE;
	int                                               new_layer_ = -1;
	bool                                              tombstones_ = true;
	bool                                              cache_vectors_ = false;
	const SeenVectors                                *seen_ = nullptr;    /* see trust_seen */
	VectorCopies                                     *copies_ = nullptr;  /* see use_copies */
	uint32_t                                          written_ = NO_NODE; /* see trust_seen */
	mutable std::unordered_map<uint32_t, std::string> vectors_;           /* see cache_vectors */
	std::shared_ptr<const Quantizer>                  quantizer_;         /* see measure_codes */
	std::unique_ptr<DecodedCodes>                     decoded_;
};

} // namespace hannoy

#endif /* HANNOY_EDIT_HPP */
