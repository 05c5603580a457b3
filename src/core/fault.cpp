/*
 * fault.cpp
 *	  The fault guard: an LMDB call that reads a damaged sidecar returns an
 *	  error instead of killing the process (DESIGN.md "Damaged sidecars").
 *
 *	  LMDB trusts its file.  On a damaged page it may read past the end of a
 *	  truncated file (SIGBUS), follow an offset out of its map (SIGSEGV), or
 *	  fail one of its assertions, after which Debian's liblmdb calls abort().
 *	  Each LMDB call the core makes runs through guarded_call: it arms a
 *	  sigsetjmp in a frame that owns nothing with a destructor, so a jump back
 *	  to it from the signal handler or from LMDB's assert callback skips only
 *	  LMDB's C frames and the handler's.  The call then returns GUARD_FAULT or
 *	  GUARD_ASSERT, its caller throws, and ordinary C++ unwinding aborts the
 *	  transaction (releasing the reader slot or the writer lock), as for any
 *	  LMDB error.  The handler acts only on the thread that armed it and only
 *	  for an address inside the environment's map (with a margin for the
 *	  offsets a page header can hold) or a fault in liblmdb's own code (on a
 *	  damaged page LMDB may follow a null pointer, e.g. a sub-database cursor
 *	  for a node that claims duplicates); any other fault goes on to the
 *	  handler that was installed before, or to the default action.
 */
#include "core_guard.hpp"

#include <link.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "storage.hpp"

namespace hannoy
{

namespace
{

/* Bytes past the end of the map a damaged page can make LMDB reach (two u16 offsets). */
constexpr uintptr_t MAP_MARGIN = 256 * 1024;

/* The one armed call of the process (PostgreSQL backends are single-threaded). */
struct Armed
{
	std::atomic<int> state{0}; /* 0 free, 1 claimed, 2 armed */
	pthread_t        owner{};
	sigjmp_buf      *jump = nullptr;
	uintptr_t        lo = 0, hi = 0;
	char             message[256] = {0};
};

Armed            armed;
struct sigaction previous_segv, previous_bus;
std::once_flag   installed;
/* Where liblmdb's code lies: on a damaged page LMDB also follows its own null pointers. */
uintptr_t lmdb_text_lo = 0, lmdb_text_hi = 0;

/* Finds liblmdb's executable segment (dl_iterate_phdr callback). */
int
find_lmdb_text(struct dl_phdr_info *info, size_t, void *)
{
	if (info->dlpi_name == nullptr || std::strstr(info->dlpi_name, "/liblmdb.so") == nullptr)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++)
	{
		const ElfW(Phdr) &ph = info->dlpi_phdr[i];
		if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X))
		{
			lmdb_text_lo = info->dlpi_addr + ph.p_vaddr;
			lmdb_text_hi = lmdb_text_lo + ph.p_memsz;
		}
	}
	return 1;
}

/* True when the faulting instruction is liblmdb's. */
bool
in_lmdb(void *context)
{
#if defined(__x86_64__)
	uintptr_t ip =
	    static_cast<uintptr_t>(static_cast<ucontext_t *>(context)->uc_mcontext.gregs[REG_RIP]);
	return ip >= lmdb_text_lo && ip < lmdb_text_hi;
#else
	(void) context;
	return false;
#endif
}

/* Passes a fault that is not ours on to whoever handled it before. */
void
pass_on(int sig, siginfo_t *info, void *context)
{
	struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
	if (prev->sa_flags & SA_SIGINFO)
	{
		if (prev->sa_sigaction != nullptr)
		{
			prev->sa_sigaction(sig, info, context);
			return;
		}
	}
	else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN)
	{
		prev->sa_handler(sig);
		return;
	}
	/* the faulting instruction runs again and takes the default action */
	signal(sig, SIG_DFL);
}

void
on_fault(int sig, siginfo_t *info, void *context)
{
	if (armed.state.load(std::memory_order_acquire) == 2 &&
	    pthread_equal(armed.owner, pthread_self()))
	{
		uintptr_t at = reinterpret_cast<uintptr_t>(info->si_addr);
		if ((at >= armed.lo && at < armed.hi) || in_lmdb(context))
		{
			armed.state.store(0, std::memory_order_release);
			siglongjmp(*armed.jump, sig == SIGBUS ? GUARD_FAULT_BUS : GUARD_FAULT_SEGV);
		}
	}
	pass_on(sig, info, context);
}

/* LMDB's assert callback: leaves by the jump, since LMDB aborts when it returns. */
void
on_assert(MDB_env *, const char *message)
{
	if (armed.state.load(std::memory_order_acquire) == 2 &&
	    pthread_equal(armed.owner, pthread_self()))
	{
		std::strncpy(armed.message, message, sizeof(armed.message) - 1);
		armed.state.store(0, std::memory_order_release);
		siglongjmp(*armed.jump, GUARD_ASSERT);
	}
}

void
install_handlers()
{
	dl_iterate_phdr(find_lmdb_text, nullptr);
	struct sigaction sa;
	std::memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	/* SA_NODEFER: the jump leaves the handler, and the signal must not stay blocked */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &previous_segv);
	sigaction(SIGBUS, &sa, &previous_bus);
}

/* Runs fn(arg) with the guard armed for 'bounds' (claimed by the caller). */
__attribute__((noinline)) int
armed_call(MapBounds *bounds, int (*fn)(void *), void *arg)
{
	MapBounds *volatile b = bounds;
	sigjmp_buf jump;
	if (int code = sigsetjmp(jump, 0); code != 0)
	{
		/* back from the handler or the assert callback: nothing of LMDB's is trusted now */
		b->damaged = true;
		return code;
	}
	armed.owner = pthread_self();
	armed.jump = &jump;
	armed.lo = b->lo;
	armed.hi = b->hi + MAP_MARGIN;
	armed.state.store(2, std::memory_order_release);
	int rc = fn(arg);
	armed.state.store(0, std::memory_order_release);
	return rc;
}

} // namespace

void
guard_environment(MDB_env *env)
{
	std::call_once(installed, install_handlers);
	mdb_env_set_assert(env, on_assert);
}

const char *
guard_assert_message()
{
	return armed.message;
}

int
guarded_call(MDB_env *env, int (*fn)(void *), void *arg)
{
	MapBounds *bounds = map_bounds_of(env); /* the Store's, through the user context */
	int        expected = 0;
	if (bounds == nullptr || bounds->lo == 0 ||
	    !armed.state.compare_exchange_strong(expected, 1, std::memory_order_acquire))
		return fn(arg); /* another thread's call is armed (core tests only): unguarded */
	return armed_call(bounds, fn, arg);
}

} // namespace hannoy
