"""Which precision a run computes in. On a GPU, bf16 autocast. On a CPU it depends on the host: with AMX or
AVX512-BF16 a bf16 matrix product can run several times faster than fp32, on AVX2-only hosts about ten times
slower, and for a small model the casts autocast adds may cost more than the products save. So
`precision=auto` on a CPU without bf16 matrix instructions (AMX or AVX512-BF16) takes fp32 without timing
anything, and on one with them times, once per process, a forward and backward of the model's own matrix
shapes in both precisions, casts included, and takes bf16 only if it is clearly faster. The two precisions
are timed in alternation and compared by their fastest rounds, so other work on the machine slows both
alike and rarely flips the choice; `fp32` and `bf16` force it (tests and ablations pin fp32).
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

# bf16 must win by this much to be chosen: a near tie is not worth rounding every product, and a margin
# keeps load on the machine from flipping the choice between two runs of one configuration.
BF16_MARGIN = 1.25
PROBE_ROUNDS = 3
PEAK_SIZE = 1024


def native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions; without them bf16 products are emulated, many times
    slower than fp32 (25x measured on an AVX2-only host), so there is nothing to time."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if not all(checks):
        return True  # a torch without these probes: let the timing decide
    return any(check() for check in checks)


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: torch.dtype | None  # the autocast dtype; None for plain fp32
    reason: str
    # Measured on a CPU for `auto`: seconds of the shape probe in each precision and the square
    # matrix-product peaks (GFLOP/s) beside them.
    fp32_probe_s: float | None = None
    bf16_probe_s: float | None = None
    fp32_peak_gflops: float | None = None
    bf16_peak_gflops: float | None = None

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def as_record(self) -> dict:
        record = asdict(self)
        record["dtype"] = self.name
        return record


def resolve_precision(
    choice: str, device: torch.device, shapes: tuple[tuple[int, int, int], ...] = ()
) -> PrecisionChoice:
    """`shapes` are the model's (rows, in, out) products for one micro-batch, used by the CPU probe."""
    if choice not in ("auto", "fp32", "bf16"):
        raise ValueError(f"system.precision must be auto, fp32 or bf16, got {choice!r}")
    if choice == "fp32":
        return PrecisionChoice(None, "asked for (system.precision=fp32)")
    if choice == "bf16":
        return PrecisionChoice(torch.bfloat16, "asked for (system.precision=bf16)")
    if device.type == "cuda":
        return PrecisionChoice(torch.bfloat16, "auto on CUDA: bf16 autocast")
    if device.type != "cpu" or not shapes:
        return PrecisionChoice(None, f"auto on {device.type}: fp32")
    return _probe_cpu(tuple(shapes), torch.get_num_threads())


@functools.cache
def _probe_cpu(shapes: tuple[tuple[int, int, int], ...], threads: int) -> PrecisionChoice:
    peaks = {dtype: matmul_peak_gflops(dtype) for dtype in (torch.float32, torch.bfloat16)}
    if not native_bf16():
        return PrecisionChoice(
            None,
            "auto on this CPU: no bf16 matrix instructions (AMX or AVX512-BF16), so fp32",
            fp32_peak_gflops=peaks[torch.float32],
            bf16_peak_gflops=peaks[torch.bfloat16],
        )
    fp32, bf16 = _probe_times(shapes)
    use_bf16 = bf16 * BF16_MARGIN < fp32
    reason = (
        f"auto on this CPU ({threads} threads): the model's products took at best {fp32 * 1e3:.1f} ms in fp32 "
        f"and {bf16 * 1e3:.1f} ms under bf16 autocast over {PROBE_ROUNDS} alternating rounds, so "
        f"{'bf16' if use_bf16 else 'fp32'} (bf16 must be {BF16_MARGIN:.2f}x faster)"
    )
    return PrecisionChoice(
        torch.bfloat16 if use_bf16 else None,
        reason,
        fp32_probe_s=fp32,
        bf16_probe_s=bf16,
        fp32_peak_gflops=peaks[torch.float32],
        bf16_peak_gflops=peaks[torch.bfloat16],
    )


def _probe_times(shapes: tuple[tuple[int, int, int], ...]) -> tuple[float, float]:
    """The fastest of `PROBE_ROUNDS` rounds, after a warm-up one, of a forward and backward of every product
    in fp32 and under bf16 autocast, the two alternating within each round; fp32 master weights as in
    training, so autocast pays its casts. Returns (fp32 seconds, bf16 seconds)."""
    generator = torch.Generator().manual_seed(0)
    operands = [
        (
            torch.randn(rows, fan_in, generator=generator, requires_grad=True),
            torch.randn(fan_out, fan_in, generator=generator, requires_grad=True),
        )
        for rows, fan_in, fan_out in shapes
    ]

    def one_pass(autocast: bool) -> float:
        started = time.perf_counter()
        for inputs, weight in operands:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = F.linear(inputs, weight)
            out.float().sum().backward()
        return time.perf_counter() - started

    best = {False: float("inf"), True: float("inf")}
    for round_ in range(PROBE_ROUNDS + 1):
        for autocast in (False, True):
            seconds = one_pass(autocast)
            if round_:  # the first round warms the kernels and the allocator up
                best[autocast] = min(best[autocast], seconds)
    return best[False], best[True]


@dataclass(frozen=True)
class MatmulTiming:
    size: int
    median_s: float  # one size x size product
    cores: float  # CPU time / wall time while timing: below the thread count, the machine was busy
    gflops: float


def time_matmul(dtype: torch.dtype, size: int = PEAK_SIZE, repeats: int = 4) -> MatmulTiming:
    """Median of `repeats` square products in `dtype` after a warm-up one: the matrix-product peak that
    `auto` and the benchmarks compare the model against."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    walls = []
    cpu_started = time.process_time()
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        walls.append(time.perf_counter() - started)
    median = statistics.median(walls)
    cores = (time.process_time() - cpu_started) / sum(walls)
    return MatmulTiming(size, median, cores, 2 * size**3 / median / 1e9)


def matmul_peak_gflops(dtype: torch.dtype, size: int = PEAK_SIZE, repeats: int = 4) -> float:
    return time_matmul(dtype, size, repeats).gflops
