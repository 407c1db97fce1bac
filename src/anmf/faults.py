"""`anmf faults`: the fault-injection campaign (issue #6).

For each fault the same fixed problem (the 32 x 32 camera crop at rank 4, 5 host-driven ANLS
iterations from nndsvda on the scenario build, 32 x 8 + 2 spares, rram-3bit AFE with noise)
runs twice on a chip with that fault: with the matching feature and without it. A row holds
what the host observed (``detected``, ``corrected``: from status, error codes, fault maps,
calibration entries and quality, write-verify reports; never from the injected truth) and
the relative errors ``||R - W H||_F / ||R||_F`` of both runs (the truth scores the features).

| fault | feature |
|---|---|
| stuck cells 1 % / 5 % | spare-column repair from the fault map (``host_anls(repair=True)``) |
| dead ADC channel | CALIBRATE finds the channel's ADC entry invalid; its column moves to a spare |
| ADC / DAC offset and gain 5 % of full scale | CALIBRATE, corrections on the DAC and ADC codes |
| drift (a day between programming and the solves) | refresh: write-verify again before solving |
| an AFE that never answers | the watchdog (limit 4000 cycles vs. the largest, 65535) |

Backends are pluggable (:data:`BACKENDS`): ``model`` runs the host code on the golden model
(:class:`~anmf.host.ModelDriver`); ``rtl`` runs it on the controller RTL in cocotb (Icarus
or Verilator), one co-simulated job per NMF run (testbench/bench_faults.py), the faults
injected into the AFE model behind the AFE binding; there the stuck cells and the dead
channel meet the controller's spare-column remap and the drift REFRESH (docs/faults.md). A
row whose feature the RTL lacks has a null "with" error and the reason in ``unavailable``. On the model backend CALIBRATE is
modelled: :class:`CampaignAFE` applies its planned integration (docs/calibration.md,
"Integration plan"): ``golden_calibration`` once, then every DAC code corrected before it is
written and every ADC code after conversion, in the controller between the sequencers and
the AFE port.
"""
from __future__ import annotations

import abc
import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from anmf.host import AnalogScale, ModelDriver, Timing, host_anls
from anmf.host.driver import ChipError, ErrorCode, ProgramReport, RefreshReport
from anmf.model import calibration as cal
from anmf.model.afe import AnalogFrontEnd
from anmf.model.config import config_from_dict
from anmf.model.golden import STATUS_DELAY
from anmf.model.metrics import relative_error
from anmf.rtl_backend import SIMS

__all__ = ["FAULTS", "BACKENDS", "FaultRow", "CampaignAFE", "CampaignProblem", "run_campaign",
           "format_table", "write_json", "final_columns", "CampaignObserver",
           "inject_converter_fault"]

#: The campaign's faults, in table order.
FAULTS: tuple[str, ...] = ("stuck-1%", "stuck-5%", "dead-adc-channel", "adc-offset-gain-5%",
                           "dac-offset-gain-5%", "drift-1-day", "silent-afe")
#: The feature each fault's "with" run switches on.
FEATURES: dict[str, str] = {
    "stuck-1%": "spare-column repair",
    "stuck-5%": "spare-column repair",
    "dead-adc-channel": "calibration check + remap to a spare",
    "adc-offset-gain-5%": "calibration (ADC, DAC corrections)",
    "dac-offset-gain-5%": "calibration (ADC, DAC corrections)",
    "drift-1-day": "refresh (write-verify before solving)",
    "silent-afe": "watchdog (limit 4000 cycles)",
}
#: A fault injected at 5 % of full scale (the converters span -1 .. +1 V).
FIVE_PERCENT = 0.05
#: The dead ADC channel: physical column 1 (W's second component), reading the zero code.
DEAD_CHANNEL = 1
#: Time between programming and the solves in the drift row (s), and the device's drift
#: exponent there (the pessimistic preset's nu = 0.02 +- 0.01: rram-3bit's 0.005 moves a cell
#: by ~5 % in a day, within the write-verify tolerance).
DRIFT_INTERVAL_S = 86_400.0
DRIFT_NU = (0.02, 0.01)
#: A conversion of an AFE that never answers lasts this many cycles (beyond any limit).
SILENT_CYCLES = 1 << 40


@dataclass(frozen=True)
class FaultRow:
    """One fault: what the host observed with the feature, and both runs' relative errors
    (None where the run produced no factors)."""

    fault: str
    feature: str
    detected: bool
    corrected: bool
    rel_error_with: float | None
    rel_error_without: float | None
    #: The same problem on the fault-free chip (the target a correction aims at).
    rel_error_fault_free: float
    #: What ``detected`` and ``corrected`` were decided from (the host's observations).
    evidence: str
    #: What was injected (the truth the observations are scored against).
    injected: str
    seconds: float
    #: Why the "with" run did not happen (its feature is not in this backend), else None.
    unavailable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CampaignAFE(AnalogFrontEnd):
    """The AFE model with the campaign's injectable faults, and the calibration corrections
    as the controller will apply them.

    Args:
        dead_channel: physical column whose ADC channel reads ``dead_code`` whatever its
            input (None: every channel works).
        dead_code: the constant code of the dead channel (default: the zero code, 0 V).
        other options: :class:`~anmf.model.afe.AnalogFrontEnd`.

    :attr:`silent` (set it at any time): the ADC never ends a conversion (the golden model's
    watchdog sees a conversion longer than any limit). :meth:`install_calibration`: from then
    on every DAC code is corrected before it is written and every ADC code after conversion
    (its channel's entry; the op-amp entries are diagnostic, docs/calibration.md, "Limits").
    """

    def __init__(self, afe: Any, *, dead_channel: int | None = None,
                 dead_code: int | None = None, **options: Any):
        super().__init__(afe, **options)
        if dead_channel is not None and (isinstance(dead_channel, bool) or not isinstance(
                dead_channel, int) or not 0 <= dead_channel < self.total_cols):
            raise ValueError(f"dead_channel must be a column from 0 to {self.total_cols - 1} or "
                             f"None; got {dead_channel!r}")
        top = 2 ** self.adc_bits - 1
        if dead_code is not None and (isinstance(dead_code, bool) or not isinstance(
                dead_code, int) or not 0 <= dead_code <= top):
            raise ValueError(f"dead_code must be an ADC code from 0 to {top} or None; got "
                             f"{dead_code!r}")
        self.dead_channel = dead_channel
        self.dead_code = 2 ** (self.adc_bits - 1) if dead_code is None else dead_code
        self.silent = False
        #: How long a silent ADC holds busy on the RTL (the binding's answer needs an end).
        self.silent_busy_cycles = SILENT_CYCLES
        self.calibration: cal.CalibrationOutcome | None = None

    @property
    def adc_cycles(self) -> int:
        return SILENT_CYCLES if self.silent else super().adc_cycles

    @property
    def adc_busy_cycles(self) -> int:
        """While silent, ``adc_busy`` stays high for :attr:`silent_busy_cycles` (the AFE
        binding's answer on the RTL; the golden model reads :attr:`adc_cycles`)."""
        return self.silent_busy_cycles if self.silent else super().adc_busy_cycles

    def install_calibration(self, outcome: cal.CalibrationOutcome) -> None:
        """Correct every later DAC write and ADC conversion with ``outcome``'s entries."""
        if not isinstance(outcome, cal.CalibrationOutcome):
            raise ValueError(f"outcome must be a CalibrationOutcome; got "
                             f"{type(outcome).__name__}")
        self.calibration = outcome

    def _entry(self, kind: str, index: int) -> cal.Coefficient:
        assert self.calibration is not None
        return self.calibration.entries.get((kind, index), cal.IDENTITY)

    def write_dac(self, addr: int, code: int) -> None:
        if self.calibration is not None:
            code, _ = cal.correct_code(int(code), self._entry("dac", addr), self.dac_bits)
        super().write_dac(addr, code)

    def convert(self, mux: int, t_s: float) -> tuple[int, bool]:
        code, over = super().convert(mux, t_s)
        if mux == self.dead_channel:
            code, over = self.dead_code, False
        if self.calibration is not None:
            code, saturated = cal.correct_code(code, self._entry("adc", mux), self.adc_bits)
            over = over or saturated
        return code, over


@dataclass(frozen=True)
class CampaignProblem:
    """The fixed problem and chip of the campaign (bench_scenarios' camera scenario)."""

    size: int = 32
    rank: int = 4
    iterations: int = 5

    def data(self) -> np.ndarray:
        from anmf.testbench.bench_scenarios import anls_problem
        return anls_problem("camera", self.size, self.rank, 0)


def final_columns(solve_masks: list[int]) -> set[int]:
    """Columns enabled in the last iteration's two half-steps (the last two runs of equal
    enable masks among the solves' column enables, in order)."""
    groups: list[int] = []
    for mask in solve_masks:
        if not groups or groups[-1] != mask:
            groups.append(mask)
    return {c for mask in groups[-2:] for c in range(mask.bit_length()) if mask >> c & 1}


class CampaignObserver(abc.ABC):
    """What the campaign's host sees and decides from, and the drift it injects, for a
    :class:`~anmf.host.driver.ChipDriver` that mixes this in before its driver base (the
    model backend's driver here, the RTL's in testbench/bench_faults.py): after each
    PROGRAM_MATRIX ``drift_s`` of drift passes on the AFE model and, with ``refresh``, the
    cells are refreshed (:meth:`_refresh_after_drift`). Kept: each PROGRAM_MATRIX's error
    code, each column's failed cells in its last fault map, every solve's column enable mask,
    the refreshes' reports. The subclass calls :meth:`_start_observing` in its ``__init__``."""

    afe: CampaignAFE

    def _start_observing(self, afe: CampaignAFE, *, drift_s: float, refresh: bool) -> None:
        self.afe = afe
        self.drift_s, self.refresh = drift_s, refresh
        # ProgramReports on the model backend (its refresh), RefreshReports on the RTL
        self.refresh_reports: list[ProgramReport | RefreshReport] = []
        self.solve_masks: list[int] = []
        self.program_errors: list[str] = []
        self.failed_by_column: dict[int, int] = {}

    @abc.abstractmethod
    async def _refresh_after_drift(self, report: ProgramReport, row_mask: int,
                                   col_enable: int) -> ProgramReport:
        """Refresh the cells ``report``'s PROGRAM_MATRIX wrote, keep the refresh's report in
        ``refresh_reports``, and return the report whose fault map now stands for them."""

    async def _program_matrix(self, row_mask: int, col_enable: int) -> ProgramReport:
        report = await super()._program_matrix(row_mask, col_enable)  # type: ignore[misc]
        self.program_errors.append(report.error.name)
        if self.drift_s > 0:
            self.afe.crossbar.advance_time(self.drift_s)
            if self.refresh:
                report = await self._refresh_after_drift(report, row_mask, col_enable)
        per_column = report.fault_map.sum(axis=0)
        self.failed_by_column.update((c, int(per_column[c])) for c in report.columns)
        return report

    async def _solve(self, rhs: Any, row_mask: int, col_enable: int, mode: str) -> Any:
        self.solve_masks.append(col_enable)
        return await super()._solve(rhs, row_mask, col_enable, mode)  # type: ignore[misc]

    def final_columns(self) -> set[int]:
        """Columns enabled in the last iteration's two half-steps."""
        return final_columns(self.solve_masks)

    def failed_in_use(self) -> int:
        """Failed cells (last fault map) in the columns the last iteration used."""
        return sum(self.failed_by_column.get(c, 0) for c in self.final_columns())


class _CampaignDriver(CampaignObserver, ModelDriver):
    """ModelDriver observed as the campaign's host (:class:`CampaignObserver`); its refresh
    is a second PROGRAM_MATRIX of the same targets from the cells' present state (the
    targets are still in the controller's buffer)."""

    def __init__(self, params: Any, afe: CampaignAFE, *, drift_s: float = 0.0,
                 refresh: bool = False):
        super().__init__(params, afe)
        self.params = params
        self._start_observing(afe, drift_s=drift_s, refresh=refresh)

    async def _refresh_after_drift(self, report: ProgramReport, row_mask: int,
                                   col_enable: int) -> ProgramReport:
        refreshed = await ModelDriver._program_matrix(self, row_mask, col_enable)
        self.refresh_reports.append(refreshed)
        return refreshed

    @property
    def now_cycles(self) -> int:
        """The controller cycle in which the next command may start."""
        return self.golden._next_start_ps // self.golden.period_ps

    def calibrate_at_port(self, avg_log2: int = 2) -> cal.CalibrationOutcome:
        """The calibration as docs/calibration.md planned it (every channel and row,
        ``golden_calibration``), started in the next free cycle; its corrections are
        installed at the AFE port (every DAC and ADC code, write-verify reads included),
        unlike the controller's CALIBRATE (``ChipDriver.calibrate``: solves only)."""
        assert self.timing is not None
        afe = self.afe
        assert isinstance(afe, CampaignAFE)
        settings = cal.CalibrationSettings(
            col_mask=2 ** self.info.total_cols - 1, row_mask=2 ** self.info.rows - 1,
            avg_log2=avg_log2, cal_settle=2, dac_settle=self.timing.dac_settle,
            analog_settle=self.timing.analog_settle)
        golden = self.golden
        start_ps = golden._next_start_ps
        outcome = cal.golden_calibration(self.params, afe, settings,
                                         start_s=start_ps / 1e12)
        # The golden controller does not know CALIBRATE yet: its next command starts after it.
        golden._next_start_ps = start_ps + (outcome.done_cycle + STATUS_DELAY) * golden.period_ps
        afe.install_calibration(outcome)
        return outcome


# ---- one chip, one run ---------------------------------------------------------------------

#: Every chip of the campaign: the scenario AFE without its random stuck cells (the stuck
#: rows inject their own; the others isolate their fault).
_BASE_DEVICE = {"stuck_high_rate": 0.0, "stuck_low_rate": 0.0}


@dataclass
class _Chip:
    driver: _CampaignDriver
    afe: CampaignAFE
    scale: AnalogScale
    timing: Timing


async def _chip(problem: CampaignProblem, seed: int, *, device: dict[str, Any] | None = None,
                dead_channel: int | None = None, drift_s: float = 0.0, refresh: bool = False,
                watchdog: int | None = None) -> _Chip:
    """A configured ModelDriver on the scenario build with the given faults."""
    from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS, ScenarioChip

    afe_options = dict(DEFAULT_OPTIONS["afe"], seed=seed)
    afe_options["device"] = {**afe_options.get("device", {}), **_BASE_DEVICE, **(device or {})}
    scenario = ScenarioChip(DEFAULT_OPTIONS, afe_overrides={"device": afe_options["device"]},
                            afe_seed=seed)
    afe = CampaignAFE.from_build_params(config_from_dict(afe_options), scenario.params,
                                        dead_channel=dead_channel, **scenario.afe_options)
    driver = _CampaignDriver(scenario.params, afe, drift_s=drift_s, refresh=refresh)
    timing = scenario.timing if watchdog is None else Timing(
        adc_samples=scenario.timing.adc_samples, dac_settle=scenario.timing.dac_settle,
        analog_settle=scenario.timing.analog_settle, watchdog=watchdog)
    await driver.configure(timing=timing, programming=scenario.programming)
    return _Chip(driver, afe, AnalogScale.from_afe(afe), timing)


async def _anls(chip: _Chip, R: np.ndarray, problem: CampaignProblem,
                repair: bool = True) -> float:
    result = await host_anls(chip.driver, R, problem.rank, problem.iterations,
                             scale=chip.scale, repair=repair)
    return float(relative_error(R, result.W, result.H))


# ---- the faults ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Outcome:
    """One fault's runs: the host's observations, both errors, and the injected truth."""

    detected: bool
    corrected: bool
    rel_error_with: float | None
    rel_error_without: float | None
    evidence: str
    injected: str


def _stuck_device(fraction: float) -> dict[str, float]:
    # rram-3bit's split: 2/7 stuck high (at the ceiling), 5/7 stuck low (never formed).
    return {"stuck_high_rate": fraction * 2 / 7, "stuck_low_rate": fraction * 5 / 7}


async def _stuck_row(fraction: float, problem: CampaignProblem, seed: int,
                     R: np.ndarray) -> _Outcome:
    chip = await _chip(problem, seed, device=_stuck_device(fraction))
    with_error = await _anls(chip, R, problem, repair=True)
    faulty = sorted(c for c, n in chip.driver.failed_by_column.items() if n)
    failed_in_use = chip.driver.failed_in_use()
    without = await _chip(problem, seed, device=_stuck_device(fraction))
    without_error = await _anls(without, R, problem, repair=False)
    counters = await chip.driver.counters()
    evidence = (f"fault maps: {counters.failed_cells} failed cells over all programmings, "
                f"columns with failures {faulty}; failed cells in the columns of the last "
                f"iteration: {failed_in_use}")
    stuck = chip.afe.crossbar.stuck_mask
    injected = (f"{int(stuck.sum())} stuck cells, {int(stuck[:, :chip.driver.info.cols].sum())} "
                f"of them in the {chip.driver.info.cols} main columns")
    return _Outcome(counters.failed_cells > 0, failed_in_use == 0, with_error, without_error,
                    evidence, injected)


async def _dead_channel_row(problem: CampaignProblem, seed: int,
                            R: np.ndarray) -> _Outcome:
    chip = await _chip(problem, seed, dead_channel=DEAD_CHANNEL)
    outcome = chip.driver.calibrate_at_port()
    dead = [c for c in range(chip.driver.info.total_cols) if not outcome.entries[("adc", c)].valid]
    with_error = await _anls(chip, R, problem, repair=True)
    used = chip.driver.final_columns()
    in_use = sorted(set(dead) & used)
    without = await _chip(problem, seed, dead_channel=DEAD_CHANNEL)
    without_error = await _anls(without, R, problem, repair=False)
    evidence = (f"CALIBRATE: ADC entries invalid for channels {dead}; of them in use in the "
                f"last iteration: {in_use} (columns used: {sorted(used)})")
    return _Outcome(bool(dead), bool(dead) and not in_use, with_error, without_error, evidence,
                    f"ADC channel {DEAD_CHANNEL} reads code {chip.afe.dead_code} (0 V)")


def inject_converter_fault(afe: CampaignAFE, which: str, seed: int) -> None:
    """5 % of full scale: the ADC +50 mV and +5 % gain; each row DAC +-50 mV and +-5 %
    (signs from the seeded generator)."""
    if which == "adc":
        afe.adc.offset_v[:] = FIVE_PERCENT * afe.config.adc.v_max_v
        afe.adc.gain_error[:] = FIVE_PERCENT
        return
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(2, afe.rows))
    afe.dac.offset_v[:] = signs[0] * FIVE_PERCENT * afe.config.dac.v_max_v
    afe.dac.gain_error[:] = signs[1] * FIVE_PERCENT


#: An entry beyond these is a converter out of its data sheet (rram-3bit's are ~1 mV, 0.2 %).
_OFFSET_ALARM_LSB = 4
_GAIN_ALARM = 0.01
#: Corrected: every ADC/DAC entry valid and the check references within this (LSB) through
#: the corrections (noise on: one read's noise and the INL bow stay, docs/calibration.md).
_QUALITY_LSB = 2.0


def _converter_findings(entries: dict[tuple[str, int], cal.Coefficient], quality_lsb: float,
                        ) -> tuple[bool, bool, str]:
    """From CALIBRATE's ADC and DAC entries and quality: (detected: a valid entry beyond the
    data sheet, corrected: every entry valid and the quality within bounds, the evidence)."""
    converters = [key for key in sorted(entries) if key[0] in ("adc", "dac")]
    one = 2 ** cal.FRAC_BITS
    alarms = [key for key in converters if entries[key].valid and (
        abs(entries[key].offset) > _OFFSET_ALARM_LSB * one
        or abs(entries[key].gain / cal.GAIN_ONE - 1) > _GAIN_ALARM)]
    invalid = [key for key in converters if not entries[key].valid]
    kinds = sorted({kind for kind, _ in alarms})
    evidence = (f"CALIBRATE: {len(alarms)} entries beyond {_OFFSET_ALARM_LSB} LSB offset or "
                f"{_GAIN_ALARM:.0%} gain ({', '.join(kinds) or 'none'}), {len(invalid)} ADC/DAC "
                f"entries invalid, quality {quality_lsb:.2f} LSB")
    return bool(alarms), not invalid and quality_lsb <= _QUALITY_LSB, evidence


def _converter_injected(which: str) -> str:
    return ("ADC +50 mV, +5 % gain" if which == "adc"
            else "every row DAC +-50 mV, +-5 % gain (seeded signs)")


async def _converter_row(which: str, problem: CampaignProblem, seed: int,
                         R: np.ndarray) -> _Outcome:
    chip = await _chip(problem, seed)
    inject_converter_fault(chip.afe, which, seed)
    outcome = chip.driver.calibrate_at_port()
    detected, corrected, evidence = _converter_findings(outcome.entries,
                                                        outcome.quality / 2 ** cal.FRAC_BITS)
    with_error = await _anls(chip, R, problem)
    without = await _chip(problem, seed)
    inject_converter_fault(without.afe, which, seed)
    without_error = await _anls(without, R, problem)
    return _Outcome(detected, corrected, with_error, without_error, evidence,
                    _converter_injected(which))


async def _drift_row(problem: CampaignProblem, seed: int,
                     R: np.ndarray) -> _Outcome:
    device = {"drift_nu_mean": DRIFT_NU[0], "drift_nu_std": DRIFT_NU[1]}
    chip = await _chip(problem, seed, device=device, drift_s=DRIFT_INTERVAL_S, refresh=True)
    with_error = await _anls(chip, R, problem)
    reports = chip.driver.refresh_reports
    pulses = sum(r.pulses for r in reports)
    failed = sum(r.failed_cells for r in reports)
    without = await _chip(problem, seed, device=device, drift_s=DRIFT_INTERVAL_S)
    without_error = await _anls(without, R, problem)
    evidence = (f"refresh: {len(reports)} write-verify passes after the drift interval gave "
                f"{pulses} pulses (cells found out of tolerance), {failed} cells left failed")
    injected = (f"{DRIFT_INTERVAL_S:.0f} s between each programming and its solves, nu = "
                f"{DRIFT_NU[0]} +- {DRIFT_NU[1]} (G x {DRIFT_INTERVAL_S ** -DRIFT_NU[0]:.2f} at "
                f"the mean nu)")
    return _Outcome(pulses > 0, failed == 0, with_error, without_error, evidence, injected)


async def _silent_attempt(problem: CampaignProblem, seed: int, R: np.ndarray,
                          watchdog: int | None) -> tuple[bool, int, str]:
    """Run the NMF on an AFE that stops answering; returns (contained: the command ended with
    a timeout, the controller idle, and the next command works once the AFE answers again),
    the cycles until the failing command ended, and what happened."""
    chip = await _chip(problem, seed, watchdog=watchdog)
    driver = chip.driver
    chip.afe.silent = True
    started = driver.now_cycles
    try:
        await _anls(chip, R, problem)
        return False, driver.now_cycles - started, "the NMF ended without an error"
    except ChipError as error:
        failed_command, code = error.command, error.error
    cycles = driver.now_cycles - started
    status = await driver.status()
    # The AFE answers again (a host-side AFE reset); the next command must work.
    chip.afe.silent = False
    info = driver.info
    rhs = np.full(info.rows, 1 << (info.dac_bits - 1), dtype=np.int64)
    try:
        await driver.solve(rhs, 2 ** info.rows - 1, 1, "SOLVE")
        next_ok = (await driver.status()).error == ErrorCode.NONE
    except ChipError:
        next_ok = False
    contained = code in (ErrorCode.ADC_TIMEOUT, ErrorCode.PROGRAM_TIMEOUT) \
        and not status.busy and next_ok
    return contained, cycles, (f"{failed_command} ended with {code.name} after {cycles} cycles, "
                               f"busy={status.busy}, next SOLVE "
                               f"{'worked' if next_ok else 'failed'}")


async def _silent_row(problem: CampaignProblem, seed: int,
                      R: np.ndarray) -> _Outcome:
    with_watchdog = await _silent_attempt(problem, seed, R, None)
    # Without the feature: the largest limit the timer holds (0 is refused with BAD_TIMING,
    # so the watchdog cannot be switched off).
    largest = (await _chip(problem, seed)).driver.info.max_timer
    without_watchdog = await _silent_attempt(problem, seed, R, largest)
    evidence = (f"watchdog 4000: {with_watchdog[2]}; watchdog at its largest ({largest}, the "
                f"timer cannot be switched off): {without_watchdog[2]}")
    return _Outcome(with_watchdog[0], False, None, None, evidence,
                    "the ADC never ends a conversion (from the first command of the NMF)")


_ROWS: dict[str, Callable[..., Any]] = {
    "stuck-1%": lambda p, s, R: _stuck_row(0.01, p, s, R),
    "stuck-5%": lambda p, s, R: _stuck_row(0.05, p, s, R),
    "dead-adc-channel": _dead_channel_row,
    "adc-offset-gain-5%": lambda p, s, R: _converter_row("adc", p, s, R),
    "dac-offset-gain-5%": lambda p, s, R: _converter_row("dac", p, s, R),
    "drift-1-day": _drift_row,
    "silent-afe": _silent_row,
}


# ---- backends ---------------------------------------------------------------------------------

async def _model_rows(faults: tuple[str, ...], problem: CampaignProblem,
                      seed: int) -> list[FaultRow]:
    R = problem.data()
    baseline = await _anls(await _chip(problem, seed), R, problem)
    rows = []
    for fault in faults:
        started = time.perf_counter()
        outcome: _Outcome = await _ROWS[fault](problem, seed, R)
        rows.append(FaultRow(fault, FEATURES[fault], bool(outcome.detected),
                             bool(outcome.corrected), outcome.rel_error_with,
                             outcome.rel_error_without, baseline, outcome.evidence,
                             outcome.injected, round(time.perf_counter() - started, 2)))
    return rows


# ---- the rtl backend: cocotb runs of the controller RTL (testbench/bench_faults.py) -------



class _RtlRuns:
    """One co-simulated job per NMF run: the campaign's chip (the scenario bench at AFE seed
    ``seed``, random stuck cells off, ``device`` overrides) with the fault of ``options``."""

    def __init__(self, problem: CampaignProblem, seed: int, sim: str):
        from anmf.model.nmf import initialize

        self.problem, self.seed, self.sim = problem, seed, sim
        self.R = problem.data()
        self.W0, self.H0 = initialize(self.R, problem.rank, "nndsvda", 0)

    def scenario(self, device: dict[str, Any] | None) -> dict[str, Any]:
        from anmf.testbench.bench_scenarios import DEFAULT_OPTIONS

        afe = dict(DEFAULT_OPTIONS["afe"], seed=self.seed)
        afe["device"] = {**afe.get("device", {}), **_BASE_DEVICE, **(device or {})}
        return {**DEFAULT_OPTIONS, "afe": afe}

    def run(self, device: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """The job's result (``bench_faults.fault_run_job``'s observations)."""
        from anmf.testbench.bench_faults import BENCH
        from anmf.testbench.cosim_job import run_cosim_job

        job = run_cosim_job("anmf.testbench.bench_faults:fault_run_job", {"R": self.R},
                            {"k": self.problem.rank, "iterations": self.problem.iterations,
                             **options},
                            scenario=self.scenario(device), sim=self.sim, name="faults",
                            bench=BENCH)
        return job.result


def _rtl_stuck(runs: _RtlRuns, fraction: float) -> _Outcome:
    # With: the controller's transparent spare-column remap (the host's repair off: the two
    # do not mix, docs/fault-handling.md). Without: neither.
    device = _stuck_device(fraction)
    with_run = runs.run(device, repair=False, remap=True)
    without_run = runs.run(device, repair=False)
    failed = with_run["counters"]["failed_cells"]
    remap = with_run["remap"]
    last = with_run["program_errors"][-2:]
    evidence = (f"FAILED_CELL_COUNT {failed} over all programmings (spare trials included); "
                f"remap: {remap['count']} columns moved {remap['moved']}, {remap['spares_left']} "
                f"spares left; the last iteration's PROGRAM_MATRIX ended {', '.join(last)}")
    truth = with_run["injected"]
    injected = (f"{truth['stuck_cells']} stuck cells, {truth['stuck_in_main']} of them in the "
                f"main columns")
    return _Outcome(failed > 0, all(e == "NONE" for e in last), with_run["rel_error"],
                    without_run["rel_error"], evidence, injected)


def _calibration_entries(run: dict[str, Any]) -> dict[tuple[str, int], cal.Coefficient]:
    """CALIBRATE's entries as the job read them back from CAL_COEFF."""
    return {(kind, int(index)): cal.Coefficient(int(offset), int(gain), bool(valid))
            for kind, index, offset, gain, valid in run["calibration"]["entries"]}


def _physical_in_use(run: dict[str, Any]) -> list[int]:
    """The physical columns behind the last iteration's logical ones (the remap's map)."""
    column_map = run["remap"]["column_map"]
    return sorted(column_map[c] for c in run["final_columns"])


def _rtl_dead_channel(runs: _RtlRuns) -> _Outcome:
    # The dead channel's verify reads fail every cell of its column: the controller's remap
    # moves the column to a spare (the host's repair off). Without: no remap.
    with_run = runs.run(dead_channel=DEAD_CHANNEL, repair=False, remap=True)
    without_run = runs.run(dead_channel=DEAD_CHANNEL, repair=False)
    remap = with_run["remap"]
    last = with_run["program_errors"][-2:]
    evidence = (f"FAILED_CELL_COUNT {with_run['counters']['failed_cells']}; remap: "
                f"{remap['count']} columns moved {remap['moved']}; the last iteration's "
                f"PROGRAM_MATRIX ended {', '.join(last)} (physical columns used: "
                f"{_physical_in_use(with_run)})")
    return _Outcome(remap["count"] > 0, all(e == "NONE" for e in last), with_run["rel_error"],
                    without_run["rel_error"], evidence,
                    f"ADC channel {DEAD_CHANNEL} reads the zero code (0 V)")


def _rtl_converter(runs: _RtlRuns, which: str) -> _Outcome:
    fault = {"converter": which, "converter_seed": runs.seed}
    with_run = runs.run(calibrate=True, **fault)
    without_run = runs.run(**fault)
    detected, corrected, evidence = _converter_findings(
        _calibration_entries(with_run), with_run["calibration"]["quality_lsb"])
    return _Outcome(detected, corrected, with_run["rel_error"], without_run["rel_error"],
                    evidence, _converter_injected(which))


def _rtl_drift(runs: _RtlRuns) -> _Outcome:
    device = {"drift_nu_mean": DRIFT_NU[0], "drift_nu_std": DRIFT_NU[1]}
    with_run = runs.run(device, drift_s=DRIFT_INTERVAL_S, refresh=True)
    without_run = runs.run(device, drift_s=DRIFT_INTERVAL_S)
    refresh = with_run["refresh"]
    evidence = (f"REFRESH after the drift interval, {refresh['passes']} times: "
                f"{refresh['reprogrammed']} of {refresh['checked']} cells found out of "
                f"tolerance and re-programmed ({refresh['pulses']} pulses), "
                f"{refresh['failed_cells']} cells left failed")
    injected = (f"{DRIFT_INTERVAL_S:.0f} s between each programming and its solves, nu = "
                f"{DRIFT_NU[0]} +- {DRIFT_NU[1]}")
    return _Outcome(refresh["reprogrammed"] > 0, refresh["failed_cells"] == 0,
                    with_run["rel_error"], without_run["rel_error"], evidence, injected)


def _describe_attempt(attempt: dict[str, Any]) -> str:
    return (f"{attempt['command']} ended with {attempt['error']} {attempt['cycles']} cycles "
            f"after the NMF began, busy={attempt['busy']}, next SOLVE "
            f"{'worked' if attempt['next_solve'] else 'failed'}")


def _rtl_silent(runs: _RtlRuns) -> _Outcome:
    # None: the scenario's watchdog (4000 cycles); then the largest limit (0 is refused).
    result = runs.run(silent=True, watchdogs=[None, "max"])
    attempts = result["attempts"]
    limited = attempts[0]
    contained = limited["error"] in (ErrorCode.ADC_TIMEOUT.name,
                                     ErrorCode.PROGRAM_TIMEOUT.name) \
        and not limited["busy"] and limited["next_solve"]
    evidence = "; ".join(f"watchdog {a['watchdog']}: {_describe_attempt(a)}" for a in attempts)
    return _Outcome(contained, False, None, None, evidence,
                    "the ADC holds busy 1024 cycles beyond the watchdog limit (from the first "
                    "command of the NMF)")


_RTL_ROWS: dict[str, Callable[[_RtlRuns], _Outcome]] = {
    "stuck-1%": lambda runs: _rtl_stuck(runs, 0.01),
    "stuck-5%": lambda runs: _rtl_stuck(runs, 0.05),
    "dead-adc-channel": _rtl_dead_channel,
    "adc-offset-gain-5%": lambda runs: _rtl_converter(runs, "adc"),
    "dac-offset-gain-5%": lambda runs: _rtl_converter(runs, "dac"),
    "drift-1-day": _rtl_drift,
    "silent-afe": _rtl_silent,
}
#: Rows whose "with" run needs a feature the RTL lacks: the reason.
_RTL_UNAVAILABLE: dict[str, str] = {}


def _rtl_rows(faults: tuple[str, ...], problem: CampaignProblem, seed: int,
              sim: str) -> list[FaultRow]:
    runs = _RtlRuns(problem, seed, sim)
    baseline = runs.run()["rel_error"]
    rows = []
    for fault in faults:
        started = time.perf_counter()
        outcome = _RTL_ROWS[fault](runs)
        rows.append(FaultRow(fault, FEATURES[fault], bool(outcome.detected),
                             bool(outcome.corrected), outcome.rel_error_with,
                             outcome.rel_error_without, baseline, outcome.evidence,
                             outcome.injected, round(time.perf_counter() - started, 2),
                             _RTL_UNAVAILABLE.get(fault)))
    return rows


#: Backend name -> the function producing the rows: (faults, problem, seed, sim).
BACKENDS: dict[str, Callable[[tuple[str, ...], CampaignProblem, int, str], list[FaultRow]]] = {
    "model": lambda faults, problem, seed, sim: asyncio.run(_model_rows(faults, problem, seed)),
    "rtl": _rtl_rows,
}


def run_campaign(backend: str = "model", *, faults: tuple[str, ...] | None = None,
                 seed: int = 11, problem: CampaignProblem | None = None,
                 sim: str = "verilator") -> list[FaultRow]:
    """The campaign's rows for ``faults`` (default: all of :data:`FAULTS`).

    Args:
        backend: "model" (golden model) or "rtl" (cocotb runs of the controller RTL,
            testbench/bench_faults.py; rows whose feature the RTL lacks have a null "with"
            error and say why in ``unavailable``).
        seed: the AFE's seed (devices, stuck-cell placement, converter errors, noise) and
            the DAC fault's signs.
        sim: the rtl backend's simulator, "verilator" or "icarus".
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {', '.join(BACKENDS)}")
    faults = FAULTS if faults is None else tuple(faults)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise ValueError(f"unknown faults {unknown}; accepted: {', '.join(FAULTS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    if sim not in SIMS:
        raise ValueError(f"unknown simulator {sim!r}; accepted: {', '.join(SIMS)}")
    return BACKENDS[backend](faults, problem or CampaignProblem(), seed, sim)


def _number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def format_table(rows: list[FaultRow]) -> str:
    """A Markdown table of the rows (docs/faults.md carries one)."""
    lines = ["| fault | feature | detected | corrected | rel. error with | without | "
             "fault-free |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.fault} | {r.feature} | {'yes' if r.detected else 'no'} | "
                     f"{'yes' if r.corrected else 'no'} | {_number(r.rel_error_with)} | "
                     f"{_number(r.rel_error_without)} | {_number(r.rel_error_fault_free)} |")
    return "\n".join(lines)


def write_json(rows: list[FaultRow], path: str | Path, *, backend: str, seed: int,
               problem: CampaignProblem | None = None) -> None:
    """``{"backend", "seed", "problem", "rows"}``: the rows as objects with
    :class:`FaultRow`'s keys (``fault``, ``detected``, ``corrected``, ``rel_error_with``,
    ``rel_error_without``, ...; a run without factors has null errors)."""
    payload = {"backend": backend, "seed": seed,
               "problem": asdict(problem or CampaignProblem()),
               "rows": [r.to_dict() for r in rows]}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
