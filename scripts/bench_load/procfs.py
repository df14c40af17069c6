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


def thread_cpu(pid):
    """CPU seconds per thread name (threads of one name summed)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
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
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total
