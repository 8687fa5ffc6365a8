"""End to end on the CPU: a synthetic bf16 Llama-shaped pair as sharded HF directories.

Measured in one run, on the same files, once with a warm page cache (every input read just
before) and once cold (``evict_page_cache`` on both inputs before every timed command):

- the I/O floor: read every SFT shard, copy every ALIGNED shard (shutil.copyfile + fsync);
- ``expo-merge SFT ALIGNED --alpha 0.3`` (subprocess; time and peak anonymous RSS);
- mergekit's task_arithmetic recipe (base = SFT, ALIGNED weight 1 + alpha), when a
  ``mergekit-yaml`` is found (``--mergekit``; mergekit lives in its own environment), on the same
  files; its output is compared with ours tensor by tensor.

Every row records the 1-minute load average before the command (other jobs may share the cores).
The default ``--preset small`` (19M parameters) runs in under a minute; the page's numbers are
the 1.1B TinyLlama-shaped pair with both tools' site-packages byte-compiled first:

    python packages/expo-merge/benchmarks/bench_e2e.py --preset tinyllama --repeats 3 \
        --compile-bytecode --mergekit /path/to/mergekit-env/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from tensor_utils.checkpoint import SafetensorsWriter, TensorSpec, open_checkpoint
from tensor_utils_dev.bench import PeakMemory, evict_page_cache, results_dir, write_csv

ALPHA = 0.3
# TinyLlama-1.1B shapes (untied lm_head): 1.10B parameters, 2.2 GB in bf16.
TINYLLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": 2,
}
# The same architecture at 19M parameters (39 MB in bf16): the quick default.
SMALL = TINYLLAMA | {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}
PRESETS = {"small": SMALL, "tinyllama": TINYLLAMA}


def llama_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, i, v, kv = (
        c["hidden_size"],
        c["intermediate_size"],
        c["vocab_size"],
        c["num_key_value_heads"],
    )
    hd = h // c["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv * hd, h),
            p + "self_attn.v_proj.weight": (kv * hd, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    shapes |= {"model.norm.weight": (h,), "lm_head.weight": (v, h)}
    return shapes


def make_pair(root: Path, config: dict, shard_size: str) -> tuple[Path, Path]:
    sft, aligned = root / "sft", root / "aligned"
    if (root / "done").exists():
        return sft, aligned
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shapes = llama_shapes(config)
    specs = [TensorSpec(n, torch.bfloat16, s) for n, s in shapes.items()]
    g = torch.Generator().manual_seed(0)
    with (
        SafetensorsWriter(sft, specs, max_shard_size=shard_size) as ws,
        SafetensorsWriter(aligned, specs, max_shard_size=shard_size) as wa,
    ):
        for name, shape in shapes.items():
            base = torch.randn(shape, generator=g) * 0.02
            ws.write(name, base.bfloat16())
            wa.write(
                name, (base + torch.randn(shape, generator=g) * 1e-3).bfloat16()
            )  # DPO-sized delta
            del base
    for d in (sft, aligned):
        (d / "config.json").write_text(json.dumps(config))
    (root / "done").write_text("ok")
    return sft, aligned


def sync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def io_floor(sft: Path, aligned: Path, out: Path) -> float:
    t0 = time.perf_counter()
    buf = bytearray(16 << 20)
    for f in sorted(sft.glob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    out.mkdir()
    for f in sorted(aligned.iterdir()):
        shutil.copyfile(f, out / f.name)
    sync_dir(out)
    return time.perf_counter() - t0


def compile_bytecode(python: str) -> float:
    """Byte-compile an interpreter's site-packages, as ``pip install`` does by default.

    uv installs without .pyc files, and with PYTHONDONTWRITEBYTECODE=1 every ``import torch``
    then recompiles torch's sources (measured 5.4-6.3 s per ``import torch`` on the 2-core
    machine, 2.4 s compiled): a cost of how the environment was installed, not of either tool.
    Applied to both tools' environments alike."""
    t0 = time.perf_counter()
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", site.stdout.strip()],
        capture_output=True,
        check=False,  # a few vendored test files never compile; the rest still does
    )
    return time.perf_counter() - t0


def run_measured(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(pid=proc.pid, interval_s=0.01, cuda=False) as mem:
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {stderr.strip()[-2000:]}")
    return seconds, mem.anon_bytes, stdout


def compare(a: Path, b: Path) -> tuple[int, int]:
    """(elements that differ, elements) between two checkpoints with the same tensor names."""
    differ = total = 0
    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        for name in ca.tensors:
            x, y = ca.get(name), cb.get(name)
            differ += int(torch.count_nonzero(x.view(torch.int16) != y.view(torch.int16)))
            total += x.numel()
    return differ, total


def prepare(cache: str, inputs: Sequence[Path], out: Path) -> float:
    """Remove ``out``; for a cold run drop the inputs from the page cache. Returns the load."""
    if out.exists():
        shutil.rmtree(out)
    if cache == "cold":
        evict_page_cache(*inputs)
    else:
        io_floor_read(inputs)
    return os.getloadavg()[0]


def io_floor_read(inputs: Sequence[Path]) -> None:
    buf = bytearray(16 << 20)
    for d in inputs:
        for f in sorted(d.iterdir()):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--workdir", default="/tmp/expo-bench", help="the pair is kept here")
    parser.add_argument("--mergekit", default=shutil.which("mergekit-yaml") or "")
    parser.add_argument("--shard-size", default="1GB")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--compile-bytecode",
        action="store_true",
        help="byte-compile both tools' site-packages first, as pip install does",
    )
    parser.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    parser.add_argument("--out", default=None, help="CSV (default: results/e2e_<device>.csv)")
    parser.add_argument("--device", default="cpu", help="expo-merge --device (cuda: fused kernel)")
    args = parser.parse_args()
    out_csv = args.out or results_dir(__file__) / f"e2e_{args.device}.csv"
    root = Path(args.workdir) / args.preset
    sft, aligned = make_pair(root / "pair", PRESETS[args.preset], args.shard_size)
    nbytes = sum(f.stat().st_size for f in aligned.glob("*.safetensors"))
    params = sum(info.numel for info in open_checkpoint(aligned).tensors.values())
    io_bytes = 3 * nbytes
    print(f"pair: {params / 1e9:.2f}B parameters, {nbytes / 1e9:.2f} GB per model", flush=True)

    yml = root / "expo.yml"
    yml.write_text(
        f"merge_method: task_arithmetic\nbase_model: {sft}\nmodels:\n  - model: {aligned}\n"
        f"    parameters:\n      weight: {1 + ALPHA}\ndtype: float32\nout_dtype: bfloat16\n"
    )
    out_expo, out_mk, out_copy = root / "out-expo", root / "out-mergekit", root / "out-copy"
    ours_cmd = [
        sys.executable,
        "-m",
        "expo_merge.cli",
        str(sft),
        str(aligned),
        "--alpha",
        str(ALPHA),
        "-o",
        str(out_expo),
        "--force",
        "--no-progress",
        "--json",
        "--device",
        args.device,
    ]
    mk_cmd = [
        args.mergekit,
        str(yml),
        str(out_mk),
        "--out-shard-size",
        "1B",
        "--allow-crimes",
    ]
    have_mk = bool(args.mergekit) and Path(args.mergekit).exists()
    if not have_mk:
        print("mergekit-yaml not found (--mergekit): measuring the floor and expo-merge only")
    if args.compile_bytecode:
        pythons = [sys.executable] + (
            [str(Path(args.mergekit).parent / "python")] if have_mk else []
        )
        for python in pythons:
            print(
                f"byte-compiling {python}'s site-packages: {compile_bytecode(python):.0f} s",
                flush=True,
            )
    caches = ["warm", "cold"] if args.cache == "both" else [args.cache]
    rows, summaries = [], []
    for cache in caches:
        runs: dict[str, list[tuple[float, int, float]]] = {
            "io_floor": [],
            "expo_merge": [],
            "mergekit": [],
        }
        for rep in range(args.repeats):
            load = prepare(cache, (sft, aligned), out_copy)
            runs["io_floor"].append((io_floor(sft, aligned, out_copy), 0, load))
            shutil.rmtree(out_copy)
            load = prepare(cache, (sft, aligned), out_expo)
            seconds, anon, _ = run_measured(ours_cmd)
            runs["expo_merge"].append((seconds, anon, load))
            if have_mk and rep == 0:  # mergekit takes ~10x longer: one run per cache state
                load = prepare(cache, (sft, aligned), out_mk)
                seconds, anon, _ = run_measured(mk_cmd)
                runs["mergekit"].append((seconds, anon, load))
            for k, v in runs.items():
                if len(v) == rep + 1:  # printed once, in the repeat that ran it
                    print(
                        f"{cache} rep {rep}: {k:10s} {v[-1][0]:7.2f} s  anon peak "
                        f"{v[-1][1] / 1e9:.3f} GB  load {v[-1][2]:.2f}",
                        flush=True,
                    )
        same = None
        if runs["mergekit"]:
            differ, total = compare(out_expo, out_mk)
            same = differ / total
            print(
                f"mergekit vs expo-merge outputs: {differ} of {total} elements differ ({same:.2e})"
            )
        for tool, measured in runs.items():
            for i, (seconds, anon, load) in enumerate(measured):
                rows.append(
                    {
                        "bench": f"e2e_{args.device}",
                        "tool": tool,
                        "repeat": i,
                        "cache": cache,
                        "bytecode": "compiled" if args.compile_bytecode else "as-is",
                        "load_avg_1m": round(load, 2),
                        "params": params,
                        "model_bytes": nbytes,
                        "seconds": round(seconds, 2),
                        "gb_per_s": round(io_bytes / seconds / 1e9, 3),
                        "anon_peak_bytes": anon if tool != "io_floor" else "",
                    }
                )
        floor = min(s for s, _, _ in runs["io_floor"])
        ours = min(s for s, _, _ in runs["expo_merge"])
        ours_mem = max(m for _, m, _ in runs["expo_merge"])
        mk = min((s for s, _, _ in runs["mergekit"]), default=None)
        mk_mem = max((m for _, m, _ in runs["mergekit"]), default=None)
        summaries.append(
            {
                "bench": f"e2e_{args.device}_summary",
                "cache": cache,
                "bytecode": "compiled" if args.compile_bytecode else "as-is",
                "load_avg_1m": round(max(x[2] for v in runs.values() for x in v), 2),
                "params": params,
                "model_bytes": nbytes,
                "io_floor_s": round(floor, 2),
                "expo_merge_s": round(ours, 2),
                "ratio_to_io_floor": round(ours / floor, 3),
                "expo_merge_anon_peak_bytes": ours_mem,
                "mergekit_s": round(mk, 2) if mk else "",
                "mergekit_anon_peak_bytes": mk_mem or "",
                "speedup_vs_mergekit": round(mk / ours, 2) if mk else "",
                "memory_fraction_of_mergekit": round(ours_mem / mk_mem, 3) if mk_mem else "",
                "fraction_elements_differing_from_mergekit": same if same is not None else "",
            }
        )
    rows += summaries
    write_csv(out_csv, rows)
    print(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
