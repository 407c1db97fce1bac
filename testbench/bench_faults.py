"""The fault campaign's RTL runs (``anmf faults --backend rtl``, docs/faults.md).

One co-simulated host job per run (``anmf.testbench.cosim_job.run_cosim_job`` with
:class:`FaultBench`): the controller RTL, the host driver over AXI4-Lite, and the campaign's
AFE model (:class:`anmf.faults.CampaignAFE`, the scenario AFE with injectable faults) bound to
the AFE port. :func:`fault_run_job` injects one fault, runs the campaign's NMF
(``host_anls``) with or without the feature, and returns what the host observed (fault maps,
counters, the columns the solves enabled, status and error codes, CALIBRATE's entries and
quality) next to the relative error; ``anmf.faults`` decides ``detected`` and ``corrected`` from those observations.

Faults given in the job's options (stuck cells and the drift exponent come through the
scenario's AFE configuration, the device section):

- ``dead_channel``: that column's ADC channel reads the zero code;
- ``converter`` "adc" / "dac": the ADC or each row DAC off by 5 % of full scale in offset
  and gain (``anmf.faults.inject_converter_fault``);
- ``drift_s``: that much drift after every PROGRAM_MATRIX, before the solves; with
  ``refresh`` a REFRESH of the same cells follows (write-verify of those out of tolerance);
- ``silent``: the ADC stops ending conversions (busy stays high 1024 cycles past the
  watchdog limit), from the first command of the NMF; the job then waits until the AFE
  answers again and checks that the next SOLVE works.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from cocotb.triggers import ClockCycles

from anmf.faults import CampaignAFE, CampaignObserver, inject_converter_fault
from anmf.host import AnalogScale, Timing, host_anls
from anmf.host.driver import (CalibrationReport, ChipDriver, ChipError, Corrections, ErrorCode,
                              ProgramReport, RefreshReport, RemapState)
from anmf.model.config import config_from_dict
from anmf.model.metrics import relative_error
from anmf.testbench.afe_binding import AFEBinding
from anmf.testbench.bench_scenarios import ScenarioBench
from anmf.testbench.scoreboard import CheckedDriver

__all__ = ["FaultBench", "ObservingDriver", "fault_run_job", "BENCH"]

#: The bench class of the campaign's jobs, as ``run_cosim_job(bench=...)`` takes it.
BENCH = "anmf.testbench.bench_faults:FaultBench"


class FaultBench(ScenarioBench):
    """The scenario bench with :class:`~anmf.faults.CampaignAFE` (the same configuration,
    seed and options) bound to the DUT instead of the plain AFE model."""

    def __init__(self, dut: Any):
        super().__init__(dut)
        self.afe = CampaignAFE.from_build_params(config_from_dict(self.options["afe"]),
                                                 self.params, **self.afe_options)
        self.binding = AFEBinding(dut, self.afe, self.params, clock=dut.clk)
        self.scale = AnalogScale.from_afe(self.afe)
        # No scoreboards: a faulty chip is meant to miss them; the job scores the NMF.
        self.checked = CheckedDriver(self.driver, self.afe.crossbar.effective_conductance_s,
                                     solves=None, programs=None)


class ObservingDriver(CampaignObserver, CheckedDriver):
    """The RTL's driver as the campaign's host uses it: every call forwarded, observed as
    :class:`~anmf.faults.CampaignObserver` keeps it (drift after each PROGRAM_MATRIX; the
    refresh is the controller's REFRESH of the same cells)."""

    def __init__(self, inner: ChipDriver, afe: CampaignAFE, *, drift_s: float = 0.0,
                 refresh: bool = False):
        super().__init__(inner, afe.crossbar.effective_conductance_s, solves=None,
                         programs=None)
        self._start_observing(afe, drift_s=drift_s, refresh=refresh)

    async def _refresh_after_drift(self, report: ProgramReport, row_mask: int,
                                   col_enable: int) -> ProgramReport:
        self.refresh_reports.append(await self.inner.refresh(row_mask, col_enable))
        return report

    async def _refresh(self, row_mask: int, col_enable: int) -> RefreshReport:
        return await self.inner.refresh(row_mask, col_enable)

    async def _set_remap(self, enable: bool, clear: bool) -> None:
        await self.inner.set_remap(enable, clear=clear)

    async def _remap_state(self) -> RemapState:
        return await self.inner.remap_state()

    async def _calibrate(self, row_mask: int, col_enable: int,
                         cal_settle: int) -> CalibrationReport:
        return await self.inner.calibrate(row_mask, col_enable, cal_settle=cal_settle)

    async def _set_corrections(self, corrections: Corrections) -> None:
        await self.inner.set_corrections(corrections)


#: Samples averaged per calibration point (as the model backend's calibration).
CALIBRATION_SAMPLES = 4


async def _calibrate(bench: FaultBench, driver: ObservingDriver) -> dict[str, Any]:
    """CALIBRATE every row DAC, ADC channel and op-amp (4 samples a point), the ADC and DAC
    corrections on (the op-amp one off, docs/calibration.md); what the host read back."""
    info, timing = driver.info, bench.timing
    await driver.configure(timing=Timing(
        adc_samples=CALIBRATION_SAMPLES, dac_settle=timing.dac_settle,
        analog_settle=timing.analog_settle, watchdog=timing.watchdog))
    report = await driver.calibrate(2 ** info.rows - 1, 2 ** info.total_cols - 1)
    await driver.configure(timing=timing)
    await driver.set_corrections(Corrections(adc=True, dac=True, opamp=False))
    return {"error": report.error.name, "quality_lsb": report.quality_lsb,
            "failed_count": report.failed_count,
            "entries": [[kind, index, c.offset, c.gain, bool(c.valid)]
                        for (kind, index), c in sorted(report.coefficients.items())]}


async def _silent_attempt(bench: FaultBench, driver: ObservingDriver, R: np.ndarray, k: int,
                          iterations: int) -> dict[str, Any]:
    """The NMF on an ADC that stops answering: which command ended how, after how many
    cycles, the status then, and whether a SOLVE works once the AFE answers again."""
    afe = bench.afe
    info = driver.info
    assert driver.timing is not None
    # Busy stays high well past the watchdog limit; then the conversion ends (the AFE
    # recovers), so that the next command can be tried.
    afe.silent_busy_cycles = driver.timing.watchdog + 1024
    afe.silent = True
    started = driver.cycle_counter()
    outcome: dict[str, Any] = {"command": None, "error": None}
    try:
        await host_anls(driver, R, k, iterations, scale=bench.scale)
    except ChipError as error:
        outcome.update(command=error.command, error=error.error.name)
    outcome["cycles"] = driver.cycle_counter() - started
    status = await driver.status()
    outcome["busy"] = bool(status.busy)
    outcome["status_error"] = status.error.name
    # The host waits out the stalled conversion (an AFE reset would do the same), then the
    # next command must work.
    await ClockCycles(bench.dut.clk, afe.silent_busy_cycles)
    afe.silent = False
    rhs = np.full(info.rows, 1 << (info.dac_bits - 1), dtype=np.int64)
    try:
        await driver.solve(rhs, 2 ** info.rows - 1, 1, "SOLVE")
        outcome["next_solve"] = (await driver.status()).error == ErrorCode.NONE
    except ChipError:
        outcome["next_solve"] = False
    return outcome


async def fault_run_job(bench: FaultBench, inputs: dict[str, np.ndarray],
                        options: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One campaign run on the RTL. Inputs ``R``; options ``k``, ``iterations``, ``repair``
    (host spare-column repair), ``remap`` (the controller's spare-column remap on, cleared),
    ``calibrate`` (CALIBRATE before the NMF, corrections on),
    ``dead_channel``, ``converter`` ("adc", "dac" or None) with
    ``converter_seed``, ``drift_s``, ``refresh``, ``silent`` with ``watchdogs`` (one NMF
    attempt per watchdog limit, in order: cycles, "max" for the largest, None for the
    scenario's)."""
    R = inputs["R"]
    k, iterations = int(options["k"]), int(options["iterations"])
    afe = bench.afe
    inner = bench.driver
    driver = ObservingDriver(inner, afe, drift_s=float(options.get("drift_s", 0.0)),
                             refresh=bool(options.get("refresh", False)))
    driver.cycle_counter = inner.cycle_counter
    await driver.identify()
    await driver.configure(timing=bench.timing, programming=bench.programming)
    if options.get("dead_channel") is not None:
        afe.dead_channel = int(options["dead_channel"])
    if options.get("converter"):
        inject_converter_fault(afe, options["converter"], int(options["converter_seed"]))
    result: dict[str, Any] = {"max_timer": driver.info.max_timer}
    if options.get("calibrate"):
        result["calibration"] = await _calibrate(bench, driver)
    outputs: dict[str, np.ndarray] = {}
    if options.get("silent"):
        attempts = []
        for watchdog in options["watchdogs"]:
            limit = driver.info.max_timer if watchdog == "max" else watchdog
            timing = bench.timing if limit is None else Timing(
                adc_samples=bench.timing.adc_samples, dac_settle=bench.timing.dac_settle,
                analog_settle=bench.timing.analog_settle, watchdog=int(limit))
            await driver.configure(timing=timing)
            attempts.append({"watchdog": timing.watchdog,
                             **await _silent_attempt(bench, driver, R, k, iterations)})
        result["attempts"] = attempts
        return outputs, result
    if options.get("remap"):
        await driver.set_remap(True, clear=True)
    started = driver.cycle_counter()
    nmf = await host_anls(driver, R, k, iterations, scale=bench.scale,
                          repair=bool(options.get("repair", True)))
    counters = await driver.counters()
    error = float(relative_error(R, nmf.W, nmf.H))
    if math.isnan(error):
        raise AssertionError("the NMF's relative error is NaN")
    used = driver.final_columns()
    result.update(
        rel_error=error, cycles=driver.cycle_counter() - started,
        counters={"solves": counters.solves, "pulses": counters.pulses,
                  "over_range": counters.over_range, "failed_cells": counters.failed_cells},
        failed_by_column={str(c): n for c, n in sorted(driver.failed_by_column.items())},
        final_columns=sorted(used),
        failed_in_use=driver.failed_in_use(),
        program_errors=driver.program_errors,
        refresh={"passes": len(driver.refresh_reports),
                 "checked": sum(r.checked for r in driver.refresh_reports),
                 "reprogrammed": sum(r.reprogrammed for r in driver.refresh_reports),
                 "pulses": sum(r.pulses for r in driver.refresh_reports),
                 "failed_cells": sum(r.failed for r in driver.refresh_reports)},
        # The injected truth, for the row's `injected` text only.
        injected={"stuck_cells": int(afe.crossbar.stuck_mask.sum()),
                  "stuck_in_main": int(afe.crossbar.stuck_mask[:, :driver.info.cols].sum())})
    if options.get("remap"):
        remap = await driver.remap_state()
        result["remap"] = {"count": remap.count, "spares_left": remap.spares_left,
                           "moved": {str(c): p for c, p in remap.remapped.items()
                                     if c < driver.info.cols},
                           "column_map": list(remap.column_map)}
    outputs.update(W=nmf.W, H=nmf.H)
    return outputs, result
