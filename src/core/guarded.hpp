/*
 * guarded.hpp
 *	  The one place where C++ exceptions stop: every exported core function
 *	  runs its body through run_guarded, which turns any exception into a
 *	  HannoyStatus and a message for the shim to ereport.
 */
#ifndef HANNOY_GUARDED_HPP
#define HANNOY_GUARDED_HPP

#include "core_guard.hpp"

#include <cstdio>
#include <exception>
#include <new>

#include "hannoy/hannoy.h"
#include "storage.hpp"

namespace hannoy
{

/* Fills 'err' (which may be null) with a status, message and operating system error. */
inline HannoyStatus
set_error(HannoyError *err, HannoyStatus status, const char *message, int sys_errno = 0)
{
	if (err != nullptr)
	{
		err->status = status;
		err->sys_errno = sys_errno;
		std::snprintf(err->message, sizeof(err->message), "%s", message);
	}
	return status;
}

/* Runs 'body', catching everything; HANNOY_OK when it returned normally. */
template <class F>
HannoyStatus
run_guarded(HannoyError *err, F &&body) noexcept
{
	try
	{
		body();
		if (err != nullptr)
		{
			err->status = HANNOY_OK;
			err->sys_errno = 0;
			err->message[0] = '\0';
		}
		return HANNOY_OK;
	}
	catch (const Error &e)
	{
		return set_error(err, e.status(), e.what(), e.sys_errno());
	}
	catch (const std::bad_alloc &)
	{
		return set_error(err, HANNOY_ERR_NOMEM, "out of memory in the hannoy core");
	}
	catch (const std::exception &e)
	{
		return set_error(err, HANNOY_ERR_INTERNAL, e.what());
	}
	catch (...)
	{
		return set_error(err, HANNOY_ERR_INTERNAL, "unknown exception in the hannoy core");
	}
}

} // namespace hannoy

#endif /* HANNOY_GUARDED_HPP */
