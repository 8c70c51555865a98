#!/usr/bin/env bash
# Builds the Debian package target/debian/mftd_<version>_<arch>.deb from this
# tree with dpkg-deb (no extra tooling): /usr/bin/mftd, /etc/mftd/mftd.toml
# (a conffile, from mftd.example.toml), the hardened systemd unit, the router
# modules under /usr/share/mftd/router, the docs, and the manual pages
# (mftd(1), mftd-log(1) …), which the binary writes from its own command-line
# definition (`mftd man`), so they always match `--help`.
#   scripts/build-deb.sh                      release build, then package
#   MFTD_DEB_BINARY=target/debug/mftd scripts/build-deb.sh   package a given binary
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${MFTD_DEB_BINARY:-}"
if [ -z "$binary" ]; then
  cargo build --release -p mftd
  binary=target/release/mftd
fi
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
arch="$(dpkg --print-architecture)"
out="target/debian/mftd_${version}_${arch}.deb"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$binary" "$root/usr/bin/mftd"
strip --strip-debug "$root/usr/bin/mftd" 2>/dev/null || true
install -d "$root/usr/share/man/man1"
"$binary" man --out "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root/usr/share/man/man1/"*.1
install -D -m 0644 mftd.example.toml "$root/etc/mftd/mftd.toml"
install -D -m 0644 packaging/debian/mftd.service "$root/lib/systemd/system/mftd.service"
install -D -m 0644 router/prosody/mod_mftd.lua "$root/usr/share/mftd/router/prosody/mod_mftd.lua"
install -D -m 0644 router/ejabberd/mod_mftd.erl "$root/usr/share/mftd/router/ejabberd/mod_mftd.erl"
install -D -m 0644 README.md "$root/usr/share/doc/mftd/README.md"
for doc in docs/*.md; do install -D -m 0644 "$doc" "$root/usr/share/doc/mftd/$(basename "$doc")"; done
install -d "$root/usr/share/doc/mftd/monitoring"
install -m 0644 docs/monitoring/* "$root/usr/share/doc/mftd/monitoring/"
printf 'mftd\nCopyright: the mftd authors\nLicense: Apache-2.0 (see /usr/share/common-licenses/Apache-2.0)\n' \
  > "$root/usr/share/doc/mftd/copyright"

install -d "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
echo /etc/mftd/mftd.toml > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/control" <<CONTROL
Package: mftd
Version: $version
Architecture: $arch
Maintainer: mftd developers <mftd@localhost>
Installed-Size: $(du -sk "$root" | cut -f1)
Depends: libc6, libgcc-s1, libssl3, zlib1g, passwd
Recommends: openssh-client
Suggests: postgresql, prosody | ejabberd
Section: net
Priority: optional
Homepage: https://localhost/mftd
Description: managed file transfer for XMPP (XEP-0363 HTTP File Upload component)
 mftd lets an XMPP server's users share files through XEP-0363 HTTP File
 Upload, stores them on an external SFTP file server in the managed file
 transfer layout, and logs every upload and download to PostgreSQL.
CONTROL
mkdir -p target/debian
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"
