"""OpenMP wait policy: one training step of the demo's model, on an idle machine and next to busy processes.

Why mrg's CLI sets ``GOMP_SPINCOUNT=10000``: torch's OpenMP threads spin while they wait for each other.
With the default spin, a step becomes many times slower as soon as another process shares the cores;
sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) avoids that but costs time on an idle machine. Each setting is
timed in a fresh process (the variables are read when OpenMP starts), with and without ``--busy`` spinning
processes beside it.

    python benchmarks/bench_threads.py            # the demo's report model (random weights) on a batch of 32
    python benchmarks/bench_threads.py --busy 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

SETTINGS = {
    "default spin": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000 (mrg)": {"GOMP_SPINCOUNT": "10000"},
}

CHILD = r"""
import time, torch
from mrg.config import load_config
from mrg.data.dataset import report_tensors
from mrg.methods import get_method
from mrg.model.trainable import stage_model
cfg = load_config("demo", ["model.llm.name_or_path=random:llama?hidden_size=128&intermediate_size=384&vocab_size=1024"])
model = stage_model(get_method("mrg-llm"), cfg, get_method("mrg-llm").stages[0])
model.train()
optimizer = torch.optim.AdamW([p for _, p in model.trainable_named_parameters()], lr=1e-3)
gen = torch.Generator().manual_seed(0)
batch = {"pixel_values": torch.randn(32, 1, 3, 128, 128, generator=gen), "view_mask": torch.ones(32, 1, dtype=torch.bool),
         "reports": ["the heart is normal in size . the lungs are clear . no pleural effusion or pneumothorax ."] * 32}
batch.update(report_tensors(model.tokenizer, batch["reports"], cfg.model.max_report_tokens))
def step():
    model(batch).loss.backward(); optimizer.step(); optimizer.zero_grad()
for _ in range(3):
    step()
times = []
for _ in range(STEPS):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
times.sort()
print(times[len(times) // 2])
"""


def time_setting(extra_env: dict[str, str], steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", CHILD.replace("STEPS", str(steps))], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="busy processes beside the step")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; median step time of the demo model (batch 32, 128 px, fp32)")
    for busy in args.busy:
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(0.5)
            for name, extra in SETTINGS.items():
                print(f"  {busy} busy processes  {name:<28} {time_setting(extra, args.steps):7.3f} s")
        finally:
            for proc in spinners:
                proc.kill()


if __name__ == "__main__":
    main()
