#!/usr/bin/env bash
# The serving path against NSD and Knot in one run: instructions per query (icount.sh),
# queries/second (dnsperf.sh) and zone loading — time and peak RSS — (load.sh), one after the
# other on this machine, each script running NSD and Knot itself and printing its table with
# the ratios to NSD of the same run.
#
# Usage: server/bench/serving.sh [N...]   (load sizes; default: 100000 1000000)
#   The knobs of each script apply (ICOUNT_*, BENCH_*, LOAD_ZONES, LOAD_BIN); LOAD_ZONES keeps
#   the generated zones between runs (1,000,000 members take about 6 minutes to generate).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NS=("$@")
[[ ${#NS[@]} -gt 0 ]] || NS=(100000 1000000)
echo "== serving.sh: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')"
echo "== instructions per query (callgrind)"
"$HERE/icount.sh" "${ICOUNT_QUERIES:-2000}"
echo "== queries per second (dnsperf)"
BENCH_SERVERS=${BENCH_SERVERS:-"tpkd nsd knot"} "$HERE/dnsperf.sh"
echo "== zone loading: ${NS[*]} members"
"$HERE/load.sh" "${NS[@]}"
