#!/usr/bin/env bash
# Installs the Debian packages mftd's tests and local demo need: real routers
# (Prosody, ejabberd), OpenSSH server (file server), PostgreSQL (transfer log)
# and slixmpp (a real XMPP client). Package installs must not start system daemons
# bound to all interfaces, so a policy-rc.d refusing service starts is kept in
# place while apt runs; every server is started later by our own scripts on
# 127.0.0.1 only.
set -euo pipefail

# ejabberd is a second router: the audit-trail tests run mftd's Erlang module
# in it (compiled with erlc, which ejabberd's dependencies bring), and the
# benchmark suite runs its mod_http_upload beside mftd. prometheus brings
# promtool (the metrics and alert-rule checks), chromium renders the status
# page, haproxy fronts several nodes in the cluster tests.
packages=(prosody ejabberd openssh-server openssh-client postgresql python3-slixmpp libssl-dev pkg-config curl prometheus chromium haproxy)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The file server account the tests and the local demo use: key-only SFTP
# logins, so its password field must be '*' (unusable) rather than '!'
# (locked), which sshd refuses without PAM.
ensure_file_server_user() {
  if ! id mftfiles >/dev/null 2>&1; then
    $SUDO useradd --system --shell /bin/sh --home-dir /nonexistent --no-create-home mftfiles
  fi
  $SUDO usermod -p '*' mftfiles
  $SUDO mkdir -p /run/sshd
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  ensure_file_server_user
  exit 0
fi
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" -eq 0 ] || $SUDO rm -f "$policy"; }
trap cleanup EXIT

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian may have started nothing thanks to policy-rc.d, but stop anything a
# maintainer script launched anyway so no daemon listens on a public address.
for svc in prosody ejabberd ssh postgresql haproxy prometheus prometheus-node-exporter; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
ensure_file_server_user
echo "install-deps: done"
