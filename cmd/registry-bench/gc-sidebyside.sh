#!/bin/sh
# Garbage collection of Berth and CNCF Distribution side by side, on one
# generated registry directory.
#
#   cmd/registry-bench/gc-sidebyside.sh [WORKDIR] [--rounds 3] [--berth BIN]
#       [--distribution BIN] [--repos 10000] [--blobs 100000]
#       [--unreferenced 0.2] [--untagged 0.1] [--seed 1] [--warm]
#       [--modes "plain untagged"] [--quiet-wait 10]
#
# Builds registry-bench and, unless --berth names a binary, Berth's
# registry from this tree; uses Distribution's v3.1.2 binary from --distribution,
# /tmp/berth-tools/registry, or go install. Writes the data once
# (registry-bench gcdata) into WORKDIR/template, then for each mode (plain:
# `garbage-collect`; untagged: `garbage-collect --delete-untagged`) and each
# round copies the template afresh for each registry (cp -a, sync, and drop
# the page cache unless --warm: a collection reads the tree from disk),
# runs the collection under /usr/bin/time -v, and counts what is left:
# blob files and bytes, layer links, revision links. Berth runs first in
# odd rounds, Distribution in even ones. After each round the lists of
# remaining blob digests of the two are compared. Before each collection
# the script waits (at most --quiet-wait minutes, 0: not at all) until the
# machine is quiet: under a fifth of a core busy over 5 s. Each run records
# the 1-minute load average before it and the CPU time the rest of the
# machine used while it ran (others_cpu_s: all busy CPU time, I/O workers
# of the kernel included, less the collection's own user and system time).
#
# WORKDIR (default /tmp/berth-gc-sidebyside) gets results.tsv (one line per
# run), gcdata.json (the generator's summary: what should be removed), the
# collections' output and the lists of remaining digests. The copies are
# removed at the end; the template stays (remove it yourself).
set -eu
DISTRIBUTION_VERSION=v3.1.2
cd "$(dirname "$0")/../.."
work=/tmp/berth-gc-sidebyside
case ${1:-} in -*|'') ;; *) work=$1; shift ;; esac
rounds=3 berth= dist= repos=10000 blobs=100000 unref=0.2 untagged=0.1 seed=1 warm=0 modes="plain untagged" quiet=10
while [ $# -gt 0 ]; do
	case $1 in
	--rounds) rounds=$2; shift ;;
	--berth) berth=$2; shift ;;
	--distribution) dist=$2; shift ;;
	--repos) repos=$2; shift ;;
	--blobs) blobs=$2; shift ;;
	--unreferenced) unref=$2; shift ;;
	--untagged) untagged=$2; shift ;;
	--seed) seed=$2; shift ;;
	--modes) modes=$2; shift ;;
	--warm) warm=1 ;;
	--quiet-wait) quiet=$2; shift ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 1; }
mkdir -p "$work/bin"
work=$(cd "$work" && pwd)

go build -o "$work/bin/registry-bench" ./cmd/registry-bench
if [ -z "$berth" ]; then
	go build -o "$work/bin/berth-registry" ./cmd/registry
	berth=$work/bin/berth-registry
fi
"$berth" garbage-collect --help >/dev/null 2>&1 || {
	echo "$berth has no garbage-collect command" >&2
	exit 1
}
if [ -z "$dist" ]; then
	dist=/tmp/berth-tools/registry
	if [ ! -x "$dist" ]; then
		dist=$work/bin/distribution-$DISTRIBUTION_VERSION/registry
		[ -x "$dist" ] || (cd "$work" && GOBIN=$(dirname "$dist") \
			go install "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION")
	fi
fi
echo "Berth: $berth; Distribution: $dist ($("$dist" --version 2>&1 | head -1))"

rm -rf "$work/template"
"$work/bin/registry-bench" gcdata --dir "$work/template" --repos "$repos" --blobs "$blobs" \
	--unreferenced "$unref" --untagged "$untagged" --seed "$seed" >"$work/gcdata.txt"
head -1 "$work/gcdata.txt"
grep '^{' "$work/gcdata.txt" >"$work/gcdata.json"

v2=docker/registry/v2
# count DIR [LIST]: blob files, their bytes, layer links and revision
# links in DIR, in one walk; the digests of the blob files go to LIST.
count() {
	find "$1/$v2" -type f -printf '%s %P\n' | awk -v list="${2:-/dev/null}" '
		$2 ~ /^blobs\/.*\/data$/ { nb++; sb += $1; split($2, p, "/"); print p[4] >list }
		$2 ~ /^repositories\/.*\/_layers\/.*\/link$/ { nl++ }
		$2 ~ /^repositories\/.*\/_manifests\/revisions\/.*\/link$/ { nr++ }
		END { printf "%d %d %d %d\n", nb, sb, nl, nr }'
	[ -z "${2:-}" ] || sort -o "$2" "$2"
}
# busy: CPU seconds the machine has been busy since boot
hz=$(getconf CLK_TCK)
busy() {
	awk -v hz="$hz" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}
# quiet_wait: wait, at most $quiet minutes, until the machine is quiet
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
# copy SRC DST: cp -a, several top-level directories at once
copy() {
	for sub in blobs/sha256 repositories; do
		mkdir -p "$2/$v2/$sub"
		(cd "$1/$v2/$sub" && ls | xargs -P 4 -I{} cp -a {} "$2/$v2/$sub/")
	done
}
# seconds "h:mm:ss" or "m:ss.ss"
seconds() {
	echo "$1" | awk -F: '{s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s}'
}

set -- $(count "$work/template")
before_blobs=$1 before_bytes=$2 before_links=$3 before_revs=$4
echo "template: $before_blobs blob files, $before_bytes bytes, $before_links layer links, $before_revs revision links"

cache=cold
if [ $warm = 1 ]; then
	cache=warm
elif ! (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
	echo "cannot drop the page cache here: the runs read a warm tree" >&2
	cache=warm
fi
echo "page cache: $cache (drop_caches $( [ $cache = cold ] && echo allowed, used || echo not used))"

results=$work/results.tsv
printf 'mode\tround\tregistry\tposition\tcache\tload1\tothers_cpu_s\twall_s\tuser_s\tsys_s\tpeak_rss_kib\tblobs_removed\tbytes_removed\tlinks_removed\trevisions_removed\texit\n' >"$results"

# one REGISTRY MODE ROUND POSITION
one() {
	reg=$1 mode=$2 round=$3 pos=$4
	dir=$work/data-$reg
	copy "$work/template" "$dir"
	wait # for the previous copy's removal
	cfg=$work/$reg.yml
	if [ "$reg" = berth ]; then
		printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n  gc:\n    graceperiod: 1m\n' "$dir" >"$cfg"
	else
		printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n' "$dir" >"$cfg"
	fi
	bin=$berth
	[ "$reg" = distribution ] && bin=$dist
	flag=
	[ "$mode" = untagged ] && flag=--delete-untagged
	sync
	quiet_wait
	[ $cache = cold ] && echo 3 >/proc/sys/vm/drop_caches
	load=$(cut -d' ' -f1 /proc/loadavg)
	b0=$(busy)
	rc=0
	/usr/bin/time -v -o "$work/time.txt" "$bin" garbage-collect $flag "$cfg" \
		>"$work/out-$reg-$mode-$round.txt" 2>&1 || rc=$?
	b1=$(busy)
	wall=$(seconds "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time.txt")")
	user=$(sed -n 's/.*User time (seconds): //p' "$work/time.txt")
	sys=$(sed -n 's/.*System time (seconds): //p' "$work/time.txt")
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time.txt")
	others=$(awk -v a="$b0" -v b="$b1" -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", b - a - u - s }')
	set -- $(count "$dir" "$work/remaining-$reg-$mode-$round.txt")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$reg" "$pos" "$cache" \
		"$load" "$others" "$wall" "$user" "$sys" "$rss" $((before_blobs - $1)) $((before_bytes - $2)) \
		$((before_links - $3)) $((before_revs - $4)) "$rc" | tee -a "$results"
	# removed while the next copy is made, before its sync
	mv "$dir" "$work/trash-$reg-$mode-$round"
	rm -rf "$work/trash-$reg-$mode-$round" &
}

for mode in $modes; do
	r=1
	while [ $r -le "$rounds" ]; do
		if [ $((r % 2)) = 1 ]; then
			one berth "$mode" $r 1
			one distribution "$mode" $r 2
		else
			one distribution "$mode" $r 1
			one berth "$mode" $r 2
		fi
		if cmp -s "$work/remaining-berth-$mode-$r.txt" "$work/remaining-distribution-$mode-$r.txt"; then
			echo "$mode round $r: both left the same $(wc -l <"$work/remaining-berth-$mode-$r.txt") blobs"
		else
			echo "$mode round $r: the remaining blobs differ:" \
				"$(comm -23 "$work/remaining-berth-$mode-$r.txt" "$work/remaining-distribution-$mode-$r.txt" | wc -l) only Berth kept," \
				"$(comm -13 "$work/remaining-berth-$mode-$r.txt" "$work/remaining-distribution-$mode-$r.txt" | wc -l) only Distribution kept"
		fi
		r=$((r + 1))
	done
done
wait

# Medians and every figure, per mode and registry.
echo
echo "expected (gcdata): $(sed 's/[{}"]//g; s/,/, /g' "$work/gcdata.json")"
awk -F'\t' 'NR > 1 {
	k = $1 "\t" $3; n[k]++; w[k, n[k]] = $8; m[k, n[k]] = $11; rm[k] = $12; by[k] = $13; li[k] = $14; rv[k] = $15
	if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
}
function median(a, k, c,   i, j, t, v) {
	for (i = 1; i <= c; i++) v[i] = a[k, i]
	for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
	return c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
}
BEGIN { print "mode\tregistry\tmedian wall s\tall wall s\tmedian peak RSS MiB\tall peak RSS MiB\tblobs removed\tbytes removed\tlayer links removed\trevisions removed" }
END {
	for (x = 1; x <= nk; x++) {
		k = order[x]; c = n[k]; ws = ""; ms = ""
		for (i = 1; i <= c; i++) { ws = ws (i > 1 ? " / " : "") w[k, i]; ms = ms (i > 1 ? " / " : "") sprintf("%.1f", m[k, i] / 1024) }
		printf "%s\t%.2f\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\n", k, median(w, k, c), ws, median(m, k, c) / 1024, ms, rm[k], by[k], li[k], rv[k]
	}
}' "$results"
