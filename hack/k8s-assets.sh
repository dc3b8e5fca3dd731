#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the end-to-end tests from the Go
# module proxy (no binary downloads are possible on CI): kube-apiserver,
# kubectl and etcd for one pinned Kubernetes release, into a cache outside the
# repository keyed by that release. Builds only when the cache lacks a binary,
# and prints the directory on stdout (usable as KUBEBUILDER_ASSETS).
#
# k8s.io/kubernetes cannot be `go install`ed directly: its go.mod points every
# k8s.io/* staging module at v0.0.0 with a replace into ./staging. So this
# makes a scratch module that requires k8s.io/kubernetes, replaces each of
# those staging modules with its published v0.<minor>.<patch> tag, and builds
# the commands from there.
#
#   K8S_VERSION   the Kubernetes release (default v1.37.2)
#   ETCD_VERSION  the etcd that release pins (default v3.7.0)
#   K8S_ASSETS_CACHE  the cache root (default $XDG_CACHE_HOME or ~/.cache,
#                     then terway-reconciler/k8s)
#
# A cold build takes 11-20 minutes on two cores and needs ~3 GB of memory at
# link time; it runs at low priority so the machine stays usable.
set -euo pipefail
version=${K8S_VERSION:-v1.37.2}
etcd_version=${ETCD_VERSION:-v3.7.0}
root=${K8S_ASSETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/terway-reconciler/k8s}
dir=$root/$version
binaries=(kube-apiserver etcd kubectl)

complete() {
	for b in "${binaries[@]}"; do
		[ -x "$dir/$b" ] || return 1
	done
}

mkdir -p "$root"
if complete; then
	echo "$dir"
	exit 0
fi

# One build at a time per cache, also across concurrent `make test` runs.
exec 9>"$root/.lock"
flock 9
if complete; then
	echo "$dir"
	exit 0
fi

minor=${version#v1.}
staging_version=v0.$minor
work=$(mktemp -d "${TMPDIR:-/tmp}/terway-k8s-assets.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod CGO_ENABLED=0

echo "k8s-assets: building Kubernetes $version and etcd $etcd_version into $dir (cold: 11-20 min)" >&2
go mod init terway-k8s-assets >/dev/null 2>&1
go mod edit -require="k8s.io/kubernetes@$version" -require="go.etcd.io/etcd/server/v3@$etcd_version"
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
if [ ! -s "$gomod" ]; then
	echo "k8s-assets: could not download k8s.io/kubernetes@$version from the module proxy" >&2
	exit 1
fi
# Every k8s.io/* module required at v0.0.0 is a staging module.
staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
if [ -z "$staging" ]; then
	echo "k8s-assets: found no staging modules in $gomod" >&2
	exit 1
fi
for m in $staging; do
	go mod edit -replace="$m=$m@$staging_version"
done
cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
go mod tidy >&2

ver=k8s.io/component-base/version
ldflags="-s -w -X $ver.gitVersion=$version -X $ver.gitMajor=1 -X $ver.gitMinor=${minor%%.*} -X $ver.gitTreeState=clean"
out=$work/out
mkdir -p "$out"
nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
nice -n 19 go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3

mkdir -p "$dir"
for b in "${binaries[@]}"; do
	"$out/$b" --version >/dev/null 2>&1 || "$out/$b" version --client >/dev/null 2>&1 || {
		echo "k8s-assets: built $b does not run" >&2
		exit 1
	}
	mv "$out/$b" "$dir/$b"
done
echo "k8s-assets: done" >&2
echo "$dir"
