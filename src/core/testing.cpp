/*
 * testing.cpp
 *	  The test hooks of the C ABI (hannoy_test_set_hooks): the insert search
 *	  delay the shim's hannoy.test_search_delay sets, and the graph repair's
 *	  commit hook the unit tests use.
 */
#include "core_guard.hpp"

#include <atomic>
#include <chrono>
#include <thread>

#include "hannoy/hannoy.h"
#include "testing.hpp"

namespace
{

/* The delay is read by any thread that inserts; the repair hook only by the thread that set it. */
std::atomic<uint32_t> insert_search_delay_ms{0};
void (*repair_commit)(void *) = nullptr;
void *repair_commit_arg = nullptr;
/* read by the thread that set it (the core's unit tests insert from it) */
void (*insert_walk)(void *, bool) = nullptr;
void *insert_walk_arg = nullptr;

} // namespace

/* Pauses an insert's neighbour search as long as the hooks say. */
void
hannoy::test_pause_insert_search()
{
	if (uint32_t delay = insert_search_delay_ms.load())
		std::this_thread::sleep_for(std::chrono::milliseconds(delay));
}

/* Runs the hook for a committed graph-repair transaction, if one is set. */
void
hannoy::test_after_repair_commit()
{
	if (repair_commit != nullptr)
		repair_commit(repair_commit_arg);
}

/* Tells the insert-walk hook, if one is set, how an insert's search walks. */
void
hannoy::test_insert_walk(bool on_codes)
{
	if (insert_walk != nullptr)
		insert_walk(insert_walk_arg, on_codes);
}

/* Replaces the test hooks (all zero: none). */
extern "C" void
hannoy_test_set_hooks(const HannoyTestHooks *hooks)
{
	insert_search_delay_ms.store(hooks->insert_search_delay_ms);
	repair_commit = hooks->repair_commit;
	repair_commit_arg = hooks->repair_commit_arg;
	insert_walk = hooks->insert_walk;
	insert_walk_arg = hooks->insert_walk_arg;
}
