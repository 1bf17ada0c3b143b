#!/bin/sh
# Listings of Berth and CNCF Distribution side by side, on one generated
# registry directory.
#
#   cmd/registry-bench/listings-sidebyside.sh [WORKDIR] [--rounds 3] [--berth BIN]
#       [--distribution BIN] [--repos 10000] [--tags 10000] [--quiet-wait 10]
#
# Builds registry-bench and, unless --berth names a binary, Berth's
# registry from this tree; uses Distribution's v3.1.2 binary from
# --distribution, $BERTH_DISTRIBUTION_BIN, /tmp/berth-tools/registry, or go
# install. Writes the data once (registry-bench listdata: gcdata's
# repositories and one repository, bench/tags, with --tags tags) into
# WORKDIR/data, and keeps it for later runs with the same shape. Then, each
# round, for each registry (Berth first in odd rounds, Distribution in even
# ones): starts it on the data, plain HTTP on 127.0.0.1, upload purging
# off; runs `registry-bench listings` once with the page cache dropped
# before each figure (cold; unless this is not root), then once to read
# everything back and once more (warm); stops it. Before each registry's runs the script waits (at
# most --quiet-wait minutes, 0: not at all) until the machine is quiet:
# under a fifth of a core busy over 5 s. The 1-minute load average is
# recorded with each run.
#
# WORKDIR (default /tmp/berth-listings) gets results.tsv (one line per
# figure and run) and the registries' logs. The data stays; remove it
# yourself.
set -eu
DISTRIBUTION_VERSION=v3.1.2
cd "$(dirname "$0")/../.."
work=/tmp/berth-listings
case ${1:-} in -*|'') ;; *) work=$1; shift ;; esac
rounds=3 berth= dist=${BERTH_DISTRIBUTION_BIN:-} repos=10000 tags=10000 quiet=10
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) rounds=$2; shift ;;
	--berth) berth=$2; shift ;;
	--distribution) dist=$2; shift ;;
	--repos) repos=$2; shift ;;
	--tags) tags=$2; shift ;;
	--quiet-wait) quiet=$2; shift ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }
mkdir -p "$work/bin"
work=$(cd "$work" && pwd)

go build -o "$work/bin/registry-bench" ./cmd/registry-bench
if [ -z "$berth" ]; then
	go build -o "$work/bin/berth-registry" ./cmd/registry
	berth=$work/bin/berth-registry
fi
if [ -z "$dist" ]; then
	dist=/tmp/berth-tools/registry
	if [ ! -x "$dist" ]; then
		dist=$work/bin/distribution-$DISTRIBUTION_VERSION/registry
		[ -x "$dist" ] || (cd "$work" && GOBIN=$(dirname "$dist") \
			go install "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION")
	fi
fi
echo "Berth: $berth; Distribution: $dist ($("$dist" --version 2>&1 | head -1))"

data=$work/data
shape="repos=$repos tags=$tags"
if [ "$(cat "$work/data.shape" 2>/dev/null)" != "$shape" ]; then
	rm -rf "$data" "$work/data.shape"
	"$work/bin/registry-bench" listdata --dir "$data" --repos "$repos" --tags "$tags"
	echo "$shape" >"$work/data.shape"
fi

drop=--drop-caches
if ! (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
	echo "cannot drop the page cache here: every run is warm" >&2
	drop=
fi

hz=$(getconf CLK_TCK)
busy() {
	awk -v hz="$hz" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}
quiet_wait() {
	[ "$quiet" -gt 0 ] || return 0
	end=$(($(date +%s) + quiet * 60))
	while :; do
		a=$(busy)
		sleep 5
		awk -v a="$a" -v b="$(busy)" 'BEGIN { exit !((b - a) / 5 < 0.2) }' && return 0
		if [ "$(date +%s)" -ge $end ]; then
			echo "the machine stayed busy for $quiet minutes; measuring anyway" >&2
			return 0
		fi
	done
}
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

results=$work/results.tsv
printf 'round\tregistry\tposition\tcache\tload1\ttest\titems\tseconds\n' >"$results"

# one REGISTRY ROUND POSITION
one() {
	reg=$1 round=$2 pos=$3
	port=$(free_port)
	if [ "$reg" = berth ]; then
		REGISTRY_HTTP_ADDR=127.0.0.1:$port REGISTRY_HTTP_TLS_DISABLED=true \
			REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$data \
			REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED=false \
			REGISTRY_LOG_LEVEL=warn REGISTRY_LOG_ACCESSLOG_DISABLED=true \
			"$berth" serve >"$work/berth.log" 2>&1 &
	else
		printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:%s\n' \
			"$data" "$port" >"$work/distribution.yml"
		OTEL_TRACES_EXPORTER=none OTEL_SDK_DISABLED=true "$dist" serve "$work/distribution.yml" >"$work/distribution.log" 2>&1 &
	fi
	pid=$!
	i=0
	until curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; do
		i=$((i + 1))
		[ $i -lt 300 ] || { echo "$reg did not start; see $work/$reg.log" >&2; kill $pid; exit 1; }
		sleep 0.1
	done
	sync
	quiet_wait
	for cache in ${drop:+cold} warm; do
		flag=
		[ $cache = cold ] && flag=$drop
		# The cold run dropped the cache before each figure: read
		# everything once more before the warm one.
		[ $cache = warm ] && "$work/bin/registry-bench" listings --url "http://127.0.0.1:$port" >/dev/null
		load=$(cut -d' ' -f1 /proc/loadavg)
		"$work/bin/registry-bench" listings --url "http://127.0.0.1:$port" --target "$reg" --round "$round" $flag |
			grep '^{' | sed 's/[{}"]//g' | tr ',' '\n' | awk -F: -v pre="$round\t$reg\t$pos\t$cache\t$load" '
				$1 == "test" { t = $2 } $1 == "ops" { n = $2 } $1 == "seconds" { printf "%s\t%s\t%s\t%s\n", pre, t, n, $2 }' |
			tee -a "$results"
	done
	kill $pid
	wait $pid 2>/dev/null || true
}

r=1
while [ $r -le "$rounds" ]; do
	if [ $((r % 2)) = 1 ]; then
		one berth $r 1
		one distribution $r 2
	else
		one distribution $r 1
		one berth $r 2
	fi
	r=$((r + 1))
done

echo
tab=$(printf '\t')
{
printf 'test\tcache\tregistry\tmedian s\tall s\n'
awk -F'\t' 'NR > 1 {
	k = $6 "\t" $4 "\t" $2; n[k]++; v[k, n[k]] = $8
	if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
}
END {
	for (x = 1; x <= nk; x++) {
		k = order[x]; c = n[k]; s = ""
		for (i = 1; i <= c; i++) { w[i] = v[k, i] + 0; s = s (i > 1 ? " / " : "") sprintf("%.3f", w[i]) }
		for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (w[j] < w[i]) { t = w[i]; w[i] = w[j]; w[j] = t }
		m = c % 2 ? w[(c + 1) / 2] : (w[c / 2] + w[c / 2 + 1]) / 2
		printf "%s\t%.3f\t%s\n", k, m, s
	}
}' "$results" | sort -t"$tab" -k1,1 -k2,2 -k3,3
} | column -t -s"$tab"
