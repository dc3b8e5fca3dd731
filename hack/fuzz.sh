#!/bin/sh
# hack/fuzz.sh FUZZTIME MINIMIZETIME pkg:Target...
#
# Runs each fuzz target for FUZZTIME. go1.26's fuzz coordinator can end a
# duration budget with a bare "context deadline exceeded" and no failing
# input (golang/go#75804, fixed in go1.27): a worker still busy when the
# deadline fires is reported as a failure of the target. A count budget
# (-fuzztime Nx) avoids the deadline but runs ~100x slower, one input per
# round trip to the coordinator. So a target whose failure is exactly that
# message, with no "Failing input written", runs once more; any other
# failure, or the same one twice, fails the run.
set -u
GO=${GO:-go}
fuzztime=$1 minimize=$2
shift 2
for t in "$@"; do
	pkg=${t%%:*} name=${t##*:}
	for attempt in 1 2; do
		echo "fuzz $pkg $name ($fuzztime, attempt $attempt)"
		out=$(mktemp)
		$GO test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "$pkg" >"$out" 2>&1
		rc=$?
		cat "$out"
		flake=no
		if [ $rc -ne 0 ] && grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written' "$out"; then
			flake=yes
		fi
		rm -f "$out"
		[ $rc -eq 0 ] && break
		if [ $flake = yes ] && [ $attempt -eq 1 ]; then
			echo "fuzz $pkg $name: the coordinator's deadline race (golang/go#75804), no failing input: once more"
			continue
		fi
		exit $rc
	done
done
