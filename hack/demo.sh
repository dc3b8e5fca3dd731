#!/usr/bin/env bash
# make demo: a simulated node (terwayctl sim) running examples/cluster with
# the real terwayd and terway binaries. It prints the operations the agent
# applied, the reachability matrix, applies a NetworkPolicy and prints the
# matrix again, and measures two bandwidth-limited pods against their
# annotations. Every claim it prints is also checked: it exits non-zero when
# anything is wrong, and removes the sim whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl=bin/terwayctl
name=demo
fail=0

cleanup() { $ctl sim down --name $name >/dev/null 2>&1 || true; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

# expect FROM TO PORT PROTO reachable|unreachable: checks one probe.
expect() {
	local got
	got=$($ctl sim probe --name $name --from "$1" --to "$2" --port "$3" --protocol "$4" --timeout 1s || true)
	if [ "$got" = "$5" ]; then
		printf '  ok    %-20s -> %-20s %s/%s %s\n' "$1" "$2" "$4" "$3" "$got"
	else
		printf '  WRONG %-20s -> %-20s %s/%s %s, want %s\n' "$1" "$2" "$4" "$3" "$got" "$5"
		fail=1
	fi
}

# eventually: the agent follows its inputs within a resync interval; wait
# until a probe that the change flips has flipped, up to 15 s.
eventually() {
	for _ in $(seq 1 75); do
		if [ "$($ctl sim probe --name $name --from "$1" --to "$2" --port "$3" --protocol "$4" --timeout 300ms || true)" = "$5" ]; then
			return 0
		fi
		sleep 0.2
	done
}

step "terwayctl sim up --cluster examples/cluster --name $name"
$ctl sim up --cluster examples/cluster --name $name

step "the pods (terwayctl sim pods)"
$ctl sim pods --name $name

step "what the agent applied to the node (terwayctl sim agent /applied)"
$ctl sim agent /applied --name $name

step "a full plan now (terwayctl sim agent /plan): empty on a converged node"
plan=$($ctl sim agent /plan --name $name)
if [ -n "$plan" ]; then
	echo "$plan"
	echo "  WRONG: the node is not converged"
	fail=1
else
	echo "  (nothing to do)"
fi

step "reachability on tcp/8080, no NetworkPolicy yet (terwayctl sim matrix --port 8080)"
$ctl sim matrix --name $name --port 8080
expect frontend/web data/db 8080 tcp reachable
expect data/db backend/api 8080 tcp reachable
expect frontend/web data/db 53 udp reachable

step "terwayctl sim apply -f examples/policy.yaml"
cat examples/policy.yaml
$ctl sim apply --name $name -f examples/policy.yaml
eventually frontend/web data/db 8080 tcp unreachable

step "reachability on tcp/8080 with the policies: api and db accept no http"
$ctl sim matrix --name $name --port 8080
step "the ports the policies allow"
$ctl sim matrix --name $name --port 9000
$ctl sim matrix --name $name --port 5432
expect frontend/web data/db 8080 tcp unreachable
expect backend/worker data/db 5432 tcp reachable
expect frontend/web data/db 5432 tcp unreachable
expect frontend/web backend/api 9000 tcp reachable
expect frontend/web-canary backend/api 9000 tcp reachable
expect backend/worker backend/api 9000 tcp unreachable
expect backend/api frontend/web 8080 tcp reachable

step "bandwidth: measured against the annotations (terwayctl sim rate, tolerance 15%)"
$ctl sim rate --name $name --from frontend/web --to frontend/web-canary --port 8080 || fail=1
$ctl sim rate --name $name --from frontend/web-canary --to backend/worker --port 8080 || fail=1

step "terwayctl sim down"
$ctl sim down --name $name
trap - EXIT

echo
if [ $fail -ne 0 ]; then
	echo "demo: something above is WRONG"
	exit 1
fi
echo "demo: everything shown is as expected"
