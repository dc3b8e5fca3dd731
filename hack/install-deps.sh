#!/usr/bin/env bash
# Installs, from Debian's packages, the tools the tests and the demo use:
# ip and tc (iproute2) and nft (nftables), a C compiler and static libc for
# the CNI forwarder (gcc, libc6-dev), and the CA bundle `make image` copies
# into the image (ca-certificates). Does nothing when they are there.
#
# `hack/install-deps.sh build` installs only what `make build` needs (gcc,
# libc6-dev). `hack/install-deps.sh docker` installs Debian's docker.io instead (dockerd
# and its client, for hack/mkimage's `docker load` test), without letting
# the package start a daemon on the machine: a policy-rc.d that refuses
# every service start is in place for the install (invoke-rc.d and
# deb-systemd-invoke ask it), and a dockerd running afterwards is an error.
set -euo pipefail
missing=()
# The CNI binary is a static C program (cni/forward): a compiler and the
# static C library.
need_cc() {
	command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
	command -v cc >/dev/null 2>&1 && [ -f "$(cc -print-file-name=libc.a)" ] || missing+=(libc6-dev)
}
if [ "${1:-}" = docker ]; then
	[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
elif [ "${1:-}" = build ]; then
	need_cc # what `make build` needs beyond Go
else
	command -v ip >/dev/null 2>&1 || missing+=(iproute2)
	command -v tc >/dev/null 2>&1 || missing+=(iproute2)
	command -v nft >/dev/null 2>&1 || missing+=(nftables)
	[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
	need_cc
fi
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: need root to install: ${missing[*]}" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive

# dockerd processes running now: the install must add none.
dockerds() {
	for c in /proc/[0-9]*/comm; do
		if [ "$(cat "$c" 2>/dev/null)" = dockerd ]; then
			c=${c#/proc/}
			echo "${c%/comm}"
		fi
	done | sort
}
policy=/usr/sbin/policy-rc.d
made_policy=
if [ "${1:-}" = docker ]; then
	before=$(dockerds)
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# hack/install-deps.sh: no service starts while it installs.\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
		trap 'rm -f "$policy"' EXIT
	else
		rc=0
		"$policy" docker start >/dev/null 2>&1 || rc=$?
		if [ "$rc" -ne 101 ]; then
			echo "install-deps: $policy exists and does not refuse starting services (exit $rc, want 101); not installing docker.io" >&2
			exit 1
		fi
	fi
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
if [ "${1:-}" = docker ]; then
	if [ "$(dockerds)" != "$before" ]; then
		echo "install-deps: a dockerd started during the install (pids: $(dockerds)); stop it" >&2
		exit 1
	fi
	echo "install-deps: docker.io installed, no daemon started (policy-rc.d${made_policy:+, made for the install})" >&2
fi
