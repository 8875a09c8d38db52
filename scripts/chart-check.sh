#!/usr/bin/env bash
# Lints and renders the Helm chart (helm/syncfleet), validates every rendered
# object against the Kubernetes and KEDA / Prometheus Operator schemas, checks
# that every values file of helm/syncfleet/tests/bad-values is rejected, that
# the alerts and the Grafana dashboard parse (PromQL), link their runbook and
# use the metric names helm/checks/metrics-used.txt lists, and that the
# Dockerfile parses. No cluster, no Docker engine, no helm binary.
#
# The tools are pinned (helm/checks/requirements.txt, helm/checks/package.json
# and its package-lock.json) and installed outside the clone, under
# SYNCFLEET_TOOLS_DIR (default /var/tmp/syncfleet-tools); later runs reuse them
# until the pins change.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checks="$repo/helm/checks"
tools="${SYNCFLEET_TOOLS_DIR:-/var/tmp/syncfleet-tools}"
venv="$tools/venv"
node_dir="$tools/node"

mkdir -p "$tools"
# One run at a time installs into the tools folder.
exec 9>"$tools/.lock"
flock 9

fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }

log="$tools/install.log"
install_failed() {
  echo "chart-check: $1 failed; its output:" >&2
  cat "$log" >&2
  exit 1
}

# Python: helm-python-sdk (Helm's Go SDK, bundled), kubernetes-validate,
# dockerfile (BuildKit's parser), promql-parser (GreptimeDB's PromQL parser).
python_pins="$(fingerprint "$checks/requirements.txt")"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null ||
  [[ "$(cat "$venv/.pins" 2>/dev/null)" != "$python_pins" ]]; then
  echo "chart-check: installing the Python tools into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" >"$log" 2>&1 || install_failed "python3 -m venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    --requirement "$checks/requirements.txt" >>"$log" 2>&1 || install_failed "pip install"
  echo "$python_pins" >"$venv/.pins"
fi

# Node: kubernetes-models for KEDA and the Prometheus Operator, from the lock file.
node_pins="$(fingerprint "$checks/package.json" "$checks/package-lock.json" "$checks/.npmrc")"
if [[ ! -d "$node_dir/node_modules" ]] || [[ "$(cat "$node_dir/.pins" 2>/dev/null)" != "$node_pins" ]]; then
  echo "chart-check: installing the Node tools into $node_dir"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$checks/package.json" "$checks/package-lock.json" "$checks/.npmrc" "$node_dir/"
  # The models declare node >= 22 but run on the node 20 this machine has
  # (engine-strict=false in .npmrc): the warnings are expected.
  (cd "$node_dir" && npm ci --no-audit --no-fund) >"$log" 2>&1 || install_failed "npm ci"
  echo "$node_pins" >"$node_dir/.pins"
fi
cp "$checks/validate-crds.mjs" "$node_dir/"

# -B: no __pycache__ in the clone.
"$venv/bin/python" -B "$checks/chart_check.py" --repo "$repo" --node-dir "$node_dir"
