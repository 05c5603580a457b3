/*
 * testing.hpp
 *	  Where the core runs the test hooks (HannoyTestHooks in the C ABI).
 */
#ifndef HANNOY_TESTING_HPP
#define HANNOY_TESTING_HPP

#include "core_guard.hpp"

namespace hannoy
{

/* Pauses an insert's neighbour search as long as the hooks say. */
void test_pause_insert_search();

/* Runs the hook for a committed graph-repair transaction, if one is set. */
void test_after_repair_commit();

/* Tells the insert-walk hook, if one is set, whether an insert's search walks on codes. */
void test_insert_walk(bool on_codes);

} // namespace hannoy

#endif /* HANNOY_TESTING_HPP */
