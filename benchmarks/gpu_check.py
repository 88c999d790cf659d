r"""Every GPU measurement the project reports, in one command (``make gpu-check``).

    python -m benchmarks.gpu_check --out_dir=gpu-check            # on a GPU machine
    python -m benchmarks.gpu_check --out_dir=/tmp/gc --tiny --allow_cpu   # the plumbing, on a CPU

Made for a GPU machine lent for minutes, without network: it first checks that JAX sees a
GPU, that jaxopt and ml-collections import (else it installs them from the wheels in
``--wheels``, with ``pip --no-index --no-deps --target``), and that the Fashion-MNIST IDX
files are there (``--fashion_mnist``, else Debian's folder); each missing piece stops it
at once with a message saying how to bring it (BUILD.md, "The GPU check"). Then it runs,
most wanted first, each step as its own process under its own time cap and all of them
within ``--budget_s`` (a step that would start with under 20 s left is skipped):

1. ``train_cost``: the training-cost table of ResNet-18 and ResNet-20 (batch 512) against
   both PyTorch twins (``benchmarks.train_cost --vs_torch``), with MFU from the model FLOPs;
2. ``core``: scoring a 50,000-item 32×32×3 pool with ResNet-18 in bfloat16 (batch 2,048),
   the all-θ fit against scipy and the plan (``benchmarks.core``);
3. ``fashion_mnist``: the paper's configuration, ``configs/fashion_mnist.py``;
4. ``pool_scale``: a 1,280,000-item 32×32×3 pool (3.9 GB, memory-mapped, written on the
   first call) scored with ResNet-18 streamed from the host (``benchmarks.pool_scale``,
   ``data.placement=host``): items/s, selection, training images/s, memory;
5. ``profile_resnet20``, ``profile_resnet18``: where a bf16 training step's time goes, by
   kind of op (``benchmarks.profile_step``, batch 512);
6. ``train_cost_resnet50``: ResNet-50 (batch 256) against both twins;
7. ``select``: ``configs/fashion_mnist.py:select``, MCAL choosing among three architectures;
8. ``baselines``: the paper's configuration with the AL(δ) baselines.

``--out_dir`` gets ``results.jsonl`` (one line a step, written as each ends: its status, wall
seconds and numbers), each step's own JSON lines, its log, and the report PNGs of the
three runs; the runs' workdirs (checkpoints, scores) stay under ``--workdir_root``.
``--tiny`` swaps every step for a seconds-long one on the ``tiny`` model and synthetic
data, which tests the plumbing on a CPU (with ``--allow_cpu``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from mcal_jax.summary import read_summary

_OUT = flags.DEFINE_string("out_dir", "gpu-check", "Folder for results.jsonl, logs and PNGs.")
_WHEELS = flags.DEFINE_string("wheels", ".gpu/wheels", "Wheels of jaxopt and ml-collections.")
_DEPS = flags.DEFINE_string("deps", ".gpu/site", "Where those wheels are installed.")
_FASHION_MNIST = flags.DEFINE_string(
    "fashion_mnist", ".gpu/fashion-mnist", "Folder of the Fashion-MNIST IDX files."
)
_WORKDIR_ROOT = flags.DEFINE_string(
    "workdir_root", "/tmp/mcal-gpu-check", "Workdirs of the Fashion-MNIST runs."
)
_BUDGET = flags.DEFINE_integer("budget_s", 450, "Seconds for all steps together.")
_TINY = flags.DEFINE_bool("tiny", False, "Seconds-long steps on the tiny model (plumbing).")
_ALLOW_CPU = flags.DEFINE_bool("allow_cpu", False, "Run without a GPU (with --tiny).")
_ONLY = flags.DEFINE_list("only", None, "Run only these steps.")

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
MIN_STEP_SECONDS = 20
REQUIRED_MODULES = {"jaxopt": "jaxopt", "ml_collections": "ml_collections"}


class CheckError(RuntimeError):
    """A missing piece: the message says what and how to bring it."""


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    cap_s: int
    kind: str  # "train_cost" or "pool_scale" (a JSONL file), "core" (a JSON last line), "mcal"


def steps(out: str, workdir_root: str, dataset: str, tiny: bool) -> list[Step]:
    """The steps, most wanted first (see the module docstring)."""
    py = (sys.executable, "-m")

    def train_cost(name: str, models: str, batch: int, cap: int) -> Step:
        work: tuple[str, ...]
        if tiny:
            work = ("--models=tiny", "--batch_sizes=64", "--image_shape=28x28x1")
            work += ("--train_images=256", "--epochs=1", "--repeats=1")
        else:
            work = (f"--models={models}", f"--batch_sizes={batch}", "--image_shape=32x32x3")
            work += ("--train_images=50000", "--epochs=1", "--repeats=2", "--vs_torch")
        out_file = f"--out={os.path.join(out, name + '.jsonl')}"
        return Step(name, (*py, "benchmarks.train_cost", *work, out_file), cap, "train_cost")

    core: tuple[str, ...]
    if tiny:
        core = ("--model=tiny", "--pool_size=2048", "--batch_size=512", "--repeats=1")
    else:
        core = ("--model=resnet18", "--pool_size=50000", "--batch_size=2048")
        core += ("--image_shape=32x32x3", "--compute_dtype=bfloat16", "--repeats=5")

    def mcal(name: str, arg: str, cap: int, *overrides: str) -> Step:
        config: tuple[str, ...]
        if tiny:
            config = ("--config=configs/synthetic.py:600", "--config.mcal.max_rounds=2")
            config += (
                "--config.baselines.delta_fractions=(0.1,)",
                "--config.baselines.max_rounds=2",
            )
        else:
            config = (f"--config=configs/fashion_mnist.py{arg}", f"--config.data.dataset={dataset}")
        workdir = f"--workdir={os.path.join(workdir_root, name)}"
        return Step(name, (*py, "launch.mcal", *config, *overrides, workdir), cap, "mcal")

    def profile(name: str, model: str) -> Step:
        work: tuple[str, ...]
        work = ("--model=tiny", "--batch_size=64", "--image_shape=28x28x1", "--steps=2")
        if not tiny:
            work = (f"--model={model}", "--batch_size=512", "--image_shape=32x32x3")
            work += ("--compute_dtype=bfloat16", "--steps=20")
        trace = f"--trace_dir={os.path.join(workdir_root, name)}"
        return Step(name, (*py, "benchmarks.profile_step", *work, trace), 45, "core")

    pools: tuple[str, ...]
    if tiny:
        pools = ("--sizes=2000", "--model=tiny", "--score_batch=256", "--train_items=256")
    else:
        pools = ("--sizes=1280000", "--model=resnet18", "--score_batch=4096")
    pools += ("--placements=host", "--device_memory_gb=1", "--repeats=1")
    pools += (f"--pool_dir={os.path.join(workdir_root, 'pools')}",)
    pools += (f"--out={os.path.join(out, 'pool_scale.jsonl')}",)

    return [
        train_cost("train_cost", "resnet18,resnet20", 512, 170),
        Step("core", (*py, "benchmarks.core", *core), 60, "core"),
        mcal("fashion_mnist", "", 120),
        Step("pool_scale", (*py, "benchmarks.pool_scale", *pools), 150, "pool_scale"),
        profile("profile_resnet20", "resnet20"),
        profile("profile_resnet18", "resnet18"),
        train_cost("train_cost_resnet50", "resnet50", 256, 120),
        mcal("select", ":select", 150),
        mcal("baselines", "", 200, "--config.baselines.run=True"),
    ]


def _probe(env: dict[str, str], code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def preflight(
    *, wheels: str, deps: str, fashion_mnist: str, allow_cpu: bool, tiny: bool
) -> tuple[dict[str, str], str, str]:
    """(environment for the steps, dataset spec, device description), or CheckError."""
    if not allow_cpu and shutil.which("nvidia-smi") is None:
        raise CheckError(
            "no GPU here: nvidia-smi is not on PATH. Run `make gpu-check` on a GPU machine "
            "(or --tiny --allow_cpu to test the plumbing on a CPU)."
        )
    env = dict(os.environ)
    paths = [os.getcwd()] + ([os.path.abspath(deps)] if os.path.isdir(deps) else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    missing = [m for m in REQUIRED_MODULES if _probe(env, f"import {m}").returncode]
    if missing:
        found = sorted(glob.glob(os.path.join(wheels, "*.whl")))
        if not found:
            raise CheckError(
                f"{', '.join(missing)} not importable and no wheels in {wheels!r}. On a machine "
                f"with network: pip download --no-deps --only-binary=:all: --python-version "
                f"3.12 --platform manylinux2014_x86_64 -d {wheels} jaxopt ml_collections"
            )
        install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index"]
        install += ["--no-deps", "--target", deps, *found]
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode:
            raise CheckError(f"pip could not install {found}:\n{done.stderr[-2000:]}")
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), os.path.abspath(deps)])
        still = [m for m in missing if _probe(env, f"import {m}").returncode]
        if still:
            raise CheckError(f"{', '.join(still)} still not importable after installing {found}")
    dataset = "fashion_mnist"
    if not tiny:
        folder = next((d for d in (fashion_mnist, DEBIAN_FASHION_MNIST) if _has_idx(d)), None)
        if folder is None:
            raise CheckError(
                f"no Fashion-MNIST IDX files in {fashion_mnist!r} or {DEBIAN_FASHION_MNIST!r}: "
                f"copy the four *-ubyte(.gz) files of `apt-get install dataset-fashion-mnist` "
                f"into {fashion_mnist}"
            )
        dataset = f"idx:{os.path.abspath(folder)}"
    probe = "import jax; d = jax.devices()[0]; print(d.platform, jax.device_count(), d.device_kind)"
    seen = _probe(env, probe)
    if seen.returncode:
        raise CheckError(f"JAX does not start:\n{seen.stderr[-2000:]}")
    platform, count, kind = seen.stdout.strip().splitlines()[-1].split(" ", 2)
    if platform != "gpu" and not allow_cpu:
        raise CheckError(f"JAX sees no GPU, only {count} × {kind} ({platform})")
    return env, dataset, f"{count} × {kind}"


def _has_idx(folder: str) -> bool:
    return len(glob.glob(os.path.join(folder, "*-ubyte*"))) >= 4


def numbers(step: Step, out: str, stdout: str, env: dict[str, str]) -> dict:
    """What a finished step measured, for results.jsonl; copies a run's report PNGs."""
    if step.kind in ("train_cost", "pool_scale"):
        with open(os.path.join(out, step.name + ".jsonl")) as f:
            return {"records": [json.loads(line) for line in f]}
    if step.kind == "core":
        return {"record": json.loads(stdout.strip().splitlines()[-1])}
    workdir = next(a.split("=", 1)[1] for a in step.argv if a.startswith("--workdir="))
    summary = read_summary(os.path.join(workdir, "summary.json"))
    if summary is None:
        raise FileNotFoundError(f"{workdir}/summary.json not found: the run did not finish")
    report = subprocess.run(
        [sys.executable, "-m", "launch.report", f"--workdir={workdir}"],
        capture_output=True,
        text=True,
        env=env,
    )
    pngs = sorted(glob.glob(os.path.join(workdir, "report", "*.png")))
    os.makedirs(os.path.join(out, step.name), exist_ok=True)
    for png in pngs:
        shutil.copy(png, os.path.join(out, step.name, os.path.basename(png)))
    shutil.copy(os.path.join(workdir, "summary.json"), os.path.join(out, step.name))
    as_json = summary.to_json()
    return {
        "total_usd": summary.cost_usd.total,
        "counts": as_json["counts"],
        "error": as_json["error"],
        "pngs": [os.path.basename(p) for p in pngs] if report.returncode == 0 else [],
    }


def run_step(step: Step, out: str, env: dict[str, str], seconds_left: float) -> dict:
    """Runs ``step`` under min(its cap, the budget left); its record for results.jsonl."""
    record: dict = {"step": step.name, "command": " ".join(step.argv[1:])}
    timeout = min(step.cap_s, int(seconds_left))
    if timeout < MIN_STEP_SECONDS:
        return record | {"status": "skipped", "why": f"{int(seconds_left)} s of budget left"}
    start = time.perf_counter()
    try:
        done = subprocess.run(step.argv, env=env, capture_output=True, text=True, timeout=timeout)
        status, stdout, stderr = (
            ("ok" if done.returncode == 0 else "failed"),
            done.stdout,
            done.stderr,
        )
        record["returncode"] = done.returncode
    except subprocess.TimeoutExpired as e:
        status = "timeout"
        stdout, stderr = _text(e.stdout), _text(e.stderr)
    record |= {"status": status, "seconds": round(time.perf_counter() - start, 1), "cap_s": timeout}
    with open(os.path.join(out, step.name + ".log"), "w") as f:
        f.write(stdout + "\n--- stderr ---\n" + stderr)
    if status == "ok":
        try:
            record |= numbers(step, out, stdout, env)
        except (OSError, ValueError, KeyError, StopIteration) as e:
            record |= {"status": "failed", "why": f"its output could not be read: {e!r}"}
    elif status == "failed":
        record["why"] = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
    return record


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"benchmarks.gpu_check takes no positional arguments: {argv[1:]}")
    started = time.perf_counter()
    try:
        env, dataset, device = preflight(
            wheels=_WHEELS.value,
            deps=_DEPS.value,
            fashion_mnist=_FASHION_MNIST.value,
            allow_cpu=_ALLOW_CPU.value,
            tiny=_TINY.value,
        )
    except CheckError as e:
        sys.exit(f"gpu-check: {e}")
    out = _OUT.value
    os.makedirs(out, exist_ok=True)
    plan = steps(out, _WORKDIR_ROOT.value, dataset, _TINY.value)
    unknown = set(_ONLY.value or ()) - {s.name for s in plan}
    if unknown:
        raise app.UsageError(f"--only: unknown steps {sorted(unknown)}; see --helpfull")
    plan = [s for s in plan if not _ONLY.value or s.name in _ONLY.value]
    print(f"gpu-check on {device}: {len(plan)} steps within {_BUDGET.value} s", flush=True)
    results = os.path.join(out, "results.jsonl")
    with open(results, "w") as f:
        for step in plan:
            left = _BUDGET.value - (time.perf_counter() - started)
            print(
                f"gpu-check: {step.name} ({min(step.cap_s, int(left))} s at most) ...", flush=True
            )
            record = run_step(step, out, env, left)
            record["device"] = device
            f.write(json.dumps(record) + "\n")
            f.flush()
            print(
                f"gpu-check: {step.name}: {record['status']} {record.get('seconds', '')}",
                flush=True,
            )
    print(f"gpu-check: wrote {results} in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    app.run(main)
