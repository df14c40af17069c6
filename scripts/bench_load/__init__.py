"""End-to-end load comparison: anomalyd against the reference Python stack.

Run through `scripts/bench-load.sh`, which builds the daemon and the Python
virtual environment first (`python3 -m bench_load` from `scripts/`, or
`python3 scripts/bench_load`, runs it directly). Everything runs on
loopback, in this one process tree: one mosquitto, one VictoriaMetrics, and
a write tap in this process that forwards every write to VictoriaMetrics and
notes when the database acknowledged each point. Both stacks get the same
workload (`anomalyd simulate`: ASSETS synthetic pumps, one JSON frame of 8
channels per asset and row, topic `sensors/<asset>`), the same broker, model
file and database, one after the other.

Measured per stack and QoS:
- throughput: ROWS rows published as fast as the broker takes them; readings/s
  from the first publish to the last score point acknowledged by the
  database; the consumer's CPU seconds per million readings (utime + stime
  from /proc, start-up excluded) and peak RSS (VmHWM); readings and score
  points lost.
- latency: at half of that stack's own maximum (readings/s), row i is
  published at anchor + i / rate (the publisher's schedule; anchor is the
  instant it logs "publishing") with event time start + i s. The tap takes
  the moment the database answers 2xx to the write that holds the score of
  the window ending at row i; latency = that moment - scheduled publish of
  row i. A late publisher makes this larger, never smaller.
- fixed rates: CPU per reading and % of one core at ROWS/s per asset
  (`rates.py`), and each against the same stack's maximum.
- footprint: anomalyd alone with many assets; RSS split from
  /proc/PID/smaps into heap/anonymous memory and the ONNX Runtime
  library's file pages.

With `--repeat N` every throughput run and fixed-rate point runs N times,
the stacks taking turns, and the summary gives medians and ranges: one run
of a point varies by more than a tenth on a shared machine.

A reading is one channel value (the Python stack prints frames as
"readings": they are converted).

Modules, in the order a run uses them: `services` (broker, database, scratch
directory), `tap` (the database side: the write tap), `consumers` (the two
stacks under test), `publisher` (`anomalyd simulate`), `procfs` (CPU and
memory from /proc), `bench` (one phase, start to finish), `report`
(printing and the summary table), `cli` (options and the run order).
"""
