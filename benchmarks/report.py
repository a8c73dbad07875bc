"""What a run leaves behind: the machine line, the markdown table, JSON and a bar chart."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tinygrad_uu.files import atomic_path, atomic_write, save_json

STATUS_TEXT = {"unsupported": "skip", "error": "ERROR"}


def _version(dist: str):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """The facts a reader needs to weigh the figures."""
    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {d: _version(d) for d in ("numpy", "numba", "torch", "tinygrad", "micrograd",
                                              "tinygrad_uu")},
        "git_commit": _git_commit(),
        "env": {k: os.environ[k] for k in ("TINYGRAD_UU_BACKEND", "TINYGRAD_UU_NUM_THREADS", "NUMBA_NUM_THREADS",
                                           "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                if k in os.environ},
    }
    if "numba" in sys.modules:
        try:
            info["numba_threads"] = sys.modules["numba"].get_num_threads()
        except Exception:
            pass
    if "tinygrad_uu" in sys.modules:
        info["tinygrad_uu_threads"] = sys.modules["tinygrad_uu"].get_num_threads()
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def machine_line(info: dict) -> str:
    v = info["versions"]
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    cores = f"{info['logical_cores']} cores"
    if info.get("usable_cores") and info["usable_cores"] != info["logical_cores"]:
        cores += f" ({info['usable_cores']} usable)"
    threads = []
    if "torch_threads" in info:
        threads.append(f"torch threads {info['torch_threads']}")
    if "numba_threads" in info:
        threads.append(f"numba threads {info['numba_threads']}")
    if "tinygrad_uu_threads" in info:
        threads.append(f"tinygrad_uu threads {info['tinygrad_uu_threads']}")
    load = info.get("load_average")
    parts = [f"{info['cpu']}, {cores}, {info['os']}, Python {info['python']}", versions]
    if threads:
        parts.append(", ".join(threads))
    if load:
        parts.append(f"load average {load[0]:.2f} at start")
    if info.get("git_commit"):
        parts.append(f"commit {info['git_commit']}")
    return "; ".join(parts)


def busy_warning(info: dict) -> str | None:
    """A warning when other work already keeps the cores busy: then multi-threaded
    engines wait for threads that are not scheduled, and their figures collapse."""
    load, cores = info.get("load_average"), info.get("usable_cores") or info.get("logical_cores")
    if load and cores and load[0] >= cores:
        return (f"WARNING: the machine was busy (load average {load[0]:.1f} on {cores} cores "
                "at start): multi-threaded figures are unreliable; rerun on an idle machine "
                "or compare with --threads 1.")
    return None


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _fmt_ratio(r: float) -> str:
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def table(results: dict) -> str:
    """The markdown table: one row per case, one column per engine, then the notes."""
    engines = results["engines"]
    notes: list[str] = []

    def note(text):
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    ref_names = {r["ratio_reference"] for r in results["cases"] if r.get("ratio_reference")}
    ref_label = ", ".join(sorted(next((e["name"] for e in engines if e["key"] == k), k)
                                 for k in ref_names)) or "-"
    head = ["Workload", "unit"] + [e["name"] for e in engines]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in results["cases"]:
        cells = [rec["key"], rec["unit"]]
        for e in engines:
            r = rec["results"].get(e["key"], {})
            status = r.get("status")
            if "figure" in r:
                cell = f"{_fmt(r['figure'])} ({_fmt_ratio(r['ratio'])})"
            elif status == "wrong":
                cell = f"WRONG: {r.get('message', '')}"
            elif status in STATUS_TEXT:
                cell = f"{STATUS_TEXT[status]} {note(e['name'] + ': ' + r.get('message', ''))}"
            else:
                cell = "-"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    out = ["Machine: " + machine_line(results["machine"]), ""]
    busy = busy_warning(results["machine"])
    if busy:
        out += [busy, ""]
    out += [f"Figures: median of {results['settings']['repeats']} interleaved repeats after "
            f"warm-up, each after one untimed step (higher is faster); in brackets, relative to {ref_label} in the same run"
            + (f"; {results['settings']['threads']} thread(s) per engine."
               if results["settings"].get("threads") else "."),
            ""] + lines
    if notes:
        out += [""] + [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    if results.get("skipped_engines"):
        out += ["", "Engines skipped:"]
        out += [f"- {s['key']}: {s['reason']}" for s in results["skipped_engines"]]
    return "\n".join(out) + "\n"


def write_json(path, results: dict) -> None:
    save_json(path, results)


def write_table(path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_chart(path, results: dict) -> Path:
    """Grouped bars of every engine's ratio to the reference, per case (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    engines = results["engines"]
    cases = results["cases"]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(cases) + 3), 5.0))
    width = 0.8 / max(1, len(engines))
    x = np.arange(len(cases))
    for i, e in enumerate(engines):
        ratios = [c["results"].get(e["key"], {}).get("ratio", np.nan) for c in cases]
        ax.bar(x + (i - (len(engines) - 1) / 2) * width, ratios, width, label=e["name"])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([c["key"] for c in cases], rotation=35, ha="right", fontsize=8)
    refs = sorted({c["ratio_reference"] for c in cases if c.get("ratio_reference")})
    ax.set_ylabel(f"speed relative to {', '.join(refs) or 'reference'} (log)")
    ax.set_title("tinygrad_uu benchmarks (higher is faster; missing bar = skipped or wrong)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
