#!/usr/bin/env bash
# The end-to-end demo on one machine, in six steps:
#   1. installs what the demo needs (scripts/setup.sh --for demo);
#   2. builds the daemon (profile `demo`: thin LTO, docs/distribution.md §1);
#   3. starts mosquitto and VictoriaMetrics on loopback ports;
#   4. runs `anomalyd run` with the shipped model (models/pump.onnx);
#   5. publishes three simulated pumps, one with a bearing fault;
#   6. prints the scores and alerts that arrived in the database, the first
#      alert that arrived on the MQTT alert topic, and how long after the
#      start the first alert was there.
# Everything it starts is stopped (by PID) when it ends. Output: ./demo-out/
# Training a model of your own: see "The trainer" in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/demo-out"
MQTT_PORT=${MQTT_PORT:-18830}
VM_PORT=${VM_PORT:-18428}
METRICS_PORT=${METRICS_PORT:-19464}
ROWS=${ROWS:-900}
PROFILE=${PROFILE:-demo}
START=$(date +%s)
STEPS=6
step=0
say() {
  step=$((step + 1))
  echo
  echo "demo: $step/$STEPS $* [$(( $(date +%s) - START )) s]"
}

say "installing what the demo needs: mosquitto, victoria-metrics, ONNX Runtime"
bash scripts/setup.sh --for demo
export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so.1.31.1"

say "building anomalyd (cargo profile '$PROFILE'; the first build compiles ~300 crates, a few minutes on 2 cores; cargo names each one)"
cargo build --profile "$PROFILE" --locked -p anomalyd --bin anomalyd
BIN="$ROOT/target/$PROFILE"
[ "$PROFILE" = dev ] && BIN="$ROOT/target/debug"

rm -rf "$OUT"
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

say "starting mosquitto (127.0.0.1:$MQTT_PORT) and VictoriaMetrics (127.0.0.1:$VM_PORT)"
mkdir -p "$OUT/mosquitto" "$OUT/vm"
cat > "$OUT/mosquitto/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $OUT/mosquitto/
max_queued_messages 100000
EOF
if [ "$(id -u)" -eq 0 ]; then echo "user root" >> "$OUT/mosquitto/mosquitto.conf"; fi
/usr/sbin/mosquitto -c "$OUT/mosquitto/mosquitto.conf" > "$OUT/mosquitto/log" 2>&1 &
PIDS+=($!)
/usr/bin/victoria-metrics -httpListenAddr="127.0.0.1:$VM_PORT" -storageDataPath="$OUT/vm" \
  -retentionPeriod=100y -search.latencyOffset=0s > "$OUT/vm/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$VM_PORT/health" >/dev/null && break
  sleep 0.1
done

say "starting anomalyd with models/pump.onnx"
sed -e "s|port = 1883|port = $MQTT_PORT|" \
    -e "s|http://127.0.0.1:8428|http://127.0.0.1:$VM_PORT|" \
    -e "s|127.0.0.1:9464|127.0.0.1:$METRICS_PORT|" \
    -e "s|\.\./models/pump.onnx|$ROOT/models/pump.onnx|" \
    -e "s|flush_interval_ms = 1000|flush_interval_ms = 200|" \
    config/anomalyd.toml > "$OUT/anomalyd.toml"
# Alarms to the plant: every transition as JSON on anomalyd/alerts/{asset}.
printf '\n[[alerts.outputs]]\nname = "hmi"\ntype = "mqtt"\n' >> "$OUT/anomalyd.toml"
"$BIN/anomalyd" check-config --config "$OUT/anomalyd.toml"
"$BIN/anomalyd" run --config "$OUT/anomalyd.toml" > "$OUT/anomalyd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
  grep -q '"ready"\|ready' "$OUT/anomalyd.log" 2>/dev/null && break
  sleep 0.1
done
grep -m1 ready "$OUT/anomalyd.log" || { echo "anomalyd did not get ready:"; cat "$OUT/anomalyd.log"; exit 1; }

# What an HMI subscribed to the alert topics sees: the first alert.
mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -t 'anomalyd/alerts/#' -v -C 1 -W 300 \
  > "$OUT/alert-topic.txt" 2>&1 &
SUB_PID=$!
PIDS+=("$SUB_PID")

say "publishing 3 pumps x $ROWS rows; pump-001 gets a bearing fault at rows 400..520"
"$BIN/anomalyd" simulate --broker "127.0.0.1:$MQTT_PORT" --synthetic pump --assets 3 --rows "$ROWS" --fast \
  --fault bearing --fault-rows 400..520 --start-ts 2026-01-01T00:00:00Z

expected=$(( 3 * (ROWS - 60) ))
for _ in $(seq 1 300); do
  n=$(curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^anomalyd_points_written_total/ {print $2}')
  [ "${n:-0}" -ge "$expected" ] && break
  sleep 0.1
done
curl -s "http://127.0.0.1:$VM_PORT/internal/force_flush" >/dev/null

say "reading what arrived in the database"
echo "demo: scores per asset (anomaly_score_score):"
curl -s "http://127.0.0.1:$VM_PORT/api/v1/export" --data-urlencode 'match[]=anomaly_score_score' -d start=0 |
  python3 -c '
import json, sys
for line in sys.stdin:
    s = json.loads(line)
    v, asset = s["values"], s["metric"]["asset"]
    print(f"  {asset}: {len(v)} windows, score min {min(v):.3f} max {max(v):.3f}")'
echo
echo "demo: alerts (anomaly_alert):"
alerts=$(curl -s "http://127.0.0.1:$VM_PORT/api/v1/export" --data-urlencode 'match[]=anomaly_alert_score' -d start=0)
printf '%s\n' "$alerts" |
  python3 -c '
import json, sys, datetime
rows = []
for line in sys.stdin:
    s = json.loads(line)
    m = s["metric"]
    for t, v in zip(s["timestamps"], s["values"]):
        rows.append((t, m["asset"], m["state"], m.get("top_channel", "?"), v))
for t, asset, state, top, v in sorted(rows):
    when = datetime.datetime.fromtimestamp(t / 1000, datetime.timezone.utc).strftime("%H:%M:%S")
    print(f"  {when} {asset} {state:8s} score {v:.3f} top channel {top}")
if not rows:
    print("  (none)")'
if printf '%s\n' "$alerts" | grep -q '"state":"raised"'; then
  echo "demo: first alert in the database $(( $(date +%s) - START )) s after the demo started"
fi
echo
echo "demo: the first alert on the MQTT alert topic (mosquitto_sub -t 'anomalyd/alerts/#'):"
wait "$SUB_PID" 2>/dev/null || true
sed 's/^/  /' "$OUT/alert-topic.txt"
echo
echo "demo: daemon metrics: http://127.0.0.1:$METRICS_PORT/metrics (while the demo runs)"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^anomalyd_(windows_scored|alerts_raised|alerts_cleared|points_written)_total'
echo "demo: logs and data in $OUT"
echo "demo: status page: http://127.0.0.1:$METRICS_PORT/"
if [ -t 0 ]; then
  read -r -p "demo: press Enter to stop the broker, database and daemon " _
fi
