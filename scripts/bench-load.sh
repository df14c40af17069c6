#!/usr/bin/env bash
# End-to-end load run: mosquitto + VictoriaMetrics + `anomalyd run` (release,
# shipped model) on loopback; `anomalyd simulate --fast` publishes ASSETS x
# ROWS JSON frames (8 channels each) with event timestamps. Reports the
# readings/s the daemon sustained (first message to last point written), its
# CPU seconds per million readings, peak RSS, and the time from start to
# READY. Usage: scripts/bench-load.sh [ASSETS] [ROWS] [QOS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ASSETS=${1:-200}
ROWS=${2:-600}
QOS=${3:-0}
OUT=$(mktemp -d /tmp/anomalyd-bench.XXXXXX)
MQTT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
VM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1"
cargo build --release --locked -p anomalyd 2>&1 | tail -1
BIN="$ROOT/target/release/anomalyd"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$OUT"
}
trap cleanup EXIT

cat > "$OUT/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
max_queued_messages 1000000
max_inflight_messages 1000
EOF
if [ "$(id -u)" -eq 0 ]; then echo "user root" >> "$OUT/mosquitto.conf"; fi
/usr/sbin/mosquitto -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 &
PIDS+=($!)
mkdir -p "$OUT/vm"
/usr/bin/victoria-metrics -httpListenAddr=127.0.0.1:$VM_PORT -storageDataPath="$OUT/vm" \
  -retentionPeriod=100y -search.latencyOffset=0s > "$OUT/vm.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$VM_PORT/health" >/dev/null && break; sleep 0.1; done

sed -e "s|port = 1883|port = $MQTT_PORT|" \
    -e "s|http://127.0.0.1:8428|http://127.0.0.1:$VM_PORT|" \
    -e "s|127.0.0.1:9464|127.0.0.1:$METRICS_PORT|" \
    -e "s|\.\./models/pump.onnx|$ROOT/models/pump.onnx|" \
    -e "s|^qos = 1|qos = $QOS|" \
    -e "s|^clean_session = false|clean_session = true|" \
    -e "s|^max_batch = 64|max_batch = 256|" \
    -e "s|^level = \"info\"|level = \"warn\"|" \
    config/anomalyd.toml > "$OUT/anomalyd.toml"

t_start=$(date +%s.%N)
"$BIN" run --config "$OUT/anomalyd.toml" > "$OUT/anomalyd.log" 2>&1 &
DPID=$!
PIDS+=($DPID)
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep -q '^anomalyd_mqtt_connected 1' && break
  sleep 0.01
done
t_ready=$(date +%s.%N)
cpu0=$(awk '{print $14+$15}' /proc/$DPID/stat)

expected=$(( ASSETS * (ROWS - 60) ))
readings=$(( ASSETS * ROWS * 8 ))
t0=$(date +%s.%N)
"$BIN" simulate --broker "127.0.0.1:$MQTT_PORT" --synthetic pump --assets "$ASSETS" --rows "$ROWS" \
  --fast --qos "$QOS" --start-ts 2026-01-01T00:00:00Z 2> "$OUT/simulate.log"
t_pub=$(date +%s.%N)
written=0
for _ in $(seq 1 1200); do
  written=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^anomalyd_points_written_total/ {print $2}')
  [ "${written:-0}" -ge "$expected" ] && break
  sleep 0.05
done
t1=$(date +%s.%N)
cpu1=$(awk '{print $14+$15}' /proc/$DPID/stat)
hz=$(getconf CLK_TCK)
rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$DPID/status)
metrics=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics")
dropped=$(echo "$metrics" | awk '/^anomalyd_readings_dropped_total/ {s+=$2} END {print s+0}')
used=$(echo "$metrics" | awk '/^anomalyd_readings_used_total/ {print $2}')

python3 - "$t_start" "$t_ready" "$t0" "$t_pub" "$t1" "$cpu0" "$cpu1" "$hz" "$rss_kb" \
  "$readings" "$used" "$written" "$expected" "$dropped" "$ASSETS" "$ROWS" "$QOS" <<'EOF'
import sys
(t_start, t_ready, t0, t_pub, t1, cpu0, cpu1, hz, rss, readings, used, written,
 expected, dropped, assets, rows, qos) = sys.argv[1:]
f = float
wall = f(t1) - f(t0)
cpu = (f(cpu1) - f(cpu0)) / f(hz)
print(f"load: {assets} assets x {rows} rows x 8 channels, QoS {qos}")
print(f"  readings published     {int(readings):>12,}")
print(f"  readings used          {int(used):>12,}   dropped {dropped}")
print(f"  score points written   {int(written):>12,} of {int(expected):,}")
print(f"  publish time           {f(t_pub)-f(t0):>12.2f} s")
print(f"  end-to-end time        {wall:>12.2f} s  (first publish -> last point accepted)")
print(f"  sustained              {int(readings)/wall:>12,.0f} readings/s")
print(f"  daemon CPU             {cpu:>12.2f} s  = {cpu/int(readings)*1e6:.2f} CPU-s per million readings")
print(f"  daemon peak RSS        {int(rss)/1024:>12.1f} MiB")
print(f"  start -> connected     {(f(t_ready)-f(t_start))*1000:>12.0f} ms")
EOF
