/*
 * testing.hpp
 *	  Hooks the core's unit tests use to watch work that runs as many
 *	  write transactions inside one call of the C ABI.  Not part of the C
 *	  ABI: the shim never calls them.
 */
#ifndef HANNOY_TESTING_HPP
#define HANNOY_TESTING_HPP

#include "hannoy/core_guard.hpp"

namespace hannoy
{

/* A function run after a commit, with the argument it was registered with. */
using CommitHook = void (*)(void *arg);

/*
 * Makes every graph repair run 'hook(arg)' right after each write
 * transaction it commits (nullptr: none), so a test can check each state a
 * crash could leave behind.  The hook runs with no transaction open.
 */
void set_repair_commit_hook(CommitHook hook, void *arg);

} // namespace hannoy

#endif /* HANNOY_TESTING_HPP */
