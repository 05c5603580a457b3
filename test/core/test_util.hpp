/*
 * test_util.hpp
 *	  Helpers shared by the core's unit tests: a temporary environment
 *	  directory and the environment configuration tests use.
 */
#ifndef HANNOY_TEST_UTIL_HPP
#define HANNOY_TEST_UTIL_HPP

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "hannoy/hannoy.h"

namespace hannoy_test
{

/* A temporary directory holding one environment, removed at the end. */
class TempEnvDir
{
  public:
	TempEnvDir()
	{
		char  tmpl[] = "/tmp/hannoy-core-test-XXXXXX";
		char *dir = mkdtemp(tmpl);
		if (dir == nullptr)
			std::abort();
		root_ = dir;
		path_ = root_ + "/env";
	}
	~TempEnvDir()
	{
		HannoyError err;
		hannoy_env_remove(path_.c_str(), &err);
		rmdir(root_.c_str());
	}
	const char *
	path() const
	{
		return path_.c_str();
	}

  private:
	std::string root_, path_;
};

/* Test configuration: a small map, never synced. */
inline HannoyEnvConfig
test_config()
{
	HannoyEnvConfig c{};
	c.max_readers = 126;
	c.map_size = uint64_t(1) << 32;
	c.file_mode = 0600;
	c.dir_mode = 0700;
	c.durable = false;
	return c;
}

} // namespace hannoy_test

#endif /* HANNOY_TEST_UTIL_HPP */
