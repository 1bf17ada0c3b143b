#!/bin/sh
# Side-by-side benchmark of Berth and CNCF Distribution on one MinIO.
#
#   cmd/registry-bench/s3-sidebyside.sh [WORKDIR] [registry-bench compare flags…]
#
# Builds Berth's registry and registry-bench, finds Distribution v3.1.2
# ($BERTH_DISTRIBUTION_BIN, /tmp/berth-tools/registry, else go install) and
# MinIO ($BERTH_MINIO_BIN, minio on PATH, /tmp/berth-tools/minio, else go
# install of the version internal/miniotest pins), and starts one MinIO on
# loopback with its data under WORKDIR. Then `registry-bench compare
# --plain-http --s3 …`: both registries over plain HTTP on 127.0.0.1, each
# on its own bucket of that MinIO (bench-berth, bench-distribution, created
# or emptied), with Distribution's default part size (10 MiB) and blobs
# served through the registry (no redirects); each test alternately on
# both, Berth first in odd rounds. Defaults: WORKDIR /tmp/berth-s3-sidebyside,
# 3 rounds, --size 1GiB. A second pass, one round with a counting proxy
# between each registry and MinIO (--s3-count, --count 200 for the
# manifest tests), prints the S3 requests per operation; its times are not
# comparable. The load average is logged every 30 s to WORKDIR/uptime.log.
# MinIO is stopped and its data removed at the end.
#
# Example: cmd/registry-bench/s3-sidebyside.sh /tmp/s3sbs --size 256MiB
set -eu
DISTRIBUTION_VERSION=v3.1.2
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c # as internal/miniotest
cd "$(dirname "$0")/../.."
work=/tmp/berth-s3-sidebyside
case ${1:-} in -*|'') ;; *) work=$1; shift ;; esac
mkdir -p "$work/bin"
work=$(cd "$work" && pwd)

go build -o "$work/bin/berth-registry" ./cmd/registry
go build -o "$work/bin/registry-bench" ./cmd/registry-bench
dist=${BERTH_DISTRIBUTION_BIN:-/tmp/berth-tools/registry}
if [ ! -x "$dist" ]; then
	dist=$work/bin/distribution-$DISTRIBUTION_VERSION/registry
	[ -x "$dist" ] || (cd "$work" && GOBIN=$(dirname "$dist") \
		go install "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION")
fi
minio=${BERTH_MINIO_BIN:-$(command -v minio || echo /tmp/berth-tools/minio)}
if [ ! -x "$minio" ]; then
	minio=$work/bin/minio
	[ -x "$minio" ] || (cd "$work" && GOBIN=$work/bin go install "github.com/minio/minio@$MINIO_VERSION")
fi

# One MinIO, on a port of its own (MINIO_PORT to choose it).
port=${MINIO_PORT:-$((20000 + $$ % 20000))}
export REGISTRY_BENCH_S3_ACCESSKEY=berth-bench
export REGISTRY_BENCH_S3_SECRETKEY=berth-bench-$$-secret
rm -rf "$work/minio-data"
MINIO_ROOT_USER=$REGISTRY_BENCH_S3_ACCESSKEY MINIO_ROOT_PASSWORD=$REGISTRY_BENCH_S3_SECRETKEY \
	MINIO_BROWSER=off MINIO_UPDATE=off MINIO_CI_CD=1 \
	"$minio" server --quiet --address "127.0.0.1:$port" --console-address 127.0.0.1:0 \
	"$work/minio-data" >"$work/minio.log" 2>&1 &
minio_pid=$!
(while :; do date -u "+%H:%M:%S $(cat /proc/loadavg)"; sleep 30; done) >"$work/uptime.log" 2>&1 &
uptime_pid=$!
cleanup() {
	kill "$minio_pid" "$uptime_pid" 2>/dev/null || true
	wait "$minio_pid" 2>/dev/null || true
	rm -rf "$work/minio-data"
}
trap cleanup EXIT INT TERM
i=0
until curl -fs "http://127.0.0.1:$port/minio/health/ready" >/dev/null; do
	i=$((i + 1))
	if [ $i -gt 600 ] || ! kill -0 "$minio_pid" 2>/dev/null; then
		echo "MinIO did not start; see $work/minio.log" >&2
		exit 1
	fi
	sleep 0.1
done
echo "MinIO $minio on 127.0.0.1:$port; Distribution $dist; $(nproc) cores; load: $(cat /proc/loadavg)"

status=0
"$work/bin/registry-bench" compare \
	--berth "$work/bin/berth-registry" --distribution "$dist" --workdir "$work" \
	--plain-http --s3 "http://127.0.0.1:$port" --size 1GiB "$@" || status=$?
echo "load after the timed rounds: $(cat /proc/loadavg)"
"$work/bin/registry-bench" compare \
	--berth "$work/bin/berth-registry" --distribution "$dist" --workdir "$work" \
	--plain-http --s3 "http://127.0.0.1:$port" --size 1GiB "$@" \
	--rounds 1 --count 200 --s3-count --only push-mono,push-chunked,push-parallel,pull,manifest-put,manifest-get ||
	status=$?
exit $status
