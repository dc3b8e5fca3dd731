#!/usr/bin/env bash
# Builds the reference CNI plugins the benchmark compares terway against
# (ptp, host-local and bandwidth from github.com/containernetworking/plugins)
# with `go install` from the Go module proxy, at a pinned version, into a
# cache outside the repository keyed by that version. Builds only what is
# missing, and prints the directory on stdout.
#
#   CNI_PLUGINS_VERSION  the version to build (default v1.10.0)
#   CNI_PLUGINS_CACHE    the cache root (default $XDG_CACHE_HOME or ~/.cache,
#                        then terway-reconciler/cni-plugins)
set -euo pipefail
version=${CNI_PLUGINS_VERSION:-v1.10.0}
root=${CNI_PLUGINS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/terway-reconciler/cni-plugins}
dir=$root/$version
module=github.com/containernetworking/plugins
plugins=(main/ptp ipam/host-local meta/bandwidth)

mkdir -p "$dir"
for p in "${plugins[@]}"; do
	name=${p##*/}
	if [ -x "$dir/$name" ]; then
		continue
	fi
	echo "cni-plugins: go install $module/plugins/$p@$version" >&2
	# Build into a scratch directory and move into place, so that an
	# interrupted build never leaves a half-written binary in the cache.
	tmp=$(mktemp -d "$dir/.build.XXXXXX")
	if ! GOBIN=$tmp GOFLAGS=-mod=mod CGO_ENABLED=0 go install "$module/plugins/$p@$version" >&2; then
		rm -rf "$tmp"
		echo "cni-plugins: building $name $version failed" >&2
		exit 1
	fi
	mv "$tmp/$name" "$dir/$name"
	rm -rf "$tmp"
done
echo "$dir"
