#!/usr/bin/env bash
# Instruction-count profile of `anomalyd run` under load: callgrind counts
# are stable on a shared, noisy machine, so before/after comparisons of code
# changes use them (docs/architecture.md §11, BENCHMARKS.md). Builds a
# release binary with line tables into target/prof, starts mosquitto and
# VictoriaMetrics on free loopback ports, runs the daemon under callgrind
# (instrumentation switched on once it is subscribed, so start-up is not
# counted), publishes ASSETS x ROWS JSON frames (QoS 0) with `anomalyd
# simulate`, waits until every score point is written, stops the daemon and
# prints instructions per message in total and by part.
# Usage: scripts/profile.sh [ASSETS] [ROWS] [OUT_DIR]   (default 20 300 target/prof/callgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ASSETS=${1:-20}
ROWS=${2:-300}
OUT=${3:-$ROOT/target/prof/callgrind}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCRATCH=$(mktemp -d /tmp/anomalyd-prof.XXXXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT_PORT=$(port)
VM_PORT=$(port)
METRICS_PORT=$(port)

bash scripts/setup.sh >/dev/null
command -v valgrind >/dev/null || { echo "profile: needs valgrind (apt-get install valgrind)"; exit 1; }
export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1"
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
  cargo build --release --locked -p anomalyd --target-dir target/prof 2>&1 | tail -1
cargo build --release --locked -p anomalyd 2>&1 | tail -1
PROF_BIN="$ROOT/target/prof/release/anomalyd"
BIN="$ROOT/target/release/anomalyd"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

cat > "$SCRATCH/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 2000000
EOF
if [ "$(id -u)" -eq 0 ]; then echo "user root" >> "$SCRATCH/mosquitto.conf"; fi
/usr/sbin/mosquitto -c "$SCRATCH/mosquitto.conf" > "$SCRATCH/mosquitto.log" 2>&1 &
PIDS+=($!)
mkdir -p "$SCRATCH/vm"
/usr/bin/victoria-metrics -httpListenAddr="127.0.0.1:$VM_PORT" -storageDataPath="$SCRATCH/vm" \
  -retentionPeriod=100y -loggerLevel=ERROR > /dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$VM_PORT/health" >/dev/null && break; sleep 0.1; done

sed -e "s|port = 1883|port = $MQTT_PORT|" \
    -e "s|http://127.0.0.1:8428|http://127.0.0.1:$VM_PORT|" \
    -e "s|127.0.0.1:9464|127.0.0.1:$METRICS_PORT|" \
    -e "s|\.\./models/pump.onnx|$ROOT/models/pump.onnx|" \
    -e "s|^qos = 1|qos = 0|" \
    -e "s|^clean_session = false|clean_session = true|" \
    -e "s|^max_batch = 64|max_batch = 256|" \
    -e "s|^flush_interval_ms = 1000|flush_interval_ms = 200|" \
    -e "s|^level = \"info\"|level = \"warn\"|" \
    config/anomalyd.toml > "$SCRATCH/anomalyd.toml"

rm -f "$OUT"/callgrind.out*
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out" \
  "$PROF_BIN" run --config "$SCRATCH/anomalyd.toml" > "$SCRATCH/anomalyd.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
metric() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
for _ in $(seq 1 1200); do
  [ "$(metric anomalyd_mqtt_connected 2>/dev/null)" = "1" ] && break
  sleep 0.1
done
sleep 1
callgrind_control --instr=on "$DPID" >/dev/null

window=$("$BIN" inspect-model models/pump.onnx | awk '/^sampling:/ {for (i = 1; i < NF; i++) if ($i == "window") print $(i + 1)}')
expected=$(( ASSETS * (ROWS - window) ))
"$BIN" simulate --broker "127.0.0.1:$MQTT_PORT" --synthetic pump --assets "$ASSETS" --rows "$ROWS" \
  --fast --qos 0 --start-ts 2026-01-01T00:00:00Z 2> "$SCRATCH/simulate.log"
written=0
# Polled slowly: each /metrics render is counted too.
for _ in $(seq 1 2400); do
  written=$(metric anomalyd_points_written_total)
  [ "${written:-0}" -ge "$expected" ] && break
  sleep 0.5
done
received=$(metric anomalyd_messages_received_total)
kill -TERM "$DPID"
wait "$DPID" || true

echo "profile: $received messages, $written score points written (expected $expected)"
python3 - "$OUT/callgrind.out" "$received" <<'EOF'
import re, subprocess, sys
path, messages = sys.argv[1], int(sys.argv[2])
text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                      capture_output=True, text=True, check=True).stdout
total = None
incl = []
for line in text.splitlines():
    m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+PROGRAM TOTALS", line)
    if m:
        total = int(m.group(1).replace(",", ""))
    m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*?:?(.*)$", line)
    if m and "PROGRAM TOTALS" not in line:
        incl.append((int(m.group(1).replace(",", "")), m.group(2).strip()))
print(f"profile: {total:,} instructions = {total / messages:,.0f} per message (8 readings, 1 window)")
parts = [
    ("MQTT task (receive, decode, align, window, normalise, send)", r"anomalyd::mqtt::run_source"),
    ("  rumqttc event loop", r"rumqttc::eventloop::EventLoop::poll"),
    ("  decode", r"anomalyd::decode::Decoder::decode"),
    ("  align + window + normalise", r"anomalyd::pipeline::FeatureStage::push_message"),
    ("scoring thread", r"anomalyd::daemon::spawn_scorer"),
    ("  Scorer::score", r"anomalyd::pipeline::Scorer::score"),
    ("    ONNX Runtime run", r"anomalyd::onnxrt::LoadedModel::run_into|anomalyd::onnxrt::LoadedModel::run\b"),
    ("  status board", r"anomalyd::status::StatusBoard::record"),
    ("sink task (line protocol, HTTP writes)", r"anomalyd::sink::run_sink"),
    ("  line protocol", r"anomalyd::sink::format_output"),
]
for label, pat in parts:
    best = max((n for n, name in incl if re.search(pat, name)), default=0)
    print(f"  {label:<62} {best / messages:>10,.0f} per message")
EOF
echo "profile: full report: callgrind_annotate --inclusive=yes $OUT/callgrind.out | less"
