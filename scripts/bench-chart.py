#!/usr/bin/env python3
"""Draw docs/bench/latency.png from cni-bench's results.json.

Median chain latency (bridge + host-local + portmap) against the number of
containers already attached, for each implementation and backend.

usage: bench-chart.py RESULTS_JSON OUTPUT_PNG   (needs: pip install matplotlib)
"""
import json
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench-chart.py: matplotlib is missing: pip install matplotlib", file=sys.stderr)
        return 1
    with open(sys.argv[1]) as f:
        results = json.load(f)

    styles = {
        "ours/iptables": ("tab:blue", "-", "o"),
        "ours/nftables": ("tab:green", "-", "s"),
        "reference/iptables": ("tab:red", "--", "^"),
    }
    verbs = [("add_ms", "ADD"), ("del_ms", "DEL"), ("add_del_ms", "ADD+DEL")]
    fig, axes = plt.subplots(1, len(verbs), figsize=(13, 4.2), sharex=True)
    for ax, (key, title) in zip(axes, verbs):
        for variant, points in results["chain"].items():
            xs = [p["attached"] for p in points]
            ys = [p[key] for p in points]
            color, line, marker = styles.get(variant, ("gray", ":", "x"))
            ax.plot(xs, ys, color=color, linestyle=line, marker=marker, label=variant)
        ax.set_title(f"{title} (median)")
        ax.set_xlabel("containers already attached")
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    m = results["machine"]
    fig.suptitle(
        f"bridge + host-local + portmap through the runtime crate — {m['cpu']}, "
        f"{m['nproc']} CPUs, {m['kernel']}, {m['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print(f"wrote {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
