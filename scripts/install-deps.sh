#!/usr/bin/env bash
# Installs the Debian packages mftd's tests and local demo need: real routers
# (Prosody, ejabberd), OpenSSH server (file server), PostgreSQL (transfer log)
# and slixmpp (a real XMPP client). Package installs must not leave system
# daemons running, least of all bound to all interfaces: a policy-rc.d refusing
# service starts is kept in place while apt runs, ERL_EPMD_ADDRESS keeps an
# epmd that a maintainer script launches directly (ejabberd's postinst runs
# `ejabberdctl status`, which starts one) on loopback, and afterwards every
# service of a package this run installed is stopped and disabled at boot and
# epmd is killed. It ends by failing if anything listens beyond loopback that
# did not before it ran (scripts/check-leftovers.sh). Every server is started
# later by our own scripts on 127.0.0.1 only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# --with-garage: also build Garage (the S3 tests and benchmark need it; the
# local demo does not).
with_garage=0
for arg in "$@"; do
  [ "$arg" = "--with-garage" ] && with_garage=1
done

# ejabberd is a second router: the audit-trail tests run mftd's Erlang module
# in it (compiled with erlc, which ejabberd's dependencies bring), and the
# benchmark suite runs its mod_http_upload beside mftd. prometheus brings
# promtool (the metrics and alert-rule checks), chromium renders the status
# page, haproxy fronts several nodes in the cluster tests. clamav-daemon
# brings clamd, the malware scanner behind [scan]: the content-policy tests
# start their own clamd on a temporary socket with a signature database
# they generate (no download: freshclam never runs, its service is stopped
# and disabled below like every other daemon). rclone is the S3 baseline of
# the benchmark suite.
packages=(prosody ejabberd erlang-eunit lua5.4 openssh-server openssh-client postgresql python3-slixmpp libssl-dev pkg-config curl prometheus chromium haproxy clamav-daemon rclone)

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

# epmd listening beyond loopback with no Erlang node registered serves
# nobody: an earlier install left it (before this script killed it). Stop it.
# With "any", stop an idle epmd wherever it listens (one this run's package
# installs started).
stop_idle_epmd() {
  command -v epmd >/dev/null || return 0
  local names
  names="$(epmd -names 2>/dev/null)" || return 0 # not running
  if grep -q '^name ' <<< "$names"; then
    echo "install-deps: epmd has Erlang nodes registered; left running" >&2
    return 0
  fi
  if [ "$1" = "any" ] || ss -ltnpH 'sport = :4369' |
    awk '/"epmd"/ && $4 !~ /^(127\.|\[::1\]|\[::ffff:127\.)/ { found = 1 } END { exit !found }'; then
    epmd -kill >/dev/null && echo "install-deps: stopped epmd (Erlang port mapper)"
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  stop_idle_epmd public
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
state="$(mktemp -d)"
cleanup() {
  [ "$created_policy" -eq 0 ] || $SUDO rm -f "$policy"
  rm -rf "$state"
}
trap cleanup EXIT
# What listens and which packages are installed before apt runs.
bash "$here/check-leftovers.sh" snapshot "$state"
installed_packages() { dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort; }
installed_packages > "$state/packages.before"

echo "install-deps: installing ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# ERL_EPMD_ADDRESS reaches epmd through dpkg, the maintainer script,
# ejabberdctl and its `su ejabberd` (none of them clears the environment).
$SUDO env DEBIAN_FRONTEND=noninteractive ERL_EPMD_ADDRESS=127.0.0.1 \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# The network daemons these packages (and their dependencies) ship as system
# services: erlang-base's epmd, ssh, PostgreSQL, Prosody, ejabberd, haproxy,
# Prometheus and its node exporter, ClamAV's clamd and freshclam (clamd's
# signature updater, a dependency of clamav-daemon). Those of a package this run installed are stopped, however
# they were started, and disabled at boot, so a reboot does not bring them up
# on their default (public) addresses; services of packages that were
# installed before are left alone.
daemons=" epmd ssh postgresql prosody ejabberd haproxy prometheus prometheus-node-exporter clamav-daemon clamav-freshclam "
mapfile -t new_packages < <(installed_packages | comm -13 "$state/packages.before" -)
units=()
initscripts=()
for p in "${new_packages[@]}"; do
  while read -r f; do
    name="$(basename "$f")"
    case "$f" in
      /lib/systemd/system/*|/usr/lib/systemd/system/*)
        [[ "$daemons" == *" ${name%.*} "* ]] && [[ "$name" =~ \.(service|socket|timer)$ ]] && units+=("$name") ;;
      /etc/init.d/*)
        [[ "$daemons" == *" $name "* ]] && initscripts+=("$name") ;;
    esac
  done < <(dpkg -L "$p" 2>/dev/null)
done
if [ ${#units[@]} -gt 0 ]; then
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl stop "${units[@]}" >/dev/null 2>&1 || true
  fi
  # Works without a running systemd too, and keeps later upgrades of the
  # package from enabling the unit again.
  $SUDO deb-systemd-helper disable "${units[@]}" >/dev/null 2>&1 || true
fi
for svc in "${initscripts[@]}"; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
  $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
done
if [ ${#units[@]} -gt 0 ] || [ ${#initscripts[@]} -gt 0 ]; then
  echo "install-deps: stopped, and disabled at boot: $(printf '%s\n' "${units[@]}" "${initscripts[@]}" | sort -u | tr '\n' ' ')"
fi
stop_idle_epmd any
ensure_file_server_user
# Garage, the S3 service behind the object-store tests (a three-node cluster
# the harness starts on 127.0.0.1), with --with-garage: not packaged by Debian, so built once
# from crates.io with cargo into a tool cache and reused by later runs
# (MFTD_TOOL_CACHE, default ~/.cache/mftd-tools; the harness looks there).
tools="${MFTD_TOOL_CACHE:-${HOME:-/root}/.cache/mftd-tools}"
garage_version=2.5.0
if [ "$with_garage" = 1 ] && ! "$tools/bin/garage" --version 2>/dev/null | grep -q "$garage_version"; then
  echo "install-deps: building Garage $garage_version once into $tools (takes a while)"
  cargo install --quiet --locked garage --version "$garage_version" \
    --no-default-features --features lmdb,bundled-libs --root "$tools"
fi
# Nothing the packages started may listen beyond loopback now.
if ! bash "$here/check-leftovers.sh" listeners "$state"; then
  echo "install-deps: a package install left a daemon listening beyond loopback (above); stop it and add it to this script" >&2
  exit 1
fi
echo "install-deps: done"
