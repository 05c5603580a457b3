# hannoy: an HNSW index access method for PostgreSQL 15 on LMDB + CRoaring.
#
#   make && make install        build and install the extension (PGXS)
#   make installcheck           pg_regress on test/sql against a running server that
#                               preloads hannoy (as a user PostgreSQL accepts, not root)
#   make prove_installcheck     the TAP tests in test/t, each on its own throwaway
#                               cluster of the installed server (as postgres, not root)
#   make unittest               build and run the core's GoogleTest suite (ctest);
#                               SANITIZE=address builds it with AddressSanitizer
#   make format-check           clang-format --dry-run -Werror on every source
#   make check-layers           the layering rules (scripts/check_layers.sh)
#   WERROR=1 make               treat compiler warnings as errors (CI)
#
# scripts/test.sh sets everything up and runs all of it.

EXTENSION = hannoy
EXTVERSION = 0.1.0
MODULE_big = hannoy
DATA = sql/hannoy--0.1.0.sql

SHIM_SRCS = $(sort $(wildcard src/am/*.c))
CORE_SRCS = $(sort $(wildcard src/core/*.cpp))
OBJS = $(SHIM_SRCS:.c=.o) $(CORE_SRCS:.cpp=.o)
ABI_HEADERS = $(wildcard include/hannoy/*.h)
SHIM_HEADERS = $(wildcard src/am/*.h)
CORE_HEADERS = $(wildcard src/core/*.hpp)
HANNOY_HEADERS = $(ABI_HEADERS) $(SHIM_HEADERS) $(CORE_HEADERS)

WARN_FLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
ifeq ($(WERROR),1)
WARN_FLAGS += -Werror
endif

PG_CPPFLAGS = -I$(CURDIR)/include
PG_CFLAGS = $(WARN_FLAGS) -Wno-sign-compare
CORE_CXXFLAGS = -std=c++17 -O3 -fPIC -g -fno-omit-frame-pointer -pthread $(WARN_FLAGS) -I$(CURDIR)/include
SHLIB_LINK = -llmdb -lroaring -lstdc++ -lpthread

# pg_regress reads <inputdir>/sql and <inputdir>/expected: the tests live in
# test/sql and expected/, so installcheck stages both under build/regress.
REGRESS = $(sort $(patsubst test/sql/%.sql,%,$(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=build/regress --outputdir=build/regress
REGRESS_PREP = regress-stage

# The core is C++: no LLVM bitcode for JIT inlining.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Core objects are compiled without PostgreSQL's include paths.
src/core/%.o: src/core/%.cpp $(ABI_HEADERS) $(CORE_HEADERS)
	$(CXX) $(CORE_CXXFLAGS) -c -o $@ $<

$(SHIM_SRCS:.c=.o): $(ABI_HEADERS) $(SHIM_HEADERS)

.PHONY: regress-stage prove_installcheck check-layers unittest format-check
regress-stage:
	rm -rf build/regress
	mkdir -p build/regress/sql build/regress/expected
	cp test/sql/*.sql build/regress/sql/
	cp expected/*.out build/regress/expected/
	if [ -d test/data ]; then cp -r test/data build/regress/data; fi

prove_installcheck:
	rm -rf '$(CURDIR)'/tmp_check
	mkdir -p '$(CURDIR)'/tmp_check
	TESTDIR='$(CURDIR)' PATH="$(bindir):$$PATH" PGPORT='6$(DEF_PGPORT)' HANNOY_BENCH_DIR='$(CURDIR)/bench' \
	  PG_REGRESS='$(top_builddir)/src/test/regress/pg_regress' \
	  $(PROVE) $(PG_PROVE_FLAGS) -I test/t $(PROVE_FLAGS) \
	  $(if $(PROVE_TESTS),$(PROVE_TESTS),$(sort $(wildcard test/t/*.pl)))

check-layers:
	bash scripts/check_layers.sh

# SANITIZE=address builds the unit tests with AddressSanitizer in build/core-address; the
# fault guard's handlers must be allowed to take SIGSEGV and SIGBUS (allow_user_segv_handler).
UNIT_DIR = build/core$(if $(SANITIZE),-$(SANITIZE))
unittest:
	cmake -S test/core -B $(UNIT_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHANNOY_WERROR=$(if $(filter 1,$(WERROR)),ON,OFF) -DHANNOY_SANITIZE=$(SANITIZE) >/dev/null
	cmake --build $(UNIT_DIR) -j2
	ASAN_OPTIONS=allow_user_segv_handler=1:detect_leaks=0$(if $(ASAN_OPTIONS),:$(ASAN_OPTIONS)) ctest --test-dir $(UNIT_DIR) --output-on-failure

format-check:
	clang-format --dry-run -Werror $(SHIM_SRCS) $(CORE_SRCS) $(HANNOY_HEADERS) $(wildcard test/core/*.cpp test/core/*.hpp tools/*.cpp tools/*.hpp bench/*.cpp bench/*.hpp bench/core/*.cpp)

EXTRA_CLEAN = build tmp_check
