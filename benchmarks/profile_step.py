r"""Where the time of a training step goes: a ``jax.profiler`` trace of the library's own
training loop, its device ops grouped by what they compute.

    python -m benchmarks.profile_step --model=resnet20 --batch_size=128   # a 2-core CPU
    python -m benchmarks.profile_step --model=resnet18 --batch_size=512 \
        --compute_dtype=bfloat16 --steps=50                             # a GPU

It compiles the step (one untimed training), traces ``--steps`` more steps of
``Trainer.train`` (``jax.profiler.trace``, Perfetto format, kept in ``--trace_dir``), and
sums the duration of every traced device op by the HLO instruction it runs, classified
from the compiled step's own HLO: an op (or fusion) holding a convolution is
"convolution", one holding a matrix product "dense", a gather, dynamic slice or random
bits "data (gather, crop, flip)", a reduction "normalisation (reductions)", a transpose
or copy "layout" (with the elementwise work XLA fused into it: on a CPU, BatchNorm and
ReLU outputs re-laid out for the weight gradients), and the rest "elementwise and update".
It prints the table and, as its last line, one JSON object.

On a 2-core CPU (ResNet-20, batch 128, float32) the convolutions took 40% of the op time
and the layout fusions 54%: XLA:CPU's convolution library wants the operands of the
weight gradient in another layout, and each BatchNorm + ReLU output is transposed for it,
a memory-bound pass as long as a convolution. The GPU's breakdown is one step of
``make gpu-check``.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from collections.abc import Sequence

import jax
import numpy as np
from absl import app, flags

from benchmarks import pools
from benchmarks.pools import make_pool, parse_image_shape
from mcal_jax import models
from mcal_jax import train as train_lib

# Shared with benchmarks.core (see there): default None, resolved in main().
_MODEL = flags.DEFINE_string("model", None, "Model; default resnet20.", allow_override=True)
_BATCH = flags.DEFINE_integer(
    "batch_size", None, "Global batch size; default 128.", allow_override=True
)
_STEPS = flags.DEFINE_integer("steps", 8, "Steps traced.")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "Where the trace is kept (default: a temp).")

CATEGORIES = (
    "convolution",
    "dense",
    "data (gather, crop, flip)",
    "normalisation (reductions)",
    "layout (transposes + fused)",
    "elementwise and update",
)
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z][\w\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")


def classify_hlo(hlo_text: str) -> dict[str, str]:
    """Instruction name -> category (:data:`CATEGORIES`) for every instruction of an HLO
    module's text, from its own opcode and those of the computations it calls."""
    ops: dict[str, set[str]] = {}  # computation -> opcodes inside
    calls: dict[str, set[str]] = {}  # computation -> computations its instructions call
    own: dict[str, tuple[set[str], set[str]]] = {}  # instruction -> (opcode, callees)
    computation = None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header:
            computation = header.group(1)
            ops[computation], calls[computation] = set(), set()
            continue
        instruction = _INSTRUCTION.match(line)
        if instruction and computation is not None:
            name, opcode = instruction.groups()
            callees = set(_CALLS.findall(line))
            ops[computation].add(opcode)
            calls[computation] |= callees
            own[name] = ({opcode}, callees)

    def inside(comp: str, seen: set[str]) -> set[str]:
        if comp in seen or comp not in ops:
            return set()
        seen.add(comp)
        found = set(ops[comp])
        for callee in calls[comp]:
            found |= inside(callee, seen)
        return found

    result = {}
    for name, (opcodes, callees) in own.items():
        every = set(opcodes)
        for callee in callees:
            every |= inside(callee, set())
        result[name] = _category(every)
    return result


def _category(opcodes: set[str]) -> str:
    if "convolution" in opcodes:
        return "convolution"
    if "dot" in opcodes:
        return "dense"
    if opcodes & {"gather", "dynamic-slice", "rng-bit-generator", "scatter"}:
        return "data (gather, crop, flip)"
    if "reduce" in opcodes:
        return "normalisation (reductions)"
    if opcodes & {"transpose", "copy"}:
        return "layout (transposes + fused)"
    return "elementwise and update"


def op_seconds(trace_file: str, categories: dict[str, str]) -> dict[str, float]:
    """Seconds of the traced ops by category; events that are no HLO instruction of the
    step (Python, runtime) are left out. A GPU kernel event names its op in ``hlo_op``."""
    with gzip.open(trace_file) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    seconds: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") != "X":
            continue
        name = (event.get("args") or {}).get("hlo_op", event.get("name", ""))
        if name in categories:
            seconds[categories[name]] += event.get("dur", 0) / 1e6
            seconds["matched events"] += 1
    return {c: seconds[c] for c in (*CATEGORIES, "matched events")}


def profile(
    model: str,
    batch_size: int,
    image_shape: Sequence[int],
    steps: int,
    compute_dtype: str = "float32",
    trace_dir: str | None = None,
) -> dict:
    """Traces ``steps`` training steps of ``model``; the JSON-ready breakdown."""
    if model not in models.MODEL_NAMES:
        raise ValueError(f"benchmarks.profile_step: unknown model {model!r}")
    dataset, pool = make_pool(batch_size * steps, image_shape, 10, num_devices=1)
    config = train_lib.TrainConfig(
        epochs=1,
        batch_size=batch_size,
        schedule="constant",
        compute_dtype=compute_dtype,
        crop_padding=2,
        horizontal_flip=True,
    )
    trainer = train_lib.Trainer(model, pool, config)
    indices, labels = np.arange(len(dataset)), dataset.labels
    assert labels is not None  # a synthetic pool has its labels
    trainer.train(indices, labels, seed=0)  # compiles
    hlo = trainer._compiled_steps[False].as_text()
    if hlo is None:
        raise RuntimeError("benchmarks.profile_step: the backend gives no text of the step's HLO")
    categories = classify_hlo(hlo)
    trace_dir = trace_dir or tempfile.mkdtemp(prefix="mcal_profile_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        result = trainer.train(indices, labels, seed=1)
    (trace_file,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    seconds = op_seconds(trace_file, categories)
    matched = int(seconds.pop("matched events"))
    total = sum(seconds.values())
    return {
        "model": model,
        "batch_size": batch_size,
        "image_shape": list(image_shape),
        "compute_dtype": compute_dtype,
        "device": jax.devices()[0].device_kind,
        "steps": steps,
        "step_ms": 1e3 * result.wall_seconds / steps,
        "op_ms_per_step": {c: 1e3 * s / steps for c, s in seconds.items()},
        "op_share": {c: s / total if total else 0.0 for c, s in seconds.items()},
        "matched_events": matched,  # 0: the trace names no op of the step
        "trace": trace_file,
    }


def format_table(record: dict) -> str:
    lines = [
        f"{record['model']}, batch {record['batch_size']}, "
        f"{'x'.join(map(str, record['image_shape']))} ({record['compute_dtype']}) on "
        f"{record['device']}: {record['step_ms']:.1f} ms a step (wall), ops by kind:"
    ]
    for category in CATEGORIES:
        ms, share = record["op_ms_per_step"][category], record["op_share"][category]
        lines.append(f"  {category:<30} {ms:9.2f} ms  {100 * share:5.1f}%")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"benchmarks.profile_step takes no positional arguments: {argv[1:]}")
    on_cpu = jax.devices()[0].platform == "cpu"
    record = profile(
        _MODEL.value or "resnet20",
        _BATCH.value or 128,
        parse_image_shape(pools.IMAGE_SHAPE.value or "32x32x3"),
        _STEPS.value,
        pools.COMPUTE_DTYPE.value or ("float32" if on_cpu else "bfloat16"),
        _TRACE_DIR.value,
    )
    print(format_table(record))
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    app.run(main)
