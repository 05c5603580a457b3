#!/usr/bin/env bash
# Checks that the tree keeps its three floors (DESIGN.md "Architecture"):
#
#   1. include/ holds only the C ABI: C headers that compile as plain C99
#      with -pedantic and include nothing but the C standard library.
#   2. No shim file (src/am) includes a core header (src/core) and no core
#      file includes a shim header or PostgreSQL's.
#   3. The shim's files do not call each other in a loop: a function one
#      file defines and another calls is an arrow, and the arrows form no
#      cycle.
#
# Prints each violation and exits non-zero if there is any.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
failed=0

fail() {
	echo "check_layers: $*" >&2
	failed=1
}

# 1. include/ is the C ABI.
while IFS= read -r -d '' file; do
	case $file in
	*.h) ;;
	*) fail "$file: include/ holds only C headers (the ABI)" ;;
	esac
done < <(find include -type f -print0)
for header in include/hannoy/*.h; do
	while IFS= read -r inc; do
		case $inc in
		'<stdbool.h>' | '<stddef.h>' | '<stdint.h>') ;;
		*) fail "$header includes $inc: the ABI includes only <stdbool.h>, <stddef.h>, <stdint.h>" ;;
		esac
	done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]+([<"][^>"]+[>"]).*/\1/p' "$header")
	if ! cc -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only -x c "$header" 2>/tmp/check_layers.$$; then
		fail "$header does not compile as plain C99 with -pedantic:"
		cat /tmp/check_layers.$$ >&2
	fi
	rm -f /tmp/check_layers.$$
done

# 2. The shim and the core meet only at include/hannoy.
core_headers=$(cd src/core && ls -- *.hpp *.h 2>/dev/null || true)
shim_headers=$(cd src/am && ls -- *.h 2>/dev/null || true)
for file in src/am/*.c src/am/*.h; do
	for header in $core_headers; do
		if grep -qE "^[[:space:]]*#[[:space:]]*include[[:space:]]+[\"<]([^\">]*/)?$header[\">]" "$file"; then
			fail "$file includes the core header $header"
		fi
	done
done
for file in src/core/*.cpp src/core/*.hpp; do
	for header in $shim_headers postgres.h; do
		if grep -qE "^[[:space:]]*#[[:space:]]*include[[:space:]]+[\"<]([^\">]*/)?$header[\">]" "$file"; then
			fail "$file includes $header"
		fi
	done
done

# 3. No loop of calls among the shim's files.
if ! python3 - src/am/*.c <<'PY'; then
import re, sys

files = sys.argv[1:]
text = {}
for f in files:
    src = open(f).read()
    src = re.sub(r'/\*.*?\*/', ' ', src, flags=re.S)   # comments
    src = re.sub(r'"(\\.|[^"\\])*"', '""', src)          # strings
    text[f] = src

# Functions a file defines with external linkage: a definition at the start
# of a line, not static, whose return type sits on the line before.
defines = {}
for f, src in text.items():
    lines = src.split('\n')
    for i, line in enumerate(lines):
        m = re.match(r'^([A-Za-z_]\w*)\s*\(', line)
        if not m or i == 0:
            continue
        prev = lines[i - 1].strip()
        if not prev or prev.startswith('static') or prev.endswith(';') or prev.startswith('#'):
            continue
        defines[m.group(1)] = f

edges = {f: set() for f in files}
for f, src in text.items():
    for name, owner in defines.items():
        if owner != f and re.search(r'\b' + re.escape(name) + r'\b', src):
            edges[f].add(owner)

# Tarjan's strongly connected components.
index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in files:
    if v not in index:
        visit(v)
for comp in sccs:
    print("check_layers: shim files call each other in a loop: " + ", ".join(comp), file=sys.stderr)
    for a in comp:
        for b in sorted(edges[a] & set(comp)):
            names = sorted(n for n, o in defines.items() if o == b and re.search(r'\b' + n + r'\b', text[a]))
            print(f"  {a} -> {b}: {', '.join(names)}", file=sys.stderr)
sys.exit(1 if sccs else 0)
PY
	failed=1
fi

if ((failed)); then
	exit 1
fi
echo "check_layers: include/ is the C ABI, src/am and src/core meet only there, no loop among shim files"
