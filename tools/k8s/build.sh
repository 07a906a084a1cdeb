#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests run on loopback (tests/support/kube.py) from Go modules at the
# versions pinned in tools/k8s/*/go.mod + go.sum: kube-apiserver, kube-controller-manager and kube-scheduler from
# k8s.io/kubernetes (tools/k8s/controlplane), kwok from sigs.k8s.io/kwok (tools/k8s/kwok), etcd from
# go.etcd.io/etcd/server/v3 (tools/k8s/etcd: etcd's own entry point; Debian's 3.4 is too old for 1.36's watches).
# Nothing else is fetched:
# the go command takes the modules from the module proxy and checks them against go.sum.
#
#   tools/k8s/build.sh [OUT_DIR]        (default build/k8s/bin; `make setup` calls it through `make k8s`)
#
# ~5-7 min cold on 2 cores (kube-apiserver is most of it), seconds with a warm Go build cache.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mkdir -p "${1:-$here/../../build/k8s/bin}" && cd "${1:-$here/../../build/k8s/bin}" && pwd)"
command -v go >/dev/null || { echo "tools/k8s/build.sh: needs the Go toolchain (go >= 1.26) on PATH" >&2; exit 1; }
export GOFLAGS="-mod=readonly" CGO_ENABLED=0

# The release the binaries report (/version), as the official build stamps it: Helm and the client read it.
k8s_version="$(cd "$here/controlplane" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
case "$k8s_version" in v1.*) ;; *) echo "tools/k8s/build.sh: no k8s.io/kubernetes version in controlplane/go.mod" >&2; exit 1;; esac
major="${k8s_version#v}"; minor="${major#*.}"; major="${major%%.*}"; minor="${minor%%.*}"
v=k8s.io/component-base/version
ldflags="-s -w -X $v.gitVersion=$k8s_version -X $v.gitMajor=$major -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
ldflags="$ldflags -X $v.buildDate=1970-01-01T00:00:00Z"

start=$SECONDS
echo "k8s: building kube-apiserver, kube-controller-manager, kube-scheduler $k8s_version into $out"
(cd "$here/controlplane" && go build -trimpath -ldflags "$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
kwok_version="$(cd "$here/kwok" && go list -m -f '{{.Version}}' sigs.k8s.io/kwok)"
echo "k8s: building kwok $kwok_version into $out"
(cd "$here/kwok" && go build -trimpath -ldflags "-s -w" \
  -o "$out/" sigs.k8s.io/kwok/cmd/kwok)
etcd_version="$(cd "$here/etcd" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
echo "k8s: building etcd $etcd_version into $out"
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
"$out/kube-apiserver" --version | grep -qx "Kubernetes $k8s_version" || { echo "tools/k8s/build.sh: kube-apiserver does not report $k8s_version" >&2; exit 1; }
echo "k8s: built in $((SECONDS - start)) s"
