#!/usr/bin/env bash
# Builds, from the Go module proxy, everything a real Kubernetes node needs
# beyond the control plane hack/k8s-assets.sh builds: the kubelet, the
# controller manager, the scheduler and kube-proxy, agnhost and e2e.test (one
# scratch module requiring k8s.io/kubernetes, as in k8s-assets.sh), containerd
# with ctr and its runc shim, runc (cgo, for seccomp), and crictl.
#
# Each binary lands in a cache outside the repository keyed by its own
# version, and is built only when missing there:
#   $root/k8s/$K8S_VERSION/        kubelet kube-controller-manager kube-scheduler
#                                  kube-proxy agnhost e2e.test (beside kube-apiserver,
#                                  etcd, kubectl from k8s-assets.sh)
#   $root/containerd/$CONTAINERD_VERSION/  containerd ctr containerd-shim-runc-v2
#   $root/runc/$RUNC_VERSION/      runc
#   $root/crictl/$CRICTL_VERSION/  crictl
# $root is $K8S_ASSETS_ROOT, else $XDG_CACHE_HOME or ~/.cache, then
# terway-reconciler. Prints $root on stdout. NODE_ASSETS_TIMES, when set, is a
# file each build appends "name seconds" to.
#
# Cold, one build at a time on two cores: about 25 minutes (e2e.test alone
# links with ~3 GB of memory). Builds run at nice 19.
set -euo pipefail
k8s_version=${K8S_VERSION:-v1.37.2}
containerd_version=${CONTAINERD_VERSION:-v2.4.2}
runc_version=${RUNC_VERSION:-v1.5.3}
crictl_version=${CRICTL_VERSION:-v1.37.0}
root=${K8S_ASSETS_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/terway-reconciler}
here=$(cd "$(dirname "$0")" && pwd)

k8s_dir=$root/k8s/$k8s_version
ctr_dir=$root/containerd/$containerd_version
runc_dir=$root/runc/$runc_version
crictl_dir=$root/crictl/$crictl_version
k8s_bins=(kubelet kube-controller-manager kube-scheduler kube-proxy agnhost e2e.test)

complete() {
	local b
	for b in "${k8s_bins[@]}"; do [ -x "$k8s_dir/$b" ] || return 1; done
	for b in containerd ctr containerd-shim-runc-v2; do [ -x "$ctr_dir/$b" ] || return 1; done
	[ -x "$runc_dir/runc" ] && [ -x "$crictl_dir/crictl" ]
}

mkdir -p "$root"
# The agnhost image carries a shell, grep, curl and nc for the e2e specs that
# exec them (internal/realnode/images.go): Debian's curl and netcat-openbsd
# beside the base system's dash and grep.
if ! command -v curl >/dev/null || [ ! -x /usr/bin/nc.openbsd ]; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "node-assets: installing curl netcat-openbsd" >&2
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl netcat-openbsd >/dev/null
	else
		echo "node-assets: need curl and netcat-openbsd (apt) for the agnhost image" >&2
	fi
fi

# The control plane first: its script has its own cache check and lock.
K8S_ASSETS_CACHE=$root/k8s K8S_VERSION=$k8s_version "$here/k8s-assets.sh" >/dev/null
if complete; then
	echo "$root"
	exit 0
fi
exec 9>"$root/.node-assets.lock"
flock 9

work=$(mktemp -d "${TMPDIR:-/tmp}/terway-node-assets.XXXXXX")
trap 'rm -rf "$work"' EXIT
out=$work/out
mkdir -p "$out"

# timed NAME CMD...: runs CMD at low priority and records its wall time.
timed() {
	local name=$1 t0=$SECONDS
	shift
	echo "node-assets: building $name" >&2
	nice -n 19 "$@" >&2
	echo "node-assets: $name built in $((SECONDS - t0)) s" >&2
	if [ -n "${NODE_ASSETS_TIMES:-}" ]; then
		echo "$name $((SECONDS - t0))" >>"$NODE_ASSETS_TIMES"
	fi
}

# install_bin DIR NAME...: moves the built binaries from $out into DIR.
install_bin() {
	local dir=$1 b
	shift
	mkdir -p "$dir"
	for b in "$@"; do
		[ -x "$out/$b" ] || {
			echo "node-assets: $b was not built" >&2
			exit 1
		}
		mv "$out/$b" "$dir/$b"
	done
}

# runc needs cgo and libseccomp for its seccomp filter (the kubelet's
# RuntimeDefault profile); Debian ships both headers and pkg-config data.
if [ ! -x "$runc_dir/runc" ]; then
	if ! pkg-config --exists libseccomp 2>/dev/null; then
		if [ "$(id -u)" -ne 0 ]; then
			echo "node-assets: runc needs libseccomp-dev and pkg-config (apt), and root to install them" >&2
			exit 1
		fi
		echo "node-assets: installing libseccomp-dev pkg-config" >&2
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libseccomp-dev pkg-config gcc libc6-dev >/dev/null
	fi
	timed runc env GOBIN="$out" CGO_ENABLED=1 go install -trimpath -tags seccomp \
		-ldflags "-s -w -X main.version=${runc_version#v}" "github.com/opencontainers/runc@$runc_version"
	install_bin "$runc_dir" runc
fi

if [ ! -x "$ctr_dir/containerd" ] || [ ! -x "$ctr_dir/ctr" ] || [ ! -x "$ctr_dir/containerd-shim-runc-v2" ]; then
	m=github.com/containerd/containerd/v2
	timed containerd env GOBIN="$out" CGO_ENABLED=0 go install -trimpath -tags no_btrfs \
		-ldflags "-s -w -X $m/version.Version=$containerd_version" \
		"$m/cmd/containerd@$containerd_version" "$m/cmd/ctr@$containerd_version" \
		"$m/cmd/containerd-shim-runc-v2@$containerd_version"
	install_bin "$ctr_dir" containerd ctr containerd-shim-runc-v2
fi

if [ ! -x "$crictl_dir/crictl" ]; then
	timed crictl env GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
		"sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
	install_bin "$crictl_dir" crictl
fi

# The Kubernetes commands: a scratch module kept in the cache (its go.sum
# saves the next build a tidy), whose staging modules are replaced by their
# published v0.<minor> tags.
minor=${k8s_version#v1.}
src=$root/k8s/.src-$k8s_version
if [ ! -s "$src/go.sum" ]; then
	rm -rf "$src"
	mkdir -p "$src"
	(
		cd "$src"
		export GOFLAGS=-mod=mod
		go mod init terway-node-assets >/dev/null 2>&1
		go mod edit -require="k8s.io/kubernetes@$k8s_version"
		gomod=$(go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
		[ -s "$gomod" ] || {
			echo "node-assets: could not download k8s.io/kubernetes@$k8s_version" >&2
			exit 1
		}
		for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u); do
			go mod edit -replace="$m=$m@v0.$minor"
		done
		{
			printf '//go:build tools\n\npackage tools\n\nimport (\n'
			for p in cmd/kubelet cmd/kube-controller-manager cmd/kube-scheduler cmd/kube-proxy \
				test/images/agnhost test/e2e; do
				printf '\t_ "k8s.io/kubernetes/%s"\n' "$p"
			done
			printf ')\n'
		} >tools.go
		go mod tidy >&2
	) || {
		rm -rf "$src"
		exit 1
	}
fi
ver=k8s.io/component-base/version
ldflags="-s -w -X $ver.gitVersion=$k8s_version -X $ver.gitMajor=1 -X $ver.gitMinor=${minor%%.*} -X $ver.gitTreeState=clean"
cd "$src"
export GOFLAGS=-mod=mod CGO_ENABLED=0
for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do
	if [ ! -x "$k8s_dir/$b" ]; then
		timed "$b" go build -trimpath -ldflags "$ldflags" -o "$out/$b" "k8s.io/kubernetes/cmd/$b"
		install_bin "$k8s_dir" "$b"
	fi
done
if [ ! -x "$k8s_dir/agnhost" ]; then
	timed agnhost go build -trimpath -ldflags "-s -w" -o "$out/agnhost" k8s.io/kubernetes/test/images/agnhost
	install_bin "$k8s_dir" agnhost
fi
if [ ! -x "$k8s_dir/e2e.test" ]; then
	timed e2e.test go test -c -trimpath -ldflags "$ldflags" -o "$out/e2e.test" k8s.io/kubernetes/test/e2e
	install_bin "$k8s_dir" e2e.test
fi
complete || {
	echo "node-assets: incomplete after the build" >&2
	exit 1
}
echo "node-assets: done" >&2
echo "$root"
