"""REFRESH and the transparent spare-column remap through the controller (amaranth.sim): the
AFE model (deterministic rram-3bit with stuck or drifting cells) behind the AFE port, the host
over AXI4-Lite, and the golden model's GoldenController.program_command / refresh / solve on a
twin AFE for the same commands at the same cycles: fault map, counters, STATUS, done cycles and
results bit for bit. Also the drift timer's interrupt, the map's clear, and a build without it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from amaranth.sim import Simulator

import test_controller as tc   # the controller bench and its helpers (module import: no test collected)
from model_afe import ModelAFE
from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.column_remap import ColumnRemap
from anmf.hdl.controller import STATUS_DELAY, Controller
from anmf.hdl.params import BuildParams
from anmf.hdl.registers import REFRESH_TICK_CYCLES, build_register_map
from anmf.hdl.regmap_export import host_constants
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import preset
from anmf.model.formats import PICOSECONDS_PER_SECOND, ProgramSettings, window_codes
from anmf.model.golden import Error, GoldenController


def tc_run(coroutine):
    import asyncio
    return asyncio.run(coroutine)

PARAMS = BuildParams(rows=8, cols=3, spare=2, avg_max_log2=2)
SETTINGS = ProgramSettings(tolerance=6, amp_start=100, amp_step=5, amp_max=200, pulse_width=10,
                           pulse_budget=20, avg_log2=0, read_settle=16)
WATCHDOG = 200
#: Bus values for SETTINGS and the solve timing.
SETUP = {"TIMING": 1, "WATCHDOG": WATCHDOG, "DAC_SETTLE": 3, "ANALOG_SETTLE": 20, "READ_SETTLE": 16,
         "PROGRAM_TOLERANCE": 6, "PROGRAM_PULSE": 10, "PROGRAM_PULSES": 20}


def model_afe(seed: int, **device: Any) -> AnalogFrontEnd:
    """rram-3bit, deterministic, 30 ns ADC; ``device`` overrides (stuck rates, drift)."""
    config = preset("rram-3bit").replace(seed=seed)
    config = config.replace(adc=config.adc.replace(conversion_time_s=30e-9),
                            device=config.device.replace(**device))
    return AnalogFrontEnd.from_build_params(config, PARAMS, deterministic=True)


#: Seeds whose stuck cells (stuck-low rate 4 %) sit in column 2 only (seed 7), or in column 2
#: and spare 3 (seed 5): found by listing crossbar.stuck_mask per seed.
STUCK = {"stuck_high_rate": 0.0, "stuck_low_rate": 0.04}


def targets_for(afe: AnalogFrontEnd, seed: int) -> np.ndarray:
    """Target codes in the middle of the conductance window, for every cell."""
    offset, span = window_codes(g_offset_s=afe.config.circuit.g_offset_s,
                                g_max_s=afe.config.device.g_max_s,
                                full_scale_s=afe.read_full_scale_s, bits=afe.adc_bits)
    rng = np.random.default_rng(seed)
    return rng.integers(offset + span // 3, offset + 2 * span // 3, (PARAMS.rows, PARAMS.total_cols))


@dataclass
class ModelBench(tc.Bench):
    """tc.Bench with the AFE model behind the AFE port instead of the stand-in."""

    model: AnalogFrontEnd | None = None

    def __post_init__(self) -> None:
        assert self.model is not None
        self.dut = Controller(self.params)
        self.regs = host_constants(build_register_map(self.params))
        self.binding = ModelAFE(self.model, self.dut.afe, self.params, strict=True)
        self.trace = []
        self.sim = Simulator(self.dut)
        self.sim.add_clock(self.model.period_ps / PICOSECONDS_PER_SECOND)
        self.sim.add_process(self.binding.process)
        self.sim.add_process(self._monitor)

    async def wait_done(self, ctx, max_polls: int = 20_000) -> dict[str, int]:
        return await super().wait_done(ctx, max_polls)

    def start_s(self, cycle: int) -> float:
        return cycle * self.model.period_ps / PICOSECONDS_PER_SECOND

    async def configure(self, ctx, targets: np.ndarray, **values: int) -> None:
        await self.write_words(ctx, "TARGET", targets.ravel())
        await self.setup(ctx, **(SETUP | values))
        await self.write(ctx, "PROGRAM_AMPLITUDE", start=SETTINGS.amp_start, step=SETTINGS.amp_step)
        await self.write(ctx, "PROGRAM_AMPLITUDE_MAX", max=SETTINGS.amp_max)

    async def counters(self, ctx) -> dict[str, int]:
        return {name: (await self.read(ctx, name))["count"]
                for name in ("PULSE_COUNT", "FAILED_CELL_COUNT", "REMAP_COUNT")}


def golden_for(afe: AnalogFrontEnd, targets: np.ndarray) -> GoldenController:
    golden = GoldenController(PARAMS, afe.twin())
    golden.load_targets(targets)
    return golden


def map_words(golden: GoldenController) -> list[int]:
    return [physical | (int(physical != logical) << 8) for logical, physical in enumerate(golden.column_map)]


ALL_ROWS = (1 << PARAMS.rows) - 1
MAIN = (1 << PARAMS.cols) - 1


@pytest.mark.parametrize("seed, remaps, spares_left", [(7, [(2, 3)], 1), (5, [(2, 4)], 0)])
def test_program_matrix_remaps_a_column_with_stuck_cells_and_solves_agree_with_the_golden_model(
        seed, remaps, spares_left):
    afe = model_afe(seed, **STUCK)
    stuck_cols = sorted(set(np.flatnonzero(afe.crossbar.stuck_mask.any(axis=0))))
    targets = targets_for(afe, seed)
    rhs = np.random.default_rng(seed).integers(PARAMS.dac_zero_code, PARAMS.dac_zero_code + 200, PARAMS.rows)
    bench = ModelBench(PARAMS, model=afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.configure(ctx, targets, REMAP_CONTROL=1, COL_ENABLE=MAIN)
        seen["map_before"] = await bench.read_words(ctx, "REMAP_MAP")
        seen["program"], seen["program_start"] = await bench.command(ctx, Opcode.PROGRAM_MATRIX)
        seen["program_cycles"] = bench.status_cycles(seen["program_start"])
        seen["faults"] = await bench.read_words(ctx, "FAULT_MAP")
        seen["map"] = await bench.read_words(ctx, "REMAP_MAP")
        seen["spares"] = await bench.read(ctx, "REMAP_STATUS")
        seen["irq"] = await bench.read(ctx, "PROG_IRQ")
        seen["counters"] = await bench.counters(ctx)
        await bench.write_words(ctx, "RHS", rhs)
        seen["solve"], seen["solve_start"] = await bench.command(ctx, Opcode.SOLVE)
        seen["results"] = await bench.read_words(ctx, "RESULTS")

    bench.run(testbench)
    golden = golden_for(afe, targets)
    golden.remap_enabled = True
    program = golden.program_command(SETTINGS, row_mask=ALL_ROWS, col_mask=MAIN, watchdog_limit=WATCHDOG,
                                     start_s=bench.start_s(seen["program_start"]))
    golden.rhs[:] = rhs
    solve = golden.solve(Mode.SOLVE, row_mask=ALL_ROWS, col_mask=MAIN, avg_log2=0, dac_settle=3,
                         analog_settle=20, watchdog_limit=WATCHDOG, start_s=bench.start_s(seen["solve_start"]))

    assert 2 in stuck_cols, f"seed {seed} should have stuck cells in column 2: {stuck_cols}"
    assert seen["map_before"] == [c for c in range(PARAMS.total_cols)], "identity map after reset"
    assert list(program.remaps) == remaps
    assert program.error == Error.NONE and seen["program"] == tc.status_word(ErrorCode.NONE)
    assert seen["program_cycles"] == program.done_cycle + STATUS_DELAY
    assert seen["faults"] == [int(w) for w in golden.fault_map]
    assert any(seen["faults"][r] >> 2 & 1 for r in range(PARAMS.rows)), "physical column 2's failures stay in FAULT_MAP"
    assert seen["map"] == map_words(golden)
    assert seen["map"][2] == remaps[-1][1] | 1 << 8
    assert seen["spares"] == {"spares_left": spares_left} == {"spares_left": golden.spares_left}
    assert seen["irq"]["remap"] == 1
    assert seen["counters"] == {"PULSE_COUNT": program.pulse_count,
                                "FAILED_CELL_COUNT": sum(c.failed for c in program.cells),
                                "REMAP_COUNT": len(remaps)}
    assert solve.error == Error.NONE and seen["solve"] == tc.status_word(ErrorCode.NONE)
    assert seen["results"][:PARAMS.cols] == [int(golden.results[c]) for c in range(PARAMS.cols)]
    assert seen["results"][:PARAMS.cols] == [solve.words[c] for c in range(PARAMS.cols)]


def test_a_timeout_after_a_remap_reports_the_physical_cell_and_column():
    # The timeout's detail is the physical cell (READ_CELL) or column (SOLVE) the conversion used,
    # whatever the remap's translation and the record's timing: the record keeps the
    # logical column and the remap translates it after the register (docs/synthesis.md E47).
    seed = 7
    afe = model_afe(seed, **STUCK)
    targets = targets_for(afe, seed)
    bench = ModelBench(PARAMS, model=afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.configure(ctx, targets, REMAP_CONTROL=1, COL_ENABLE=MAIN)
        seen["program"], _ = await bench.command(ctx, Opcode.PROGRAM_MATRIX)
        seen["map"] = await bench.read_words(ctx, "REMAP_MAP")
        await bench.setup(ctx, WATCHDOG=1, COL_ENABLE=0b100)   # every conversion times out
        seen["read"], _ = await bench.command(ctx, Opcode.READ_CELL, row=5, col=2)
        seen["solve"], _ = await bench.command(ctx, Opcode.SOLVE)

    bench.run(testbench)
    assert seen["program"] == tc.status_word(ErrorCode.NONE)
    assert seen["map"][2] == 3 | 1 << 8, "logical column 2 on spare 3"
    assert seen["read"] == tc.status_word(ErrorCode.ADC_TIMEOUT, 5 * PARAMS.total_cols + 3)
    assert seen["solve"] == tc.status_word(ErrorCode.ADC_TIMEOUT, 3)


def test_without_the_remap_enabled_program_matrix_ends_cells_failed_and_keeps_the_map():
    seed = 7
    afe = model_afe(seed, **STUCK)
    targets = targets_for(afe, seed)
    bench = ModelBench(PARAMS, model=afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.configure(ctx, targets, COL_ENABLE=MAIN)
        seen["program"], seen["start"] = await bench.command(ctx, Opcode.PROGRAM_MATRIX)
        seen["map"] = await bench.read_words(ctx, "REMAP_MAP")
        seen["counters"] = await bench.counters(ctx)

    bench.run(testbench)
    golden = golden_for(afe, targets)
    program = golden.program_command(SETTINGS, row_mask=ALL_ROWS, col_mask=MAIN, watchdog_limit=WATCHDOG,
                                     start_s=bench.start_s(seen["start"]))
    assert program.error == Error.CELLS_FAILED and program.remaps == ()
    assert seen["program"] == tc.status_word(ErrorCode.CELLS_FAILED, program.failed_count)
    assert seen["map"] == list(range(PARAMS.total_cols))
    assert seen["counters"]["REMAP_COUNT"] == 0
    assert seen["counters"]["PULSE_COUNT"] == program.pulse_count


def test_refresh_reprograms_the_drifted_cells_and_its_counts_equal_the_golden_models():
    seed = 3
    drift = {"stuck_high_rate": 0.0, "stuck_low_rate": 0.0, "drift_nu_mean": 0.05, "drift_nu_std": 0.02}
    afe = model_afe(seed, **drift)
    targets = targets_for(afe, seed)
    bench = ModelBench(PARAMS, model=afe)
    seen: dict[str, Any] = {}
    day = 86_400.0

    async def testbench(ctx):
        await bench.configure(ctx, targets, COL_ENABLE=MAIN)
        seen["program"], seen["program_start"] = await bench.command(ctx, Opcode.PROGRAM_MATRIX)
        seen["fresh"], seen["fresh_start"] = await bench.command(ctx, Opcode.REFRESH)
        seen["fresh_result"] = await bench.read(ctx, "REFRESH_RESULT")
        afe.crossbar.advance_time(day)
        seen["refresh"], seen["refresh_start"] = await bench.command(ctx, Opcode.REFRESH)
        seen["refresh_cycles"] = bench.status_cycles(seen["refresh_start"])
        seen["result"] = await bench.read(ctx, "REFRESH_RESULT")
        seen["failed"] = await bench.read(ctx, "REFRESH_FAILED")
        seen["counters"] = await bench.counters(ctx)

    bench.run(testbench)
    golden = golden_for(afe, targets)
    program = golden.program_command(SETTINGS, row_mask=ALL_ROWS, col_mask=MAIN, watchdog_limit=WATCHDOG,
                                     start_s=bench.start_s(seen["program_start"]))
    fresh = golden.refresh(SETTINGS, row_mask=ALL_ROWS, col_mask=MAIN, watchdog_limit=WATCHDOG,
                           start_s=bench.start_s(seen["fresh_start"]))
    golden.afe.crossbar.advance_time(day)
    refresh = golden.refresh(SETTINGS, row_mask=ALL_ROWS, col_mask=MAIN, watchdog_limit=WATCHDOG,
                             start_s=bench.start_s(seen["refresh_start"]))

    cells = PARAMS.rows * PARAMS.cols
    assert program.error == fresh.error == refresh.error == Error.NONE
    assert seen["fresh_result"] == {"checked": cells, "reprogrammed": fresh.reprogrammed}
    assert fresh.reprogrammed == 0 and fresh.pulse_count == 0, "right after programming nothing drifted"
    assert refresh.reprogrammed > cells // 2, "a day at nu = 0.05 moves most cells out of tolerance"
    assert seen["refresh"] == tc.status_word(ErrorCode.NONE)
    assert seen["refresh_cycles"] == refresh.done_cycle + STATUS_DELAY
    assert seen["result"] == {"checked": cells, "reprogrammed": refresh.reprogrammed}
    assert seen["failed"] == {"cells": refresh.failed_count} == {"cells": 0}
    assert seen["counters"]["PULSE_COUNT"] == program.pulse_count + refresh.pulse_count


def test_refresh_due_interrupt_rises_interval_ticks_after_the_last_programming():
    params = tc.SMALL
    bench = tc.Bench(params, dict(pulse_divisor=2))
    seen: dict[str, Any] = {}
    interval = 2

    async def testbench(ctx):
        await bench.setup(ctx, ROW_MASK=1, COL_ENABLE=1, REFRESH_INTERVAL=interval)
        await bench.write(ctx, "PROG_IRQ", refresh_due_enable=1)
        seen["before"] = await bench.read(ctx, "REFRESH_ELAPSED")
        status, start = await bench.command(ctx, Opcode.REFRESH)
        end = start + bench.status_cycles(start) - STATUS_DELAY   # the REFRESH's done cycle
        seen["status"] = status
        while not ctx.get(bench.dut.irq):
            await ctx.tick()
        seen["irq_cycle"], seen["end"] = bench.cycle, end
        seen["elapsed"] = await bench.read(ctx, "REFRESH_ELAPSED")
        seen["pending"] = await bench.read(ctx, "PROG_IRQ")
        await bench.write(ctx, "PROG_IRQ", refresh_due=1, refresh_due_enable=1)
        seen["irq_after_clear"] = ctx.get(bench.dut.irq)

    bench.run(testbench)
    assert seen["before"] == {"ticks": 0}, "the timer waits for the first programming"
    assert seen["status"]["error"] == ErrorCode.NONE.value
    # The timer restarts two cycles after done (registered); refresh_due is set at the end of
    # the interval-th tick and the line follows one cycle later.
    assert seen["irq_cycle"] - seen["end"] == interval * REFRESH_TICK_CYCLES + 2
    assert seen["elapsed"] == {"ticks": interval}
    assert seen["pending"]["refresh_due"] == 1 and seen["irq_after_clear"] == 0


def test_remap_clear_restores_the_identity_and_a_build_without_it_refuses_refresh():
    seed = 7
    afe = model_afe(seed, **STUCK)
    targets = targets_for(afe, seed)
    bench = ModelBench(PARAMS, model=afe)
    seen: dict[str, Any] = {}

    async def testbench(ctx):
        await bench.configure(ctx, targets, REMAP_CONTROL=1, COL_ENABLE=MAIN)
        await bench.command(ctx, Opcode.PROGRAM_MATRIX)
        seen["map"] = await bench.read_words(ctx, "REMAP_MAP")
        await bench.write(ctx, "REMAP_CONTROL", enable=1, clear=1)
        seen["cleared"] = await bench.read_words(ctx, "REMAP_MAP")
        seen["spares"] = await bench.read(ctx, "REMAP_STATUS")
        seen["control"] = await bench.read(ctx, "REMAP_CONTROL")

    bench.run(testbench)
    assert seen["map"] != list(range(PARAMS.total_cols))
    assert seen["cleared"] == list(range(PARAMS.total_cols))
    assert seen["spares"] == {"spares_left": PARAMS.spare}
    assert seen["control"] == {"enable": 1, "clear": 0}

    plain = BuildParams(rows=16, cols=4, spare_remap=False)
    bench = tc.Bench(plain)
    offsets = {name: build_register_map(tc.SMALL)[name].offset for name in ("REMAP_CONTROL", "REMAP_MAP")}
    seen.clear()

    async def refuse(ctx):
        await bench.setup(ctx)
        seen["status"], _ = await bench.command(ctx, Opcode.REFRESH)
        seen["answers"] = [(await bench.host(ctx).read(offset))[1] for offset in offsets.values()]

    bench.run(refuse)
    assert seen["status"] == tc.status_word(ErrorCode.UNKNOWN_OPCODE, Opcode.REFRESH.value)
    assert all(answer == tc.Response.SLVERR for answer in seen["answers"])
    assert bench.dut.remap is None


def test_spare_remap_flag_and_the_remap_block_are_validated():
    with pytest.raises(ValueError, match=r"^spare_remap must be True or False \(or 1 or 0\), got 'yes'$"):
        BuildParams(spare_remap="yes")
    assert BuildParams(spare_remap=0).spare_remap is False
    with pytest.raises(TypeError, match=r"^params must be a BuildParams, got 3$"):
        ColumnRemap(3)


def test_register_driver_and_model_driver_give_the_same_refresh_and_remap_reports():
    """ChipDriver.set_remap / program_matrix / refresh / remap_state over the bus on the RTL and on
    the model backend (golden model + twin AFE), the same sequence: equal reports."""
    from test_host_driver import AmaranthBus
    from anmf.host import ModelDriver, RefreshReport, RegisterDriver, RemapState, Timing

    seed = 7
    afe = model_afe(seed, **STUCK, drift_nu_mean=0.05, drift_nu_std=0.02)
    targets = targets_for(afe, seed)[:, :PARAMS.cols]
    timing = Timing(adc_samples=1, dac_settle=3, analog_settle=20, watchdog=WATCHDOG)
    day = 86_400.0

    async def sequence(driver, advance) -> dict[str, Any]:
        await driver.configure(timing=timing, programming=SETTINGS)
        await driver.write_targets(targets)
        out = {"initial": await driver.remap_state()}
        await driver.set_remap(True)
        program = await driver.program_matrix(ALL_ROWS, MAIN)
        out["program"] = (program.error, program.pulses)
        out["state"] = await driver.remap_state()
        advance(day)
        out["refresh"] = await driver.refresh(ALL_ROWS, MAIN)
        out["counters"] = await driver.counters()
        return out

    rtl: dict[str, Any] = {}
    bench = ModelBench(PARAMS, model=afe)

    async def testbench(ctx):
        driver = RegisterDriver(AmaranthBus(ctx, bench.dut.axil), bench.regs)
        rtl.update(await sequence(driver, afe.crossbar.advance_time))

    bench.run(testbench)
    model_driver = ModelDriver(PARAMS, afe.twin())
    model = tc_run(sequence(model_driver, model_driver.afe.crossbar.advance_time))

    assert rtl["initial"] == RemapState(False, tuple(range(PARAMS.total_cols)), PARAMS.spare, 0)
    assert rtl["state"] == RemapState(True, (0, 1, 3, 2, 4), 1, 1)
    assert rtl["program"][0] == Error.NONE and rtl["program"][1] > 0
    refresh = rtl["refresh"]
    assert isinstance(refresh, RefreshReport) and refresh.checked == PARAMS.rows * PARAMS.cols
    assert refresh.reprogrammed > 0 and refresh.failed == 0 and refresh.error == Error.NONE
    # The model backend's clock runs from 0 without the bus's gaps; the deterministic AFE does
    # not depend on when a command starts, so the reports agree.
    assert {k: v for k, v in model.items()} == rtl
