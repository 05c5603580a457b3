/*
 * graph_bench.cpp
 *	  Compares HNSW graphs built on the same data, without PostgreSQL: the
 *	  core's bulk build and an index filled by inserts into an empty index
 *	  (both through the C ABI), hnswlib (Debian libhnswlib-dev) and an
 *	  emulation of pgvector's build rule.  Every graph is loaded into memory
 *	  and searched by the same plain HNSW search (greedy descent, then a beam
 *	  of width ef at layer 0), which counts distance computations; the core's
 *	  graphs are also searched through hannoy_scan_* and hnswlib's through
 *	  searchKnn.  Per graph it prints the build time (one thread), the degree
 *	  distribution per layer, the layer-0 nodes nothing links to, the nodes
 *	  the layer-0 walk from the entry point reaches, and per ef recall@10,
 *	  distances per query and how many queries find 0, 1, ... of their 10.
 *
 *	  graph_bench BASE.npy QUERIES.npy   (python3 bench/make_synthetic.py angular DIR --npy
 *	                                      writes a clustered set with a common direction)
 *	  environment: METRIC l2 | cosine (l2), M (16), EFC (64), EF (list,
 *	  "10,20,40,80,160,320,640,1000"), SYSTEMS (list of build, insert,
 *	  hnswlib, pgvector; all), THREADS (1), NQ (every query), WORK (a
 *	  directory for the environments, /tmp/graph_bench), SEED (42: the
 *	  core's level seed; the emulation draws levels the same way).
 *
 *	  Build (the core's objects from make unittest's CMake tree):
 *	    cmake -S test/core -B build/core && cmake --build build/core --target hannoy_core
 *	    g++ -std=c++17 -O3 -march=native -Iinclude -Isrc/core -o build/graph_bench \
 *	        bench/core/graph_bench.cpp build/core/libhannoy_core.a -llmdb -lroaring -lpthread
 */
#include <sys/stat.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <sstream>
#include <string>
#include <vector>

#include <hnswlib/hnswlib.h>

#include "hannoy/hannoy.h"
#include "storage.hpp"

namespace
{

using Clock = std::chrono::steady_clock;

/* CPU seconds of this process: other work on the machine does not count. */
double
cpu_seconds()
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A float32 C-order .npy file with two dimensions. */
std::vector<float>
read_npy(const char *path, size_t &rows, size_t &dims)
{
	FILE *f = fopen(path, "rb");
	if (f == nullptr)
	{
		fprintf(stderr, "cannot open %s\n", path);
		std::exit(1);
	}
	char magic[10];
	if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0)
		std::exit(1);
	size_t      hlen = uint8_t(magic[8]) | (uint8_t(magic[9]) << 8);
	std::string header(hlen, ' ');
	if (fread(&header[0], 1, hlen, f) != hlen || header.find("'<f4'") == std::string::npos ||
	    header.find("'fortran_order': False") == std::string::npos)
	{
		fprintf(stderr, "%s: not a float32 C-order array\n", path);
		std::exit(1);
	}
	size_t p = header.find("'shape': (");
	if (sscanf(header.c_str() + p, "'shape': (%zu, %zu)", &rows, &dims) != 2)
		std::exit(1);
	std::vector<float> v(rows * dims);
	if (fread(v.data(), sizeof(float), v.size(), f) != v.size())
		std::exit(1);
	fclose(f);
	return v;
}

void
check(HannoyStatus st, const HannoyError &err)
{
	if (st != HANNOY_OK)
	{
		fprintf(stderr, "error: %s\n", err.message);
		std::exit(1);
	}
}

HannoyTid
tid_of(size_t i)
{
	return HannoyTid(((i / 100 + 1) << 16) | (i % 100 + 1));
}

size_t
row_of(HannoyTid t)
{
	return ((t >> 16) - 1) * 100 + ((t & 0xffff) - 1);
}

std::vector<long>
int_list(const char *s, const char *dflt)
{
	std::vector<long> out;
	std::stringstream ss(s ? s : dflt);
	std::string       item;
	while (std::getline(ss, item, ','))
		out.push_back(atol(item.c_str()));
	return out;
}

long
env_long(const char *name, long dflt)
{
	const char *v = getenv(name);
	return v ? atol(v) : dflt;
}

/* A graph in memory: links[node][layer], the entry point and its level. */
struct Graph
{
	std::vector<std::vector<std::vector<uint32_t>>> links;
	uint32_t                                        entry = 0;
	int                                             max_level = 0;
};

struct Data
{
	std::vector<float> base, queries;
	size_t             n = 0, nq = 0, dims = 0;
	HannoyMetric       metric = HANNOY_METRIC_L2;
	const float *
	row(size_t i) const
	{
		return &base[i * dims];
	}
	const float *
	query(size_t q) const
	{
		return &queries[q * dims];
	}
	double
	dist(const float *a, const float *b) const
	{
		return hannoy_distance(metric, a, b, uint32_t(dims));
	}
};

struct Cand
{
	double   d;
	uint32_t id;
	bool
	operator<(const Cand &o) const
	{
		return d < o.d || (d == o.d && id < o.id);
	}
	bool
	operator>(const Cand &o) const
	{
		return o < *this;
	}
};

/* Plain HNSW search of layer 'layer' from 'entries' with width ef; counts distances. */
std::vector<Cand>
beam(const Graph &g, const std::function<double(uint32_t)> &dist, std::vector<Cand> entries,
     size_t ef, int layer, std::vector<uint32_t> &seen, uint32_t stamp, size_t &ndist)
{
	std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> frontier;
	std::priority_queue<Cand>                                        best;
	for (const Cand &e : entries)
	{
		if (seen[e.id] == stamp)
			continue;
		seen[e.id] = stamp;
		frontier.push(e);
		best.push(e);
		if (best.size() > ef)
			best.pop();
	}
	while (!frontier.empty())
	{
		Cand c = frontier.top();
		if (best.size() >= ef && best.top() < c)
			break;
		frontier.pop();
		if (size_t(layer) >= g.links[c.id].size())
			continue;
		for (uint32_t n : g.links[c.id][layer])
		{
			if (seen[n] == stamp)
				continue;
			seen[n] = stamp;
			Cand x{dist(n), n};
			ndist++;
			if (best.size() < ef || x < best.top())
			{
				frontier.push(x);
				best.push(x);
				if (best.size() > ef)
					best.pop();
			}
		}
	}
	std::vector<Cand> out(best.size());
	for (size_t i = best.size(); i-- > 0; best.pop())
		out[i] = best.top();
	return out;
}

struct Searcher
{
	std::vector<uint32_t> seen;
	uint32_t              stamp = 0;

	/* Greedy descent to layer 'to' + 1, then beams from there down to 'to'. */
	std::vector<Cand>
	search(const Graph &g, const std::function<double(uint32_t)> &dist, size_t ef, int to,
	       size_t &ndist)
	{
		if (seen.size() < g.links.size())
			seen.assign(g.links.size(), 0);
		Cand ep{dist(g.entry), g.entry};
		ndist++;
		for (int layer = g.max_level; layer > to; layer--)
		{
			++stamp;
			ep = beam(g, dist, {ep}, 1, layer, seen, stamp, ndist)[0];
		}
		++stamp;
		return beam(g, dist, {ep}, ef, to, seen, stamp, ndist);
	}
};

/* ---- statistics of a graph ---- */
void
print_stats(const char *name, const Graph &g)
{
	size_t n = g.links.size();
	int    top = 0;
	for (auto &l : g.links)
		top = std::max(top, int(l.size()) - 1);
	printf("[%s] nodes %zu, entry %u at level %d\n", name, n, g.entry, g.max_level);
	for (int layer = 0; layer <= top; layer++)
	{
		size_t                   lists = 0, edges = 0, mn = SIZE_MAX, mx = 0;
		std::map<size_t, size_t> hist;
		for (auto &l : g.links)
			if (size_t(layer) < l.size())
			{
				lists++;
				edges += l[layer].size();
				mn = std::min(mn, l[layer].size());
				mx = std::max(mx, l[layer].size());
				hist[l[layer].size() / 4 * 4]++;
			}
		printf("[%s] layer %d: %zu lists, degree mean %.2f min %zu max %zu", name, layer, lists,
		       double(edges) / lists, mn, mx);
		if (layer == 0)
		{
			printf("; by 4s:");
			for (auto &h : hist)
				printf(" %zu-%zu:%zu", h.first, h.first + 3, h.second);
		}
		printf("\n");
	}
	std::vector<uint32_t> indeg(n, 0);
	for (auto &l : g.links)
		for (uint32_t x : l[0])
			indeg[x]++;
	size_t                zero = std::count(indeg.begin(), indeg.end(), 0u);
	std::vector<char>     reached(n, 0);
	std::vector<uint32_t> stack{g.entry};
	reached[g.entry] = 1;
	size_t count = 1;
	while (!stack.empty())
	{
		uint32_t x = stack.back();
		stack.pop_back();
		for (uint32_t y : g.links[x][0])
			if (!reached[y])
			{
				reached[y] = 1;
				count++;
				stack.push_back(y);
			}
	}
	printf("[%s] layer 0: in-degree 0: %zu nodes; reachable from the entry point: %zu of %zu\n",
	       name, zero, count, n);
}

/* Recall, distances and the spread of hits per ef through the in-memory search. */
void
print_recall(const char *name, const Graph &g, const Data &D,
             const std::vector<std::vector<uint32_t>> &truth, const std::vector<long> &efs)
{
	Searcher s;
	for (long ef : efs)
	{
		size_t              hits = 0, ndist = 0;
		std::vector<size_t> spread(11, 0);
		for (size_t q = 0; q < D.nq; q++)
		{
			const float *qv = D.query(q);
			auto         r = s.search(
			            g, [&](uint32_t id) { return D.dist(qv, D.row(id)); }, std::max<size_t>(ef, 10), 0,
			            ndist);
			size_t h = 0;
			for (size_t k = 0; k < 10 && k < r.size(); k++)
				h += std::count(truth[q].begin(), truth[q].end(), r[k].id);
			hits += h;
			spread[h]++;
		}
		printf("[%s] ef %4ld recall %.4f dist/q %7.0f  hits 0..10:", name, ef, hits / (10.0 * D.nq),
		       double(ndist) / D.nq);
		for (size_t h = 0; h <= 10; h++)
			printf(" %zu", spread[h]);
		printf("\n");
	}
}

/* ---- hannoy through the C ABI ---- */
HannoyEnvConfig
env_config()
{
	HannoyEnvConfig cfg{};
	cfg.max_readers = 126;
	cfg.file_mode = 0600;
	cfg.dir_mode = 0700;
	cfg.durable = false;
	return cfg;
}

HannoyEnv *
create_env(const std::string &path, const Data &D, uint32_t m, uint32_t efc, uint64_t seed)
{
	HannoyMeta meta{};
	meta.format_version = HANNOY_FORMAT_VERSION;
	meta.metric = D.metric;
	meta.dims = uint32_t(D.dims);
	meta.options.m = m;
	meta.m0 = 2 * m;
	meta.options.ef_construction = efc;
	meta.seed = seed;
	meta.generation = seed;
	HannoyError     err;
	HannoyEnv      *env = nullptr;
	HannoyEnvConfig cfg = env_config();
	HannoyError     rerr;
	hannoy_env_remove(path.c_str(), &rerr);
	check(hannoy_env_create(path.c_str(), &cfg, &meta, &env, &err), err);
	return env;
}

/* Loads the stored graph (ids are row numbers: both paths number rows in order). */
Graph
load_graph(HannoyEnv *env, size_t n)
{
	hannoy::Store     &s = *reinterpret_cast<hannoy::Store *>(env);
	hannoy::Txn        txn(s.env(), true);
	hannoy::GraphState st = s.read_state(txn.get());
	Graph              g;
	g.entry = st.entry_point;
	g.max_level = st.max_level;
	g.links.resize(n);
	std::vector<uint32_t> list;
	for (uint32_t id = 0; id < n; id++)
	{
		for (int layer = 0; layer <= st.max_level; layer++)
		{
			s.links(txn.get(), id, layer, list);
			if (list.empty() && layer > 0)
				break;
			g.links[id].push_back(list);
		}
	}
	return g;
}

void
hannoy_scan_recall(const char *name, HannoyEnv *env, const Data &D,
                   const std::vector<std::vector<uint32_t>> &truth, const std::vector<long> &efs)
{
	HannoyError err;
	HannoyScan *scan;
	check(hannoy_scan_create(env, &scan, &err), err);
	printf("[%s scan]", name);
	for (long ef : efs)
	{
		size_t hits = 0;
		for (size_t q = 0; q < D.nq; q++)
		{
			check(hannoy_scan_start(scan, D.query(q), uint32_t(D.dims), uint32_t(ef), 0, &err),
			      err);
			for (int k = 0; k < 10; k++)
			{
				HannoyTid tid;
				double    dist;
				bool      isnull, found;
				check(hannoy_scan_next(scan, &tid, &dist, &isnull, &found, &err), err);
				if (!found)
					break;
				hits += std::count(truth[q].begin(), truth[q].end(), uint32_t(row_of(tid)));
			}
		}
		printf(" ef %ld: %.4f", ef, hits / (10.0 * D.nq));
	}
	printf("\n");
	hannoy_scan_free(scan);
}

Graph
hannoy_build(const std::string &work, const Data &D, uint32_t m, uint32_t efc, uint64_t seed,
             uint32_t threads, bool insert, HannoyEnv **out)
{
	std::string path = work + (insert ? "/insert" : "/build");
	HannoyEnv  *env = create_env(path, D, m, efc, seed);
	HannoyError err;
	auto        t0 = Clock::now();
	double      c0 = cpu_seconds();
	if (insert)
	{
		for (size_t i = 0; i < D.n; i++)
			check(hannoy_insert(env, tid_of(i), D.row(i), HANNOY_ROW_INDEXED, &err), err);
	}
	else
	{
		HannoyBuilder *b;
		check(hannoy_build_begin(env, threads, &b, &err), err);
		for (size_t i = 0; i < D.n; i++)
			check(hannoy_build_add(b, tid_of(i), D.row(i), HANNOY_ROW_INDEXED, &err), err);
		bool                done = false;
		HannoyBuildProgress p;
		while (!done)
			check(hannoy_build_step(b, 100, &p, &done, &err), err);
		hannoy_build_free(b);
	}
	printf("[%s] build %.2f s, %.2f s CPU (m %u, efc %u, %u thread(s))\n",
	       insert ? "insert" : "build", std::chrono::duration<double>(Clock::now() - t0).count(),
	       cpu_seconds() - c0, m, efc, insert ? 1 : threads);
	*out = env;
	return load_graph(env, D.n);
}

/* ---- hnswlib ---- */
Graph
hnswlib_build(const Data &D, uint32_t m, uint32_t efc,
              const std::vector<std::vector<uint32_t>> &truth, const std::vector<long> &efs)
{
	std::vector<float> base = D.base, queries = D.queries;
	if (D.metric == HANNOY_METRIC_COSINE)
		for (auto *v : {&base, &queries})
			for (size_t i = 0; i < v->size() / D.dims; i++)
			{
				double s = 0;
				for (size_t j = 0; j < D.dims; j++)
					s += double((*v)[i * D.dims + j]) * (*v)[i * D.dims + j];
				for (size_t j = 0; j < D.dims; j++)
					(*v)[i * D.dims + j] = float((*v)[i * D.dims + j] / std::sqrt(s));
			}
	hnswlib::L2Space                space(D.dims);
	hnswlib::HierarchicalNSW<float> index(&space, D.n, m, efc, 100);
	auto                            t0 = Clock::now();
	double                          c0 = cpu_seconds();
	for (size_t i = 0; i < D.n; i++)
		index.addPoint(&base[i * D.dims], i);
	printf("[hnswlib] build %.2f s, %.2f s CPU (m %u, efc %u, 1 thread)\n",
	       std::chrono::duration<double>(Clock::now() - t0).count(), cpu_seconds() - c0, m, efc);
	printf("[hnswlib searchKnn]");
	for (long ef : efs)
	{
		index.setEf(size_t(ef));
		size_t hits = 0;
		for (size_t q = 0; q < D.nq; q++)
		{
			auto r = index.searchKnn(&queries[q * D.dims], 10);
			for (; !r.empty(); r.pop())
				hits += std::count(truth[q].begin(), truth[q].end(), uint32_t(r.top().second));
		}
		printf(" ef %ld: %.4f", ef, hits / (10.0 * D.nq));
	}
	printf("\n");
	Graph g;
	g.entry = index.enterpoint_node_;
	g.max_level = index.maxlevel_;
	g.links.resize(D.n);
	for (size_t i = 0; i < D.n; i++)
	{
		/* labels equal internal ids: one thread, added in order */
		for (int layer = 0; layer <= index.element_levels_[i]; layer++)
		{
			unsigned int *data = layer == 0 ? index.get_linklist0(hnswlib::tableint(i))
			                                : index.get_linklist(hnswlib::tableint(i), layer);
			size_t        cnt = index.getListCount(data);
			g.links[i].emplace_back(data + 1, data + 1 + cnt);
		}
	}
	return g;
}

/* ---- pgvector's build rule, emulated ---- */

/*
 * pgvector 0.8's SelectNeighbors: the heuristic over candidates sorted
 * nearest first, kept candidates are nearer to the base than to every
 * node kept before; then the nearest discarded ones fill the list to lm.
 * Returns the list; 'pruned' gets the one left out when there is exactly
 * one more candidate than lm.
 */
std::vector<uint32_t>
pg_select(const Data &D, const std::vector<Cand> &c, size_t lm, uint32_t *pruned)
{
	std::vector<uint32_t> r, wd;
	if (c.size() <= lm)
	{
		for (auto &x : c)
			r.push_back(x.id);
		return r;
	}
	size_t i = 0;
	for (; i < c.size() && r.size() < lm; i++)
	{
		bool closer = true;
		for (uint32_t k : r)
			if (D.dist(D.row(c[i].id), D.row(k)) <= c[i].d)
			{
				closer = false;
				break;
			}
		if (closer)
			r.push_back(c[i].id);
		else
			wd.push_back(c[i].id);
	}
	size_t w = 0;
	while (w < wd.size() && r.size() < lm)
		r.push_back(wd[w++]);
	if (pruned != nullptr)
		*pruned = w < wd.size() ? wd[w] : (i < c.size() ? c[i].id : UINT32_MAX);
	return r;
}

Graph
pgvector_build(const Data &D, uint32_t m, uint32_t efc, uint64_t seed)
{
	auto  t0 = Clock::now();
	Graph g;
	g.links.resize(D.n);
	Searcher s;
	s.seen.assign(D.n, 0);
	size_t ndist = 0;
	for (uint32_t id = 0; id < D.n; id++)
	{
		int level = hannoy::draw_level(seed, id, m);
		g.links[id].resize(level + 1);
		if (id == 0)
		{
			g.entry = 0;
			g.max_level = level;
			continue;
		}
		const float *q = D.row(id);
		auto         dist = [&](uint32_t x) { return D.dist(q, D.row(x)); };
		Cand         ep{dist(g.entry), g.entry};
		for (int layer = g.max_level; layer > level; layer--)
		{
			++s.stamp;
			ep = beam(g, dist, {ep}, 1, layer, s.seen, s.stamp, ndist)[0];
		}
		std::vector<Cand> entries{ep};
		for (int layer = std::min(level, g.max_level); layer >= 0; layer--)
		{
			size_t lm = layer == 0 ? 2 * m : m;
			++s.stamp;
			auto w = beam(g, dist, entries, efc, layer, s.seen, s.stamp, ndist);
			auto mine = pg_select(D, w, lm, nullptr);
			g.links[id][layer] = mine;
			for (uint32_t nb : mine)
			{
				auto &list = g.links[nb][layer];
				if (list.size() < lm)
				{
					list.push_back(id);
					continue;
				}
				std::vector<Cand> c;
				for (uint32_t x : list)
					c.push_back(Cand{D.dist(D.row(nb), D.row(x)), x});
				c.push_back(Cand{D.dist(D.row(nb), q), id});
				std::sort(c.begin(), c.end());
				uint32_t pruned = UINT32_MAX;
				pg_select(D, c, lm, &pruned);
				if (pruned == id || pruned == UINT32_MAX)
					continue;
				*std::find(list.begin(), list.end(), pruned) = id;
			}
			entries = w;
		}
		if (level > g.max_level)
		{
			g.max_level = level;
			g.entry = id;
		}
	}
	printf("[pgvector] build %.2f s (emulated; m %u, efc %u, 1 thread)\n",
	       std::chrono::duration<double>(Clock::now() - t0).count(), m, efc);
	return g;
}

} // namespace

int
main(int argc, char **argv)
{
	if (argc < 3)
	{
		fprintf(stderr, "usage: graph_bench BASE.npy QUERIES.npy\n");
		return 2;
	}
	Data   D;
	size_t qd;
	D.base = read_npy(argv[1], D.n, D.dims);
	D.queries = read_npy(argv[2], D.nq, qd);
	if (qd != D.dims)
		return 2;
	D.nq = std::min<size_t>(D.nq, size_t(env_long("NQ", long(D.nq))));
	const char *metric = getenv("METRIC");
	D.metric = metric && strcmp(metric, "cosine") == 0 ? HANNOY_METRIC_COSINE : HANNOY_METRIC_L2;
	uint32_t          m = uint32_t(env_long("M", 16)), efc = uint32_t(env_long("EFC", 64));
	uint32_t          threads = uint32_t(env_long("THREADS", 1));
	uint64_t          seed = uint64_t(env_long("SEED", 42));
	std::vector<long> efs = int_list(getenv("EF"), "10,20,40,80,160,320,640,1000");
	std::string systems = getenv("SYSTEMS") ? getenv("SYSTEMS") : "build,insert,hnswlib,pgvector";
	std::string work = getenv("WORK") ? getenv("WORK") : "/tmp/graph_bench";
	mkdir(work.c_str(), 0700);
	printf("data %s: %zu x %zu, %zu queries, metric %s\n", argv[1], D.n, D.dims, D.nq,
	       D.metric == HANNOY_METRIC_COSINE ? "cosine" : "l2");

	/* exact top 10 */
	std::vector<std::vector<uint32_t>> truth(D.nq);
	for (size_t q = 0; q < D.nq; q++)
	{
		std::vector<Cand> d(D.n);
		for (uint32_t i = 0; i < D.n; i++)
			d[i] = Cand{D.dist(D.query(q), D.row(i)), i};
		std::partial_sort(d.begin(), d.begin() + 10, d.end());
		for (int k = 0; k < 10; k++)
			truth[q].push_back(d[k].id);
	}

	std::stringstream ss(systems);
	std::string       sys;
	while (std::getline(ss, sys, ','))
	{
		Graph      g;
		HannoyEnv *env = nullptr;
		if (sys == "build" || sys == "insert")
			g = hannoy_build(work, D, m, efc, seed, threads, sys == "insert", &env);
		else if (sys == "hnswlib")
			g = hnswlib_build(D, m, efc, truth, efs);
		else if (sys == "pgvector")
			g = pgvector_build(D, m, efc, seed);
		else
		{
			fprintf(stderr, "unknown system %s\n", sys.c_str());
			return 2;
		}
		print_stats(sys.c_str(), g);
		print_recall(sys.c_str(), g, D, truth, efs);
		if (env != nullptr)
		{
			hannoy_scan_recall(sys.c_str(), env, D, truth, efs);
			hannoy_env_close(env);
		}
		fflush(stdout);
	}
	return 0;
}
