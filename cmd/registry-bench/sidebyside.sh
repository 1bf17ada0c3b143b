#!/bin/sh
# Side-by-side benchmark of Berth and CNCF Distribution on this machine.
#
#   cmd/registry-bench/sidebyside.sh [WORKDIR] [registry-bench compare flags…]
#
# Builds Berth's registry and registry-bench, installs Distribution v3
# (go install, through the Go module proxy), then runs `registry-bench
# compare`: both registries on 127.0.0.1 with one self-signed certificate,
# data under WORKDIR (one disk), each test alternately on both. Defaults:
# WORKDIR /tmp/berth-sidebyside, 3 rounds, --size 1GiB. The servers are
# stopped at the end; WORKDIR's data directories are removed.
#
# Example: cmd/registry-bench/sidebyside.sh /tmp/sbs --rounds 3 --size 256MiB
set -eu
DISTRIBUTION_VERSION=${DISTRIBUTION_VERSION:-v3.1.2}
cd "$(dirname "$0")/../.."
work=${1:-/tmp/berth-sidebyside}
[ $# -gt 0 ] && shift
mkdir -p "$work/bin"
work=$(cd "$work" && pwd)

go build -o "$work/bin/berth-registry" ./cmd/registry
go build -o "$work/bin/registry-bench" ./cmd/registry-bench
if [ ! -x "$work/bin/distribution-$DISTRIBUTION_VERSION/registry" ]; then
	(cd "$work" && GOBIN="$work/bin/distribution-$DISTRIBUTION_VERSION" \
		go install "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION")
fi

status=0
"$work/bin/registry-bench" compare \
	--berth "$work/bin/berth-registry" \
	--distribution "$work/bin/distribution-$DISTRIBUTION_VERSION/registry" \
	--workdir "$work" "$@" || status=$?
rm -rf "$work/berth-data" "$work/distribution-data"
exit $status
