#!/usr/bin/python3
"""Turns the raw CSV files of one bench/run.sh run into summary.md and gnuplot scripts.

Usage: python3 bench/report.py RESULTS_DIR

Reads queries.csv, builds.csv, inserts.csv and timings.csv (and the first
section of machine.md) from RESULTS_DIR and writes there:

  summary.md            the tables and the hannoy/pgvector ratios against the targets below
  plot-<data set>.gp    a gnuplot script drawing recall-qps-<data set>.png
  plot-<data set>-<series>.dat   the points it draws

bench/run.sh then runs gnuplot on every plot-*.gp.  Only the standard
library is used.
"""

import csv
import math
import os
import re
import sys

# The benchmark's targets, hannoy against pgvector with the same m and ef_construction.
MAX_EF = 1000  # the recall ceiling is the best recall at ef_search <= MAX_EF
CEILING_TOLERANCE = 0.005  # hannoy's ceiling >= pgvector's - this
EQUAL_EF_TOLERANCE = 0.005  # hannoy's recall at every ef_search >= pgvector's - this
QPS_LEVELS = (0.9, 0.95, 0.99)  # the QPS ratio is reported at these recalls (no target)
FLOOR_LEVELS = (0.95, 0.99)  # the time above the SQL floor is compared at these recalls
ABOVE_FLOOR_TARGET = 0.5  # hannoy's time per query above the floor <= this x pgvector's
BUILD_TARGET = 0.5  # build time, default column storage
SIZE_TARGET = 0.9
INSERT_TARGET = 1.0


def read_csv(directory, name):
    """Returns the rows of one CSV file as dicts, or [] when it does not exist."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def num(text):
    """Returns a CSV field as a float, or None when it is empty."""
    return float(text) if text not in ("", None, "-") else None


def fmt_int(value):
    """Formats a number with thousands separators."""
    return "-" if value is None else f"{value:,.0f}"


def fmt_mb(value):
    """Formats bytes as MB with one decimal."""
    return "-" if value is None else f"{value / 1e6:,.1f}"


def fmt_kb_mb(value):
    """Formats kB as MB with one decimal."""
    return "-" if value is None else f"{value / 1e3:,.1f}"


def fmt_ratio(value):
    """Formats a ratio with two decimals."""
    return "-" if value is None else f"{value:.2f}x"


def table(header, rows):
    """Returns a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def datasets_in(*row_lists):
    """Returns the data set names in the order they first appear."""
    seen = []
    for rows in row_lists:
        for row in rows:
            if row["dataset"] not in seen:
                seen.append(row["dataset"])
    return seen


def ef_key(row):
    """Sorts query rows by ef_construction, then ef_search ('-' first)."""
    def as_int(text):
        return -1 if text == "-" else int(text)
    return (as_int(row["efc"]), as_int(row["ef"]))


def best_qps(rows, system, level, efc=None):
    """Returns (qps, row) of the fastest setting of system reaching recall level, or (None, None)."""
    best = (None, None)
    for row in rows:
        if row["system"] != system or (efc is not None and row["efc"] != efc):
            continue
        if float(row["recall"]) + 1e-9 >= level:
            qps = float(row["qps"])
            if best[0] is None or qps > best[0]:
                best = (qps, row)
    return best


def verdict(ratio, target, higher_is_better):
    """Says whether a ratio meets its target."""
    if ratio is None:
        return "-"
    met = ratio >= target if higher_is_better else ratio <= target
    return "met" if met else "missed"


def setting(row):
    """Names the setting of a query row: efc/ef."""
    return "-" if row is None else f"efc={row['efc']}, ef={row['ef']}"


def floor_qps(queries, efc, ef):
    """Returns the floor's QPS measured beside the setting (efc, ef), else the run's first floor."""
    floors = [r for r in queries if r["system"] == "floor"]
    same = next((r for r in floors if r["efc"] == efc and r["ef"] == ef), None)
    row = same or next((r for r in floors if r["efc"] == "-"), None) or (floors[0] if floors else None)
    return float(row["qps"]) if row else None


def above_floor_us(queries, row):
    """Returns the microseconds per query of a query row above the SQL floor, or None."""
    floor = floor_qps(queries, row["efc"], row["ef"])
    qps = float(row["qps"])
    if floor is None or qps <= 0:
        return None
    return (1.0 / qps - 1.0 / floor) * 1e6


def best_above_floor(rows, system, level, efc=None):
    """Returns (us, row): the least time above the floor of system at recall >= level."""
    best = (None, None)
    for row in rows:
        if row["system"] != system or (efc is not None and row["efc"] != efc):
            continue
        if float(row["recall"]) + 1e-9 >= level:
            us = above_floor_us(rows, row)
            if us is not None and (best[0] is None or us < best[0]):
                best = (us, row)
    return best


def ceiling(rows, system, efc=None):
    """Returns (recall, row): the best recall of system at ef_search <= MAX_EF."""
    best = (None, None)
    for row in rows:
        if row["system"] != system or (efc is not None and row["efc"] != efc):
            continue
        if row["ef"] != "-" and int(row["ef"]) <= MAX_EF:
            recall = float(row["recall"])
            if best[0] is None or recall > best[0]:
                best = (recall, row)
    return best


def equal_ef_pairs(rows, efc):
    """Returns [(ef, hannoy row, pgvector row)] of the ef_search values both measured at efc."""
    pairs = []
    for h in sorted((r for r in rows if r["system"] == "hannoy" and r["efc"] == efc), key=ef_key):
        p = next((r for r in rows if r["system"] == "pgvector" and r["efc"] == efc
                  and r["ef"] == h["ef"]), None)
        if p is not None:
            pairs.append((h["ef"], h, p))
    return pairs


def worst_equal_ef(rows, efc):
    """Returns (difference, ef): the lowest hannoy - pgvector recall at equal ef_search."""
    worst = (None, None)
    for ef, h, p in equal_ef_pairs(rows, efc):
        d = float(h["recall"]) - float(p["recall"])
        if worst[0] is None or d < worst[0]:
            worst = (d, ef)
    return worst


def fmt_us(value):
    """Formats microseconds."""
    return "-" if value is None else f"{value:,.0f} us"


def reached(queries, system, level, efc=None):
    """Formats the best QPS of system at recall >= level, or says how far it got."""
    qps, row = best_qps(queries, system, level, efc)
    if qps is not None:
        return f"{fmt_int(qps)} ({setting(row)})"
    recalls = [float(r["recall"]) for r in queries
               if r["system"] == system and (efc is None or r["efc"] == efc)]
    return f"not reached (best recall {max(recalls):.4f})" if recalls else "-"


def ratio_of(a, b):
    """Returns a / b, or None when either is missing."""
    return a / b if a is not None and b not in (None, 0) else None


def efcs_of(queries):
    """Returns the ef_construction values hannoy was measured with, in order."""
    return sorted({r["efc"] for r in queries if r["system"] == "hannoy" and r["efc"] != "-"},
                  key=int)


def efc_choices(queries):
    """Returns None (the best of any ef_construction) and each ef_construction, or the one."""
    efcs = efcs_of(queries)
    return efcs if len(efcs) == 1 else [None] + efcs


def build_of(builds, system, efc):
    """Returns the build row of system at efc, or None."""
    return next((b for b in builds if b["system"] == system and b["efc"] == efc), None)


def comparison(ds, queries, builds, inserts):
    """Returns the hannoy-versus-pgvector tables of one data set."""
    rows = []
    has_pgvector = any(q["system"] == "pgvector" for q in queries)
    for efc in efcs_of(queries):
        h, _ = ceiling(queries, "hannoy", efc)
        p, _ = ceiling(queries, "pgvector", efc)
        d = None if h is None or p is None else h - p
        rows.append([f"recall ceiling (best at ef_search <= {MAX_EF}), efc={efc}",
                     "-" if h is None else f"{h:.4f}", "-" if p is None else f"{p:.4f}",
                     "-" if d is None else f"{d:+.4f}", f">= -{CEILING_TOLERANCE}",
                     "-" if d is None else verdict(d, -CEILING_TOLERANCE - 1e-9, True)])
    for efc in efcs_of(queries):
        d, ef = worst_equal_ef(queries, efc)
        rows.append([f"recall at equal ef_search, lowest hannoy - pgvector, efc={efc}",
                     "-", "-", "-" if d is None else f"{d:+.4f} (ef={ef})",
                     f">= -{EQUAL_EF_TOLERANCE}",
                     "-" if d is None else verdict(d, -EQUAL_EF_TOLERANCE - 1e-9, True)])
    for level in QPS_LEVELS:
        for efc in efc_choices(queries):
            h, _ = best_qps(queries, "hannoy", level, efc)
            p, _ = best_qps(queries, "pgvector", level, efc)
            what = f"QPS at recall@10 >= {level}" + (" (any efc)" if efc is None else f" (efc={efc})")
            rows.append([what, reached(queries, "hannoy", level, efc),
                         reached(queries, "pgvector", level, efc), fmt_ratio(ratio_of(h, p)),
                         "(reported)", "-"])
    for level in FLOOR_LEVELS:
        for efc in efc_choices(queries):
            h, hrow = best_above_floor(queries, "hannoy", level, efc)
            p, prow = best_above_floor(queries, "pgvector", level, efc)
            r = ratio_of(h, p)
            what = (f"time per query above the SQL floor at recall@10 >= {level}"
                    + (" (any efc)" if efc is None else f" (efc={efc})"))
            if p is None and has_pgvector:
                outcome = "- (pgvector does not reach it)"
            elif h is None:
                outcome = "missed (hannoy does not reach it)"
            else:
                outcome = verdict(r, ABOVE_FLOOR_TARGET, False)
            rows.append([what, f"{fmt_us(h)} ({setting(hrow)})" if h is not None else "not reached",
                         f"{fmt_us(p)} ({setting(prow)})" if p is not None else "not reached",
                         fmt_ratio(r), f"<= {ABOVE_FLOOR_TARGET}x", outcome])
    for efc in sorted({b["efc"] for b in builds if b["system"] == "hannoy"}, key=int):
        hb, pb = build_of(builds, "hannoy", efc), build_of(builds, "pgvector", efc)
        ht, pt = num(hb["build_s"]), num(pb["build_s"]) if pb else None
        r = ratio_of(ht, pt)
        rows.append([f"build time, default storage, efc={efc}", f"{ht:.1f} s",
                     "-" if pt is None else f"{pt:.1f} s", fmt_ratio(r), f"<= {BUILD_TARGET}x",
                     verdict(r, BUILD_TARGET, False)])
        hpb, ppb = build_of(builds, "hannoy-plain", efc), build_of(builds, "pgvector-plain", efc)
        if hpb is not None:
            hpt, ppt = num(hpb["build_s"]), num(ppb["build_s"]) if ppb else None
            rows.append([f"build time, STORAGE PLAIN (extra), efc={efc}", f"{hpt:.1f} s",
                         "-" if ppt is None else f"{ppt:.1f} s", fmt_ratio(ratio_of(hpt, ppt)),
                         "(reported)", "-"])
        hs, ps = num(hb["size_bytes"]), num(pb["size_bytes"]) if pb else None
        r = ratio_of(hs, ps)
        rows.append([f"index size, efc={efc}", f"{fmt_mb(hs)} MB", f"{fmt_mb(ps)} MB",
                     fmt_ratio(r), f"<= {SIZE_TARGET}x", verdict(r, SIZE_TARGET, False)])
    for clients in ("1", "8"):
        hi = next((i for i in inserts if i["system"] == "hannoy" and i["clients"] == clients), None)
        pi = next((i for i in inserts if i["system"] == "pgvector" and i["clients"] == clients),
                  None)
        if hi is None:
            continue
        h, p = num(hi["rows_per_s"]), num(pi["rows_per_s"]) if pi else None
        r = ratio_of(h, p)
        target = f">= {INSERT_TARGET}x" if clients == "8" else "(none)"
        rows.append([f"inserts, {clients} client(s), rows/s", fmt_int(h), fmt_int(p), fmt_ratio(r),
                     target, verdict(r, INSERT_TARGET, True) if clients == "8" else "-"])
    out = f"### hannoy vs pgvector ({ds})\n\n"
    out += table(["measure", "hannoy", "pgvector", "hannoy / pgvector (recall: difference)",
                  "target", ""], rows)
    out += ("\nTime above the SQL floor: 1/QPS - 1/QPS of the floor statement (same statement "
            "shape, client and vector parameter, 10 rows by primary key) measured in the same "
            "interleaved passes; the least such time of any setting that reaches the recall.\n")
    # Recall and time at equal ef_search, side by side.
    for efc in efcs_of(queries):
        pairs = equal_ef_pairs(queries, efc)
        if not pairs:
            continue
        eq = []
        for ef, h, p in pairs:
            hu, pu = above_floor_us(queries, h), above_floor_us(queries, p)
            eq.append([ef, h["recall"], p["recall"],
                       f"{float(h['recall']) - float(p['recall']):+.4f}",
                       fmt_int(num(h["qps"])), fmt_int(num(p["qps"])),
                       fmt_ratio(ratio_of(num(h["qps"]), num(p["qps"]))),
                       fmt_int(floor_qps(queries, efc, ef)), fmt_us(hu), fmt_us(pu),
                       fmt_ratio(ratio_of(hu, pu))])
        out += f"\n#### Equal ef_search, efc={efc}\n\n"
        out += table(["ef_search", "hannoy recall", "pgvector recall", "hannoy - pgvector",
                      "hannoy QPS", "pgvector QPS", "QPS ratio", "floor QPS",
                      "hannoy above floor", "pgvector above floor", "above-floor ratio"], eq)
    # Context: the in-process library and the SQL floor.
    ctx = []
    floor = floor_qps(queries, "-", "-")
    for level in FLOOR_LEVELS:
        h, _ = best_qps(queries, "hannoy", level)
        lib, _ = best_qps(queries, "hnswlib", level)
        ctx.append([f"QPS at recall@10 >= {level}", reached(queries, "hannoy", level),
                    reached(queries, "hnswlib", level), fmt_ratio(ratio_of(h, lib)),
                    fmt_int(floor), fmt_ratio(ratio_of(h, floor))])
    out += "\n" + table(["measure", "hannoy", "hnswlib", "hannoy / hnswlib", "SQL floor",
                         "hannoy / floor"], ctx)
    return out


QUANTIZED_SYSTEMS = ("hannoy-binary-heap", "hannoy-scalar8-heap", "hannoy-binary", "hannoy-scalar8",
                     "hannoy-none", "hannoy", "pgvector-bq")
# Issue 15's targets, set for heap re-ranking: per data set and system, (bytes <= x pgvector,
# recall level, QPS >= x pgvector at that level); the 1M set has byte targets only.
QUANTIZED_TARGETS = {
    "fashion-mnist": {"hannoy-binary-heap": (0.1, 0.95, 1.0),
                      "hannoy-scalar8-heap": (0.35, 0.99, 1.5)},
    "clustered-128": {"hannoy-binary-heap": (0.35, None, None),
                      "hannoy-scalar8-heap": (0.6, None, None)},
}


def quantized(ds, queries, builds):
    """Returns the table of the quantized variants beside pgvector's full-float hnsw."""
    if not any(r["system"].startswith(("hannoy-binary", "hannoy-scalar8")) for r in queries):
        return ""
    rows = []
    for efc in efcs_of(queries):
        pb = build_of(builds, "pgvector", efc)
        psize = num(pb["size_bytes"]) if pb else None
        for system in QUANTIZED_SYSTEMS:
            b = build_of(builds, system, efc)
            if b is None:
                continue
            size = num(b["size_bytes"])
            line = [system, efc, f"{fmt_mb(size)} MB", fmt_ratio(ratio_of(size, psize)),
                    f"{float(b['build_s']):.1f} s"]
            top, top_row = ceiling(queries, system, efc)
            line.append("-" if top is None else f"{top:.4f} ({setting(top_row)})")
            for level in (0.95, 0.99):
                q, _ = best_qps(queries, system, level, efc)
                p, _ = best_qps(queries, "pgvector", level, efc)
                line += [reached(queries, system, level, efc), fmt_ratio(ratio_of(q, p))]
            target = QUANTIZED_TARGETS.get(ds, {}).get(system)
            if target is None:
                line.append("-")
            elif target[1] is None:
                line.append(f"bytes <= {target[0]}x")
            else:
                line.append(f"bytes <= {target[0]}x, QPS at {target[1]} >= {target[2]}x")
            rows.append(line)
    out = f"### Quantized variants ({ds})\n\n"
    out += table(["system", "efc", "size", "size / pgvector hnsw", "build", "best recall@10",
                  "QPS at 0.95", "/ pgvector", "QPS at 0.99", "/ pgvector", "issue 15 target"],
                 rows)
    out += ("\nhannoy-binary, hannoy-scalar8, hannoy-none: quantizer = 'binary', 'scalar8', "
            "'none' (hannoy: 'auto'), the float vectors kept in the sidecar for re-ranking; "
            "the -heap variants: rerank = 'heap', no float vectors in the sidecar, windows "
            "re-ranked from the heap tuples (the variants issue 15's targets are set for).  "
            "pgvector-bq: pgvector's binary_quantize(v)::bit(d) hnsw index, ef_search "
            "candidates re-ranked in SQL.\n\n")
    return out


# The parts of a sidecar (hannoy_index_space) the bytes-per-vector table shows, by database.
SPACE_GROUPS = (("codes", ("codes",)), ("vectors", ("vectors",)), ("links", ("links",)),
                ("TIDs", ("tids", "items")), ("quantizer and meta", ("meta",)))


def space_section(ds, space, builds):
    """Returns the table of each hannoy index's bytes per vector by part, with pgvector's
    ('builds': the data set's build rows)."""
    s = [r for r in space if r["dataset"] == ds]
    if not s:
        return ""
    rows = []
    for key in sorted({(r["system"], r["efc"]) for r in s}, key=lambda k: (int(k[1]), k[0])):
        parts = [r for r in s if (r["system"], r["efc"]) == key]
        n = num(parts[0]["rows"])
        total = sum(num(r["bytes"]) for r in parts)
        line = [key[0], key[1]]
        grouped = 0
        for _, names in SPACE_GROUPS:
            b = sum(num(r["bytes"]) for r in parts if r["part"] in names)
            grouped += b
            line.append(f"{b / n:.1f}")
        line += [f"{(total - grouped) / n:.1f}", f"{total / n:.1f}"]
        pb = build_of(builds, "pgvector", key[1])
        line.append(fmt_ratio(ratio_of(total, num(pb["size_bytes"]))) if pb else "-")
        rows.append(line)
    for b in builds:
        if b["system"] in ("pgvector", "pgvector-bq"):
            pb = build_of(builds, "pgvector", b["efc"])
            rows.append([b["system"], b["efc"]] + ["-"] * (len(SPACE_GROUPS) + 1) +
                        [f"{num(b['size_bytes']) / num(b['rows']):.1f}",
                         fmt_ratio(ratio_of(num(b["size_bytes"]), num(pb["size_bytes"])))
                         if pb else "-"])
    out = f"### Bytes per vector by part ({ds})\n\n"
    out += table(["system", "efc"] + [g for g, _ in SPACE_GROUPS] +
                 ["LMDB free and other", "total", "/ pgvector hnsw"], rows)
    out += ("\nhannoy_index_space() after the build, divided by the table's rows: codes, float "
            "vectors, Roaring neighbour lists, the TID maps both ways, the meta records (the "
            "quantizer's among them); the rest is LMDB's free and meta pages, the data file's "
            "tail and the lock file.  pgvector: pg_relation_size() / rows.\n\n")
    return out


def overview(queries, builds):
    """Returns the one-line-per-data-set table of the measures the targets name."""
    rows = []
    for ds in datasets_in(queries, builds):
        q = [r for r in queries if r["dataset"] == ds and r["filter"] == "none"]
        b = [r for r in builds if r["dataset"] == ds]
        if not any(r["system"] == "pgvector" for r in q):
            continue
        ceilings, worst, builds_r = [], [], []
        for efc in efcs_of(q):
            h, _ = ceiling(q, "hannoy", efc)
            p, _ = ceiling(q, "pgvector", efc)
            if h is not None and p is not None:
                ceilings.append(f"{h:.4f} / {p:.4f}")
            d, ef = worst_equal_ef(q, efc)
            if d is not None:
                worst.append(f"{d:+.4f} (ef {ef})")
            hb, pb = build_of(b, "hannoy", efc), build_of(b, "pgvector", efc)
            if hb is not None and pb is not None:
                builds_r.append(fmt_ratio(ratio_of(num(hb["build_s"]), num(pb["build_s"]))))
        qps = []
        for level in QPS_LEVELS:
            h, _ = best_qps(q, "hannoy", level)
            p, _ = best_qps(q, "pgvector", level)
            qps.append(fmt_ratio(ratio_of(h, p)) if h and p else
                       ("pgv -" if h else ("hannoy -" if p else "-")))
        floors = []
        for level in FLOOR_LEVELS:
            h, _ = best_above_floor(q, "hannoy", level)
            p, _ = best_above_floor(q, "pgvector", level)
            floors.append(fmt_ratio(ratio_of(h, p)) if h is not None and p is not None else
                          ("pgv -" if h is not None else ("hannoy -" if p is not None else "-")))
        rows.append([ds, "; ".join(ceilings) or "-", "; ".join(worst) or "-", " / ".join(qps),
                     " / ".join(floors), " / ".join(builds_r) or "-"])
    if not rows:
        return ""
    out = "## Overview: hannoy against pgvector\n\n"
    out += table(["data set", f"recall ceiling (ef <= {MAX_EF}) hannoy / pgvector",
                  "lowest recall difference at equal ef_search",
                  "QPS ratio at recall " + " / ".join(str(x) for x in QPS_LEVELS),
                  "time above floor, ratio at recall " + " / ".join(str(x) for x in FLOOR_LEVELS),
                  "build time ratio (default storage)"], rows)
    out += (f"\nTargets: ceiling within {CEILING_TOLERANCE} of pgvector's; recall at every "
            f"ef_search >= pgvector's - {EQUAL_EF_TOLERANCE}; time per query above the SQL floor "
            f"<= {ABOVE_FLOOR_TARGET}x pgvector's at recall "
            + " and ".join(str(x) for x in FLOOR_LEVELS)
            + f" (where pgvector reaches it); build time <= {BUILD_TARGET}x.  Ratios are hannoy / "
            "pgvector, recall differences hannoy - pgvector; one value per ef_construction where "
            "several are given (ceiling, difference, build), the best setting of any "
            "ef_construction otherwise.  'pgv -': pgvector does not reach the recall, "
            "'hannoy -': hannoy does not.\n\n")
    return out


def write_plot(directory, ds, queries):
    """Writes the .dat files and the gnuplot script of one data set's recall-vs-QPS plot."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", ds)
    series = []
    for system in ("hannoy", "pgvector", "hnswlib"):
        efcs = sorted({r["efc"] for r in queries if r["system"] == system}, key=int)
        for j, efc in enumerate(efcs):
            points = sorted((r for r in queries if r["system"] == system and r["efc"] == efc),
                            key=ef_key)
            # Solid line for the first ef_construction, dashed for the others.
            series.append((f"{system} efc={efc}", system, points, 1 if j == 0 else 2))
    exact = [r for r in queries if r["system"] == "exact"]
    floor = [r for r in queries if r["system"] == "floor" and r["efc"] == "-"]
    recalls = [float(r["recall"]) for _, _, pts, _ in series for r in pts]
    if not recalls:
        return None
    # The x axis is -log10(1 - recall), labelled in recall, as ann-benchmarks'
    # logit scale: 0.9, 0.99 and 0.999 are equally far apart and the
    # high-recall end is readable.  Recall 1 is drawn at 0.9999.
    xmin = max(0.0, -math.log10(max(1.0 - min(recalls), 1e-4)) - 0.3)
    xmin = min(xmin, 1.0)
    plots = []
    colours = {"hannoy": "#d62728", "pgvector": "#1f77b4", "hnswlib": "#2ca02c"}
    x = "(-log10(1 - $1 < 1e-4 ? 1e-4 : 1 - $1))"
    for i, (title, system, points, dash) in enumerate(series):
        dat = f"plot-{safe}-{i}.dat"
        with open(os.path.join(directory, dat), "w", encoding="utf-8") as f:
            f.write("# recall qps ef\n")
            for r in points:
                f.write(f"{r['recall']} {r['qps']} {r['ef']}\n")
        plots.append(f"'{dat}' using {x}:2 with linespoints lw 2 pt 7 ps 0.8 dt {dash} "
                     f"lc rgb '{colours[system]}' title '{title}'")
        if dash == 1 and system != "hnswlib":
            # ef_search next to the points of the first ef_construction
            plots.append(f"'{dat}' using {x}:2:3 with labels offset 0.9,0.7 font ',8' "
                         f"tc rgb '{colours[system]}' notitle")
    if exact:
        dat = f"plot-{safe}-exact.dat"
        with open(os.path.join(directory, dat), "w", encoding="utf-8") as f:
            f.write(f"{exact[0]['recall']} {exact[0]['qps']}\n")
        plots.append(f"'{dat}' using {x}:2 with points pt 5 ps 1.5 lc rgb 'black' "
                     f"title 'exact scan'")
    if floor:
        plots.append(f"{float(floor[0]['qps'])} with lines dt 3 lw 2 lc rgb 'gray40' "
                     f"title 'SQL floor (pk range, 10 rows)'")
    tics = ", ".join(f"'{label}' {-math.log10(1.0 - float(label)) if label != '1' else 4.0:.4f}"
                     for label in ("0", "0.5", "0.8", "0.9", "0.95", "0.98", "0.99", "0.995",
                                   "0.998", "0.999", "1"))
    script = f"""# Draws recall-qps-{safe}.png (written by bench/report.py).
set terminal pngcairo size 1100,750 font 'sans,11' noenhanced
set output 'recall-qps-{safe}.png'
set title '{ds}: recall@10 vs queries per second (one client, m=16; up and right is better)'
set xlabel 'recall@10 (scale: -log10(1 - recall); 1 drawn at 0.9999)'
set ylabel 'queries per second (log scale)'
set logscale y
set xrange [{xmin:.3f}:4.15]
set xtics ({tics})
set grid xtics ytics mytics
set key outside right top box
set samples 2
plot {', '.join(plots)}
"""
    with open(os.path.join(directory, f"plot-{safe}.gp"), "w", encoding="utf-8") as f:
        f.write(script)
    return f"recall-qps-{safe}.png"


def dataset_section(directory, ds, queries, builds, inserts, space, repeat_note):
    """Returns the markdown of one data set."""
    q = [r for r in queries if r["dataset"] == ds]
    b = [r for r in builds if r["dataset"] == ds]
    ins = [r for r in inserts if r["dataset"] == ds]
    out = f"## {ds}\n\n"
    png = write_plot(directory, ds, [r for r in q if r["filter"] == "none"])
    if png:
        out += f"![recall vs QPS, {ds}]({png})\n\n"
    if b:
        out += "### Build\n\n"
        rows = [[r["system"], r["m"], r["efc"], fmt_int(num(r["rows"])), r["threads"],
                 f"{float(r['build_s']):.2f}", fmt_mb(num(r["size_bytes"])),
                 fmt_kb_mb(num(r["peak_rss_kb"])), fmt_kb_mb(num(r["worker_peak_rss_kb"]))]
                for r in sorted(b, key=lambda r: (int(r["efc"]), r["system"]))]
        out += table(["system", "m", "ef_construction", "rows", "threads", "build s", "size MB",
                      "peak RSS MB", "worker peak RSS MB"], rows)
        out += ("\nsize: hannoy_index_size() (LMDB sidecar) for hannoy, pg_relation_size() for "
                "pgvector, the in-memory graph and vectors for hnswlib.  Peak RSS: VmHWM of the "
                "building backend (of the process for hnswlib, data set included); it counts "
                "the shared memory and mapped file pages the process touched.\n\n")
    unfiltered = [r for r in q if r["filter"] == "none"]
    if unfiltered:
        out += f"### Recall@10 and throughput ({repeat_note})\n\n"
        order = {"floor": 0, "exact": 1, "hannoy": 2, "pgvector": 3, "hannoy-plain": 4,
                 "pgvector-plain": 5, "hnswlib": 6, "hannoy-binary": 7, "hannoy-scalar8": 8,
                 "hannoy-binary-heap": 9, "hannoy-scalar8-heap": 10, "hannoy-none": 11,
                 "pgvector-bq": 12}
        rows = []
        shown = [r for r in unfiltered if not (r["system"] == "floor" and r["efc"] != "-")]
        for r in sorted(shown, key=lambda r: (order.get(r["system"], 9), ef_key(r))):
            recall = "-" if r["system"] == "floor" else r["recall"]
            rows.append([r["system"], r["efc"], r["ef"], recall, fmt_int(num(r["qps"])),
                         f"{fmt_int(num(r['qps_min']))}-{fmt_int(num(r['qps_max']))}",
                         r["p50_ms"], r["p99_ms"], r["queries"]])
        out += table(["system", "ef_construction", "ef_search", "recall@10", "QPS",
                      "QPS range", "p50 ms", "p99 ms", "queries"], rows)
        out += ("\nexact: sequential scan and sort (no vector index); floor: the same statement "
                "shape and vector parameter, rows 1-10 fetched by a primary-key range (its "
                "recall is meaningless; the floor measured beside each setting is in the equal "
                "ef_search tables).  hannoy-plain, pgvector-plain: the same on copies of the "
                "table whose vector column has STORAGE PLAIN (HANNOY_BENCH_PLAIN=1).\n\n")
    filtered = [r for r in q if r["filter"] != "none"]
    if filtered:
        out += "### Filtered queries (WHERE sel < 10: 10% of rows, sel < 1: 1%)\n\n"
        rows = [[r["filter"], r["system"], r["efc"], r["ef"], r["recall"], fmt_int(num(r["qps"])),
                 r["p50_ms"], r["p99_ms"], r["queries"], r.get("plan", "")]
                for r in sorted(filtered, key=lambda r: (-float(r["filter"].rstrip("%")),
                                                         ef_key(r), r["system"]))]
        out += table(["selectivity", "system", "ef_construction", "ef_search", "recall@10",
                      "QPS", "p50 ms", "p99 ms", "queries", "scan"], rows)
        out += ("\nBoth vector indexes are forced (enable_seqscan = off; at 1% a planner may "
                "prefer the exact plan, whose cost the exact rows show).  pgvector runs with "
                "hnsw.iterative_scan = relaxed_order (otherwise it returns fewer than 10 rows). "
                "Recall is against the exact top 10 among the rows that pass the filter.\n\n")
    if ins:
        out += "### Inserts into a built index (pgbench, one row per transaction)\n\n"
        rows = [[r["system"], r["efc"], r["clients"], fmt_int(num(r["rows"])),
                 f"{float(r['seconds']):.2f}", fmt_int(num(r["rows_per_s"]))]
                for r in sorted(ins, key=lambda r: (int(r["clients"]), r["system"]))]
        out += table(["system", "ef_construction", "clients", "rows", "seconds", "rows/s"], rows)
        out += "\n"
    if any(r["system"] == "pgvector" for r in q):
        out += comparison(ds, unfiltered, b, ins) + "\n"
        out += quantized(ds, unfiltered, b)
    else:
        out += "pgvector was not measured (the vector extension is not available).\n\n"
    out += space_section(ds, space, b)
    return out


def main():
    """Writes summary.md and the plot scripts of the run in the directory given."""
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    directory = sys.argv[1]
    queries = read_csv(directory, "queries.csv")
    builds = read_csv(directory, "builds.csv")
    inserts = read_csv(directory, "inserts.csv")
    timings = read_csv(directory, "timings.csv")
    space = read_csv(directory, "space.csv")
    machine = ""
    machine_path = os.path.join(directory, "machine.md")
    if os.path.exists(machine_path):
        with open(machine_path, encoding="utf-8") as f:
            text = f.read()
        machine = text.split("\n## ")[0].split("\n", 1)[-1].strip()
        settings = re.search(r"\n## Settings\n(.*?)\n## ", text, re.S)
        if settings:
            machine += "\n" + settings.group(1).strip()
    passes = sorted({r["passes"] for r in queries if r["system"] not in ("exact", "floor")})
    repeat_note = f"one client, QPS = median of {'/'.join(passes) or '?'} passes"
    out = f"# hannoy benchmark: {os.path.basename(os.path.normpath(directory))}\n\n"
    out += machine + "\n\n"
    out += overview(queries, builds)
    for ds in datasets_in(queries, builds, inserts):
        out += dataset_section(directory, ds, queries, builds, inserts, space, repeat_note)
    if timings:
        out += "## How long each part took\n\n"
        out += table(["data set", "step", "seconds"],
                     [[t["dataset"], t["step"], t["seconds"]] for t in timings])
        total = sum(float(t["seconds"]) for t in timings)
        out += f"\nTotal of the steps: {total:,.0f} s.\n"
    with open(os.path.join(directory, "summary.md"), "w", encoding="utf-8") as f:
        f.write(out)


if __name__ == "__main__":
    main()
