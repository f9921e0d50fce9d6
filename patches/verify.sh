#!/usr/bin/env bash
# Checks that every vendored crate under patches/ is exactly the published crate of its
# version plus its .patch, and that the build uses it:
#   1. the published .crate is taken from cargo's cache, or fetched into it by cargo from the
#      registry (a throwaway manifest naming the exact version, no [patch]);
#   2. it is unpacked, the files we do not vendor are removed (NOT_VENDORED below), the
#      .patch is applied, and the tree must equal patches/NAME byte for byte;
#   3. Cargo.lock must take NAME from the path (no registry source) at the vendored
#      version: a burn bump that left the patch unused would fail here (Cargo only warns).
# Exit 0 when all hold; otherwise every difference is printed and the exit status is 1.
# Usage: patches/verify.sh            (from anywhere; needs cargo, tar, patch, diff)
set -uo pipefail
cd "$(dirname "$0")/.."

CRATES=(burn-flex burn-autodiff burn-backend)
# What the published crates carry and the vendored copies leave out (not needed to build).
NOT_VENDORED=(.cargo_vcs_info.json Cargo.toml.orig Cargo.lock BENCHMARKS.md COMPARISON.md)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo_home=${CARGO_HOME:-$HOME/.cargo}
status=0

published() { # NAME VERSION -> path of the .crate in cargo's cache (fetching it if absent)
  local found
  found=$(ls "$cargo_home"/registry/cache/*/"$1-$2.crate" 2>/dev/null | head -1)
  if [ -z "$found" ]; then
    mkdir -p "$work/fetch-$1/src" && touch "$work/fetch-$1/src/lib.rs"
    printf '[package]\nname = "fetch-published"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
      "$1" "$2" > "$work/fetch-$1/Cargo.toml"
    (cd "$work/fetch-$1" && cargo fetch -q --target x86_64-unknown-linux-gnu) >&2 || return 1
    found=$(ls "$cargo_home"/registry/cache/*/"$1-$2.crate" 2>/dev/null | head -1)
  fi
  [ -n "$found" ] && echo "$found"
}

for name in "${CRATES[@]}"; do
  vendored=patches/$name
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$vendored/Cargo.toml" | head -1)
  crate=$(published "$name" "$version") || { echo "FAIL $name $version: cannot get the published crate"; status=1; continue; }
  mkdir -p "$work/$name"
  tar -xzf "$crate" -C "$work/$name"
  rebuilt=$work/$name/$name-$version
  for f in "${NOT_VENDORED[@]}"; do rm -f "$rebuilt/$f"; done
  if ! (cd "$rebuilt" && patch -p1 --quiet --no-backup-if-mismatch < "$OLDPWD/patches/$name.patch"); then
    echo "FAIL $name $version: $name.patch does not apply to the published crate"
    status=1
    continue
  fi
  if ! diff -r "$rebuilt" "$vendored"; then
    echo "FAIL $name $version: patches/$name is not the published crate plus patches/$name.patch (differences above)"
    status=1
    continue
  fi
  # The lock file must take the vendored copy (a path dependency has no `source`).
  entry=$(awk -v n="$name" '/^\[\[package\]\]/{p=0} $0=="name = \""n"\""{p=1} p' Cargo.lock)
  if ! grep -qx "version = \"$version\"" <<<"$entry" || grep -q '^source = ' <<<"$entry"; then
    echo "FAIL $name $version: Cargo.lock does not use patches/$name:"
    echo "$entry"
    status=1
    continue
  fi
  echo "ok   $name $version: published crate + $name.patch = patches/$name, and the build uses it"
done
exit $status
