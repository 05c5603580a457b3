# hannoy: an HNSW index access method for PostgreSQL 15 on LMDB + CRoaring.
#
#   make && make install        build and install the extension (PGXS)
#   make unittest               build and run the core's GoogleTest suite (ctest)
#   make format-check           clang-format --dry-run -Werror on every source
#   WERROR=1 make               treat compiler warnings as errors (CI)

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

# The core is C++: no LLVM bitcode for JIT inlining.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Core objects are compiled without PostgreSQL's include paths.
src/core/%.o: src/core/%.cpp $(ABI_HEADERS) $(CORE_HEADERS)
	$(CXX) $(CORE_CXXFLAGS) -c -o $@ $<

$(SHIM_SRCS:.c=.o): $(ABI_HEADERS) $(SHIM_HEADERS)

.PHONY: unittest format-check
unittest:
	cmake -S test/core -B build/core -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHANNOY_WERROR=$(if $(filter 1,$(WERROR)),ON,OFF) >/dev/null
	cmake --build build/core -j2
	ctest --test-dir build/core --output-on-failure

format-check:
	clang-format --dry-run -Werror $(SHIM_SRCS) $(CORE_SRCS) $(HANNOY_HEADERS) $(wildcard test/core/*.cpp test/core/*.hpp tools/*.cpp tools/*.hpp bench/*.cpp bench/*.hpp bench/core/*.cpp)

EXTRA_CLEAN = build
