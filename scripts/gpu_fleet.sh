#!/usr/bin/env bash
# Fleet measurements on the GPU machine, several runs in one call (docs/FLEET.md "On the GPU").
#
#   VENV=.venv312 bash scripts/gpu_fleet.sh 'NAME|bench-fleet args' ...
#
# Each run is `cloudseg bench-fleet` with the common arguments below plus its own; the report
# goes to $OUT/NAME.json and the output to $OUT/NAME.log. With PROFILE=NAME, that run's cloud
# node is sampled by py-spy for PROFILE_S seconds once bench-fleet starts measuring
# ($OUT/NAME_pyspy.txt, raw samples; needs py-spy in the venv:
# `$VENV/bin/python -m pip install --no-index --find-links WHEELS py-spy`).
set -uo pipefail
VENV=${VENV:-.venv312}
OUT=${OUT:-out/device}
PROFILE=${PROFILE:-}
PROFILE_S=${PROFILE_S:-12}
mkdir -p "$OUT"
COMMON=(--fps 15 --size 2048x1024 --scale 4 --codec jpeg --duration 30 --device cuda
        --dds-profile robot --startup-timeout 400)

profile_when_measuring() {  # $1: bench log, $2: py-spy output
  until grep -q 'measuring' "$1" 2>/dev/null; do sleep 0.5; done
  local pid
  pid=$(pgrep -f '[c]loudseg_ros.nodes.cloud_node' | head -1)
  "$VENV/bin/py-spy" record -r 50 -d "$PROFILE_S" --nonblocking -f raw -o "$2" -p "$pid" \
    > /dev/null 2>&1 || echo "py-spy failed on pid $pid"
}

for run in "$@"; do
  name=${run%%|*}
  args=${run#*|}
  log=$OUT/$name.log
  : > "$log"
  if [ "$name" = "$PROFILE" ]; then
    profile_when_measuring "$log" "$OUT/${name}_pyspy.txt" &
  fi
  echo "== $name: $args"
  # shellcheck disable=SC2086  # the run's arguments are words by design
  "$VENV/bin/cloudseg" bench-fleet "${COMMON[@]}" $args --json "$OUT/$name.json" \
    --out "/tmp/fleet_$name" > "$log" 2>&1
  echo "exit $?"
  grep -v '^ \|^{\|^}' "$log" | tail -3
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print({k: r[k] for k in ("masks_per_s", "latency_ms", "cloud_cpu_percent", "gpu_util_percent",
                         "superseded", "lost", "frames_in")})' "$OUT/$name.json" 2>/dev/null
  wait
done
