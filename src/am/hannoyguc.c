/*
 * hannoyguc.c
 *	  hannoy's configuration parameters (GUCs), among them the test-only
 *	  hannoy.test_* ones, the one way tests slow hannoy down to watch it.
 */
#include "postgres.h"

#include <unistd.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "hannoy_am.h"

int  hannoy_ef_search = HANNOY_DEFAULT_EF_SEARCH;
int  hannoy_rerank_window = 0;
int  hannoy_build_threads = 1;
bool hannoy_preloaded = false;
int  hannoy_test_search_delay = 0;
int  hannoy_test_verify_delay = 0;
bool hannoy_test_fail_redo = false;
bool hannoy_test_pause_linker = false;
int  hannoy_test_rebuild_delay = 0;

/*
 * HannoyDefineGucs defines the GUCs and records whether the library is
 * being preloaded, which CREATE EXTENSION requires.
 */
void
HannoyDefineGucs(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	hannoy_preloaded = process_shared_preload_libraries_in_progress;
	hannoy_build_threads = (int) Min(Max(cores, 1), HANNOY_MAX_BUILD_THREADS);

	DefineCustomIntVariable("hannoy.ef_search",
	                        "Sets the size of the candidate list for hannoy index scans "
	                        "(1 to 1000).",
	                        "Larger values raise recall and cost time.", &hannoy_ef_search,
	                        HANNOY_DEFAULT_EF_SEARCH, HANNOY_MIN_EF_SEARCH, HANNOY_MAX_EF_SEARCH,
	                        PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("hannoy.rerank_window",
	                        "Sets how many rows the first window of a scan on codes re-ranks "
	                        "by exact distance (0 to 65536; 0: hannoy.ef_search).",
	                        "A window above hannoy.ef_search also widens the search to it; "
	                        "the rows of a quantized index's first window come in exact "
	                        "distance order.",
	                        &hannoy_rerank_window, 0, 0, HANNOY_MAX_RERANK_WINDOW, PGC_USERSET, 0,
	                        NULL, NULL, NULL);
	DefineCustomIntVariable("hannoy.build_threads",
	                        "Sets the number of threads that build a hannoy index "
	                        "(1 to 64; default: the number of cores).",
	                        NULL, &hannoy_build_threads, hannoy_build_threads, 1,
	                        HANNOY_MAX_BUILD_THREADS, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("hannoy.test_search_delay",
	                        "Test only: milliseconds every insert pauses inside its neighbour "
	                        "search (0 to 10000).",
	                        NULL, &hannoy_test_search_delay, 0, 0, 10000, PGC_SUSET,
	                        GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomIntVariable("hannoy.test_verify_delay",
	                        "Test only: milliseconds hannoy_verify waits after reading each "
	                        "batch of rows from the sidecar, before it reads the heap "
	                        "(0 to 10000).",
	                        NULL, &hannoy_test_verify_delay, 0, 0, 10000, PGC_SUSET,
	                        GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomBoolVariable("hannoy.test_fail_redo",
	                         "Test only: WAL redo of hannoy rows records fails, as a full disk "
	                         "would make it.",
	                         NULL, &hannoy_test_fail_redo, false, PGC_SIGHUP,
	                         GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomBoolVariable("hannoy.test_pause_linker",
	                         "Test only: the replica linker neither links staged rows nor adopts "
	                         "replicas after recovery, so tests can see rows staged.",
	                         NULL, &hannoy_test_pause_linker, false, PGC_SIGHUP,
	                         GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomIntVariable("hannoy.test_rebuild_delay",
	                        "Test only: milliseconds a rebuild from the table waits before each "
	                        "step of its build, so tests can end recovery while it runs "
	                        "(0 to 60000).",
	                        NULL, &hannoy_test_rebuild_delay, 0, 0, 60000, PGC_SIGHUP,
	                        GUC_UNIT_MS | GUC_NOT_IN_SAMPLE | GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	MarkGUCPrefixReserved("hannoy");
}
