#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Plot the soak's daemon RSS and open fds per cycle.

Reads the "BENCH soak cycle=..." lines a run of tests/vm/scenarios/soak.sh
printed on the guest console and writes a PNG:

    python3 tests/bench/soak-plot.py [CONSOLE_LOG] [OUT_PNG]

Defaults: .cache/vm/runs/soak/console-boot1.log and docs/soak-rss.png.
Installs python3-matplotlib with apt-get if it is missing (run as root).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CYCLE = re.compile(r"BENCH soak cycle=(\d+) ms=(\d+) rss_kb=(\d+) fds=(\d+)")
SUMMARY = re.compile(r"BENCH soak: (.*)")


SYSTEM_PYTHON = "/usr/bin/python3"


def matplotlib_pyplot():
    """matplotlib from this interpreter, else Debian's python3-matplotlib
    (installed if needed) under the system interpreter."""
    try:
        import matplotlib
    except ImportError:
        probe = [SYSTEM_PYTHON, "-c", "import matplotlib"]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            print("installing python3-matplotlib (apt-get)", file=sys.stderr)
            env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-matplotlib"]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        if sys.executable != SYSTEM_PYTHON:
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *sys.argv])
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main():
    log = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".cache/vm/runs/soak/console-boot1.log"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs/soak-rss.png"
    text = log.read_text(errors="replace")
    rows = [tuple(map(int, m.groups())) for m in CYCLE.finditer(text)]
    if not rows:
        sys.exit(f"{log}: no 'BENCH soak cycle=' lines (did the soak run?)")
    summary = [m.group(1).strip() for m in SUMMARY.finditer(text)]
    cycles = [r[0] for r in rows]
    rss = [r[2] for r in rows]
    fds = [r[3] for r in rows]
    faulty = [c for c in cycles if c % 10 == 0]

    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    ax.plot(cycles, rss, color="tab:blue", linewidth=1.2, label="milspecd RSS (kB)")
    ax.scatter(faulty, [rss[cycles.index(c)] for c in faulty], color="tab:red", s=8, zorder=3,
               label="cycle with a rollback")
    ax.set_xlabel("swap cycle")
    ax.set_ylabel("RSS (kB)")
    # Zoomed: a leak of a few hundred bytes a cycle stays visible.
    ax.set_ylim(min(rss) - 512, max(rss) + 512)
    ax2 = ax.twinx()
    ax2.plot(cycles, fds, color="tab:gray", linewidth=1, linestyle="--", label="open fds")
    ax2.set_ylabel("open fds")
    ax2.set_ylim(0, max(fds) * 2)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title(f"milspecd run, {len(rows)} live swaps of dell-milspec in a QEMU guest", fontsize=10)
    if summary:
        fig.text(0.01, 0.01, summary[0], fontsize=7, color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    print(f"{out}: {len(rows)} cycles, RSS {rss[0]}..{max(rss)} kB, fds {min(fds)}..{max(fds)}")
    for s in summary:
        print(s)


if __name__ == "__main__":
    main()
