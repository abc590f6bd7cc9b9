#!/usr/bin/env bash
# Checks that the functions declared in include/raptor.h (every RAPTOR_API
# name) and the raptor_* symbols libraptor.so exports agree exactly, in both
# directions, and that each is a defined function.
#
# Usage: tests/abi/check_symbols.sh [HEADER] [LIBRARY]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
header=${1:-$root/include/raptor.h}
lib=${2:-$root/build/libraptor.so}
for f in "$header" "$lib"; do
  [ -f "$f" ] || { echo "check_symbols: $f not found" >&2; exit 1; }
done
command -v nm >/dev/null || { echo "check_symbols: nm (binutils) is required" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Declarations: lines that start with RAPTOR_API, the name being the first
# raptor_* identifier followed by "(". Comments are stripped first.
sed -e 's://.*$::' "$header" | perl -0pe 's:/\*.*?\*/::gs' |
  grep -E '^[[:space:]]*RAPTOR_API[[:space:]]' |
  grep -oE '\braptor_[A-Za-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' | sort -u >"$tmp/header"

# Exports: defined dynamic symbols named raptor_*, with their type.
nm -D --defined-only "$lib" | awk '$3 ~ /^raptor_/ {print $3, $2}' | sort -u >"$tmp/nm"
cut -d' ' -f1 "$tmp/nm" >"$tmp/exported"

rc=0
n_header=$(wc -l <"$tmp/header")
[ "$n_header" -gt 0 ] || { echo "check_symbols: no RAPTOR_API declarations found in $header" >&2; exit 1; }
missing=$(comm -23 "$tmp/header" "$tmp/exported")
extra=$(comm -13 "$tmp/header" "$tmp/exported")
notfunc=$(awk '$2 != "T" {print $1 " (" $2 ")"}' "$tmp/nm")
if [ -n "$missing" ]; then echo "declared in the header but not exported by the library:"; echo "$missing" | sed 's/^/  /'; rc=1; fi
if [ -n "$extra" ]; then echo "exported by the library but not declared in the header:"; echo "$extra" | sed 's/^/  /'; rc=1; fi
if [ -n "$notfunc" ]; then echo "exported raptor_* symbols that are not functions:"; echo "$notfunc" | sed 's/^/  /'; rc=1; fi
if [ "$rc" -eq 0 ]; then
  echo "header and library agree: $n_header functions"
fi
exit "$rc"
