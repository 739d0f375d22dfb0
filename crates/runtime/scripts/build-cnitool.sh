#!/usr/bin/env bash
# Build libcni's `cnitool` from Debian's source package, offline apart from
# Debian's own archive. Used by the interop tests in tests/tests/runtime.rs,
# which look for it in $CNITOOL or on $PATH (default install: /usr/local/bin).
#
# No Debian binary package ships cnitool and golang-github-appc-cni-dev leaves
# out its cnitool/ directory, so the source package is fetched with a deb-src
# line in a private apt state directory (the system's apt configuration is not
# touched) and built in GOPATH mode against the libcni sources that
# golang-github-appc-cni-dev installs under /usr/share/gocode.
#
# Usage: build-cnitool.sh [OUTPUT_PATH]   (default /usr/local/bin/cnitool)
set -euo pipefail

out=${1:-/usr/local/bin/cnitool}

if [ -x "$out" ] && [ -z "${FORCE:-}" ]; then
    echo "cnitool already at $out"
    exit 0
fi

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/containernetworking/cni/libcni ] || need+=(golang-github-appc-cni-dev)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

work=$(mktemp -d /tmp/cnitool-build.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Private apt state: the system's sources plus matching deb-src lines.
mkdir -p "$work/apt/lists/partial" "$work/apt/sources.list.d" "$work/src"
{
    # Classic one-line sources and deb822 .sources files, restricted to Debian's archive.
    grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -E 'debian\.org' | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' || true
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk '
            /^URIs:/ {uri=$2}
            /^Suites:/ {s=""; for (i=2;i<=NF;i++) s=s" "$i}
            /^Components:/ {c=""; for (i=2;i<=NF;i++) c=c" "$i}
            /^$/ { if (uri ~ /debian\.org/) { n=split(s,a," "); for (i=1;i<=n;i++) print "deb-src " uri " " a[i] c }; uri="" }
            END { if (uri ~ /debian\.org/) { n=split(s,a," "); for (i=1;i<=n;i++) print "deb-src " uri " " a[i] c } }
        ' "$f"
    done
} | sort -u >"$work/apt/sources.list"

aptopts=(
    -o "Dir::State=$work/apt"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Etc::SourceList=$work/apt/sources.list"
    -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
    -o "Dir::Cache=$work/apt/cache"
    -o "APT::Sandbox::User=root"
)
apt-get "${aptopts[@]}" update -qq
(cd "$work/src" && apt-get "${aptopts[@]}" source -qq golang-github-appc-cni >/dev/null)

srcdir=$(find "$work/src" -maxdepth 2 -type d -name cnitool | head -n1)
if [ -z "$srcdir" ]; then
    echo "build-cnitool: no cnitool/ directory in the source package" >&2
    exit 1
fi

# GOPATH mode: the package's own import path must resolve to the unpacked tree
# for cnitool's imports of libcni; Debian's /usr/share/gocode supplies the rest.
gopath="$work/gopath"
mkdir -p "$gopath/src/github.com/containernetworking"
ln -s "$(dirname "$srcdir")" "$gopath/src/github.com/containernetworking/cni"
(cd "$gopath/src/github.com/containernetworking/cni/cnitool" &&
    GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" CGO_ENABLED=0 GOFLAGS= \
        GOCACHE="$work/gocache" go build -o "$work/cnitool" .)

install -D -m 0755 "$work/cnitool" "$out"
echo "built cnitool at $out"
