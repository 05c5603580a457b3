/*
 * test_space.cpp
 *	  hannoy_env_space: the parts of a sidecar's bytes.  Their pages add up
 *	  to the pages LMDB uses and their bytes to the files' sizes, with no
 *	  page left unaccounted, after a build, after VACUUM freed pages and
 *	  after inserts reused them; each database's entries agree with the
 *	  counters.
 */
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <map>
#include <string>
#include <vector>

#include "hannoy/hannoy.h"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;

constexpr uint32_t DIMS = 300; /* enough for codes under quantizer 'auto' */

/* The parts of 'env' by name. */
std::map<std::string, HannoySpacePart>
space(HannoyEnv *env)
{
	HannoySpacePart parts[HANNOY_SPACE_PARTS];
	uint32_t        count = 0;
	HannoyError     err;
	EXPECT_EQ(hannoy_env_space(env, parts, &count, &err), HANNOY_OK) << err.message;
	std::map<std::string, HannoySpacePart> out;
	for (uint32_t i = 0; i < count; i++)
		EXPECT_TRUE(out.emplace(parts[i].name, parts[i]).second) << parts[i].name;
	return out;
}

uint64_t
file_bytes(const char *dir, const char *name)
{
	struct stat st;
	return stat((std::string(dir) + "/" + name).c_str(), &st) == 0
	           ? static_cast<uint64_t>(st.st_size)
	           : 0;
}

/* Checks that the parts of 'env' at 'path' add up and agree with its counters. */
void
expect_parts_add_up(HannoyEnv *env, const char *path)
{
	auto        parts = space(env);
	HannoyStats stats = hannoy_test::env_stats(env);
	uint64_t    pages = 0, bytes = 0;
	for (const auto &[name, p] : parts)
	{
		pages += p.pages;
		bytes += p.bytes;
	}
	EXPECT_EQ(parts.count("lmdb unaccounted"), 0u);
	EXPECT_EQ(pages, stats.used_pages);
	EXPECT_EQ(bytes, file_bytes(path, "data.mdb") + file_bytes(path, "lock.mdb"));
	EXPECT_EQ(parts.at("lmdb meta pages").pages, 2u);
	EXPECT_EQ(parts.at("tids").entries, stats.items);
	EXPECT_EQ(parts.at("items").entries, stats.items);
	EXPECT_EQ(parts.at("free").entries, stats.free_ids);
	EXPECT_EQ(parts.at("deleted").entries, stats.deleted);
	EXPECT_EQ(parts.at("codes").entries, stats.codes);
	EXPECT_EQ(parts.at("unindexed").entries, stats.unindexed);
	EXPECT_GE(parts.at("links").entries, stats.items + stats.deleted);
	EXPECT_GT(parts.at("links").pages, 0u);
}

TEST(Space, PartsAddUpAfterBuildVacuumAndInserts)
{
	TempEnvDir dir;
	HannoyMeta meta = hannoy_test::test_meta(HANNOY_METRIC_L2, DIMS, 8, 32);
	auto       vectors = hannoy_test::uniform(800, DIMS, 5);
	HannoyEnv *env = hannoy_test::build_all(dir.path(), meta, vectors, 2, 3);
	expect_parts_add_up(env, dir.path());
	auto built = space(env);
	EXPECT_EQ(built.at("vectors").entries, 800u); /* one piece per vector at 300 floats */
	EXPECT_GT(built.at("codes").pages, 0u);

	/* VACUUM frees pages; they are listed as free, not lost */
	uint64_t free_before = built.at("lmdb free pages").pages;
	hannoy_test::vacuum(env, [](HannoyTid tid) { return tid % 4 == 0; });
	expect_parts_add_up(env, dir.path());
	EXPECT_GT(space(env).at("lmdb free pages").pages, free_before);

	/* inserts reuse freed ids and pages */
	HannoyError err;
	for (size_t i = 0; i < 100; i++)
		ASSERT_EQ(hannoy_insert(env, 100000 + i, &vectors[i * DIMS], 0, &err), HANNOY_OK)
		    << err.message;
	expect_parts_add_up(env, dir.path());
	hannoy_env_close(env);
}

} // namespace
