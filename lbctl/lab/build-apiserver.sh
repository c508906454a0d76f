#!/usr/bin/env bash
# Builds kube-apiserver from Debian's kubernetes source package (1.20) with Debian's Go 1.15,
# because no Kubernetes binaries or images can be downloaded here. The result is cached:
#   ${LBCTL_CACHE:-~/.cache/lbctl}/bin/kube-apiserver
# A private apt state dir is used so the host's apt sources are not modified.
set -euo pipefail

CACHE="${LBCTL_CACHE:-$HOME/.cache/lbctl}"
OUT="$CACHE/bin/kube-apiserver"
if [[ -x "$OUT" ]] && "$OUT" --version >/dev/null 2>&1; then
  echo "kube-apiserver cached: $OUT"; exit 0
fi

K8S_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
WORK="$CACHE/build"
APT="$WORK/apt"
rm -rf "$WORK"; mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$CACHE/bin"

cat >"$APT/sources.list" <<SRC
deb http://deb.debian.org/debian bullseye main
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
SRC
APTOPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
         -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::Archives=$APT/archives"
         -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root")

command -v rsync >/dev/null || apt-get install -y -q rsync
command -v dpkg-source >/dev/null || apt-get install -y -q dpkg-dev

echo "== fetching package indexes"
apt-get "${APTOPTS[@]}" update -q
cd "$WORK"
echo "== downloading Go 1.15 (bullseye) and kubernetes source $K8S_VERSION"
apt-get "${APTOPTS[@]}" download golang-1.15-go golang-1.15-src
apt-get "${APTOPTS[@]}" source --download-only "kubernetes=$K8S_VERSION"

mkdir -p go
for deb in golang-1.15-*.deb; do dpkg -x "$deb" go; done
export GOROOT="$WORK/go/usr/lib/go-1.15"
dpkg-source --no-check -x kubernetes_*.dsc src >/dev/null
cd src
git init -q .

export PATH="$GOROOT/bin:$PATH" CGO_ENABLED=0 GOPATH="$WORK/gopath" GOCACHE="$WORK/gocache" HOME="$WORK/home"
export GOFLAGS=-mod=vendor KUBE_GIT_VERSION="v1.20.2" KUBE_GIT_TREE_STATE=clean
mkdir -p "$HOME"
echo "== building kube-apiserver (a few minutes)"
make WHAT=cmd/kube-apiserver >"$WORK/make.log" 2>&1 || { tail -50 "$WORK/make.log"; exit 1; }
install -m 0755 _output/bin/kube-apiserver "$OUT"
cd /; rm -rf "$WORK"
"$OUT" --version
