#!/usr/bin/env bash
# Reproducible release build: builds libraptor.so from the committed HEAD in two
# checkouts at different paths, with build.sh's release flags, and compares the
# bytes. Uncommitted changes are not part of the check (it builds HEAD).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/a" >/dev/null 2>&1 || true;
      git -C "$root" worktree remove --force "$work/b" >/dev/null 2>&1 || true;
      rm -rf "$work"' EXIT
sums=()
for d in a b; do
  git -C "$root" worktree add -q --detach "$work/$d" HEAD
  (cd "$work/$d" &&
    CGO_CFLAGS="-O2 -g -ffile-prefix-map=$work/$d=." \
      go build -trimpath -ldflags=-buildid= -buildmode=c-shared -o "$work/$d.so" ./abi)
  sums+=("$(sha256sum < "$work/$d.so" | cut -d' ' -f1)")
done
echo "checkout a: ${sums[0]}"
echo "checkout b: ${sums[1]}"
if [ "${sums[0]}" != "${sums[1]}" ]; then
  echo "libraptor.so differs between two checkouts of the same commit" >&2
  cmp "$work/a.so" "$work/b.so" | head -1 >&2 || true
  exit 1
fi
echo "reproducible: same libraptor.so bytes from two checkouts"
