"""Time and energy of one NMF (T ANLS iterations) on the chip and on digital solvers.

Cost model from first principles (docs/energy.md lists every constant with its source or
the word *assumption*):

- **chip**: the controller's cycle counts (the RUN_NMF formulas of docs/anls-sequencer.md
  and docs/solve-timing.md, which the golden model and the RTL reproduce bit for bit), the
  analog settle time from the eigenvalues of each solve's active-set loop matrix, op-amp
  static power derived from the op-amps' gain-bandwidth, DAC/ADC energy per conversion
  (ADC: Walden and Schreier figure-of-merit envelope), crossbar read power from the
  programmed conductances, write-verify energy per pulse and per verify read with the
  pulse counts measured on the chip model, and the controller's energy per clock cycle.
- **gpu / fpga**: floating-point operation counts of the same ANLS (Gram matrix,
  right-hand sides, a batched active-set NNLS), published peak throughput and power, and
  per-kernel / per-half-step fixed overheads.
- **cpu**: this machine's measured time of the float reference (`anmf.model.nmf.anls`).

Two chip scenarios (``ChipArchitecture``): ``rtl`` is the controller as built (DACs
written one per cycle, one ADC multiplexed over the columns, write-verify one cell at a
time, a fixed settle timer set to the slowest solve); ``paper`` follows the published
comparison's assumptions as far as we can tell (one DAC per row and one ADC per column in
parallel, the settle time of each solve, programming not counted).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .config import AFEConfig, resolve_afe
from .formats import nmf_commit_cycles, nmf_prepare_cycles, nmf_scan_cycles

__all__ = [
    "Workload", "parse_workload", "workload_matrix", "ChipActivity", "ChipConstants",
    "ChipArchitecture", "SCENARIOS", "GPUSpec", "FPGASpec", "Cost", "anls_flops",
    "adc_energy_j", "opamp_power_w", "measure_activity", "activity_from_rates", "chip_cost",
    "run_nmf_cycles", "gpu_cost", "fpga_cost", "cpu_reference_seconds", "energy_report",
    "size_sweep", "adc_bits_sweep", "write_sweep_plots",
]


# --------------------------------------------------------------------------------------
# Workloads

@dataclass(frozen=True)
class Workload:
    """One NMF job: R (m x n) with ``observed`` entries, rank k, T ANLS iterations."""

    name: str
    m: int
    n: int
    k: int
    iterations: int = 30
    observed: int | None = None    #: observed entries (None: dense, m * n)
    ridge: float = 0.0

    def __post_init__(self) -> None:
        for name in ("m", "n", "k", "iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Workload.{name} must be an integer >= 1; got {value!r}")
        if self.k > min(self.m, self.n):
            raise ValueError(f"Workload.k must be <= min(m, n) = {min(self.m, self.n)}; got {self.k}")
        if self.observed is not None and not 1 <= self.observed <= self.m * self.n:
            raise ValueError(f"Workload.observed must be in 1..m*n = {self.m * self.n}; got {self.observed!r}")

    @property
    def entries(self) -> int:
        return self.m * self.n if self.observed is None else self.observed

    @property
    def dense(self) -> bool:
        return self.observed is None


#: The two published applications (docs/applications.md): camera at k = 32 (half the
#: storage), MovieLens-100K with the chosen rank, ridge and iterations.
NAMED_WORKLOADS: dict[str, Workload] = {
    "camera": Workload("camera", 512, 512, 32, iterations=30),
    "ml-100k": Workload("ml-100k", 943, 1682, 3, iterations=30, observed=100_000, ridge=2.0),
}
_SIZE_SPEC = re.compile(r"^(\d+)x(\d+):(\d+)$")
WORKLOAD_HELP = "camera, ml-100k or MxN:K (e.g. 256x256:8)"


def parse_workload(spec: str, *, iterations: int = 30) -> Workload:
    """``camera``, ``ml-100k`` or ``MxN:K`` (a synthetic dense rank-K matrix)."""
    if spec in NAMED_WORKLOADS:
        return replace(NAMED_WORKLOADS[spec], iterations=iterations)
    match = _SIZE_SPEC.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise ValueError(f"unknown workload {spec!r}; accepted: {WORKLOAD_HELP}")
    m, n, k = (int(g) for g in match.groups())
    if min(m, n, k) < 1 or k > min(m, n):
        raise ValueError(f"workload {spec!r} needs M, N >= 1 and 1 <= K <= min(M, N)")
    return Workload(spec, m, n, k, iterations=iterations)


def workload_matrix(workload: Workload, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """R and its mask (None: dense) for ``camera`` and synthetic workloads. A synthetic
    R is a non-negative rank-k product plus 1 % noise, scaled to a peak of 1. MovieLens is
    loaded by the caller (the data lives outside model/)."""
    if workload.name == "camera":
        from skimage import data

        return data.camera().astype(np.float64) / 255.0, None
    if not workload.dense:
        raise ValueError(f"workload {workload.name!r} has missing entries; load its ratings and pass R and mask")
    W = rng.random((workload.m, workload.k))
    H = rng.random((workload.k, workload.n))
    R = W @ H + 0.01 * rng.random((workload.m, workload.n))
    return R / R.max(), None


# --------------------------------------------------------------------------------------
# Constants

@dataclass(frozen=True)
class ChipConstants:
    """Physical constants of the chip's cost model (docs/energy.md gives each source)."""

    clock_hz: float = 100e6                  #: controller clock, default build (docs/solve-timing.md)
    controller_energy_per_cycle_j: float = 10e-12   #: assumption: ~20k gates + SRAM buffers at 40 nm
    opamp_load_f: float = 1e-12              #: assumption: op-amp load (line + next stage)
    opamp_gm_over_id: float = 15.0           #: assumption: moderate inversion
    opamp_current_branches: float = 3.0      #: assumption: two-stage op-amp, input + output + bias
    supply_v: float = 2.5                    #: assumption: +-1.25 V, just outside the 1.2 V rails
    adc_walden_fom_j: float = 10e-15         #: assumption, 2x the survey's best SAR (4.4 fJ/step)
    adc_schreier_fom_db: float = 175.0       #: assumption, 10 dB below the survey's best (~185 dB)
    adc_enob_loss_bits: float = 0.5          #: assumption: ENOB = bits - 0.5
    sar_clock_hz: float = 10e6               #: ADCConfig: 12 cycles in 1.2 us
    dac_energy_j: float = 1e-12              #: assumption: string DAC + row driver, per conversion
    signal_rms_v: float = 0.5                #: assumption: rms voltage on cells and input branches
    pulse_driver_efficiency: float = 0.5     #: assumption: half the pulse energy lost in driver/line
    read_voltage_v: float = 0.2              #: CrossbarConfig.read_voltage_v
    read_settle_s: float = 160e-9            #: program_settings(read_settle=16) at 100 MHz
    pulse_overhead_s: float = 20e-9          #: AnalogFrontEnd.pulse_overhead_s

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"ChipConstants.{name} must be a finite number > 0; got {value!r}")
        if self.pulse_driver_efficiency > 1:
            raise ValueError(f"ChipConstants.pulse_driver_efficiency must be in (0, 1]; got {self.pulse_driver_efficiency!r}")


@dataclass(frozen=True)
class ChipArchitecture:
    """How the chip's converters and programmer are organised (see the module docstring)."""

    name: str
    parallel_converters: bool     #: one DAC per row, one ADC per column (else serial DAC writes, muxed ADC)
    program_row_parallel: bool    #: the k cells of a row write-verified at once (else one cell at a time, the RTL)
    include_programming: bool     #: count the write-verify of the stored factor every half-step
    per_solve_settle: bool        #: wait each solve's own settle time (else a fixed timer = slowest)
    #: Count only the analog settle (time) and the op-amps and crossbar during it (energy):
    #: the accounting of analog-solver papers that quote the circuit's response time.
    analog_only: bool = False


SCENARIOS: dict[str, ChipArchitecture] = {
    "paper": ChipArchitecture("paper", parallel_converters=True, program_row_parallel=True,
                              include_programming=False, per_solve_settle=True),
    "paper+write": ChipArchitecture("paper+write", parallel_converters=True, program_row_parallel=True,
                                    include_programming=True, per_solve_settle=True),
    "rtl": ChipArchitecture("rtl", parallel_converters=False, program_row_parallel=False,
                            include_programming=True, per_solve_settle=False),
    "analog-only": ChipArchitecture("analog-only", parallel_converters=True, program_row_parallel=True,
                                    include_programming=False, per_solve_settle=True, analog_only=True),
}


@dataclass(frozen=True)
class GPUSpec:
    """NVIDIA A100 SXM4 (datasheet 2020/2021): FP32 19.5 TFLOPS, 1.555 TB/s, 400 W TDP."""

    name: str = "NVIDIA A100 SXM4 40GB"
    peak_flops: float = 19.5e12
    memory_bandwidth_bps: float = 1.555e12
    tdp_w: float = 400.0
    idle_w: float = 50.0               #: assumption: board power with the GPU waiting on launches
    efficiency: float = 0.5            #: assumption: sustained fraction of peak FP32
    launch_overhead_s: float = 5e-6    #: assumption: launch + synchronisation per dependent kernel
    nnls_iterations: int = 5           #: assumption: active-set / BPP sweeps per half-step
    kernels_per_nnls_iteration: int = 4   #: assumption: gradient, pivot, batched Cholesky, solve
    #: True: each half-step's NNLS problems solved as one batch; False: one problem after
    #: the other (a per-problem solver loop, as a "programmable digital solver" runs it).
    batched: bool = True


@dataclass(frozen=True)
class FPGASpec:
    """AMD (Xilinx) Alveo U250: 12,288 DSP slices, 225 W maximum board power."""

    name: str = "AMD Alveo U250"
    dsp_slices: int = 12_288
    dsp_per_fp32_mac: int = 5          #: Floating-Point Operator (PG060): multiply 3 DSP + add 2 DSP
    clock_hz: float = 300e6            #: assumption: achieved clock of an FP32 HLS design
    efficiency: float = 0.5            #: assumption: fraction of the MACs busy
    board_w: float = 100.0             #: assumption: running power, below the 225 W maximum
    half_step_overhead_s: float = 2e-6   #: assumption: control handshake per half-step (on-card ANLS)
    nnls_iterations: int = 5           #: same algorithm as the GPU

    @property
    def peak_flops(self) -> float:
        return 2.0 * self.dsp_slices / self.dsp_per_fp32_mac * self.clock_hz


# --------------------------------------------------------------------------------------
# Component models

def opamp_power_w(gbw_hz: float, c: ChipConstants) -> float:
    """Static power of one op-amp with gain-bandwidth ``gbw_hz``: GBW = gm / (2 pi C_L)
    sets gm, gm/I_D sets the input pair's current, and every branch draws that current
    from the supply."""
    if not (math.isfinite(gbw_hz) and gbw_hz > 0):
        raise ValueError(f"gbw_hz must be a finite number > 0; got {gbw_hz!r}")
    gm = 2.0 * math.pi * gbw_hz * c.opamp_load_f
    return c.supply_v * c.opamp_current_branches * gm / c.opamp_gm_over_id


def adc_energy_j(bits: int, c: ChipConstants) -> float:
    """Energy of one conversion: the envelope of Murmann's ADC survey, the larger of the
    Walden bound (FoM_W 2^ENOB, low resolution) and the Schreier (thermal) bound
    (P / f_s = 10^((SNDR - FoM_S) / 10) / 2, high resolution)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be an integer >= 1; got {bits!r}")
    enob = max(bits - c.adc_enob_loss_bits, 0.5)
    walden = c.adc_walden_fom_j * 2.0 ** enob
    sndr_db = 6.02 * enob + 1.76
    schreier = 0.5 * 10.0 ** ((sndr_db - c.adc_schreier_fom_db) / 10.0)
    return max(walden, schreier)


def adc_conversion_s(bits: int, c: ChipConstants) -> float:
    """SAR conversion time: one sample cycle, one cycle per bit, one output cycle."""
    return (bits + 2) / c.sar_clock_hz


# --------------------------------------------------------------------------------------
# Activity: what the chip does during one NMF

@dataclass(frozen=True)
class ChipActivity:
    """Counts of one NMF on the chip (measured on the chip model, or extrapolated)."""

    solves: int               #: analog solves, over-range retries included
    retries: int              #: over-range retries
    driven_rows: int          #: rows driven, summed over solves (DAC conversions)
    programmed_cells: int     #: cells write-verified, over all half-steps
    pulses: int               #: programming pulses, over all half-steps
    settle_mean_s: float      #: mean settle time to one ADC LSB over the solves
    settle_max_s: float       #: slowest solve (sets the RTL's fixed ANALOG_SETTLE timer)
    settle_tol: float = 2.0 ** -10
    source: str = "chip model"

    @property
    def pulses_per_cell(self) -> float:
        return self.pulses / self.programmed_cells if self.programmed_cells else 0.0


def _settle_times(circuit_config: Any, A: np.ndarray, B: np.ndarray, mask: np.ndarray | None,
                  a_max: float, tol: float, rng: np.random.Generator) -> np.ndarray:
    """Settle-time estimates (s) of one half-step's solves: the stored factor A (f x k)
    at its per-column block-floating-point scale, right-hand sides B (f x count)."""
    from .chip import column_exponents
    from .circuit import NNLSCircuit

    f, k = A.shape
    live = A.max(axis=0, initial=0.0) > 0
    scaled = np.clip(A * np.exp2(-column_exponents(A, a_max)), 0.0, a_max)
    G = circuit_config.g_offset_s + scaled * circuit_config.g_unit_s
    volts = B * np.exp2(-column_exponents(np.abs(B), 0.9))
    circuit = NNLSCircuit(circuit_config, f, k, rng)
    if mask is None:
        solution = circuit.solve(G, volts, col_enable=live, mode="clamped")
    else:
        seen = mask.any(axis=0)
        solution = circuit.solve_masked(G, volts[:, seen], mask[:, seen], col_enable=live, mode="clamped")
    times = np.atleast_1d(np.asarray(solution.settle_time_estimate(tol), dtype=np.float64))
    return times[np.isfinite(times)]


def measure_activity(workload: Workload, R: np.ndarray, mask: np.ndarray | None = None, *,
                     afe: AFEConfig | str = "rram-3bit", seed: int = 0) -> ChipActivity:
    """Run the functional chip model (model/chip.py) on R for ``workload.iterations``
    iterations and count what the chip did. The settle-time distribution comes from the
    circuit's eigenvalues at the last iterate (both half-steps); the mean from every solve."""
    from .chip import ChipModel

    config = resolve_afe(afe)
    if R.shape != (workload.m, workload.n):
        raise ValueError(f"R must have the workload's shape {(workload.m, workload.n)}; got {R.shape}")
    # rows=None, cols=None: one crossbar sized to the problem, as the published comparison assumes.
    chip = ChipModel(config.replace(seed=seed), failed_rows="exclude", rows=None, cols=None)
    result = chip.factorize(R, workload.k, iters=workload.iterations, seed=seed, mask=mask, ridge=workload.ridge)
    stats = result.stats
    bits = config.adc.bits or 24
    tol = 2.0 ** -bits
    rng = np.random.default_rng(seed)
    W, H = result.W, result.H
    settle = np.concatenate([
        _settle_times(config.circuit, W, np.where(mask, R, 0) if mask is not None else R, mask, chip.a_max, tol, rng),
        _settle_times(config.circuit, H.T, (np.where(mask, R, 0) if mask is not None else R).T,
                      None if mask is None else mask.T, chip.a_max, tol, rng),
    ])
    solves = int(stats["solves"])
    # Driven rows per solve: every observed entry of the right-hand side (plus ridge rows).
    ridge_rows = workload.k if workload.ridge > 0 else 0
    rows_per_attempt = workload.entries * 2 / (workload.m + workload.n) + ridge_rows
    return ChipActivity(
        solves=solves, retries=int(stats["over_range_retries"]), driven_rows=int(round(solves * rows_per_attempt)),
        programmed_cells=int(stats["programmed_cells"]), pulses=int(stats["pulses"]),
        settle_mean_s=float(stats["analog_settle_s"]) / max(solves, 1),
        settle_max_s=float(settle.max()) if settle.size else 0.0, settle_tol=tol,
        source=f"chip model ({config.name}, seed {seed})")


def activity_from_rates(workload: Workload, reference: ChipActivity) -> ChipActivity:
    """Extrapolate ``reference``'s per-unit rates (retries per right-hand side, pulses per
    cell, settle times) to another workload: for sweeps, where running the chip model at
    every size would take too long."""
    ref_rhs = max(reference.solves - reference.retries, 1)
    retry_rate = reference.retries / ref_rhs
    rhs = workload.iterations * (workload.m + workload.n)
    solves = int(round(rhs * (1 + retry_rate)))
    rows_per_attempt = workload.entries * 2 / (workload.m + workload.n)
    cells = workload.iterations * (workload.m + workload.n) * workload.k
    return ChipActivity(solves=solves, retries=solves - rhs, driven_rows=int(round(solves * rows_per_attempt)),
                        programmed_cells=cells, pulses=int(round(cells * reference.pulses_per_cell)),
                        settle_mean_s=reference.settle_mean_s, settle_max_s=reference.settle_max_s,
                        settle_tol=reference.settle_tol, source=f"rates of {reference.source}")


# --------------------------------------------------------------------------------------
# Costs

@dataclass(frozen=True)
class Cost:
    """Time and energy of one NMF, with the parts that make them up."""

    time_s: float
    energy_j: float
    time_parts_s: dict[str, float] = field(default_factory=dict)
    energy_parts_j: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"time_s": self.time_s, "energy_j": self.energy_j, "time_parts_s": self.time_parts_s,
                "energy_parts_j": self.energy_parts_j, **self.notes}


def _cycles(t_s: float, clock_hz: float) -> int:
    return max(1, math.ceil(t_s * clock_hz - 1e-9))


def run_nmf_cycles(*, f_rows: tuple[int, int], counts: tuple[int, int], k: int, iterations: int,
                   solve_rows: tuple[int, int], solves: tuple[int, int], pulses: tuple[int, int],
                   dac_settle: int, analog_settle: int, adc_cycles: int, avg_log2: int,
                   read_settle: int, pulse_cycles: int) -> int:
    """RUN_NMF's done cycle (docs/anls-sequencer.md, "Cycles") for all live columns and no
    skipped right-hand side. Per half-step kind (H, W): the stored factor's rows, the
    right-hand sides, rows driven summed over solves, solves (retries included) and pulses,
    each per half-step of that kind. The programmer's cells cost 3 + (p + 1) R + p (1 + t_prog)."""
    read = read_settle + 2 ** avg_log2 * (adc_cycles + 1) + 2   # settle, conversions, Average, Compare
    total = 1
    for f, count, rows, n_solves, n_pulses in zip(f_rows, counts, solve_rows, solves, pulses):
        cells = f * k
        program = 1 + 3 * cells + (n_pulses + cells) * read + n_pulses * (1 + pulse_cycles) + f + 1
        solve = 2 * rows + n_solves * (5 + dac_settle + analog_settle + k * 2 ** avg_log2 * (adc_cycles + 1))
        half = (nmf_prepare_cycles(rows=f, k=k) + program + count * (nmf_scan_cycles(rows=f) + 1)
                + solve + nmf_commit_cycles(count=count, k=k) + 1)   # RHS-Next, Half-Done
        total += iterations * half
    return total


def chip_cost(workload: Workload, activity: ChipActivity, *, afe: AFEConfig | str = "rram-3bit",
              constants: ChipConstants = ChipConstants(), architecture: ChipArchitecture = SCENARIOS["paper"],
              adc_bits: int | None = None) -> Cost:
    """Time and energy of the NMF on the chip (array sized to the workload)."""
    config = resolve_afe(afe)
    c = constants
    bits = adc_bits if adc_bits is not None else (config.adc.bits or 10)
    k = workload.k
    T = workload.iterations
    conv_s = adc_conversion_s(bits, c)
    e_adc = adc_energy_j(bits, c)
    p_opamp = opamp_power_w(config.circuit.gbw_hz, c)
    dac_settle_s = config.dac.settle_time_s
    settle_s = activity.settle_mean_s if architecture.per_solve_settle else activity.settle_max_s
    solves = activity.solves
    rows_per_solve = activity.driven_rows / max(solves, 1)

    # ---- time
    clock = c.clock_hz
    t_adc = 1 + _cycles(conv_s, clock)                       # AFE latency + busy
    t_dac, t_an = _cycles(dac_settle_s, clock), _cycles(settle_s, clock)
    pulse_cycles = _cycles(config.programming.width_s + c.pulse_overhead_s, clock)
    read_settle = _cycles(c.read_settle_s, clock)
    avg = int(config.programming.reads_per_verify).bit_length() - 1
    read_cycles = read_settle + 2 ** avg * (t_adc + 1) + 2   # settle, conversions, Average, Compare
    verify_read_s = read_cycles / clock
    if architecture.parallel_converters:
        # Rows loaded in one cycle, all columns converted at once.
        per_solve_cycles = 5 + t_dac + t_an + (t_adc + 1)
        conv_window_s = conv_s
    else:
        per_solve_cycles = 2 * rows_per_solve + 5 + t_dac + t_an + k * (t_adc + 1)
        conv_window_s = k * (t_adc + 1) / clock
    solve_s = solves * per_solve_cycles / clock
    halves = 2 * T
    rhs_total = T * (workload.m + workload.n)
    digital_cycles = T * (2 * (workload.m + workload.n) * k + 2 * k          # prepare
                          + (workload.n + workload.m) * k + 2 * (k + 2))     # commits
    if not architecture.parallel_converters:
        # The RTL scans each right-hand side before its solve; with per-row DAC registers
        # the next scan overlaps the present solve.
        digital_cycles += T * (workload.n * (workload.m + 3) + workload.m * (workload.n + 3))
    digital_s = digital_cycles / clock
    cells = activity.programmed_cells
    program_s = 0.0
    if architecture.include_programming:
        program_cycles = (3 * cells + (activity.pulses + cells) * read_cycles
                          + activity.pulses * (1 + pulse_cycles) + halves * 2)
        # Row-parallel: the k cells of a row share each pulse and verify slot (the row takes
        # as long as its slowest cell; the mean is used, an optimistic bound).
        program_s = program_cycles / clock / (k if architecture.program_row_parallel else 1)
    if architecture.analog_only:
        solve_s, digital_s, program_s = solves * settle_s, 0.0, 0.0
    time_parts = {"solves": solve_s, "controller": digital_s, "programming": program_s}
    time_s = sum(time_parts.values())

    # ---- energy
    circuit = config.circuit
    g_mean = (circuit.g_offset_s + config.device.g_max_s) / 2          # levels spread over the window
    loop_s = settle_s + (0.0 if architecture.analog_only else conv_window_s)   # loop closed until the last sample
    opamps_per_solve = 2 * rows_per_solve + k                          # input inverters, row TIAs, column op-amps
    v2 = c.signal_rms_v ** 2
    # Cells carry the column outputs x_j; the row outputs carry the (small) residual.
    xbar_w = (rows_per_solve * k * g_mean + rows_per_solve * circuit.input_gain * circuit.g_unit_s) * v2
    energy = {
        "dac": activity.driven_rows * c.dac_energy_j,
        "adc": solves * k * e_adc,
        "opamps": solves * opamps_per_solve * p_opamp * loop_s,
        "crossbar": solves * xbar_w * loop_s,
        "controller": time_s * clock * c.controller_energy_per_cycle_j,
        "programming": 0.0,
    }
    if architecture.analog_only:
        energy.update(dac=0.0, adc=0.0, controller=0.0)
    if architecture.include_programming:
        amplitude = config.programming.amplitude_start_v + config.programming.amplitude_step_v * (
            activity.pulses_per_cell / 2)
        pulse_j = amplitude ** 2 * g_mean * config.programming.width_s / c.pulse_driver_efficiency
        read_j = (2 ** avg) * e_adc + p_opamp * verify_read_s + c.read_voltage_v ** 2 * g_mean * verify_read_s
        energy["programming"] = activity.pulses * pulse_j + (activity.pulses + cells) * read_j
    notes = {
        "scenario": architecture.name, "adc_bits": bits, "solves": solves, "retries": activity.retries,
        "right_hand_sides": rhs_total, "pulses": activity.pulses, "programmed_cells": cells,
        "settle_s": settle_s, "settle_mean_s": activity.settle_mean_s, "settle_max_s": activity.settle_max_s,
        "opamp_power_w": p_opamp, "adc_energy_per_conversion_j": e_adc, "adc_conversion_s": conv_s,
        "activity": activity.source,
    }
    return Cost(time_s, float(sum(energy.values())), time_parts, energy, notes)


def anls_flops(workload: Workload, nnls_iterations: int) -> tuple[float, float]:
    """(flops, bytes of R read) of one NMF by ANLS on a digital solver: per half-step the
    Gram matrix F^T F (2 f k^2; masked: one per right-hand side, 2 nnz k^2), the right-hand
    sides F^T R (2 nnz k), and a batched active-set NNLS (per right-hand side and sweep, a
    Cholesky k^3/3 and two triangular solves 2 k^2)."""
    m, n, k, nnz = workload.m, workload.n, workload.k, workload.entries
    nnls = (m + n) * nnls_iterations * (k ** 3 / 3 + 2 * k ** 2)
    if workload.dense:
        gram = 2 * (m + n) * k ** 2
    else:
        gram = 2 * 2 * nnz * k ** 2
    rhs = 2 * 2 * nnz * k
    bytes_read = 2 * nnz * (4 if workload.dense else 12)   # float32; COO index pairs when sparse
    return workload.iterations * (gram + rhs + nnls), workload.iterations * bytes_read


def gpu_cost(workload: Workload, gpu: GPUSpec = GPUSpec()) -> Cost:
    """Roofline time plus one launch overhead per dependent kernel; energy = idle power over
    the run plus (TDP - idle) / peak per flop."""
    flops, bytes_read = anls_flops(workload, gpu.nnls_iterations)
    halves = 2 * workload.iterations
    compute_s = max(flops / (gpu.peak_flops * gpu.efficiency), bytes_read / gpu.memory_bandwidth_bps)
    per_half = gpu.nnls_iterations * gpu.kernels_per_nnls_iteration
    if not gpu.batched:
        per_half *= (workload.m + workload.n) / 2
    launches = int(halves * (3 + per_half))
    launch_s = launches * gpu.launch_overhead_s
    time_s = compute_s + launch_s
    energy = {"idle": gpu.idle_w * time_s, "compute": flops * (gpu.tdp_w - gpu.idle_w) / gpu.peak_flops}
    return Cost(time_s, float(sum(energy.values())), {"compute": compute_s, "launch": launch_s}, energy,
                {"device": gpu.name, "flops": flops, "kernel_launches": launches})


def fpga_cost(workload: Workload, fpga: FPGASpec = FPGASpec()) -> Cost:
    """Operation count over the sustained MAC throughput, plus a handshake per half-step;
    energy = running board power x time."""
    flops, _ = anls_flops(workload, fpga.nnls_iterations)
    compute_s = flops / (fpga.peak_flops * fpga.efficiency)
    overhead_s = 2 * workload.iterations * fpga.half_step_overhead_s
    time_s = compute_s + overhead_s
    return Cost(time_s, fpga.board_w * time_s, {"compute": compute_s, "control": overhead_s},
                {"board": fpga.board_w * time_s}, {"device": fpga.name, "flops": flops,
                                                   "peak_flops": fpga.peak_flops})


def cpu_reference_seconds(workload: Workload, R: np.ndarray, mask: np.ndarray | None = None, *,
                          repeats: int = 1) -> float:
    """Measured wall time of the float reference ANLS (best of ``repeats``)."""
    from .nmf import anls

    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        anls(R, workload.k, iters=workload.iterations, mask=mask, ridge=workload.ridge)
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------------------
# Report

#: Assumed CPU package power while the reference runs (2 busy cores of a server CPU).
CPU_POWER_W = 30.0


def energy_report(workload: Workload, activity: ChipActivity, *, afe: AFEConfig | str = "rram-3bit",
                  scenario: str = "paper", cpu_seconds: float | None = None,
                  constants: ChipConstants = ChipConstants(), gpu: GPUSpec = GPUSpec(),
                  fpga: FPGASpec = FPGASpec()) -> dict[str, Any]:
    """Everything `anmf energy --json` writes: chip (the chosen scenario), gpu, fpga, cpu,
    the ratios, and every scenario's chip figures."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; accepted: {', '.join(SCENARIOS)}")
    chips = {name: chip_cost(workload, activity, afe=afe, constants=constants, architecture=arch)
             for name, arch in SCENARIOS.items()}
    chip = chips[scenario]
    g, f = gpu_cost(workload, gpu), fpga_cost(workload, fpga)
    report: dict[str, Any] = {
        "workload": {"name": workload.name, "m": workload.m, "n": workload.n, "k": workload.k,
                     "iterations": workload.iterations, "observed": workload.entries, "ridge": workload.ridge},
        "scenario": scenario,
        "chip": chip.as_dict(), "gpu": g.as_dict(), "fpga": f.as_dict(),
        "speedup_vs_gpu": g.time_s / chip.time_s, "energy_ratio_vs_gpu": g.energy_j / chip.energy_j,
        "speedup_vs_fpga": f.time_s / chip.time_s, "energy_ratio_vs_fpga": f.energy_j / chip.energy_j,
        "scenarios": {name: {"time_s": cost.time_s, "energy_j": cost.energy_j,
                             "speedup_vs_gpu": g.time_s / cost.time_s,
                             "energy_ratio_vs_gpu": g.energy_j / cost.energy_j,
                             "speedup_vs_fpga": f.time_s / cost.time_s,
                             "energy_ratio_vs_fpga": f.energy_j / cost.energy_j}
                      for name, cost in chips.items()},
    }
    # The published-style bracket: the circuit's response time only, against a GPU that
    # solves the NNLS problems one after the other.
    per_problem = gpu_cost(workload, replace(gpu, batched=False))
    analog = chips["analog-only"]
    report["gpu_per_problem"] = per_problem.as_dict()
    report["published_style"] = {"speedup_vs_gpu": per_problem.time_s / analog.time_s,
                                 "energy_ratio_vs_gpu": per_problem.energy_j / analog.energy_j}
    if cpu_seconds is not None:
        report["cpu"] = {"time_s": cpu_seconds, "energy_j": cpu_seconds * CPU_POWER_W, "measured": True}
    return report


# --------------------------------------------------------------------------------------
# Sweeps

def size_sweep(reference: ChipActivity, sizes: tuple[int, ...], k: int, *, iterations: int = 30,
               scenario: str = "paper", afe: AFEConfig | str = "rram-3bit") -> list[dict[str, float]]:
    """Speed-up and energy ratio against the GPU for square n x n rank-k workloads, with
    ``reference``'s rates (pulses per cell, retries, settle times)."""
    rows = []
    for size in sizes:
        workload = Workload(f"{size}x{size}:{k}", size, size, k, iterations=iterations)
        activity = activity_from_rates(workload, reference)
        chip = chip_cost(workload, activity, afe=afe, architecture=SCENARIOS[scenario])
        gpu, fpga = gpu_cost(workload), fpga_cost(workload)
        rows.append({"size": size, "chip_time_s": chip.time_s, "chip_energy_j": chip.energy_j,
                     "gpu_time_s": gpu.time_s, "gpu_energy_j": gpu.energy_j,
                     "speedup_vs_gpu": gpu.time_s / chip.time_s, "energy_ratio_vs_gpu": gpu.energy_j / chip.energy_j,
                     "speedup_vs_fpga": fpga.time_s / chip.time_s,
                     "energy_ratio_vs_fpga": fpga.energy_j / chip.energy_j})
    return rows


def adc_bits_sweep(workload: Workload, activity: ChipActivity, bits: tuple[int, ...], *,
                   scenario: str = "paper", afe: AFEConfig | str = "rram-3bit") -> list[dict[str, float]]:
    """Speed-up and energy ratio against the GPU as the ADC resolution changes (conversion
    time and energy per conversion; the counts stay those of ``activity``)."""
    gpu = gpu_cost(workload)
    rows = []
    for b in bits:
        chip = chip_cost(workload, activity, afe=afe, architecture=SCENARIOS[scenario], adc_bits=b)
        rows.append({"adc_bits": b, "chip_time_s": chip.time_s, "chip_energy_j": chip.energy_j,
                     "adc_energy_share": chip.energy_parts_j["adc"] / chip.energy_j,
                     "speedup_vs_gpu": gpu.time_s / chip.time_s, "energy_ratio_vs_gpu": gpu.energy_j / chip.energy_j})
    return rows


def write_sweep_plots(size_rows: list[dict[str, float]], bits_rows: list[dict[str, float]], out_dir: Any,
                      *, title: str = "") -> list[Any]:
    """Two PNGs in ``out_dir``: ratios vs matrix size, ratios vs ADC bits (1 = parity)."""
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rows, key, label, name in ((size_rows, "size", "matrix size n (n x n)", "energy_vs_size.png"),
                                   (bits_rows, "adc_bits", "ADC resolution (bits)", "energy_vs_adc_bits.png")):
        x = [r[key] for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, [r["speedup_vs_gpu"] for r in rows], "o-", label="speed-up vs GPU")
        ax.plot(x, [r["energy_ratio_vs_gpu"] for r in rows], "s-", label="energy ratio vs GPU")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        if key == "size":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(label)
        ax.set_ylabel("GPU / chip")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
