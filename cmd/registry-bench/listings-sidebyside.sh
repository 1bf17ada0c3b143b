#!/bin/sh
# Listings of Berth and CNCF Distribution side by side, on one generated
# registry directory.
#
#   cmd/registry-bench/listings-sidebyside.sh [WORKDIR] [--rounds 3] [--berth BIN]
#       [--distribution BIN] [--repos 10000] [--tags 10000] [--quiet-wait 10] [--s3]
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
# With --s3 both registries serve the data from one MinIO instead
# ($BERTH_MINIO_BIN, minio on PATH or /tmp/berth-tools/minio), on
# loopback, with its drive in WORKDIR/minio-data: `registry-bench s3load`
# copies the data directory into bucket "listings" once (all but the blobs
# of other repositories than bench/tags, which listings never read) and
# the drive is kept for later runs. Dropping the page cache then drops
# MinIO's.
#
# WORKDIR (default /tmp/berth-listings) gets results.tsv (one line per
# figure and run) and the registries' logs. The data stays; remove it
# yourself.
set -eu
DISTRIBUTION_VERSION=v3.1.2
cd "$(dirname "$0")/../.."
work=/tmp/berth-listings
case ${1:-} in -*|'') ;; *) work=$1; shift ;; esac
rounds=3 berth= dist=${BERTH_DISTRIBUTION_BIN:-} repos=10000 tags=10000 quiet=10 s3=
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) rounds=$2; shift ;;
	--berth) berth=$2; shift ;;
	--distribution) dist=$2; shift ;;
	--repos) repos=$2; shift ;;
	--tags) tags=$2; shift ;;
	--quiet-wait) quiet=$2; shift ;;
	--s3) s3=1 ;;
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

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ -n "$s3" ]; then
	minio=${BERTH_MINIO_BIN:-$(command -v minio || echo /tmp/berth-tools/minio)}
	[ -x "$minio" ] || { echo "--s3 needs MinIO: set BERTH_MINIO_BIN" >&2; exit 1; }
	s3port=$(free_port)
	export REGISTRY_BENCH_S3_ACCESSKEY=berth-bench REGISTRY_BENCH_S3_SECRETKEY=berth-bench-listings-secret
	MINIO_ROOT_USER=$REGISTRY_BENCH_S3_ACCESSKEY MINIO_ROOT_PASSWORD=$REGISTRY_BENCH_S3_SECRETKEY \
		MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
		"$minio" server --quiet --address "127.0.0.1:$s3port" --console-address 127.0.0.1:0 \
		"$work/minio-data" >"$work/minio.log" 2>&1 &
	minio_pid=$!
	trap 'kill $minio_pid 2>/dev/null || true' EXIT INT TERM
	i=0
	until curl -fs "http://127.0.0.1:$s3port/minio/health/ready" >/dev/null; do
		i=$((i + 1))
		[ $i -lt 600 ] && kill -0 "$minio_pid" 2>/dev/null || { echo "MinIO did not start; see $work/minio.log" >&2; exit 1; }
		sleep 0.1
	done
	if [ "$(cat "$work/minio.shape" 2>/dev/null)" != "$shape" ]; then
		rm -f "$work/minio.shape"
		"$work/bin/registry-bench" s3load --dir "$data" --s3 "http://127.0.0.1:$s3port" --bucket listings
		echo "$shape" >"$work/minio.shape"
	fi
	echo "MinIO $minio on 127.0.0.1:$s3port"
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
results=$work/results.tsv
printf 'round\tregistry\tposition\tcache\tload1\ttest\titems\tseconds\n' >"$results"

# one REGISTRY ROUND POSITION
one() {
	reg=$1 round=$2 pos=$3
	port=$(free_port)
	if [ -n "$s3" ]; then
		store="  s3:
    regionendpoint: http://127.0.0.1:$s3port
    bucket: listings
    accesskey: $REGISTRY_BENCH_S3_ACCESSKEY
    secretkey: $REGISTRY_BENCH_S3_SECRETKEY
    region: us-east-1
    forcepathstyle: true
    secure: false
  redirect:
    disable: true"
	else
		store="  filesystem:
    rootdirectory: $data"
	fi
	if [ "$reg" = berth ]; then
		printf 'storage:\n%s\n' "$store" >"$work/berth.yml"
		REGISTRY_HTTP_ADDR=127.0.0.1:$port REGISTRY_HTTP_TLS_DISABLED=true \
			REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED=false \
			REGISTRY_LOG_LEVEL=warn REGISTRY_LOG_ACCESSLOG_DISABLED=true \
			"$berth" serve "$work/berth.yml" >"$work/berth.log" 2>&1 &
	else
		printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n%s\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:%s\n' \
			"$store" "$port" >"$work/distribution.yml"
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
		# A figure a registry gets wrong is reported on stderr and left out.
		[ $cache = warm ] && { "$work/bin/registry-bench" listings --url "http://127.0.0.1:$port" >/dev/null 2>&1 || true; }
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
