"""Reads a callgrind output file (shared by bench.sh, tls13_ops.sh and routes.sh)."""
import re


def read(path, names=()):
    """(total instructions, {name: calls}, {name: inclusive instructions of those calls})."""
    idname, calls, incl = {}, {n: 0 for n in names}, {n: 0 for n in names}
    cur, total, after_calls = None, 0, False
    for line in open(path):
        if after_calls:
            after_calls = False
            parts = line.split()
            if cur in incl and len(parts) >= 2:
                incl[cur] += int(parts[1])
            continue
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                idname[m.group(1)] = m.group(2).strip()
            cur = idname.get(m.group(1)) if line.startswith("cfn=") else None
            continue
        if line.startswith("calls="):
            after_calls = True
            if cur in calls:
                calls[cur] += int(line.split("=")[1].split()[0])
        elif line.startswith(("summary:", "totals:")) and not total:
            total = int(line.split()[1])
    return total, calls, incl
