#!/usr/bin/env bash
# Brings up mftd's main job on this machine, on loopback only: a local Prosody
# (the router) with two accounts and mftd's router module (mod_mftd, which
# reports who a file was sent to and gives each recipient a URL naming them),
# a local OpenSSH sshd as the external file server (user mftfiles, key-only,
# pinned host key), and mftd registered as the upload component, storing
# files over SFTP in the MFT layout under $RUN_DIR/mftFileStore/node_1, and a
# local PostgreSQL holding the transfer log (aft_log) of every upload and
# download.
# It shows the product once with real clients: alice uploads a file and sends
# it to bob, bob's client fetches it, and the transfer log printed names bob
# as the recipient of the upload and as the downloader. Then it prints the
# accounts and where files land, runs until Ctrl-C and stops everything it
# started (also when it fails half-way).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
RUN_DIR="${MFTD_RUN_DIR:-/tmp/mftd-local}"
DOMAIN="${MFTD_DOMAIN:-example.test}"
C2S_PORT="${MFTD_C2S_PORT:-5222}"
COMPONENT_PORT="${MFTD_COMPONENT_PORT:-5347}"
HTTP_PORT="${MFTD_HTTP_PORT:-8443}"
SSH_PORT="${MFTD_SSH_PORT:-2222}"
PG_PORT="${MFTD_PG_PORT:-5433}"
ADMIN_PORT="${MFTD_ADMIN_PORT:-8444}"
PG_BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
# These settings are the script's, not configuration overrides: mftd refuses
# an MFTD_<SECTION>_<KEY> with one underscore (MFTD_HTTP_PORT would read as a
# misspelt MFTD_HTTP__PORT), so they stay out of the servers' environment.
export -n MFTD_RUN_DIR MFTD_DOMAIN MFTD_C2S_PORT MFTD_COMPONENT_PORT MFTD_HTTP_PORT MFTD_SSH_PORT MFTD_PG_PORT MFTD_ADMIN_PORT

bash "$repo/scripts/install-deps.sh"
(cd "$repo" && cargo build --release --bins)

for port in "$C2S_PORT" "$COMPONENT_PORT" "$HTTP_PORT" "$SSH_PORT" "$PG_PORT" "$ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "error: port $port on 127.0.0.1 is in use; set MFTD_C2S_PORT / MFTD_COMPONENT_PORT / MFTD_HTTP_PORT / MFTD_SSH_PORT / MFTD_PG_PORT / MFTD_ADMIN_PORT" >&2
    exit 1
  fi
done

mkdir -p "$RUN_DIR/prosody/data" "$RUN_DIR/sshd" "$RUN_DIR/mftFileStore" "$RUN_DIR/pg/run"
chmod 755 "$RUN_DIR"
secret="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
head -c 32 /dev/urandom | base64 | tr -d '\n' > "$RUN_DIR/token.key"
chmod 600 "$RUN_DIR/token.key"
# The key mod_mftd signs recipients' claims with, shared with mftd.
share_key="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
printf '%s' "$share_key" > "$RUN_DIR/share.key"
chmod 600 "$RUN_DIR/share.key"

cat > "$RUN_DIR/prosody/prosody.cfg.lua" <<CFG
data_path = "$RUN_DIR/prosody/data"
log = { { levels = { min = "info" }, to = "file", filename = "$RUN_DIR/prosody/prosody.log" } }
pidfile = "$RUN_DIR/prosody/prosody.pid"
interfaces = { "127.0.0.1" }
c2s_ports = { $C2S_PORT }
component_ports = { $COMPONENT_PORT }
component_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { "roster", "saslauth", "disco", "ping", "posix", "mftd" }
modules_disabled = { "s2s" }
plugin_paths = { "$repo/router/prosody" }
mftd_component = "upload.$DOMAIN"
mftd_url_prefix = "http://127.0.0.1:$HTTP_PORT/"
mftd_share_key = "$share_key"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
network_settings = { nagle = false }
VirtualHost "$DOMAIN"
    disco_items = { { "upload.$DOMAIN", "HTTP File Upload" } }
Component "upload.$DOMAIN"
    component_secret = "$secret"
CFG

cat > "$RUN_DIR/mftd.toml" <<CFG
[xmpp]
component_jid = "upload.$DOMAIN"
secret = "$secret"
router = "127.0.0.1:$COMPONENT_PORT"

[http]
listen = "127.0.0.1:$HTTP_PORT"
public_url = "http://127.0.0.1:$HTTP_PORT/"
token_key_file = "$RUN_DIR/token.key"

[node]
name = "node_1"

[store]
kind = "sftp"

[store.sftp]
host = "127.0.0.1"
port = $SSH_PORT
user = "mftfiles"
directory = "$RUN_DIR/mftFileStore/node_1"
host_key = "HOST_KEY_LINE"
private_key = "$RUN_DIR/node_1.key"

[limits]
max_file_size = "100 MiB"

[database]
url = "postgresql://postgres@127.0.0.1:$PG_PORT/mftd"

[recipients]
share_key_file = "$RUN_DIR/share.key"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
CFG

prosody_user=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R prosody:prosody "$RUN_DIR/prosody"
  prosody_user=(runuser -u prosody --)
fi
"${prosody_user[@]}" prosodyctl --config "$RUN_DIR/prosody/prosody.cfg.lua" register alice "$DOMAIN" alice-pw >/dev/null 2>&1 || true
"${prosody_user[@]}" prosodyctl --config "$RUN_DIR/prosody/prosody.cfg.lua" register bob "$DOMAIN" bob-pw >/dev/null 2>&1 || true

# The file server: its own sshd, host keys and authorized_keys.
for kind in ed25519 rsa; do
  [ -f "$RUN_DIR/sshd/host_$kind" ] || ssh-keygen -q -t "$kind" -N "" -f "$RUN_DIR/sshd/host_$kind"
done
cat > "$RUN_DIR/sshd/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $RUN_DIR/sshd/host_ed25519
HostKey $RUN_DIR/sshd/host_rsa
PidFile $RUN_DIR/sshd/sshd.pid
AuthorizedKeysFile $RUN_DIR/sshd/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers mftfiles
Subsystem sftp internal-sftp
CFG
[ -f "$RUN_DIR/node_1.key" ] || "$repo/target/release/mftd" keys generate --node node_1 --out "$RUN_DIR/node_1.key" >/dev/null 2>&1
"$repo/target/release/mftd" keys show --key "$RUN_DIR/node_1.key" > "$RUN_DIR/sshd/authorized_keys"
if [ "$(id -u)" -eq 0 ]; then chown mftfiles "$RUN_DIR/mftFileStore"; fi

# The transfer log database: a private cluster, trust auth on loopback only.
pg_user=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres:postgres "$RUN_DIR/pg"
  pg_user=(runuser -u postgres --)
fi
if [ ! -f "$RUN_DIR/pg/data/PG_VERSION" ]; then
  "${pg_user[@]}" "$PG_BIN/initdb" -U postgres --auth=trust -E UTF8 -D "$RUN_DIR/pg/data" >/dev/null
fi

# Everything started below is stopped when this script ends, however it ends
# (Ctrl-C, an error, mftd exiting): each server's whole process tree (runuser
# and the server under it, sshd's session processes, PostgreSQL's workers),
# PostgreSQL with a fast shutdown first, then SIGTERM, then SIGKILL for what
# is still there after 10 s.
pids=()
tree() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$child"; done
  echo "$1"
}
stop_started() {
  local status=$? pid all=() alive=()
  trap - EXIT INT TERM HUP
  [ ${#pids[@]} -gt 0 ] || exit "$status"
  for pid in "${pids[@]}"; do mapfile -t -O "${#all[@]}" all < <(tree "$pid"); done
  if [ -f "$RUN_DIR/pg/data/postmaster.pid" ]; then
    "${pg_user[@]}" "$PG_BIN/pg_ctl" -D "$RUN_DIR/pg/data" -m fast -w -t 10 stop >/dev/null 2>&1 || true
  fi
  kill -TERM "${all[@]}" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive=()
    for pid in "${all[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} -gt 0 ] || break
    sleep 0.1
  done
  if [ ${#alive[@]} -gt 0 ]; then
    echo "still running after SIGTERM, killing: $(ps -o pid=,args= -p "$(IFS=,; echo "${alive[*]}")" | tr '\n' ';')" >&2
    kill -KILL "${alive[@]}" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  echo "stopped mftd, PostgreSQL, sshd and Prosody"
  exit "$status"
}
trap stop_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

"${prosody_user[@]}" prosody --config "$RUN_DIR/prosody/prosody.cfg.lua" -F >/dev/null 2>&1 &
pids+=($!)
/usr/sbin/sshd -D -e -f "$RUN_DIR/sshd/sshd_config" 2>"$RUN_DIR/sshd/sshd.log" &
pids+=($!)
"${pg_user[@]}" "$PG_BIN/postgres" -D "$RUN_DIR/pg/data" -c listen_addresses=127.0.0.1 -p "$PG_PORT" \
  -k "$RUN_DIR/pg/run" 2>"$RUN_DIR/pg/postgres.log" &
pids+=($!)
for _ in $(seq 1 100); do
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 0.1
done
psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'mftd'" | grep -q 1 \
  || psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE mftd"

for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SSH_PORT") 2>/dev/null && break
  sleep 0.1
done
# Pin the file server's host key: the line ssh-keyscan prints.
host_key="$(ssh-keyscan -t ed25519 -p "$SSH_PORT" 127.0.0.1 2>/dev/null | grep -v '^#' | head -n1)"
sed -i "s|HOST_KEY_LINE|$host_key|" "$RUN_DIR/mftd.toml"
echo "== file server status"
"$repo/target/release/mftd" fileserver status --config "$RUN_DIR/mftd.toml"
"$repo/target/release/mftd" check-config --config "$RUN_DIR/mftd.toml"
RUST_LOG="${RUST_LOG:-info}" "$repo/target/release/mftd" run --config "$RUN_DIR/mftd.toml" 2>"$RUN_DIR/mftd.log" &
mftd_pid=$!
pids+=("$mftd_pid")

for _ in $(seq 1 100); do
  grep -q "XMPP: connected and authenticated" "$RUN_DIR/mftd.log" 2>/dev/null && break
  sleep 0.1
done

client() {
  /usr/bin/python3 "$repo/xmpp-tests/client/mft_client.py" --password "$2" --jid "$1@$DOMAIN" \
    --server "127.0.0.1:$C2S_PORT" "${@:3}"
}
json_field() { /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }

echo "== alice sends a file to bob with real clients (slixmpp), bob fetches it"
ready="$RUN_DIR/bob.ready"
rm -f "$ready"
client bob bob-pw receive --fetch --count 1 --ready "$ready" > "$RUN_DIR/bob.json" 2>/dev/null &
bob_pid=$!
pids+=("$bob_pid")
for _ in $(seq 1 200); do [ -f "$ready" ] && break; sleep 0.1; done
[ -f "$ready" ] || { echo "error: bob's client did not come online (see $RUN_DIR/prosody/prosody.log)" >&2; exit 1; }
sample="$RUN_DIR/hello.txt"
echo "hello from mftd $(date -u +%FT%TZ)" > "$sample"
upload="$(client alice alice-pw upload --file "$sample" --content-type text/plain 2>/dev/null)"
get_url="$(printf '%s' "$upload" | json_field get_url)"
if [ "$(printf '%s' "$upload" | json_field put_status)" != 201 ] || [ -z "$get_url" ]; then
  echo "error: the upload failed: $upload (mftd log: $RUN_DIR/mftd.log)" >&2
  exit 1
fi
echo "   alice uploaded hello.txt: $get_url"
client alice alice-pw send --to "bob@$DOMAIN" --body "$get_url" --oob "$get_url" >/dev/null 2>&1
wait "$bob_pid" || true
echo "   bob received: $(/usr/bin/python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))["messages"]
print(m[0]["oob"] + " and fetched it: HTTP " + str(m[0]["fetched"][0]["status"]) if m and m[0]["fetched"] else "nothing")' "$RUN_DIR/bob.json")"
# The share report and bob's fetch are committed just after the messages.
resource="$(printf '%s' "$get_url" | awk -F/ '{print $(NF-1)}')"
named=""
for _ in $(seq 1 100); do
  named="$(psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d mftd -Atc \
    "SELECT (SELECT count(*) FROM aft_log WHERE method = 'POST' AND filename = '$resource' AND to_jid = 'bob@$DOMAIN') \
         || ' ' || (SELECT count(*) FROM aft_log WHERE method = 'GET' AND filename = '$resource' AND jid = 'bob@$DOMAIN' AND http_status = 200)")"
  [ "$named" = "1 1" ] && break
  sleep 0.1
done
if [ "$named" != "1 1" ]; then
  echo "error: the transfer log does not name bob as recipient and downloader (POST, GET rows: $named); see $RUN_DIR/mftd.log and $RUN_DIR/prosody/prosody.log" >&2
  exit 1
fi

cat <<INFO

mftd is running (logs: $RUN_DIR/mftd.log, Prosody: $RUN_DIR/prosody/prosody.log)
  XMPP server   127.0.0.1:$C2S_PORT, domain $DOMAIN (plain connection, loopback only)
  accounts      alice@$DOMAIN / alice-pw     bob@$DOMAIN / bob-pw
  upload        component upload.$DOMAIN, HTTP on http://127.0.0.1:$HTTP_PORT/
  file server   sftp://mftfiles@127.0.0.1:$SSH_PORT (sshd log: $RUN_DIR/sshd/sshd.log)
  router module mod_mftd in Prosody: shares reported, each recipient's URL names them
  status page   http://127.0.0.1:$ADMIN_PORT/ (metrics: /metrics, readiness: /readyz)
                try: $repo/target/release/mftd status --config $RUN_DIR/mftd.toml
  transfer log  postgresql://postgres@127.0.0.1:$PG_PORT/mftd, table aft_log
                try: $repo/target/release/mftd log --config $RUN_DIR/mftd.toml --to bob@$DOMAIN
  files land in $RUN_DIR/mftFileStore/node_1/files/im/<YYYYMMDD>/<HH>/<resource name>
Files stored so far:
$(find "$RUN_DIR/mftFileStore/node_1/files" -type f ! -name '*.meta' 2>/dev/null | sed 's/^/  /')

Node status (mftd status):
$("$repo/target/release/mftd" status --config "$RUN_DIR/mftd.toml" | sed 's/^/  /')

Transfer log so far, newest first (mftd log): bob is the upload's recipient (to_jid)
and the downloader (jid of his GET row); the anonymous GET is alice's client
checking its own upload:
$("$repo/target/release/mftd" log --config "$RUN_DIR/mftd.toml" | sed 's/^/  /')

Press Ctrl-C to stop.
INFO
wait "$mftd_pid"
