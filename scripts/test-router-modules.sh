#!/usr/bin/env bash
# Unit tests of the router modules' link recognition, without a router:
#   router/prosody/test_url.lua      (lua5.4, Debian package lua5.4)
#   router/ejabberd/mod_mftd_tests.erl (erlc + eunit, Debian packages ejabberd
#                                       and erlang-eunit; ejabberd's headers)
# Also checks that mod_mftd.erl compiles against ejabberd's headers without
# the test exports. Exits non-zero if a suite fails or a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0

if ! command -v lua5.4 >/dev/null; then
    echo "test-router-modules: lua5.4 not found (Debian package lua5.4)" >&2
    exit 1
fi
if ! command -v erlc >/dev/null || ! command -v erl >/dev/null; then
    echo "test-router-modules: erlc/erl not found (Debian packages erlang-base, ejabberd)" >&2
    exit 1
fi

echo "== Prosody module (lua5.4 router/prosody/test_url.lua)"
lua5.4 router/prosody/test_url.lua || fail=1

# Where xmpp-tests/src/ejabberd.rs finds them.
first_dir() {
    local d
    for d in "$@"; do
        if [ -d "$d" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}
ejabberd=$(first_dir /usr/lib/x86_64-linux-gnu/ejabberd-* /usr/lib/aarch64-linux-gnu/ejabberd-* \
    /usr/lib/ejabberd-*) || {
    echo "test-router-modules: ejabberd's library directory not found (Debian package ejabberd)" >&2
    exit 1
}
xmpp=$(first_dir /usr/lib/erlang/lib/p1_xmpp-*) || {
    echo "test-router-modules: p1_xmpp not found (Debian package erlang-p1-xmpp)" >&2
    exit 1
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
includes=(-I "$ejabberd/include" -I "$xmpp/include" -pa "$ejabberd/ebin")

echo "== ejabberd module: compiles as ejabberd loads it"
mkdir "$out/plain"
erlc -Werror "${includes[@]}" -o "$out/plain" router/ejabberd/mod_mftd.erl || fail=1

echo "== ejabberd module (eunit mod_mftd_tests)"
if erlc -DTEST "${includes[@]}" -o "$out" router/ejabberd/mod_mftd.erl router/ejabberd/mod_mftd_tests.erl; then
    erl -noshell -pa "$out" -eval \
        'case eunit:test(mod_mftd, []) of ok -> halt(0); _ -> halt(1) end.' || fail=1
else
    fail=1
fi

if [ "$fail" -ne 0 ]; then
    echo "test-router-modules: FAILED" >&2
    exit 1
fi
echo "test-router-modules: all passed"
