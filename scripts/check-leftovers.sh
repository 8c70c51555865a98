#!/usr/bin/env bash
# What set-up and the tests leave behind on this machine, against a snapshot
# taken before them: listeners beyond loopback, and server processes still
# running. Used by .ci/run (after scripts/install-deps.sh and again after the
# test suite), by scripts/install-deps.sh (on its own run) and by
# scripts/test.sh (processes the test harness started).
#
#   check-leftovers.sh snapshot DIR         record listeners (DIR/listeners,
#                                           raw `ss -ltnupH`) and server
#                                           processes (DIR/processes)
#   check-leftovers.sh listeners DIR        fail on a TCP/UDP listener outside
#                                           127.0.0.0/8 and ::1 that the
#                                           snapshot did not have (compared by
#                                           protocol, process name and local
#                                           address:port, not by pid)
#   check-leftovers.sh processes DIR [S]    fail on a server process (prosody,
#                                           ejabberd/beam.smp, epmd, sshd -f,
#                                           postgres, haproxy, mftd, clamd,
#                                           garage …)
#                                           that did not exist at the snapshot;
#                                           waits up to S seconds (default 10)
#                                           for ones on their way out
#   check-leftovers.sh all DIR [S]          both
#   check-leftovers.sh kill-tagged TAG [S]  processes whose environment holds
#                                           MFTD_RUN_TAG=TAG (everything a
#                                           tagged run started): waits up to S
#                                           seconds (default 5) for them to
#                                           end, then names and kills the rest;
#                                           fails if it had to kill any
# The listeners file may also be any earlier `ss -ltnupH` output.
set -euo pipefail
export LC_ALL=C

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# One line per listener: "proto local-address names pids", names being the
# sorted process names ss shows ("?" when it shows none), for listeners
# outside loopback only.
public_listeners() {
  awk '
    function loopback(addr,   a) {
      a = addr
      sub(/:[0-9*]+$/, "", a)            # port
      gsub(/^\[|\]$/, "", a)             # IPv6 brackets
      sub(/%.*$/, "", a)                 # interface scope (127.0.0.53%lo)
      return a ~ /^127\./ || a == "::1" || a ~ /^::ffff:127\./
    }
    NF >= 5 {
      local = $5
      if (loopback(local)) next
      names = ""; pids = ""
      rest = $0
      while (match(rest, /\("[^"]*",pid=[0-9]+/)) {
        item = substr(rest, RSTART + 2, RLENGTH - 2)
        rest = substr(rest, RSTART + RLENGTH)
        n = item; sub(/",pid=.*/, "", n)
        p = item; sub(/.*pid=/, "", p)
        if (index("," names ",", "," n ",") == 0) names = names (names == "" ? "" : ",") n
        if (index("," pids ",", "," p ",") == 0) pids = pids (pids == "" ? "" : ",") p
      }
      if (names == "") names = "?"
      if (pids == "") pids = "-"
      print $1, local, names, pids
    }
  ' "$@"
}

# Processes as "pid ppid start(5 fields) args…"; the server ones only.
# A process is a server when its name (the program, or the script an
# interpreter runs, or the title a server gives its children such as
# "postgres: checkpointer") is one the test harness, scripts/run-local.sh or
# the Debian packages start; sshd only with -f (our own configs) or serving
# the file server account mftfiles, so a system sshd's sessions are not ours.
server_processes() {
  awk '
    function base(s) { sub(/:$/, "", s); sub(/.*\//, "", s); return s }
    {
      name = base($8)
      if (name ~ /^(lua|python|perl|bash|sh|dash)[0-9.]*$/ && NF >= 9 && $9 !~ /^-/) name = base($9)
      if (name ~ /^(prosody|ejabberdctl|beam|beam\.smp|erl_child_setup|inet_gethost|epmd|postgres|haproxy|mftd|clamd|freshclam|garage|mft_client\.py)$/) { print; next }
      if (name == "sshd" && ($0 ~ / -f / || $9 ~ /^mftfiles/)) print
    }
  '
}

list_processes() { ps -eo pid=,ppid=,lstart=,args=; }

# Server processes now that the snapshot did not have (by pid and start
# time), leaving out children of servers that were already running (a system
# PostgreSQL forking a backend is not a leftover).
new_servers() {
  local dir="$1"
  list_processes | server_processes | awk -v snap="$dir/processes" '
    BEGIN {
      while ((getline line < snap) > 0) {
        split(line, f, " ")
        before[f[1] " " f[3] f[4] f[5] f[6] f[7]] = 1
        old[f[1]] = 1
      }
    }
    { id = $1 " " $3 $4 $5 $6 $7 }
    !(id in before) && !($2 in old) { print }
  '
}

cmd_snapshot() {
  local dir="$1"
  mkdir -p "$dir"
  ss -ltnupH > "$dir/listeners"
  list_processes | server_processes > "$dir/processes"
}

cmd_listeners() {
  local dir="$1" found
  [ -r "$dir/listeners" ] || { echo "check-leftovers: no snapshot $dir/listeners" >&2; return 2; }
  public_listeners "$dir/listeners" > "$dir/listeners.public"
  found="$(public_listeners <(ss -ltnupH) | awk -v snap="$dir/listeners.public" '
    BEGIN { while ((getline line < snap) > 0) { split(line, f, " "); seen[f[1] " " f[2] " " f[3]] = 1 } }
    !(($1 " " $2 " " $3) in seen)
  ')"
  if [ -z "$found" ]; then
    echo "check-leftovers: no new listener beyond loopback"
    return 0
  fi
  echo "check-leftovers: FAIL: listening beyond loopback, not there before set-up:" >&2
  local proto addr names pids pid
  while read -r proto addr names pids; do
    echo "  $proto $addr  process $names (pid $pids)" >&2
    if [ "$pids" != "-" ]; then
      for pid in ${pids//,/ }; do
        echo "      $pid: $(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" || echo '(gone)')" >&2
      done
    fi
  done <<< "$found"
  return 1
}

cmd_processes() {
  local dir="$1" found deadline=$((SECONDS + ${2:-10}))
  [ -r "$dir/processes" ] || { echo "check-leftovers: no snapshot $dir/processes" >&2; return 2; }
  while :; do
    found="$(new_servers "$dir")"
    if [ -z "$found" ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.2
  done
  if [ -z "$found" ]; then
    echo "check-leftovers: no server process left running"
    return 0
  fi
  echo "check-leftovers: FAIL: server processes still running that were not before (pid ppid start command):" >&2
  printf '  %s\n' "${found//$'\n'/$'\n'  }" >&2
  return 1
}

tagged_pids() {
  local tag="$1" env pid
  # One grep over every environment (NUL-separated): the files that hold it.
  while read -r env; do
    pid="${env#/proc/}"
    pid="${pid%/environ}"
    if [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ]; then continue; fi
    echo "$pid"
  done < <(grep -lzxF "MFTD_RUN_TAG=$tag" /proc/[0-9]*/environ 2>/dev/null || true)
}

cmd_kill_tagged() {
  local tag="$1" pids=() pid deadline=$((SECONDS + ${2:-5}))
  while :; do
    mapfile -t pids < <(tagged_pids "$tag")
    if [ ${#pids[@]} -eq 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.2
  done
  if [ ${#pids[@]} -eq 0 ]; then
    echo "check-leftovers: the run left no process behind"
    return 0
  fi
  echo "check-leftovers: FAIL: the run left these running; killing them (pid ppid start command):" >&2
  ps -o pid=,ppid=,lstart=,args= -p "$(IFS=,; echo "${pids[*]}")" | sed 's/^/  /' >&2 || true
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 25); do
    alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} -gt 0 ] || break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  return 1
}

[ $# -ge 2 ] || usage
case "$1" in
  snapshot) cmd_snapshot "$2" ;;
  listeners) cmd_listeners "$2" ;;
  processes) cmd_processes "$2" "${3:-10}" ;;
  all)
    status=0
    cmd_listeners "$2" || status=1
    cmd_processes "$2" "${3:-10}" || status=1
    exit "$status"
    ;;
  kill-tagged) cmd_kill_tagged "$2" "${3:-5}" ;;
  *) usage ;;
esac
