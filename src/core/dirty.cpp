/*
 * dirty.cpp
 *	  The dirty marker (DESIGN.md "The dirty marker"): sidecars are written
 *	  with MDB_NOSYNC and synced later (grouped by the shim), and LMDB's
 *	  documentation warns that a system crash between a commit and its sync
 *	  can leave the environment corrupt.  So before a process first writes
 *	  to a sidecar after its last sync it creates, durably, a file
 *	  "dirty.<pid>.<n>" in the sidecar's directory holding the machine's
 *	  boot id, and removes it after a sync that covers its commits.  A
 *	  marker with another boot id means the operating system stopped while
 *	  writes may not have reached the disk: the sidecar is rebuilt.  A
 *	  marker of this boot whose process is gone (a process crash: the page
 *	  cache kept its writes) is cleared after a sync of the data file.
 */
#include "core_guard.hpp"
#include "guarded.hpp"
#include "storage.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace
{

/* A marker removed earlier than this after its creation would cost two syncs per transaction. */
constexpr auto DIRTY_MIN_AGE = std::chrono::seconds(1);

/* The prefix of a marker's file name, and of one being written. */
const char DIRTY_PREFIX[] = "dirty.";
const char TMP_PREFIX[] = "tmp-";

/* This boot of the machine (Linux), "" when it cannot be read: then nothing is marked. */
const std::string &
boot_id()
{
	static const std::string id = []
	{
		std::ifstream in("/proc/sys/kernel/random/boot_id");
		std::string   s;
		std::getline(in, s);
		return in || in.eof() ? s : std::string();
	}();
	return id;
}

/* The content of marker file 'path' (at most a line). */
std::string
marker_content(const std::string &path)
{
	std::ifstream in(path);
	std::string   s;
	std::getline(in, s);
	return s;
}

/* The process id in marker name 'name' ("dirty.<pid>.<n>"), 0 when it has none. */
pid_t
marker_pid(const char *name)
{
	const char *p = name + sizeof(DIRTY_PREFIX) - 1;
	char       *end = nullptr;
	long        pid = std::strtol(p, &end, 10);
	return end != p && *end == '.' && pid > 0 ? static_cast<pid_t>(pid) : 0;
}

} // namespace

namespace hannoy
{

void
sync_path(const std::string &path, bool directory)
{
	int fd = open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		throw Error(HANNOY_ERR_STORAGE, "could not open \"" + path + "\": " + std::strerror(errno),
		            errno);
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	if (rc != 0)
		throw Error(HANNOY_ERR_STORAGE, "could not fsync \"" + path + "\": " + std::strerror(saved),
		            saved);
}

/*
 * Writes 'content' to marker 'name' in directory 'dir' durably: under a
 * temporary name first, then renamed, so that no reader ever sees a
 * marker without its content (an empty one would say "torn").
 */
void
write_marker(const std::string &dir, const std::string &name, const std::string &content,
             mode_t mode)
{
	std::string tmp = dir + "/" + TMP_PREFIX + name;
	std::string final_name = dir + "/" + name;
	int         fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		throw Error(HANNOY_ERR_STORAGE,
		            "could not create file \"" + tmp + "\": " + std::strerror(errno), errno);
	ssize_t n = write(fd, content.data(), content.size());
	int     saved = errno;
	int     rc = n == static_cast<ssize_t>(content.size()) ? fsync(fd) : -1;
	if (rc != 0 && n == static_cast<ssize_t>(content.size()))
		saved = errno;
	close(fd);
	if (rc == 0 && rename(tmp.c_str(), final_name.c_str()) != 0)
	{
		rc = -1;
		saved = errno;
	}
	if (rc != 0)
	{
		unlink(tmp.c_str());
		throw Error(HANNOY_ERR_STORAGE,
		            "could not write file \"" + final_name +
		                "\": " + (n >= 0 && saved == 0 ? "short write" : std::strerror(saved)),
		            saved);
	}
	/* the marker must be on disk before any commit that needs it */
	sync_path(dir, true);
}

void
Store::mark_dirty()
{
	std::lock_guard<std::mutex> lock(dirty_mu_);
	dirty_writes_++;
	if (!config_.durable || !dirty_marker_.empty() || boot_id().empty())
		return;
	static std::atomic<uint64_t> seq{0};
	std::string                  name = std::string(DIRTY_PREFIX) + std::to_string(getpid()) + "." +
	                   std::to_string(seq.fetch_add(1));
	write_marker(path_, name, boot_id() + "\n", static_cast<mode_t>(config_.file_mode));
	dirty_marker_ = path_ + "/" + name;
	dirty_since_ = std::chrono::steady_clock::now();
}

void
Store::write_ended()
{
	dirty_open_.fetch_sub(1);
}

uint64_t
Store::dirty_writes() const
{
	std::lock_guard<std::mutex> lock(dirty_mu_);
	/* a write transaction still open may commit after the sync: nothing can be said */
	return dirty_open_.load() == 0 ? dirty_writes_ : UINT64_MAX;
}

void
Store::note_synced(bool closing, uint64_t writes_before)
{
	std::lock_guard<std::mutex> lock(dirty_mu_);
	/* a write transaction began after the sync did (another thread): its commit may be unsynced */
	if (writes_before != dirty_writes_)
		return;
	synced_writes_ = writes_before;
	if (dirty_marker_.empty() ||
	    (!closing && std::chrono::steady_clock::now() - dirty_since_ < DIRTY_MIN_AGE))
		return;
	/* not synced: a marker that comes back after a crash costs a rebuild, never a wrong answer */
	unlink(dirty_marker_.c_str());
	dirty_marker_.clear();
}

bool
Store::marker_covers() const
{
	std::lock_guard<std::mutex> lock(dirty_mu_);
	if (!config_.durable)
		return true;
	return !dirty_marker_.empty() &&
	       std::chrono::steady_clock::now() - dirty_since_ < DIRTY_MIN_AGE;
}

void
Store::release_marker()
{
	std::lock_guard<std::mutex> lock(dirty_mu_);
	if (dirty_marker_.empty() || dirty_open_.load() != 0 || synced_writes_ != dirty_writes_ ||
	    std::chrono::steady_clock::now() - dirty_since_ < DIRTY_MIN_AGE)
		return;
	unlink(dirty_marker_.c_str());
	dirty_marker_.clear();
}

void
Store::clear_dirty_on_close()
{
	if (env_ == nullptr)
		return;
	{
		std::lock_guard<std::mutex> lock(dirty_mu_);
		if (dirty_marker_.empty())
			return;
	}
	uint64_t writes = dirty_writes();
	if (mdb_env_sync(env_, 1) == 0)
		note_synced(true, writes);
}

void
remove_dirty_markers(const std::string &dir)
{
	DIR *d = opendir(dir.c_str());
	if (d == nullptr)
		return;
	std::vector<std::string> names;
	std::string              tmp = std::string(TMP_PREFIX) + DIRTY_PREFIX;
	while (struct dirent *de = readdir(d))
		if (std::strncmp(de->d_name, DIRTY_PREFIX, sizeof(DIRTY_PREFIX) - 1) == 0 ||
		    std::strncmp(de->d_name, tmp.c_str(), tmp.size()) == 0)
			names.push_back(dir + "/" + de->d_name);
	closedir(d);
	for (const std::string &name : names)
		if (unlink(name.c_str()) != 0 && errno != ENOENT)
			throw Error(HANNOY_ERR_STORAGE,
			            "could not remove file \"" + name + "\": " + std::strerror(errno), errno);
}

} // namespace hannoy

extern "C" void
hannoy_env_note_synced(HannoyEnv *env)
{
	/* the caller's commits are covered, and it writes nothing meanwhile (one thread) */
	(void) hannoy::run_guarded(nullptr,
	                           [&]
	                           {
		                           hannoy::Store *s = reinterpret_cast<hannoy::Store *>(env);
		                           s->note_synced(false, s->dirty_writes());
	                           });
}

extern "C" bool
hannoy_env_marker_covers(HannoyEnv *env)
{
	bool covers = false;
	(void) hannoy::run_guarded(
	    nullptr, [&] { covers = reinterpret_cast<hannoy::Store *>(env)->marker_covers(); });
	return covers;
}

extern "C" void
hannoy_env_clear_dirty(HannoyEnv *env)
{
	(void) hannoy::run_guarded(nullptr, [&]
	                           { reinterpret_cast<hannoy::Store *>(env)->clear_dirty_on_close(); });
}

extern "C" HannoyStatus
hannoy_env_mark_for_rebuild(const char *path, const char *why, HannoyError *err)
{
	return hannoy::run_guarded(err,
	                           [&]
	                           {
		                           /* no boot id in it: hannoy_env_torn takes it for another boot's
		                            */
		                           hannoy::write_marker(path,
		                                                std::string(DIRTY_PREFIX) + "0." + why,
		                                                std::string(why) + "\n", 0600);
	                           });
}

extern "C" void
hannoy_env_release_marker(HannoyEnv *env)
{
	(void) hannoy::run_guarded(nullptr,
	                           [&] { reinterpret_cast<hannoy::Store *>(env)->release_marker(); });
}

extern "C" HannoyStatus
hannoy_env_torn(const char *path, bool *torn, HannoyError *err)
{
	*torn = false;
	return hannoy::run_guarded(
	    err,
	    [&]
	    {
		    DIR *dir = opendir(path);
		    if (dir == nullptr)
		    {
			    if (errno == ENOENT)
				    return;
			    throw hannoy::Error(HANNOY_ERR_STORAGE,
			                        std::string("could not open directory \"") + path +
			                            "\": " + std::strerror(errno),
			                        errno);
		    }
		    std::vector<std::string> stale;
		    while (struct dirent *de = readdir(dir))
		    {
			    if (std::strncmp(de->d_name, DIRTY_PREFIX, sizeof(DIRTY_PREFIX) - 1) != 0)
				    continue;
			    std::string file = std::string(path) + "/" + de->d_name;
			    if (boot_id().empty() || marker_content(file) != boot_id())
			    {
				    *torn = true;
				    continue;
			    }
			    pid_t pid = marker_pid(de->d_name);
			    if (pid != 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH)
				    stale.push_back(file);
		    }
		    closedir(dir);
		    if (*torn || stale.empty())
			    return;
		    /* a process of this boot died: its writes are in the page cache, put them on disk */
		    std::string data = std::string(path) + "/data.mdb";
		    int         fd = open(data.c_str(), O_RDWR | O_CLOEXEC);
		    if (fd < 0)
			    return;
		    int rc = fdatasync(fd);
		    close(fd);
		    if (rc != 0)
			    return;
		    for (const std::string &file : stale)
			    unlink(file.c_str());
	    });
}
