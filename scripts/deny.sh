#!/usr/bin/env bash
# cargo deny over the workspace's dependency graph, as deny.toml configures
# it: bans (duplicate versions, wildcards), licenses (an allow-list) and
# sources (the default registry only).
#
# Advisories are not checked: cargo-deny clones the RustSec advisory
# database from GitHub, which this project's machines and CI cannot reach
# (only the package registries are), and `check advisories` fails without
# it. The other checks need no database.
#
# cargo-deny is pinned below and installed from source under
# SYNCFLEET_TOOLS_DIR (default /var/tmp/syncfleet-tools), outside the clone,
# once: later runs reuse it until the pin changes. The first install builds
# it (a few minutes on two cores).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${SYNCFLEET_TOOLS_DIR:-/var/tmp/syncfleet-tools}"
version="0.20.2"
root="$tools/cargo-deny"
deny="$root/bin/cargo-deny"

mkdir -p "$tools"
# One run at a time installs.
exec 7>"$tools/.deny-lock"
flock 7
if [[ ! -x "$deny" ]] || [[ "$("$deny" --version 2>/dev/null)" != "cargo-deny $version" ]]; then
  echo "deny: installing cargo-deny $version into $root"
  rm -rf "$root"
  log="$(mktemp)"
  # Built in cargo's own scratch directory, not the workspace's target
  # directory, so the install neither waits on nor fills the shared one.
  if ! env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR \
    cargo install --locked --quiet cargo-deny --version "$version" --root "$root" >"$log" 2>&1; then
    echo "deny: installing cargo-deny failed; its output:" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
fi
exec 7>&-

cd "$repo"
"$deny" --locked --color "${CARGO_TERM_COLOR:-auto}" check bans licenses sources
