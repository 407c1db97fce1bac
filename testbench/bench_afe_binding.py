"""cocotb bench: the controller's solve sequencer and write-verify programmer against the
code-level AFE model, checked bit for bit against the golden model.

The DUT is the harness of tests/test_afe_binding.py (the sequencer and the programmer side
by side, their AFE outputs ORed onto one ``afe__*`` port, buffers as flat ports ``rhs``,
``targets``, ``results``, ``fault_map``; block ports ``seq_<port>`` / ``prog_<port>``).
The runner passes ``ANMF_AFE_BENCH`` (JSON): ``params`` (BuildParams fields), ``afe`` (an
AFE configuration as a TOML-style dict: ``preset``, ``seed``, sections), ``clock_hz`` and
``seed`` (the test data).

Pieces: :class:`HarnessDriver` drives commands and reads the buffers; the model is
``AFEBinding`` around an ``AnalogFrontEnd``; the checker is ``GoldenController`` on a twin
of that AFE, given each command's start time as measured on the DUT.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from anmf.hdl.params import BuildParams
from anmf.hdl.programmer import ProgrammerCommand
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import config_from_dict
from anmf.model.formats import PICOSECONDS_PER_SECOND, ProgramSettings
from anmf.model.golden import Error, GoldenController
from anmf.testbench.afe_binding import AFEBinding

#: Every wait is bounded; generous against the few tens of cycles a conversion takes here.
WATCHDOG = 4000
COMMAND_TIMEOUT_US = 2000


def bench_config() -> dict[str, Any]:
    return json.loads(os.environ["ANMF_AFE_BENCH"])


def _value(handle: Any) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


def _pack(values: np.ndarray, width: int) -> int:
    return sum(int(v) << (width * i) for i, v in enumerate(values))


def _unpack(word: int, width: int, count: int) -> list[int]:
    return [(word >> (width * i)) & ((1 << width) - 1) for i in range(count)]


@dataclass(frozen=True)
class Completion:
    """A command as the DUT ran it."""

    start_s: float    #: time of the start cycle (cycle 0)
    done_cycle: int   #: cycle of done, counted from the start cycle
    error: int


class HarnessDriver:
    """Drives the harness's block ports and reads its buffers."""

    def __init__(self, dut: Any, params: BuildParams, period_ps: int):
        self.dut = dut
        self.p = params
        self.period_ps = period_ps

    async def _run(self, block: str, operands: dict[str, int]) -> Completion:
        dut = self.dut
        for name, value in operands.items():
            getattr(dut, f"{block}_{name}").value = value
        await RisingEdge(dut.clk)
        # start is high in the cycle that begins at this edge: cycle 0.
        start_ps = round(get_sim_time("ps"))
        getattr(dut, f"{block}_start").value = 1
        await RisingEdge(dut.clk)
        getattr(dut, f"{block}_start").value = 0
        await with_timeout(RisingEdge(getattr(dut, f"{block}_done")), COMMAND_TIMEOUT_US, "us")
        done_ps = round(get_sim_time("ps"))
        error = _value(getattr(dut, f"{block}_error"))
        await RisingEdge(dut.clk)
        return Completion(start_ps / PICOSECONDS_PER_SECOND,
                          (done_ps - start_ps) // self.period_ps, error)

    async def solve(self, mode: Mode, rhs: np.ndarray, *, row_mask: int, col_mask: int,
                    avg_log2: int, dac_settle: int, analog_settle: int) -> Completion:
        self.dut.rhs.value = _pack(rhs, self.p.dac_bits)
        return await self._run("seq", dict(mode=int(mode), row_mask=row_mask, col_mask=col_mask,
                                           avg_log2=avg_log2, dac_settle=dac_settle,
                                           analog_settle=analog_settle, watchdog_limit=WATCHDOG))

    async def program(self, command: ProgrammerCommand, settings: ProgramSettings, *, targets: np.ndarray,
                      row: int = 0, col: int = 0, row_mask: int = 0,
                      col_mask: int = 0) -> Completion:
        self.dut.targets.value = _pack(targets.ravel(), self.p.adc_bits)
        s = settings
        return await self._run("prog", dict(
            command=command.value, cell_row=row, cell_col=col, row_mask=row_mask, col_mask=col_mask,
            tolerance=s.tolerance, amp_start=s.amp_start, amp_step=s.amp_step,
            amp_max=s.amp_max, pulse_width=s.pulse_width, pulse_budget=s.pulse_budget,
            avg_log2=s.avg_log2, read_settle=s.read_settle, watchdog_limit=WATCHDOG))

    def results(self) -> list[int]:
        return _unpack(_value(self.dut.results), self.p.adc_bits + 1, self.p.total_cols)

    def fault_map(self) -> list[int]:
        return _unpack(_value(self.dut.fault_map), self.p.total_cols, self.p.rows)


class Bench:
    """Clock, reset, the AFE model bound to the DUT, the driver and the golden model."""

    def __init__(self, dut: Any):
        config = bench_config()
        self.dut = dut
        self.params = BuildParams(**config["params"])
        self.afe_config = config_from_dict(config["afe"])
        self.afe = AnalogFrontEnd.from_build_params(self.afe_config, self.params,
                                                    clock_hz=config["clock_hz"],
                                                    deterministic=True)
        self.golden = GoldenController(self.params, self.afe.twin())
        self.binding = AFEBinding(dut, self.afe, self.params, clock=dut.clk)
        self.driver = HarnessDriver(dut, self.params, self.afe.period_ps)
        self.rng = np.random.default_rng(config["seed"])

    async def start(self) -> None:
        dut = self.dut
        Clock(dut.clk, self.afe.period_ps, unit="ps").start()
        for name in ("seq_start", "seq_abort", "prog_start", "prog_abort"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        await self.binding.start()
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)

    def now_s(self) -> float:
        return round(get_sim_time("ps")) / PICOSECONDS_PER_SECOND

    def place_levels(self) -> np.ndarray:
        """Both AFEs' cells at random levels (the oracle programming path)."""
        levels = self.afe.config.device.level_targets_s()
        shape = (self.params.rows, self.params.total_cols)
        g = levels[self.rng.integers(1, levels.size, shape)]
        now = self.now_s()
        self.afe.set_conductances(g, now)
        self.golden.afe.set_conductances(g, now)
        return g

    def random_mask(self, width: int) -> int:
        mask = 0
        while mask == 0:
            mask = int(self.rng.integers(1, 2 ** width))
        return mask

    async def solve_and_check(self, mode: Mode, rhs: np.ndarray, **operands: int) -> list[int]:
        """Run a solve on the DUT and in the golden model; assert equal words and cycles."""
        done = await self.driver.solve(mode, rhs, **operands)
        self.golden.load_rhs(rhs)
        expected = self.golden.solve(mode, start_s=done.start_s, **operands)
        words = self.driver.results()
        assert done.error == expected.error == Error.NONE, \
            f"{mode.name} {operands}: error {done.error}, golden {expected.error!r}"
        got = {col: words[col] for col in expected.words}
        assert got == expected.words, \
            f"{mode.name} {operands}: RTL words {got} != golden {expected.words}"
        assert done.done_cycle == expected.done_cycle, \
            f"{mode.name}: done in cycle {done.done_cycle}, golden {expected.done_cycle}"
        assert _value(self.dut.seq_over_range_count) == expected.over_range_count
        assert not self.binding.all_violations, self.binding.all_violations
        cocotb.log.info("%s %s: words %s, done cycle %d", mode.name, operands, got,
                        done.done_cycle)
        return words


@cocotb.test()
async def solves_equal_golden_bit_for_bit(dut) -> None:
    """Random RHS, masks and averaging: every result word, the over-range count and the
    done cycle equal the golden model's."""
    bench = Bench(dut)
    await bench.start()
    p = bench.params
    bench.place_levels()
    cases = [Mode.SOLVE, Mode.SOLVE, Mode.SOLVE, Mode.SOLVE, Mode.SOLVE_FREE, Mode.MVM]
    conversions = 0
    for mode in cases:
        rhs = np.full(p.rows, p.dac_zero_code) + bench.rng.integers(0, 120, p.rows)
        operands = dict(row_mask=bench.random_mask(p.rows), col_mask=bench.random_mask(p.total_cols),
                        avg_log2=int(bench.rng.integers(0, p.avg_max_log2 + 1)),
                        dac_settle=int(bench.rng.integers(1, 60)),
                        analog_settle=int(bench.rng.integers(1, 40)))
        await bench.solve_and_check(mode, rhs, **operands)
        conversions += bin(operands["col_mask"]).count("1") * 2 ** operands["avg_log2"]
    assert len(bench.binding.conversions) == conversions, \
        f"{len(bench.binding.conversions)} conversions answered, {conversions} expected"
    # Every solve left the DACs at the zero code (the safe state).
    assert (bench.afe.dac_codes == p.dac_zero_code).all()


@cocotb.test()
async def early_sample_reads_the_unsettled_transient(dut) -> None:
    """With no analog settle time the first sample sees the loop just closed: its codes
    differ from those of a settled solve, and both equal the golden model's."""
    bench = Bench(dut)
    await bench.start()
    p = bench.params
    bench.place_levels()
    rhs = np.full(p.rows, p.dac_zero_code + 100)
    operands = dict(row_mask=2 ** p.rows - 1, col_mask=2 ** p.total_cols - 1, avg_log2=0,
                    dac_settle=80)
    early = await bench.solve_and_check(Mode.SOLVE, rhs, analog_settle=0, **operands)
    settled = await bench.solve_and_check(Mode.SOLVE, rhs, analog_settle=400, **operands)
    first_column = 0
    assert early[first_column] != settled[first_column], \
        f"early sample {early[first_column]} equals the settled {settled[first_column]}"
    # Sampled as the loop closed: the outputs still sit at their 0 V start (mid code
    # within the offsets), while settled outputs differ from it.
    assert abs(early[first_column] - p.dac_zero_code) <= 8, early


@cocotb.test()
async def program_matrix_equals_golden(dut) -> None:
    """PROGRAM_MATRIX with write-verify through the device model: fault map, pulse and failed
    counters, error, last read and done cycle equal the golden model's; then READ_CELLs."""
    bench = Bench(dut)
    await bench.start()
    p = bench.params
    afe = bench.afe
    levels = afe.config.device.level_targets_s()
    targets = afe.conductance_code(levels[bench.rng.integers(0, levels.size,
                                                             (p.rows, p.total_cols))])
    targets[1, 2] = p.dac_zero_code - 100  # a negative conductance: never reached, fails
    settings = afe.program_settings(read_settle=8)
    settings = ProgramSettings(**{**settings.__dict__, "pulse_budget": 24})
    row_mask = 2 ** p.rows - 1 - 0b1000     # one row left out
    col_mask = 2 ** p.total_cols - 1
    done = await bench.driver.program(ProgrammerCommand.PROGRAM_MATRIX, settings, targets=targets,
                                      row_mask=row_mask, col_mask=col_mask)
    bench.golden.load_targets(targets)
    expected = bench.golden.program_matrix(settings, row_mask=row_mask, col_mask=col_mask,
                                           start_s=done.start_s)
    assert expected.failed_count >= 1 and expected.error == Error.CELLS_FAILED
    assert done.error == expected.error, f"error {done.error}, golden {expected.error!r}"
    assert bench.driver.fault_map() == [int(w) for w in bench.golden.fault_map], \
        f"fault map {bench.driver.fault_map()} != golden {list(bench.golden.fault_map)}"
    assert _value(dut.prog_pulse_count) == expected.pulse_count, \
        f"pulses {_value(dut.prog_pulse_count)}, golden {expected.pulse_count}"
    assert _value(dut.prog_failed_count) == expected.failed_count
    assert _value(dut.prog_read_code) == bench.golden.read_code
    assert done.done_cycle == expected.done_cycle, \
        f"done in cycle {done.done_cycle}, golden {expected.done_cycle}"
    assert len(bench.binding.pulses) == expected.pulse_count
    assert np.array_equal(afe.crossbar.conductance_s, bench.golden.afe.crossbar.conductance_s)

    for row, col in ((0, 0), (2, p.total_cols - 1)):
        done = await bench.driver.program(ProgrammerCommand.READ_CELL, settings, targets=targets, row=row, col=col)
        read = bench.golden.read_cell(row, col, avg_log2=settings.avg_log2,
                                      read_settle=settings.read_settle, start_s=done.start_s)
        assert (done.error, _value(dut.prog_read_code), done.done_cycle) == \
            (read.error, read.code, read.done_cycle), f"READ_CELL ({row}, {col}): {done}, {read}"
    assert not bench.binding.all_violations, bench.binding.all_violations
