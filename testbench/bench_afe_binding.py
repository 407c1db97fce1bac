"""cocotb bench: controller RTL against the code-level AFE model, checked bit for bit against
the golden model.

Two DUTs, chosen by the runner (tests/test_afe_binding.py):

- ``controller``: the controller top level (``anmf.hdl.controller``), driven over AXI4-Lite
  by cocotbext-axi's AxiLiteMaster with the offsets and fields of
  ``anmf.hdl.regmap_export.HostRegisterMap``; completion by the ``irq`` line.
- ``harness``: the solve sequencer and the programmer side by side (the test's
  ``SolveProgramHarness``), block ports ``seq_<port>`` / ``prog_<port>``, buffers as flat
  ports; it also accepts ANALOG_SETTLE = 0, which the controller refuses.

The runner passes ``ANMF_AFE_BENCH`` (JSON): ``dut``, ``params`` (BuildParams fields),
``afe`` (an AFE configuration as a TOML-style dict: ``preset``, ``seed``, sections),
``clock_hz`` and ``seed`` (the test data).

Pieces: a driver (:class:`HarnessDriver`, :class:`ControllerDriver`) runs commands and
reads results; the model is ``AFEBinding`` around a deterministic ``AnalogFrontEnd``; the
checker is ``GoldenController`` on a twin of that AFE, given each command's start cycle as
seen on the DUT, so that it samples the analog model at the same simulated times.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from anmf.hdl.codes import Opcode
from anmf.hdl.controller import STATUS_DELAY
from anmf.hdl.params import BuildParams
from anmf.hdl.programmer import ProgrammerCommand
from anmf.hdl.registers import build_register_map
from anmf.hdl.regmap_export import HostRegisterMap, host_constants
from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import config_from_dict
from anmf.model.formats import PICOSECONDS_PER_SECOND, ProgramSettings, pack_result
from anmf.model.golden import Error, GoldenController
from anmf.testbench.afe_binding import AFEBinding

#: Every wait on the AFE is bounded; generous against the ~20 cycles a conversion takes here.
WATCHDOG = 4000
COMMAND_TIMEOUT_US = 2000


def bench_config() -> dict[str, Any]:
    return json.loads(os.environ["ANMF_AFE_BENCH"])


def _value(handle: Any) -> int:
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


def _now_ps() -> int:
    return round(get_sim_time("ps"))


def _pack(values: Any, width: int) -> int:
    return sum(int(v) << (width * i) for i, v in enumerate(values))


def _unpack(word: int, width: int, count: int) -> list[int]:
    return [(word >> (width * i)) & ((1 << width) - 1) for i in range(count)]


@dataclass(frozen=True)
class Completion:
    """A command as the DUT ran it."""

    start_s: float          #: time of the start cycle (cycle 0)
    done_cycle: int         #: cycle of the block's done, counted from the start cycle
    error: int
    over_range_count: int   #: samples flagged over range during the command
    pulse_count: int = 0
    failed_count: int = 0


@dataclass(frozen=True)
class Operands:
    """What a command uses besides its opcode."""

    row_mask: int = 0
    col_mask: int = 0
    avg_log2: int = 0
    dac_settle: int = 1
    analog_settle: int = 1
    row: int = 0
    col: int = 0
    settings: ProgramSettings | None = None


class Driver(Protocol):
    #: Smallest ANALOG_SETTLE the DUT accepts.
    min_analog_settle: int

    async def start(self) -> None: ...
    async def solve(self, mode: Mode, rhs: np.ndarray, ops: Operands) -> Completion: ...
    async def program(self, command: ProgrammerCommand, targets: np.ndarray,
                      ops: Operands) -> Completion: ...
    async def results(self) -> list[int]: ...
    async def fault_map(self) -> list[int]: ...
    async def read_code(self, col: int) -> int: ...


class HarnessDriver:
    """Drives the harness's block ports and reads its flat buffers."""

    min_analog_settle = 0

    def __init__(self, dut: Any, params: BuildParams, period_ps: int):
        self.dut, self.p, self.period_ps = dut, params, period_ps

    async def start(self) -> None:
        for name in ("seq_start", "seq_abort", "prog_start", "prog_abort"):
            getattr(self.dut, name).value = 0

    async def _run(self, block: str, operands: dict[str, int]) -> tuple[float, int, int]:
        dut = self.dut
        for name, value in operands.items():
            getattr(dut, f"{block}_{name}").value = value
        await RisingEdge(dut.clk)
        start_ps = _now_ps()  # start is high in the cycle that begins at this edge: cycle 0
        getattr(dut, f"{block}_start").value = 1
        await RisingEdge(dut.clk)
        getattr(dut, f"{block}_start").value = 0
        await with_timeout(RisingEdge(getattr(dut, f"{block}_done")), COMMAND_TIMEOUT_US, "us")
        done_cycle = (_now_ps() - start_ps) // self.period_ps
        error = _value(getattr(dut, f"{block}_error"))
        await RisingEdge(dut.clk)
        return start_ps / PICOSECONDS_PER_SECOND, done_cycle, error

    async def solve(self, mode: Mode, rhs: np.ndarray, ops: Operands) -> Completion:
        self.dut.rhs.value = _pack(rhs, self.p.dac_bits)
        start_s, done_cycle, error = await self._run("seq", dict(
            mode=int(mode), row_mask=ops.row_mask, col_mask=ops.col_mask, avg_log2=ops.avg_log2,
            dac_settle=ops.dac_settle, analog_settle=ops.analog_settle,
            watchdog_limit=WATCHDOG))
        return Completion(start_s, done_cycle, error, _value(self.dut.seq_over_range_count))

    async def program(self, command: ProgrammerCommand, targets: np.ndarray,
                      ops: Operands) -> Completion:
        assert ops.settings is not None
        s = ops.settings
        self.dut.targets.value = _pack(np.asarray(targets).ravel(), self.p.adc_bits)
        start_s, done_cycle, error = await self._run("prog", dict(
            command=command.value, cell_row=ops.row, cell_col=ops.col, row_mask=ops.row_mask,
            col_mask=ops.col_mask, tolerance=s.tolerance, amp_start=s.amp_start,
            amp_step=s.amp_step, amp_max=s.amp_max, pulse_width=s.pulse_width,
            pulse_budget=s.pulse_budget, avg_log2=s.avg_log2, read_settle=s.read_settle,
            watchdog_limit=WATCHDOG))
        # The programmer's over-range samples are a strobe the harness does not count.
        return Completion(start_s, done_cycle, error, 0, _value(self.dut.prog_pulse_count),
                          _value(self.dut.prog_failed_count))

    async def results(self) -> list[int]:
        return _unpack(_value(self.dut.results), self.p.result_bits, self.p.total_cols)

    async def fault_map(self) -> list[int]:
        return _unpack(_value(self.dut.fault_map), self.p.total_cols, self.p.rows)

    async def read_code(self, col: int) -> int:
        return _value(self.dut.prog_read_code)


class ControllerDriver:
    """A host driver over AXI4-Lite: registers by name from the host register map; waits
    for a command's end on the ``irq`` line (IRQ_ENABLE.done)."""

    min_analog_settle = 1   # the controller refuses ANALOG_SETTLE = 0 (BAD_TIMING)

    def __init__(self, dut: Any, params: BuildParams, period_ps: int):
        self.dut, self.p, self.period_ps = dut, params, period_ps
        self.regs: HostRegisterMap = host_constants(build_register_map(params))
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"),
                                    dut.clk, dut.rst)

    async def write(self, address: int, word: int) -> None:
        response = await self.master.write(address, word.to_bytes(4, "little"))
        assert response.resp == AxiResp.OKAY, f"write 0x{address:X} answered {response.resp}"

    async def read(self, address: int) -> int:
        response = await self.master.read(address, 4)
        assert response.resp == AxiResp.OKAY, f"read 0x{address:X} answered {response.resp}"
        return int.from_bytes(response.data, "little")

    async def set(self, name: str, **fields: int) -> None:
        register = getattr(self.regs, name)
        await self.write(register.offset, register.pack(**fields))

    async def get(self, name: str) -> dict[str, int]:
        register = getattr(self.regs, name)
        return register.unpack(await self.read(register.offset))

    async def write_window(self, name: str, words: Any) -> None:
        window = getattr(self.regs, name)
        for index, word in enumerate(words):
            await self.write(window.address(index), int(word))

    async def read_window(self, name: str) -> list[int]:
        window = getattr(self.regs, name)
        return [await self.read(window.address(i)) for i in range(window.depth)]

    async def start(self) -> None:
        await self.set("IRQ_ENABLE", done=1)
        await self.set("WATCHDOG", cycles=WATCHDOG)

    async def _counts(self) -> tuple[int, int, int]:
        return tuple([(await self.get(name))["count"]
                      for name in ("OVER_RANGE_COUNT", "PULSE_COUNT", "FAILED_CELL_COUNT")])

    async def _run(self, opcode: Opcode, row: int = 0, col: int = 0) -> Completion:
        dut = self.dut
        before = await self._counts()
        await self.set("COMMAND", opcode=opcode, row=row, col=col)
        seen: dict[str, int] = {}

        async def start_strobe() -> None:
            # The register file's CONTROL.start strobe is cycle 0 of the command
            # (docs/controller.md); the one internal signal this bench reads.
            await RisingEdge(dut.control__start)
            seen["start"] = _now_ps()

        watcher = cocotb.start_soon(start_strobe())
        await self.set("CONTROL", start=1)
        if not _value(dut.irq):
            await with_timeout(RisingEdge(dut.irq), COMMAND_TIMEOUT_US, "us")
        irq_ps = _now_ps()
        assert watcher.done(), "CONTROL.start strobe not seen"
        status = await self.get("STATUS")
        assert status["done"] == 1 and status["busy"] == 0, status
        await self.set("IRQ_STATUS", done=1)
        after = await self._counts()
        counts = [b - a for a, b in zip(before, after)]
        # irq rises in the cycle STATUS shows done: STATUS_DELAY after the block's done.
        done_cycle = (irq_ps - seen["start"]) // self.period_ps - STATUS_DELAY
        return Completion(seen["start"] / PICOSECONDS_PER_SECOND, done_cycle, status["error"],
                          counts[0], counts[1], counts[2])

    async def _masks(self, ops: Operands) -> None:
        words = [(ops.row_mask >> (32 * w)) & 0xFFFF_FFFF for w in range(self.regs.ROW_MASK.depth)]
        await self.write_window("ROW_MASK", words)
        await self.set("COL_ENABLE", enable=ops.col_mask)

    async def solve(self, mode: Mode, rhs: np.ndarray, ops: Operands) -> Completion:
        await self.write_window("RHS", rhs)
        await self._masks(ops)
        await self.set("TIMING", adc_samples=2 ** ops.avg_log2)
        await self.set("DAC_SETTLE", cycles=ops.dac_settle)
        await self.set("ANALOG_SETTLE", cycles=ops.analog_settle)
        return await self._run(Opcode[mode.name])

    async def program(self, command: ProgrammerCommand, targets: np.ndarray,
                      ops: Operands) -> Completion:
        assert ops.settings is not None
        s = ops.settings
        await self.write_window("TARGET", np.asarray(targets).ravel())
        await self._masks(ops)
        await self.set("TIMING", adc_samples=2 ** s.avg_log2)
        await self.set("READ_SETTLE", cycles=s.read_settle)
        await self.set("PROGRAM_TOLERANCE", codes=s.tolerance)
        await self.set("PROGRAM_PULSES", max_pulses=s.pulse_budget)
        await self.set("PROGRAM_AMPLITUDE", start=s.amp_start, step=s.amp_step)
        await self.set("PROGRAM_AMPLITUDE_MAX", max=s.amp_max)
        await self.set("PROGRAM_PULSE", width=s.pulse_width)
        return await self._run(Opcode[command.name], ops.row, ops.col)

    async def results(self) -> list[int]:
        fields = self.regs.RESULTS
        return [pack_result(fields.code.get(w), fields.over_range.get(w), self.p.adc_bits)
                for w in await self.read_window("RESULTS")]

    async def fault_map(self) -> list[int]:
        return await self.read_window("FAULT_MAP")

    async def read_code(self, col: int) -> int:
        return self.regs.RESULTS.code.get(await self.read(self.regs.RESULTS.address(col)))


class Bench:
    """Clock, reset, the AFE model bound to the DUT, the driver and the golden model."""

    def __init__(self, dut: Any):
        config = bench_config()
        self.dut = dut
        self.params = BuildParams(**config["params"])
        self.afe = AnalogFrontEnd.from_build_params(config_from_dict(config["afe"]), self.params,
                                                    clock_hz=config["clock_hz"],
                                                    deterministic=True)
        self.golden = GoldenController(self.params, self.afe.twin())
        self.binding = AFEBinding(dut, self.afe, self.params, clock=dut.clk)
        drivers = {"harness": HarnessDriver, "controller": ControllerDriver}
        self.driver: Driver = drivers[config["dut"]](dut, self.params, self.afe.period_ps)
        self.rng = np.random.default_rng(config["seed"])
        self.conductances = np.asarray(self.afe.crossbar.conductance_s).copy()

    async def start(self) -> None:
        dut = self.dut
        # The GPI clock toggles in the simulator, not in Python (as bench_scenarios does).
        Clock(dut.clk, self.afe.period_ps, unit="ps", impl="gpi").start(start_high=False)
        dut.rst.value = 1
        await self.binding.start()
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        await self.driver.start()

    def place_levels(self) -> None:
        """Both AFEs' cells at random levels above the lowest (the oracle programming path)."""
        levels = self.afe.config.device.level_targets_s()
        g = levels[self.rng.integers(1, levels.size, (self.params.rows, self.params.total_cols))]
        now = _now_ps() / PICOSECONDS_PER_SECOND
        self.afe.set_conductances(g, now)
        self.golden.afe.set_conductances(g, now)
        self.conductances = np.asarray(self.afe.crossbar.conductance_s).copy()

    def rhs_for(self, x_v: np.ndarray) -> np.ndarray:
        """DAC codes of b = A x / input_gain for the placed cells (A x ~ gain v in the loop)."""
        circuit = self.afe.config.circuit
        a = (self.conductances - circuit.g_offset_s) / circuit.g_unit_s
        volts = a @ x_v / circuit.input_gain
        return np.asarray(self.afe.dac.code_for(volts))

    def random_mask(self, width: int) -> int:
        return int(self.rng.integers(1, 2 ** width))

    async def solve_and_check(self, mode: Mode, rhs: np.ndarray, ops: Operands) -> list[int]:
        """Run a solve on the DUT and in the golden model; assert equal words and cycles."""
        done = await self.driver.solve(mode, rhs, ops)
        self.golden.load_rhs(rhs)
        expected = self.golden.solve(mode, row_mask=ops.row_mask, col_mask=ops.col_mask,
                                     avg_log2=ops.avg_log2, dac_settle=ops.dac_settle,
                                     analog_settle=ops.analog_settle, start_s=done.start_s)
        words = await self.driver.results()
        assert done.error == expected.error == Error.NONE, \
            f"{mode.name} {ops}: error {done.error}, golden {expected.error!r}"
        got = {col: words[col] for col in expected.words}
        assert got == expected.words, f"{mode.name} {ops}: RTL words {got} != golden {expected.words}"
        assert done.done_cycle == expected.done_cycle, \
            f"{mode.name}: done in cycle {done.done_cycle}, golden {expected.done_cycle}"
        assert done.over_range_count == expected.over_range_count, \
            f"over-range samples {done.over_range_count}, golden {expected.over_range_count}"
        assert not self.binding.all_violations, self.binding.all_violations
        cocotb.log.info("%s %s: words %s, done cycle %d", mode.name, ops, got, done.done_cycle)
        return words


@cocotb.test()
async def solves_equal_golden_bit_for_bit(dut) -> None:
    """Random RHS, masks and averaging: every result word, the over-range count and the
    done cycle equal the golden model's."""
    bench = Bench(dut)
    await bench.start()
    p = bench.params
    bench.place_levels()
    conversions = 0
    for mode in (Mode.SOLVE, Mode.SOLVE, Mode.SOLVE, Mode.SOLVE, Mode.SOLVE_FREE, Mode.MVM):
        # Some components zero: a mix of clamped and positive outputs.
        x_true = bench.rng.uniform(0.0, 0.4, p.total_cols) * (bench.rng.random(p.total_cols) < 0.7)
        ops = Operands(row_mask=bench.random_mask(p.rows), col_mask=bench.random_mask(p.total_cols),
                       avg_log2=int(bench.rng.integers(0, p.avg_max_log2 + 1)),
                       dac_settle=int(bench.rng.integers(1, 60)),
                       analog_settle=int(bench.rng.integers(1, 40)))
        await bench.solve_and_check(mode, bench.rhs_for(x_true), ops)
        conversions += bin(ops.col_mask).count("1") * 2 ** ops.avg_log2
    assert len(bench.binding.conversions) == conversions, \
        f"{len(bench.binding.conversions)} conversions answered, {conversions} expected"
    # Every solve left the DACs at the zero code (the safe state).
    assert (bench.afe.dac_codes == p.dac_zero_code).all()


@cocotb.test()
async def early_sample_reads_the_unsettled_transient(dut) -> None:
    """With the shortest analog settle time the first column's samples see the loop just
    closed: its code differs from a settled solve's, and both equal the golden model's."""
    bench = Bench(dut)
    await bench.start()
    p = bench.params
    bench.place_levels()
    rhs = bench.rhs_for(np.full(p.total_cols, 0.3))
    ops = Operands(row_mask=2 ** p.rows - 1, col_mask=2 ** p.total_cols - 1, dac_settle=80)
    shortest = bench.driver.min_analog_settle
    early = await bench.solve_and_check(Mode.SOLVE, rhs, replace(ops, analog_settle=shortest))
    settled = await bench.solve_and_check(Mode.SOLVE, rhs, replace(ops, analog_settle=400))
    assert early[0] != settled[0], f"early sample {early[0]} equals the settled {settled[0]}"
    if shortest == 0:
        # Sampled as the loop closed: the output is still at its 0 V start (the mid code
        # within the offsets), far from the settled ~0.3 V.
        assert abs(early[0] - p.dac_zero_code) <= 8 < settled[0] - p.dac_zero_code, \
            (early, settled)


@cocotb.test()
async def program_matrix_equals_golden(dut) -> None:
    """PROGRAM_MATRIX with write-verify through the device model: fault map, pulse and failed
    counts, error and done cycle equal the golden model's; then PROGRAM_CELL and READ_CELLs."""
    bench = Bench(dut)
    await bench.start()
    p = bench.params
    afe = bench.afe
    levels = afe.config.device.level_targets_s()
    targets = afe.conductance_code(levels[bench.rng.integers(0, levels.size,
                                                             (p.rows, p.total_cols))])
    targets[1, 2] = p.dac_zero_code - 100  # a negative conductance: never reached, fails
    settings = replace(afe.program_settings(read_settle=16), pulse_budget=24)
    ops = Operands(row_mask=2 ** p.rows - 1 - 0b1000, col_mask=2 ** p.total_cols - 1,
                   settings=settings)  # one row left out
    done = await bench.driver.program(ProgrammerCommand.PROGRAM_MATRIX, targets, ops)
    bench.golden.load_targets(targets)
    expected = bench.golden.program_matrix(settings, row_mask=ops.row_mask,
                                           col_mask=ops.col_mask, start_s=done.start_s)
    assert expected.failed_count >= 1 and expected.error == Error.CELLS_FAILED
    assert done.error == expected.error, f"error {done.error}, golden {expected.error!r}"
    fault_map = await bench.driver.fault_map()
    assert fault_map == [int(w) for w in bench.golden.fault_map], \
        f"fault map {fault_map} != golden {list(bench.golden.fault_map)}"
    assert (done.pulse_count, done.failed_count) == (expected.pulse_count, expected.failed_count), \
        f"pulses, failed: {done.pulse_count, done.failed_count}, golden " \
        f"{expected.pulse_count, expected.failed_count}"
    assert done.done_cycle == expected.done_cycle, \
        f"done in cycle {done.done_cycle}, golden {expected.done_cycle}"
    assert len(bench.binding.pulses) == expected.pulse_count
    assert np.array_equal(afe.crossbar.conductance_s, bench.golden.afe.crossbar.conductance_s)
    cocotb.log.info("PROGRAM_MATRIX: %d pulses, %d failed, fault map %s, done cycle %d",
                    done.pulse_count, done.failed_count, fault_map, done.done_cycle)

    # PROGRAM_CELL on a cell of the row the matrix left out.
    targets[3, 1] = afe.conductance_code(levels[5])
    done = await bench.driver.program(ProgrammerCommand.PROGRAM_CELL, targets,
                                      replace(ops, row=3, col=1))
    bench.golden.load_targets(targets)
    cell = bench.golden.program_cell(3, 1, settings, start_s=done.start_s)
    assert (done.error, done.pulse_count, done.failed_count, done.done_cycle) == \
        (cell.error, cell.pulse_count, cell.failed_count, cell.done_cycle), \
        f"PROGRAM_CELL: {done}; golden {cell}"
    assert cell.pulse_count > 0 and await bench.driver.fault_map() == \
        [int(w) for w in bench.golden.fault_map]

    for row, col in ((0, 0), (2, p.total_cols - 1)):
        done = await bench.driver.program(ProgrammerCommand.READ_CELL, targets,
                                          replace(ops, row=row, col=col))
        read = bench.golden.read_cell(row, col, avg_log2=settings.avg_log2,
                                      read_settle=settings.read_settle, start_s=done.start_s)
        code = await bench.driver.read_code(col)
        assert (done.error, code, done.done_cycle) == (read.error, read.code, read.done_cycle), \
            f"READ_CELL ({row}, {col}): {done}, code {code}; golden {read}"
    assert not bench.binding.all_violations, bench.binding.all_violations
