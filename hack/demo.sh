#!/usr/bin/env bash
# make demo: render the example cluster, print the node's document and its
# nftables ruleset, and prove the ruleset is valid nft by checking it inside a
# throwaway network namespace. Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl=bin/terwayctl
inputs=(-f examples/cluster -f examples/allocations.yaml -f examples/policy.yaml)

echo "== terwayctl render ${inputs[*]}"
$ctl render "${inputs[@]}" --strict

echo
echo "== the same node as nft ruleset (terwayctl render -o nft)"
ruleset=$(mktemp)
ns="demo-nftcheck-$$"
cleanup() { rm -f "$ruleset"; ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
$ctl render "${inputs[@]}" -o nft | tee "$ruleset"

echo
echo "== nft -c -f (inside a throwaway network namespace $ns)"
ip netns add "$ns"
ip netns exec "$ns" nft -c -f "$ruleset"
echo "ruleset accepted by nft $(nft --version | awk '{print $2}')"

echo
echo "== golden cases (terwayctl golden diff)"
$ctl golden diff golden
