#!/usr/bin/env bash
# Builds the Kubernetes 1.20 binaries the lab runs from Debian's kubernetes source package with Debian's Go 1.15,
# because no Kubernetes binaries or images can be downloaded here, and the pause binary the same source holds
# (build/pause/linux/pause.c, static, with Debian's gcc): the sandbox image of the lab's containerd.
#   build-apiserver.sh [NAME...]   NAME: kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy
#                                  pause; default: all of them
# Only the missing ones are built, all from one source download. The results are cached:
#   ${LBCTL_CACHE:-~/.cache/lbctl}/bin/NAME
# A private apt state dir is used so the host's apt sources are not modified.
set -euo pipefail

ALL=(kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy pause)
CACHE="${LBCTL_CACHE:-$HOME/.cache/lbctl}"
PAUSE_VERSION="v3.4.1"  # build/pause/Makefile's TAG in kubernetes 1.20

cached() {  # a binary that runs counts as built (a half-written file does not)
  local bin="$CACHE/bin/$1"
  [[ -x "$bin" ]] || return 1
  if [[ "$1" == pause ]]; then "$bin" -v >/dev/null 2>&1; else "$bin" --version >/dev/null 2>&1; fi
}

missing=()
for name in "${@:-${ALL[@]}}"; do
  [[ " ${ALL[*]} " == *" $name "* ]] || { echo "unknown binary: $name (one of: ${ALL[*]})" >&2; exit 2; }
  if cached "$name"; then echo "$name cached: $CACHE/bin/$name"; else missing+=("$name"); fi
done
((${#missing[@]})) || exit 0

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
if [[ " ${missing[*]} " == *" pause "* ]]; then
  # gcc alone does not bring libc.a, which -static needs.
  [[ "$(gcc -print-file-name=libc.a 2>/dev/null)" == /* ]] || apt-get install -y -q --no-install-recommends gcc libc6-dev
fi

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
for name in "${missing[@]}"; do
  started=$SECONDS
  if [[ "$name" == pause ]]; then
    echo "== building pause (gcc -static)"
    mkdir -p _output
    gcc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION" -o _output/pause build/pause/linux/pause.c
    install -m 0755 _output/pause "$CACHE/bin/pause"
  else
    # One make per binary: the shared Go cache makes the later ones cheaper, and the log says which failed.
    echo "== building $name"
    make WHAT="cmd/$name" >"$WORK/make.log" 2>&1 || { tail -50 "$WORK/make.log"; exit 1; }
    install -m 0755 "_output/bin/$name" "$CACHE/bin/$name"
  fi
  echo "   $name built in $((SECONDS - started)) s"
done
cd /; rm -rf "$WORK"
for name in "${missing[@]}"; do cached "$name" || { echo "$name does not run after the build" >&2; exit 1; }; done
echo "built: ${missing[*]} (in $CACHE/bin)"
