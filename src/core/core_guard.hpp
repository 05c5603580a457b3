/*
 * core_guard.hpp
 *	  Included first by every C++ core file: the core must never see
 *	  PostgreSQL's headers (their setjmp-based error handling cannot cross
 *	  C++ frames), and it must be compiled as C++.
 */
#ifndef HANNOY_CORE_GUARD_HPP
#define HANNOY_CORE_GUARD_HPP

#ifndef __cplusplus
#error "hannoy core files are C++: compile them with a C++ compiler"
#endif

#if defined(POSTGRES_H) || defined(C_H) || defined(PG_CONFIG_H)
#error "PostgreSQL headers must not be included in hannoy core (C++) files"
#endif

#endif /* HANNOY_CORE_GUARD_HPP */
