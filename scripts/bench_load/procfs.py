"""Process measurement from /proc: CPU seconds of a process and of its
threads, status fields (VmHWM) and the RSS split from smaps."""

import os

HZ = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """utime + stime of a process (all threads), seconds; None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except OSError:
        return None


def tasks(pid):
    """The /proc directories of a process's threads; empty when it is gone."""
    try:
        return [f"/proc/{pid}/task/{tid}" for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def thread_cpu(pid):
    """CPU seconds per thread name (threads of one name summed)."""
    out = {}
    for base in tasks(pid):
        try:
            with open(f"{base}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / HZ
        out["(kernel, all threads)"] = out.get("(kernel, all threads)", 0.0) + int(fields[12]) / HZ
    return out


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def smaps(pid):
    """RSS in kB: anon (heap, stacks, anonymous maps), ort_file (file pages
    of libonnxruntime), ort_cow (its relocated/written pages), other_file;
    `largest` lists the biggest anonymous mappings (kB, name, size)."""
    cats = {"anon": 0, "ort_file": 0, "ort_cow": 0, "other_file": 0}
    anon_maps = []
    path = ""
    size = rss = 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            lines = f.readlines()
    except OSError:
        return None
    for line in lines:
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
        elif first == "Size:":
            size = int(line.split()[1])
        elif first == "Rss:":
            rss = int(line.split()[1])
        elif first == "Anonymous:":
            anon = int(line.split()[1])
            if "libonnxruntime" in path:
                cats["ort_file"] += rss - anon
                cats["ort_cow"] += anon
            elif path.startswith("/"):
                cats["other_file"] += rss - anon
                cats["anon"] += anon
            else:
                cats["anon"] += rss
                anon_maps.append((rss, path or "anonymous", size))
    anon_maps.sort(reverse=True)
    cats["largest"] = anon_maps[:8]
    return cats


def context_switches(pid):
    """Voluntary + involuntary context switches of all threads of a process
    (each voluntary one is a thread going to sleep, so each later wake-up);
    None when gone."""
    found = tasks(pid)
    if not found:
        return None
    return sum(task_switches(base) or 0 for base in found)


def task_switches(base):
    """Voluntary + involuntary context switches of one thread (its /proc
    directory); None when it is gone."""
    try:
        with open(f"{base}/status") as f:
            return sum(
                int(line.split()[1])
                for line in f
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"))
            )
    except OSError:
        return None


def thread_sched(pid):
    """Per thread id: its name, nanoseconds on a CPU
    (`/proc/PID/task/TID/schedstat`, the scheduler's own clock, exact where
    utime and stime count 10 ms ticks) and context switches, voluntary
    plus involuntary. Empty when the process is gone."""
    out = {}
    for base in tasks(pid):
        try:
            with open(f"{base}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        switches = task_switches(base)
        if switches is None:
            continue
        out[os.path.basename(base)] = (name, ns, switches)
    return out


def thread_rates(before, after, wall_s):
    """Per thread name (threads of one name summed) between two
    `thread_sched` snapshots: ms of CPU per second and context switches
    per second, busiest first. A thread that started in between counts
    from zero; one missing from `after` is left out (rates.py keeps each
    thread's last reading in `after`, so one that exited still counts)."""
    by_name = {}
    for tid, (name, ns1, sw1) in after.items():
        _, ns0, sw0 = before.get(tid, (name, 0, 0))
        ns, sw = by_name.get(name, (0, 0))
        by_name[name] = (ns + ns1 - ns0, sw + sw1 - sw0)
    rows = []
    for name, (ns, sw) in by_name.items():
        if wall_s > 0 and (ns > 0 or sw > 0):
            rows.append((name, ns / 1e6 / wall_s, sw / wall_s))
    rows.sort(key=lambda r: -r[1])
    return [{"thread": n, "cpu_ms_per_s": ms, "switches_per_s": sw} for n, ms, sw in rows]
