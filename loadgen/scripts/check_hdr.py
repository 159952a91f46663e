#!/usr/bin/env python3
"""Reads a loadgen report folder with an independent HdrHistogram implementation.

Decodes every interval of `latency.hlog` (HdrHistogram V2 log, one tagged interval per
operation) with the Python `hdrhistogram` package, and checks that its percentiles agree
with the report's `summary.json` and with each `.hgrm` percentile distribution (whose
`TotalCount` column must be cumulative, ending at the total). Exits non-zero on any
mismatch.

    pip install hdrhistogram
    python3 loadgen/scripts/check_hdr.py target/loadgen/<run>
"""
import json
import os
import sys

from hdrh.histogram import HdrHistogram


def close(a, b, rel=0.01):
    """HDR values are exact to 3 significant digits; allow for the unit conversion."""
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0)


def agrees(h, pct, ours, scale=1.0):
    """Whether `ours` is the value at `pct` in `h`, up to one sample of rank: the Rust and
    Python libraries round a percentile's rank differently (up against to-nearest), which
    on a few hundred samples moves a percentile by one sample."""
    step = 100.0 / max(h.get_total_count(), 1)
    lo = h.get_value_at_percentile(max(pct - step, 0.0)) / scale
    hi = h.get_value_at_percentile(min(pct + step, 100.0)) / scale
    return lo * 0.99 - 1e-9 <= ours <= hi * 1.01 + 1e-9


def read_log(path):
    hists = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith('"'):
                continue
            tag = None
            if line.startswith("Tag="):
                tag, line = line[4:].split(",", 1)
            start, length, max_value, encoded = line.split(",", 3)
            h = HdrHistogram.decode(encoded)
            if tag in hists:
                hists[tag].add(h)
            else:
                hists[tag] = h
    return hists


def read_hgrm(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4 and not line.startswith("#"):
                try:
                    rows.append((float(parts[0]), float(parts[1]), int(parts[2])))
                except ValueError:
                    pass  # the header
    return rows


def main(folder):
    problems = []
    summary = json.load(open(os.path.join(folder, "summary.json")))
    hists = read_log(os.path.join(folder, "latency.hlog"))
    checked = 0
    for name, op in summary["ops"].items():
        h = hists.get(name)
        if h is None:
            problems.append(f"{name}: not in latency.hlog")
            continue
        if h.get_total_count() != op["count"]:
            problems.append(f"{name}: count {h.get_total_count()} in the log, {op['count']} in summary.json")
        for field, pct in [("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)]:
            ours = op[field]  # ns
            theirs = h.get_value_at_percentile(pct)
            if not agrees(h, pct, ours):
                problems.append(f"{name}: {field} {ours} ns in summary.json, {theirs} ns decoded")
        if not close(op["max"], h.get_max_value()):
            problems.append(f"{name}: max {op['max']} in summary.json, {h.get_max_value()} decoded")
        rows = read_hgrm(os.path.join(folder, f"{name}.hgrm"))
        if not rows:
            problems.append(f"{name}.hgrm: no rows")
            continue
        counts = [r[2] for r in rows]
        if counts != sorted(counts) or counts[-1] != h.get_total_count():
            problems.append(f"{name}.hgrm: TotalCount is not cumulative up to {h.get_total_count()}")
        for value_us, quantile, _ in rows[:: max(1, len(rows) // 20)]:
            pct = min(quantile * 100.0, 100.0)
            theirs = h.get_value_at_percentile(pct) / 1000.0
            if not agrees(h, pct, value_us, scale=1000.0):
                problems.append(f"{name}.hgrm: {value_us} us at {quantile}, decoded {theirs} us")
                break
        checked += 1
    for p in problems:
        print("check_hdr:", p)
    print(f"check_hdr: {checked} operations of {folder} read back through python hdrhistogram, {len(problems)} problems")
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
