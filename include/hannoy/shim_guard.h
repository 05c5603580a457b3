/*
 * shim_guard.h
 *	  Included first by every C shim file: the shim is C, so no C++ header or
 *	  exception can reach PostgreSQL's frames.
 */
#ifndef HANNOY_SHIM_GUARD_H
#define HANNOY_SHIM_GUARD_H

#ifdef __cplusplus
#error "hannoy shim files are C: C++ belongs in src/core behind include/hannoy/hannoy.h"
#endif

#endif /* HANNOY_SHIM_GUARD_H */
