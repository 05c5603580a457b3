/*
 * test_dirty.cpp
 *	  The dirty marker (DESIGN.md "The dirty marker"): a durable sidecar's
 *	  writer leaves a marker with the machine's boot id until its commits
 *	  are on disk; a marker of another boot says the sidecar may be torn.
 */
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hannoy/hannoy.h"
#include "test_util.hpp"

namespace
{

using hannoy_test::TempEnvDir;
using hannoy_test::test_config;
using hannoy_test::test_meta;

constexpr uint32_t DIMS = 4;

/* The dirty markers in 'path'. */
std::vector<std::string>
markers(const char *path)
{
	std::vector<std::string> names;
	DIR                     *dir = opendir(path);
	if (dir == nullptr)
		return names;
	while (struct dirent *de = readdir(dir))
		if (std::string(de->d_name).rfind("dirty.", 0) == 0)
			names.push_back(de->d_name);
	closedir(dir);
	return names;
}

/* This machine's boot id, as the core reads it. */
std::string
this_boot()
{
	std::ifstream in("/proc/sys/kernel/random/boot_id");
	std::string   s;
	std::getline(in, s);
	return s;
}

/* Writes a marker named 'name' holding 'boot' into 'path'. */
void
write_marker(const char *path, const std::string &name, const std::string &boot)
{
	std::ofstream out(std::string(path) + "/" + name);
	out << boot << "\n";
}

/* A durable sidecar in 'path' with one row inserted. */
HannoyEnv *
durable_env_with_a_row(const char *path)
{
	HannoyEnvConfig config = test_config();
	config.durable = true;
	HannoyMeta  meta = test_meta(HANNOY_METRIC_L2, DIMS);
	HannoyEnv  *env = nullptr;
	HannoyError err;
	EXPECT_EQ(hannoy_env_create(path, &config, &meta, &env, &err), HANNOY_OK) << err.message;
	float v[DIMS] = {1, 2, 3, 4};
	EXPECT_EQ(hannoy_insert(env, 1 << 16 | 1, v, 0, &err), HANNOY_OK) << err.message;
	return env;
}

TEST(DirtyMarker, AWriterKeepsItsMarkerUntilASyncCoversItsCommits)
{
	if (this_boot().empty())
		GTEST_SKIP() << "no boot id on this system: nothing is marked";
	TempEnvDir  dir;
	HannoyError err;
	HannoyEnv  *env = durable_env_with_a_row(dir.path());
	ASSERT_NE(env, nullptr);
	std::vector<std::string> names = markers(dir.path());
	ASSERT_EQ(names.size(), 1u);
	EXPECT_EQ(names[0].rfind("dirty." + std::to_string(getpid()) + ".", 0), 0u) << names[0];
	bool torn = true;
	ASSERT_EQ(hannoy_env_torn(dir.path(), &torn, &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(torn);
	/* a young marker covers the commits: a commit need not sync */
	EXPECT_TRUE(hannoy_env_marker_covers(env));
	/* the end of a transaction keeps it while a commit is not synced */
	hannoy_env_release_marker(env);
	EXPECT_EQ(markers(dir.path()).size(), 1u);
	/* and removes it once one is, and the marker is a second old */
	std::this_thread::sleep_for(std::chrono::milliseconds(1100));
	/* a second old, it no longer covers them: the next commit syncs */
	EXPECT_FALSE(hannoy_env_marker_covers(env));
	hannoy_env_release_marker(env);
	EXPECT_EQ(markers(dir.path()).size(), 1u);
	ASSERT_EQ(hannoy_env_sync(env, &err), HANNOY_OK) << err.message;
	hannoy_env_release_marker(env);
	EXPECT_TRUE(markers(dir.path()).empty());
	/* nothing unsynced and no marker: nothing to cover, a commit would sync */
	EXPECT_FALSE(hannoy_env_marker_covers(env));
	/* the next write marks again; a sync of an older marker removes it */
	float v[DIMS] = {4, 3, 2, 1};
	ASSERT_EQ(hannoy_insert(env, 1 << 16 | 2, v, 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(markers(dir.path()).size(), 1u);
	std::this_thread::sleep_for(std::chrono::milliseconds(1100));
	ASSERT_EQ(hannoy_env_sync(env, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(markers(dir.path()).empty());
	/* so does another process's sync that covered the commits */
	ASSERT_EQ(hannoy_insert(env, 1 << 16 | 3, v, 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(markers(dir.path()).size(), 1u);
	std::this_thread::sleep_for(std::chrono::milliseconds(1100));
	hannoy_env_note_synced(env);
	EXPECT_TRUE(markers(dir.path()).empty());
	/* a marker being written has another name: never read as torn */
	write_marker(dir.path(), "tmp-dirty.1.0", "");
	ASSERT_EQ(hannoy_env_torn(dir.path(), &torn, &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(torn);
	unlink((std::string(dir.path()) + "/tmp-dirty.1.0").c_str());
	ASSERT_EQ(hannoy_insert(env, 1 << 16 | 4, v, 0, &err), HANNOY_OK) << err.message;
	/* closing syncs and removes it */
	ASSERT_EQ(hannoy_insert(env, 1 << 16 | 3, v, 0, &err), HANNOY_OK) << err.message;
	EXPECT_EQ(markers(dir.path()).size(), 1u);
	hannoy_env_close(env);
	EXPECT_TRUE(markers(dir.path()).empty());
}

TEST(DirtyMarker, AMarkerOfAnotherBootMeansTorn)
{
	TempEnvDir  dir;
	HannoyError err;
	HannoyEnv  *env = durable_env_with_a_row(dir.path());
	ASSERT_NE(env, nullptr);
	hannoy_env_close(env);
	bool torn = true;
	ASSERT_EQ(hannoy_env_torn(dir.path(), &torn, &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(torn);
	write_marker(dir.path(), "dirty.12345.0", "00000000-0000-0000-0000-000000000000");
	ASSERT_EQ(hannoy_env_torn(dir.path(), &torn, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(torn);
	/* a marker cut short (no boot id written) counts as another boot's */
	unlink((std::string(dir.path()) + "/dirty.12345.0").c_str());
	write_marker(dir.path(), "dirty.12345.1", "");
	ASSERT_EQ(hannoy_env_torn(dir.path(), &torn, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(torn);
	/* no directory: nothing torn */
	ASSERT_EQ(hannoy_env_torn("/nonexistent/hannoy-dirty", &torn, &err), HANNOY_OK);
	EXPECT_FALSE(torn);
}

TEST(DirtyMarker, AMarkerOfThisBootIsClearedOnceItsProcessIsGone)
{
	if (this_boot().empty())
		GTEST_SKIP() << "no boot id on this system: nothing is marked";
	TempEnvDir  dir;
	HannoyError err;
	HannoyEnv  *env = durable_env_with_a_row(dir.path());
	ASSERT_NE(env, nullptr);
	hannoy_env_close(env);
	pid_t child = fork();
	ASSERT_GE(child, 0);
	if (child == 0)
		_exit(0);
	ASSERT_EQ(waitpid(child, nullptr, 0), child);
	/* a process crash: its page cache writes are intact */
	std::string dead = "dirty." + std::to_string(child) + ".0";
	std::string alive = "dirty." + std::to_string(getppid()) + ".0";
	write_marker(dir.path(), dead, this_boot());
	write_marker(dir.path(), alive, this_boot());
	bool torn = true;
	ASSERT_EQ(hannoy_env_torn(dir.path(), &torn, &err), HANNOY_OK) << err.message;
	EXPECT_FALSE(torn);
	std::vector<std::string> left = markers(dir.path());
	ASSERT_EQ(left.size(), 1u);
	EXPECT_EQ(left[0], alive);
}

TEST(DirtyMarker, ASidecarThatIsNotDurableIsNeverMarked)
{
	TempEnvDir      dir;
	HannoyEnvConfig config = test_config();
	HannoyMeta      meta = test_meta(HANNOY_METRIC_L2, DIMS);
	HannoyEnv      *env = nullptr;
	HannoyError     err;
	ASSERT_EQ(hannoy_env_create(dir.path(), &config, &meta, &env, &err), HANNOY_OK) << err.message;
	float v[DIMS] = {1, 2, 3, 4};
	ASSERT_EQ(hannoy_insert(env, 1 << 16 | 1, v, 0, &err), HANNOY_OK) << err.message;
	EXPECT_TRUE(markers(dir.path()).empty());
	hannoy_env_close(env);
}

} // namespace
