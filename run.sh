#!/usr/bin/env bash
# Set up and run journeys from a fresh clone: needs Python 3.11+, and for Kafka a JDK 17 and Maven.
#   ./run.sh demo [ARGS]   the main job on the embedded default, end to end
#   ./run.sh test [ARGS]   the test suite, with a local Kafka broker started and stopped for it
#   ./run.sh journeys ...  any journeys command inside the project's environment
set -euo pipefail
cd "$(dirname "$0")"
VENV="${JOURNEYS_VENV:-.venv}"

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "journeys needs Python 3.11 or newer on PATH" >&2; return 1
}

setup() {
  local stamp="$VENV/.installed" want
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtual environment in $VENV" >&2
    "$(find_python)" -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing journeys and its pinned dependencies" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
  fi
}

# The browser test's tools: Debian's chromium and node (apt-get, only when missing) and the
# npm packages pinned in tests/browser/package-lock.json (npm ci, only when not installed).
# A failure here is reported, not fatal: the browser test then fails under CI and says why.
browser_setup() {
  local missing=() sudo=""
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "==> installing ${missing[*]} for the browser test" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null ||
      echo "warning: could not install ${missing[*]}; the browser test cannot run" >&2
  fi
  if [ ! -d tests/browser/node_modules ] && command -v npm >/dev/null 2>&1; then
    echo "==> installing the browser test's npm packages" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
      echo "warning: npm ci failed in tests/browser; the browser test cannot run" >&2
  fi
}

# Lint and types are part of the tests: ruff (lint and format) and mypy, with zero findings.
lint() {
  local status=0
  echo "==> ruff check, ruff format --check, mypy" >&2
  "$VENV/bin/ruff" check --quiet . || status=1
  "$VENV/bin/ruff" format --check --quiet . || status=1
  "$VENV/bin/mypy" || status=1
  return "$status"
}

# pytest, where exit status 5 (no test selected in this part) is not a failure.
run_pytest() {
  local status=0
  "$VENV/bin/python" -m pytest "$@" || status=$?
  if [ "$status" = 5 ]; then status=0; fi
  return "$status"
}

run_tests() {
  local started=0 status=0
  lint || status=$?
  browser_setup
  if ! "$VENV/bin/journeys" kafka status >/dev/null 2>&1; then
    "$VENV/bin/journeys" kafka start
    started=1
  fi
  # Tests without the broker run in two processes (each with an embedded ClickHouse of
  # its own); the broker's tests after them, one at a time, since they time workers,
  # rebalances and restarts.
  run_pytest -n 2 -m "not kafka" "$@" || status=$?
  run_pytest -m kafka "$@" || status=$?
  if [ "$started" = 1 ]; then "$VENV/bin/journeys" kafka stop || true; fi
  return "$status"
}

command="${1:-demo}"
shift || true
setup
case "$command" in
  demo) exec "$VENV/bin/journeys" demo "$@" ;;
  test) run_tests "$@" ;;
  journeys) exec "$VENV/bin/journeys" "$@" ;;
  *) echo "usage: ./run.sh demo|test|journeys [ARGS]" >&2; exit 2 ;;
esac
