# SPDX-License-Identifier: GPL-2.0
# vm-scenario: 1,000 load/unload cycles leak nothing: no slab cache grows,
#   slab and vmalloc use stay flat, no /proc or /sys entry is left behind.
# vendor: Dell Inc.
# boots: 1
# timeout: 180

CYCLES=1000
# A leak of one object per load shows up as CYCLES more objects in one slab
# cache; what the shell and the kernel's own caches move between two
# snapshots is well under CYCLES / 4 per cache.
CACHE_SLACK=$((CYCLES / 4))
SLAB_SLACK_KB=400
VMALLOC_SLACK_KB=400

meminfo() {
	sed -n "s/^$1: *\([0-9]*\) kB/\1/p" /proc/meminfo
}

# slab_snapshot FILE: objects in use per slab cache.
slab_snapshot() {
	awk 'NR > 2 { print $1, $2 }' /proc/slabinfo >"$1"
}

# slab_growth BEFORE AFTER: "growth cache" per cache, largest first.
slab_growth() {
	awk 'FNR == NR { b[$1] += $2; next } { a[$1] += $2 }
	END { for (c in a) print a[c] - b[c], c }' "$1" "$2" | sort -rn
}

# /proc entries that are not processes.
proc_entries() {
	find /proc -mindepth 1 -maxdepth 1 ! -name '[0-9]*' | wc -l
}

sys_modules() {
	find /sys/module -mindepth 1 -maxdepth 1 | wc -l
}

settle() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	sleep 1
}

cycle() {
	_n=$1
	while [ "$_n" -gt 0 ]; do
		vm-insmod "$(ko prod)" || fail "load failed ($_n cycles left)"
		rmmod "$MOD" || fail "rmmod failed ($_n cycles left)"
		_n=$((_n - 1))
	done
}

proc0=$(proc_entries)
sys0=$(sys_modules)

# Warm up caches and per-cpu pools first, then measure.
cycle 20
settle
slab0=$(meminfo Slab)
vmalloc0=$(meminfo VmallocUsed)
slab_snapshot /tmp/slab.before
say "before: Slab ${slab0} kB, VmallocUsed ${vmalloc0} kB"

t0=$(uptime_ms)
cycle $CYCLES
ms=$(($(uptime_ms) - t0))
say "$CYCLES load/unload cycles in $ms ms ($((ms / CYCLES)) ms each)"

settle
slab_snapshot /tmp/slab.after
slab1=$(meminfo Slab)
vmalloc1=$(meminfo VmallocUsed)
say "after: Slab ${slab1} kB, VmallocUsed ${vmalloc1} kB"
say "slab caches that grew most (objects):"
slab_growth /tmp/slab.before /tmp/slab.after | head -n 5

top=$(slab_growth /tmp/slab.before /tmp/slab.after | head -n 1)
expect_le "largest slab cache growth (${top#* })" "${top%% *}" $CACHE_SLACK
expect_le "Slab growth (kB)" $((slab1 - slab0)) $SLAB_SLACK_KB
expect_le "VmallocUsed growth (kB)" $((vmalloc1 - vmalloc0)) $VMALLOC_SLACK_KB
expect_eq "/proc entries" "$(proc_entries)" "$proc0"
expect_eq "/sys/module entries" "$(sys_modules)" "$sys0"
check "no /proc/milspec" test ! -e "$PROC_DIR"
check "not in /proc/modules" sh -c "! grep -q '^$MOD ' /proc/modules"
expect_eq "warn_count" "$(counter warn_count)" 0
expect_eq "oops_count" "$(counter oops_count)" 0
