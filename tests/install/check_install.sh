#!/usr/bin/env bash
# Installs raptor from a configured build tree into a staging prefix, then
# builds and runs a consumer with find_package(raptor) and one with
# pkg-config.
#
# Usage: tests/install/check_install.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "$1" && pwd)
stage=$build/install-check
rm -rf "$stage"
cmake --install "$build" --prefix "$stage/prefix" >/dev/null

echo "-- find_package(raptor)"
cmake -S "$here" -B "$stage/cmake" -DCMAKE_PREFIX_PATH="$stage/prefix" >/dev/null
cmake --build "$stage/cmake" >/dev/null
"$stage/cmake/consumer"

if command -v pkg-config >/dev/null; then
  echo "-- pkg-config raptor"
  PKG_CONFIG_PATH=$(dirname "$(find "$stage/prefix" -name raptor.pc)")
  export PKG_CONFIG_PATH
  # shellcheck disable=SC2046
  cc "$here/main.c" $(pkg-config --cflags --libs raptor) -o "$stage/consumer-pc"
  "$stage/consumer-pc"
else
  echo "-- pkg-config not installed: its check skipped"
fi
rm -rf "$stage"
echo "install check passed"
