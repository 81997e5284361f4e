"""Our PPO, reward-model and DPO steps against TRL's on identical models, data and settings, back to back.

    bash ../shared/peer/setup.sh          # once: the two TRL virtual environments and the tiny models
    python benchmarks/compare_trl.py      # 3 rounds of the 6 workloads, about 20 minutes on 2 cores
    python benchmarks/compare_trl.py --rounds 1 --workloads dpo-1m   # one workload, once

Each round runs every workload with TRL's script (PPO and RM: ``../shared/peer``; DPO: ``benchmarks/trl_dpo_bench.py``
with the peer's data and models; each in its TRL virtual environment) and with ours (``benchmarks/ppo_step.py`` /
``rm_step.py`` / ``dpo_step.py``, this interpreter), alternating which goes first; the first TRL run of a workload
also dumps the exact token ids ours then reads. Each run reports its median seconds per step after warm-up; the
table keeps the median over rounds. It ends with one line per workload:

    RATIO workload=<ppo-1m|ppo-5m|rm-1m|rm-5m|dpo-1m|dpo-5m> ours_s=<s/step> trl_s=<s/step> speedup=<trl_s/ours_s>

and the fraction of the FLOP floor each reaches: floor seconds (``benchmarks.peer.ppo_floor_flops`` /
``rm_floor_flops`` / ``dpo_floor_flops`` over the machine's matmul rate, the best of a measurement before and after
each round) divided by seconds per step. Ours runs the PPO update compiled (``PPOModule(compile=True)``; the warm-up
step pays the compilation); ``benchmarks/ppo_step.py --eager`` times it without.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = ("ppo-1m", "ppo-5m", "rm-1m", "rm-5m", "dpo-1m", "dpo-5m")
RESULT = re.compile(r"^(TRL|OURS)_(PPO|RM|DPO) size=(\S+).* sec_per_step=([0-9.]+)", re.M)


def run(command: list[str], env: dict[str, str] | None = None) -> str:
    """Run a benchmark, return its output; fail with the command and the output's tail."""
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return output


def seconds_per_step(output: str) -> float:
    matches = RESULT.findall(output)
    if not matches:
        raise SystemExit(f"no result line in:\n{output[-2000:]}")
    return float(matches[-1][3])


def trl_command(workload: str, peer: Path, data: Path) -> list[str]:
    kind, size = workload.split("-")
    if kind == "ppo":
        return ["/tmp/peer-trl112/bin/python", str(peer / "trl_ppo_bench.py"), "--size", size, "--quiet",
                "--dump-prompts", str(data)]
    if kind == "dpo":  # our script, run in the peer's TRL 1.16 environment on the peer's pairs and models
        return ["/tmp/peer-trl116/bin/python", str(HERE / "trl_dpo_bench.py"), "--size", size, "--peer", str(peer),
                "--dump-data", str(data)]
    return ["/tmp/peer-trl116/bin/python", str(peer / "trl_rm_bench.py"), "--size", size, "--dump-data", str(data)]


def ours_command(workload: str, data: Path) -> list[str]:
    kind, size = workload.split("-")
    script, flag = {"ppo": ("ppo_step.py", "--prompts"), "rm": ("rm_step.py", "--data"),
                    "dpo": ("dpo_step.py", "--data")}[kind]
    return [sys.executable, str(HERE / script), "--size", size, flag, str(data)]


def floor_seconds(workload: str, gflops: float, models_root: str, data: Path) -> float:
    from peer import dpo_floor_flops, ppo_floor_flops, read_jsonl, rm_floor_flops

    kind, size = workload.split("-")
    meta = json.loads(Path(models_root, size, "meta.json").read_text())
    if kind == "ppo":
        flops = ppo_floor_flops(meta["policy_params"], meta["reward_params"], batch=16, prompt_len=32,
                                response_len=48, ppo_epochs=4)
    elif kind == "rm":  # the mean real tokens of a 16-pair batch of the dumped data
        rows = read_jsonl(str(data))
        tokens = 16 * statistics.mean(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
        flops = rm_floor_flops(meta["reward_params"], int(tokens))
    else:  # DPO: the prompt is in both sequences of a pair
        rows = read_jsonl(str(data))
        tokens = 16 * statistics.mean(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                                      for r in rows)
        flops = dpo_floor_flops(meta["policy_params"], int(tokens))
    return flops / (gflops * 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--peer", default=str(HERE.parent.parent / "shared" / "peer"),
                        help="the peer scripts (default ../shared/peer next to the repository)")
    parser.add_argument("--data-dir", default="/tmp/peer-data", help="where the dumped token ids go")
    parser.add_argument("--models-root", default="/tmp/peer-models")
    args = parser.parse_args()

    from peer import matmul_gflops

    peer, data_dir = Path(args.peer), Path(args.data_dir)
    if not (peer / "trl_ppo_bench.py").is_file():
        raise SystemExit(f"{peer} holds no peer scripts: pass --peer")
    for venv in ("/tmp/peer-trl112", "/tmp/peer-trl116"):
        if not Path(venv, "bin", "python").exists():
            raise SystemExit(f"{venv} is missing: run `bash {peer}/setup.sh` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    times: dict[tuple[str, str], list[float]] = {}
    rates = [matmul_gflops()]  # the machine's peak: the best of a measurement before and after every round
    for round_index in range(args.rounds):
        for workload in args.workloads:
            data = data_dir / f"{workload}.jsonl"
            sides = ["trl", "ours"] if round_index % 2 == 0 or not data.exists() else ["ours", "trl"]
            for side in sides:
                command = (trl_command(workload, peer, data) if side == "trl" else ours_command(workload, data))
                seconds = seconds_per_step(run(command, {"TRL_EXPERIMENTAL_SILENCE": "1"}))
                times.setdefault((workload, side), []).append(seconds)
                print(f"round {round_index + 1} {workload:7s} {side:4s} {seconds:.3f} s/step", flush=True)
        rates.append(matmul_gflops())

    gflops = max(rates)
    print(f"\nmatmul rate: {gflops:.0f} GFLOP/s (fp32, 2 threads, 1024x1024; best of "
          + ", ".join(f"{r:.0f}" for r in rates) + f"); medians over {args.rounds} rounds")
    print("| workload | ours s/step | TRL s/step | speedup | floor s | ours % of floor | TRL % of floor |")
    print("|---|---|---|---|---|---|---|")
    lines = []
    for workload in args.workloads:
        ours, trl = statistics.median(times[workload, "ours"]), statistics.median(times[workload, "trl"])
        floor = floor_seconds(workload, gflops, args.models_root, data_dir / f"{workload}.jsonl")
        print(f"| {workload} | {ours:.3f} | {trl:.3f} | {trl / ours:.2f} | {floor:.3f} | {100 * floor / ours:.0f}% "
              f"| {100 * floor / trl:.0f}% |")
        lines.append(f"RATIO workload={workload} ours_s={ours:.3f} trl_s={trl:.3f} speedup={trl / ours:.2f} "
                     f"floor_s={floor:.3f} ours_floor_fraction={floor / ours:.2f} trl_floor_fraction={floor / trl:.2f}")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
