# shellcheck shell=bash
# Sourced before the blocks of docs/install.md when the install test runs
# them (xmpp-tests/tests/install_doc.rs). CI has no systemd and must listen
# on loopback only, so this replaces exactly these, and nothing else:
#
#   systemctl    start/restart/stop/reload/status of a unit run its
#                ExecStartPre= and ExecStart= lines (as its User=, with its
#                RuntimeDirectory= and WorkingDirectory=) in the background,
#                and wait for READY=1 on a notify socket for Type=notify;
#                postgresql is pg_ctlcluster; enable/daemon-reload do nothing
#   apt-get      `install` checks that the packages are installed
#                (scripts/install-deps.sh installs them) instead of
#                installing or upgrading anything
#   loopback     Prosody starts with a configuration that sets
#                interfaces = { "127.0.0.1" }, its client and server ports
#                to SANDBOX_C2S_PORT and SANDBOX_S2S_PORT (free ones the test
#                picks, so an XMPP server already on 5222/5269 does not
#                answer instead) and includes the stock one; mftd starts
#                with MFTD_HTTP__LISTEN=127.0.0.1:8443
#   free space   every mftd command runs with the file server's free-space
#                alarm off (MFTD_STORE__SFTP__ALARM_FREE_PERCENT=0): the
#                file store shares this machine's disk, and a CI disk below
#                the example's 10 % would fail `mftd fileserver status`
#
# SANDBOX_STATE (a directory) holds each started unit's pid and log; the
# test stops every unit recorded there when it ends (`sandbox_stop_all`).

: "${SANDBOX_STATE:?SANDBOX_STATE must name a directory}"
export MFTD_STORE__SFTP__ALARM_FREE_PERCENT=0
mkdir -p "$SANDBOX_STATE"

# What runs differently from the unit file, per unit: environment and the
# loopback-only Prosody configuration.
sandbox_env() {
  case "$1" in
    mftd) echo "MFTD_HTTP__LISTEN=127.0.0.1:8443" ;;
  esac
}

sandbox_args() {
  case "$1" in
    prosody)
      local wrapper=/etc/prosody/sandbox-loopback.cfg.lua
      # In /etc/prosody, so the stock file's relative paths (certs, conf.d)
      # resolve as they do for the stock configuration.
      printf '%s\n' '-- written by the install test: loopback only' \
        'interfaces = { "127.0.0.1" }' \
        "c2s_ports = { ${SANDBOX_C2S_PORT:?} }" \
        "s2s_ports = { ${SANDBOX_S2S_PORT:?} }" \
        'Include "/etc/prosody/prosody.cfg.lua"' > "$wrapper"
      echo "--config $wrapper"
      ;;
  esac
}

apt-get() {
  if [ "${1:-}" != install ]; then
    echo "sandbox: apt-get $* is not run in the install test" >&2
    return 1
  fi
  shift
  local p missing=()
  for p in "$@"; do
    case "$p" in -*) continue ;; esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "sandbox: not installed: ${missing[*]} (run scripts/install-deps.sh)" >&2
    return 1
  fi
}

sandbox_unit_file() {
  local d
  for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    if [ -f "$d/$1.service" ]; then
      echo "$d/$1.service"
      return 0
    fi
  done
  echo "sandbox: no unit file for $1" >&2
  return 1
}

# The values of KEY= in a unit's [Service] section, one per line.
sandbox_unit_values() {
  sed -n "/^\[Service\]/,/^\[/{s/^$2=//p}" "$1"
}

# Runs a command line from a unit as the unit's user ("exec": in place of
# this shell). Of the prefixes "-", "@", "+" and "!", only "-" (failure
# ignored) means something here.
sandbox_exec_line() {
  local mode="$1" user="$2" line="$3" ignore=0
  case "$line" in -*) ignore=1 line="${line#-}" ;; esac
  line="${line#[@+!]}"
  local -a words
  read -r -a words <<< "$line"
  if [ -n "$user" ] && [ "$user" != root ]; then
    words=(setpriv "--reuid=$user" "--regid=$(id -g "$user")" --init-groups -- "${words[@]}")
  fi
  if [ "$mode" = exec ]; then exec "${words[@]}"; fi
  if [ "$ignore" -eq 1 ]; then "${words[@]}" || true; else "${words[@]}"; fi
}

sandbox_pid() { cat "$SANDBOX_STATE/$1.pid" 2>/dev/null; }

sandbox_running() {
  local pid
  pid="$(sandbox_pid "$1")" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

sandbox_start() {
  local unit="$1" file user type dir line pid
  if [ "$unit" = postgresql ]; then
    local ver name _rest
    while read -r ver name _rest; do
      # Only a cluster the sandbox started is stopped again.
      if ! pg_ctlcluster "$ver" "$name" status >/dev/null 2>&1; then
        pg_ctlcluster "$ver" "$name" start
        echo "$ver $name" >> "$SANDBOX_STATE/postgresql.clusters"
      fi
    done < <(pg_lsclusters -h)
    return 0
  fi
  if sandbox_running "$unit"; then return 0; fi
  file="$(sandbox_unit_file "$unit")"
  user="$(sandbox_unit_values "$file" User | tail -n1)"
  type="$(sandbox_unit_values "$file" Type | tail -n1)"
  for dir in $(sandbox_unit_values "$file" RuntimeDirectory); do
    install -d -o "${user:-root}" -g "${user:-root}" "/run/$dir"
  done
  for dir in $(sandbox_unit_values "$file" StateDirectory); do
    install -d -o "${user:-root}" -g "${user:-root}" "/var/lib/$dir"
  done
  local workdir
  workdir="$(sandbox_unit_values "$file" WorkingDirectory | tail -n1)"
  local -a env=()
  mapfile -t env < <(sandbox_env "$unit")
  while read -r line; do
    [ -n "$line" ] || continue
    env "${env[@]}" bash -c "$(declare -f sandbox_exec_line); sandbox_exec_line \"\$@\"" _ run "$user" "$line"
  done < <(sandbox_unit_values "$file" ExecStartPre)
  line="$(sandbox_unit_values "$file" ExecStart | tail -n1) $(sandbox_args "$unit")"
  local notify="" waiter=""
  if [ "$type" = notify ]; then
    notify="$SANDBOX_STATE/$unit.notify"
    rm -f "$notify"
    python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
s.settimeout(float(sys.argv[2]))
while True:
    msg = s.recv(4096).decode(errors="replace")
    if "READY=1" in msg.split("\n"):
        sys.exit(0)
' "$notify" 120 &
    waiter=$!
    while [ ! -S "$notify" ]; do sleep 0.05; done
    chmod 0755 "$SANDBOX_STATE"
    env+=("NOTIFY_SOCKET=$notify")
  fi
  (
    cd "${workdir:-/}" || exit
    exec setsid env "${env[@]}" bash -c "$(declare -f sandbox_exec_line); sandbox_exec_line \"\$@\"" _ exec "$user" "$line"
  ) >> "$SANDBOX_STATE/$unit.log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$SANDBOX_STATE/$unit.pid"
  echo "$unit" >> "$SANDBOX_STATE/units"
  if [ -n "$waiter" ]; then
    while kill -0 "$waiter" 2>/dev/null; do
      if ! kill -0 "$pid" 2>/dev/null; then
        kill "$waiter" 2>/dev/null || true
        echo "sandbox: $unit exited before READY=1:" >&2
        tail -n 30 "$SANDBOX_STATE/$unit.log" >&2
        return 1
      fi
      sleep 0.1
    done
    if ! wait "$waiter"; then
      echo "sandbox: $unit sent no READY=1 in time:" >&2
      tail -n 30 "$SANDBOX_STATE/$unit.log" >&2
      return 1
    fi
  else
    sleep 1
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "sandbox: $unit exited at once:" >&2
      tail -n 30 "$SANDBOX_STATE/$unit.log" >&2
      return 1
    fi
  fi
}

sandbox_stop() {
  local unit="$1" pid
  if [ "$unit" = postgresql ]; then
    local ver name
    [ -f "$SANDBOX_STATE/postgresql.clusters" ] || return 0
    while read -r ver name; do
      pg_ctlcluster "$ver" "$name" stop -m fast 2>/dev/null || true
    done < <(sort -u "$SANDBOX_STATE/postgresql.clusters")
    rm -f "$SANDBOX_STATE/postgresql.clusters"
    return 0
  fi
  pid="$(sandbox_pid "$unit")" || return 0
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$i" -lt 300 ] || kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 0.1
  done
  rm -f "$SANDBOX_STATE/$unit.pid"
}

# Every unit this sandbox started, last started first.
sandbox_stop_all() {
  local unit
  if [ -f "$SANDBOX_STATE/units" ]; then
    for unit in $(tac "$SANDBOX_STATE/units" | awk '!seen[$0]++'); do
      sandbox_stop "$unit"
    done
  fi
  sandbox_stop postgresql
}

systemctl() {
  local verb now=0 units=() a
  for a in "$@"; do
    case "$a" in
      --now) now=1 ;;
      -*) ;;
      *) if [ -z "${verb:-}" ]; then verb="$a"; else units+=("${a%.service}"); fi ;;
    esac
  done
  local unit pid
  for unit in "${units[@]}"; do
    case "$verb" in
      enable) [ "$now" -eq 0 ] || sandbox_start "$unit" ;;
      disable) [ "$now" -eq 0 ] || sandbox_stop "$unit" ;;
      start) sandbox_start "$unit" ;;
      stop) sandbox_stop "$unit" ;;
      restart) sandbox_stop "$unit"; sandbox_start "$unit" ;;
      reload)
        pid="$(sandbox_pid "$unit")"
        kill -HUP "$pid"
        ;;
      status|is-active)
        if [ "$unit" = postgresql ]; then pg_lsclusters; continue; fi
        if sandbox_running "$unit"; then
          echo "$unit: active (running) since the sandbox started it, pid $(sandbox_pid "$unit")"
        else
          echo "$unit: inactive"
          return 3
        fi
        ;;
      *) echo "sandbox: systemctl $verb is not emulated" >&2; return 1 ;;
    esac
  done
  [ "${verb:-}" != daemon-reload ] || return 0
}
