"""cocotb bench of the whole controller (``anmf_controller``): cocotbext-axi's AxiLiteMaster as
the host, and a small event-driven AFE responder.

The runner (tests/test_controller_cocotb.py) passes the register map's JSON description in
``ANMF_REGMAP_JSON``; every offset, field and build parameter comes from it, as for a host
driver on hardware. The responder is not the analog model (that binding is testbench/
afe_binding.py): it answers with a known linear function of the latched DAC codes, so the
expected results are computed here independently of the RTL.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from anmf.hdl.regmap_export import HostRegisterMap

GAIN_SHIFT = 3        #: column value = zero + (sum of gain * (dac - dac_zero)) >> GAIN_SHIFT
ADC_LATENCY = 2       #: cycles from adc_start to adc_busy rising
ADC_BUSY = 3          #: cycles adc_busy stays high
PULSE_CYCLES = 4      #: cycles from prog_fire to prog_done
PULSE_DIVISOR = 4     #: a pulse moves a cell by amplitude // PULSE_DIVISOR codes
MAX_POLLS = 400       #: STATUS reads before a command counts as hung
MATRIX_POLLS = 20_000  #: the same for a whole-matrix write-verify (PROGRAM_MATRIX, REFRESH)


def _regs() -> HostRegisterMap:
    return HostRegisterMap.from_description(Path(os.environ["ANMF_REGMAP_JSON"]).read_text())


def _int(handle) -> int:
    """A port's value: 1-bit ports read as Logic, wider ones as LogicArray."""
    value = handle.value
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


@dataclass
class AfeResponder:
    """Answers the controller's strobes: DAC input registers and LDAC, ADC conversions of the
    linear map (SOLVE/SOLVE_FREE/MVM) or of a cell's code (READ_CELL), programming pulses.

    One coroutine per strobe, each waking on the strobe's rising edge (and on the clock only
    while a DAC write burst lasts or an answer is due): no Python runs on idle cycles.
    """

    dut: object
    rows: int
    cols: int
    dac_bits: int
    adc_bits: int
    gain: np.ndarray                     #: rows x cols integers
    cells: np.ndarray                    #: rows x cols conductance codes
    dac_input: np.ndarray = field(init=False)
    dac_output: np.ndarray = field(init=False)
    conversions: list[tuple[int, int, int, bool]] = field(default_factory=list)  # (mode, mux, code, ovr)
    pulses: list[tuple[int, int, int, int]] = field(default_factory=list)        # (row, col, polarity, amp)
    stuck: set[tuple[int, int]] = field(default_factory=set)   #: (row, physical col) cells pulses do not move

    def __post_init__(self) -> None:
        self.dac_zero = 1 << (self.dac_bits - 1)
        self.adc_zero = 1 << (self.adc_bits - 1)
        self.full_scale = (1 << self.adc_bits) - 1
        self.dac_input = np.full(self.rows, self.dac_zero, dtype=np.int64)
        self.dac_output = self.dac_input.copy()

    def _afe(self, name: str):
        return getattr(self.dut, f"afe__{name}")

    def start(self) -> None:
        for name in ("adc_busy", "adc_data", "adc_ovr", "prog_done"):
            self._afe(name).value = 0
        for coroutine in (self._dac_writes(), self._dac_loads(), self._conversions(), self._pulses()):
            cocotb.start_soon(coroutine)

    def column_value(self, col: int, row_en: int) -> tuple[int, bool]:
        """The linear map of the latched DAC codes (offset binary on both sides), clipped."""
        enabled = np.array([(row_en >> r) & 1 for r in range(self.rows)], dtype=np.int64)
        signed = (self.dac_output - self.dac_zero) * enabled
        value = self.adc_zero + (int(signed @ self.gain[:, col]) >> GAIN_SHIFT)
        clipped = min(max(value, 0), self.full_scale)
        return clipped, clipped != value

    async def _dac_writes(self) -> None:
        while True:
            await RisingEdge(self._afe("dac_we"))
            await ReadOnly()
            while _int(self._afe("dac_we")):   # one write per cycle for the whole burst
                self.dac_input[_int(self._afe("dac_addr"))] = _int(self._afe("dac_data"))
                await RisingEdge(self.dut.clk)
                await ReadOnly()

    async def _dac_loads(self) -> None:
        while True:
            await RisingEdge(self._afe("dac_ldac"))
            self.dac_output = self.dac_input.copy()

    async def _conversions(self) -> None:
        read_cell = 4  # AFEMode.READ_CELL
        while True:
            await RisingEdge(self._afe("adc_start"))
            await ReadOnly()
            mode, mux = _int(self._afe("mode")), _int(self._afe("adc_mux"))
            if mode == read_cell:
                code, over = int(self.cells[_int(self._afe("cell_row")), _int(self._afe("cell_col"))]), False
            elif (_int(self._afe("col_en")) >> mux) & 1:
                code, over = self.column_value(mux, _int(self._afe("row_en")))
            else:
                code, over = 0, False
            self.conversions.append((mode, mux, code, over))
            await ClockCycles(self.dut.clk, ADC_LATENCY)
            self._afe("adc_busy").value = 1
            await ClockCycles(self.dut.clk, ADC_BUSY)
            self._afe("adc_busy").value = 0
            self._afe("adc_data").value = code
            self._afe("adc_ovr").value = int(over)

    async def _pulses(self) -> None:
        while True:
            await RisingEdge(self._afe("prog_fire"))
            await ReadOnly()
            row, col = _int(self._afe("cell_row")), _int(self._afe("cell_col"))
            polarity, amplitude = _int(self._afe("prog_polarity")), _int(self._afe("prog_amplitude"))
            self.pulses.append((row, col, polarity, amplitude))
            await ClockCycles(self.dut.clk, PULSE_CYCLES)
            step = 0 if (row, col) in self.stuck else amplitude // PULSE_DIVISOR
            self.cells[row, col] = min(max(int(self.cells[row, col]) + (-step if polarity else step), 0),
                                       self.full_scale)
            self._afe("prog_done").value = 1
            await RisingEdge(self.dut.clk)
            self._afe("prog_done").value = 0


class Host:
    """Register access by name through the AXI4-Lite master; every response is checked."""

    def __init__(self, dut, regs: HostRegisterMap) -> None:
        self.regs = regs
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "axil", bus_separator="__"), dut.clk, dut.rst)

    async def read_word(self, address: int) -> tuple[int, AxiResp]:
        response = await self.master.read(address, 4)
        return int.from_bytes(response.data, "little"), response.resp

    async def write_word(self, address: int, value: int) -> AxiResp:
        return (await self.master.write(address, value.to_bytes(4, "little"))).resp

    async def read(self, name: str) -> dict[str, int]:
        reg = getattr(self.regs, name)
        value, resp = await self.read_word(reg.offset)
        assert resp == AxiResp.OKAY, f"read {name}: {resp}"
        return reg.unpack(value)

    async def write(self, name: str, **fields) -> None:
        reg = getattr(self.regs, name)
        resp = await self.write_word(reg.offset, reg.pack(**fields))
        assert resp == AxiResp.OKAY, f"write {name}: {resp}"

    async def write_window(self, name: str, values) -> None:
        window = getattr(self.regs, name)
        for index, value in enumerate(values):
            resp = await self.write_word(window.address(index), int(value))
            assert resp == AxiResp.OKAY, f"write {name}[{index}]: {resp}"

    async def read_window(self, name: str) -> list[dict[str, int]]:
        window = getattr(self.regs, name)
        words = []
        for index in range(window.depth):
            value, resp = await self.read_word(window.address(index))
            assert resp == AxiResp.OKAY, f"read {name}[{index}]: {resp}"
            words.append(window.unpack(value))
        return words

    async def run(self, opcode: str, row: int = 0, col: int = 0, max_polls: int = MAX_POLLS) -> dict[str, int]:
        """COMMAND, CONTROL.start, then STATUS polled until done (bounded)."""
        await self.write("COMMAND", opcode=opcode, row=row, col=col)
        await self.write("CONTROL", start=1)
        for _ in range(max_polls):
            status = await self.read("STATUS")
            if status["done"] and not status["busy"]:
                return status
        raise AssertionError(f"{opcode} did not finish within {max_polls} STATUS reads")


async def _start(dut, *, seed: int) -> tuple[Host, AfeResponder]:
    regs = _regs()
    p = regs.params
    rng = np.random.default_rng(seed)
    total_cols = p["cols"] + p["spare"]
    responder = AfeResponder(dut, p["rows"], total_cols, p["dac_bits"], p["adc_bits"],
                             gain=rng.integers(-3, 4, (p["rows"], total_cols)),
                             cells=rng.integers(100, 900, (p["rows"], total_cols)))
    Clock(dut.clk, 10, unit="ns").start()
    responder.start()
    dut.rst.value = 1
    host = Host(dut, regs)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return host, responder


@cocotb.test()
async def solve_over_axi(dut) -> None:
    """Identity and parameters, configuration, RHS and masks, a SOLVE, RESULTS read back."""
    host, afe = await _start(dut, seed=3)
    regs = host.regs
    p = regs.params
    assert (await host.read("ID"))["magic"] == regs.ID.magic.reset
    assert await host.read("PARAMS_ARRAY") == {k: p[k] for k in ("rows", "cols", "spare")}
    converters = await host.read("PARAMS_CONVERTERS")
    assert (converters["dac_bits"], converters["adc_bits"]) == (p["dac_bits"], p["adc_bits"])

    rng = np.random.default_rng(11)
    rhs = afe.dac_zero + rng.integers(-200, 200, p["rows"])
    rows = [r for r in range(p["rows"]) if r % 3 != 1]
    cols = [0, 2, p["cols"]]            # two solution columns and the first spare
    row_mask, col_mask = sum(1 << r for r in rows), sum(1 << c for c in cols)
    for name, value in (("TIMING", 2), ("DAC_SETTLE", 3), ("ANALOG_SETTLE", 5), ("WATCHDOG", 50)):
        field_name = next(iter(getattr(regs, name).fields))
        await host.write(name, **{field_name: value})
    await host.write_window("RHS", rhs)
    await host.write_window("ROW_MASK", [(row_mask >> (32 * w)) & 0xFFFF_FFFF for w in range(regs.ROW_MASK.depth)])
    await host.write("COL_ENABLE", enable=col_mask)

    status = await host.run("SOLVE")
    assert status == {"busy": 0, "done": 1, "error": 0, "error_detail": 0}, f"SOLVE ended with {status}"
    results = await host.read_window("RESULTS")
    for col in range(regs.RESULTS.depth):
        if col not in cols:
            assert results[col] == {"code": 0, "over_range": 0}, f"disabled column {col} written"
            continue
        signed = sum(int(afe.gain[r, col]) * (int(rhs[r]) - afe.dac_zero) for r in rows)
        value = afe.adc_zero + (signed >> GAIN_SHIFT)
        expected = min(max(value, 0), afe.full_scale)
        assert results[col] == {"code": expected, "over_range": int(expected != value)}, \
            f"RESULTS[{col}] = {results[col]}, the linear map gives {expected}"
    assert len(afe.conversions) == 2 * len(cols), "two samples per enabled column"
    assert (afe.dac_output == afe.dac_zero).all(), "the DACs end at the zero-volt code"
    assert (await host.read("SOLVE_COUNT"))["count"] == 1


@cocotb.test()
async def program_and_read_a_cell(dut) -> None:
    """PROGRAM_CELL converges with prog_fire/prog_done; READ_CELL puts the reading in RESULTS."""
    host, afe = await _start(dut, seed=4)
    regs = host.regs
    row, col = 3, 1
    target = int(afe.cells[row, col]) + 150
    total_cols = regs.params["cols"] + regs.params["spare"]
    await host.write_word(regs.TARGET.address(row * total_cols + col), target)
    await host.write("PROGRAM_TOLERANCE", codes=3)
    await host.write("PROGRAM_AMPLITUDE", start=16, step=8)
    status = await host.run("PROGRAM_CELL", row=row, col=col)
    assert status["error"] == 0, f"PROGRAM_CELL ended with {status}"
    assert abs(int(afe.cells[row, col]) - target) <= 3 and afe.pulses
    assert (await host.read("PULSE_COUNT"))["count"] == len(afe.pulses)
    fault_word, _ = await host.read_word(regs.FAULT_MAP.address(row))
    assert (fault_word >> col) & 1 == 0, "a programmed cell is not marked faulty"
    status = await host.run("READ_CELL", row=row, col=col)
    assert status["error"] == 0
    reading = (await host.read_window("RESULTS"))[col]
    assert reading == {"code": int(afe.cells[row, col]), "over_range": 0}, reading


@cocotb.test()
async def refused_accesses_and_commands(dut) -> None:
    """An unmapped access answers SLVERR; an unknown opcode sets STATUS.error and nothing runs."""
    host, afe = await _start(dut, seed=5)
    regs = host.regs
    value, resp = await host.read_word(0x028)
    assert (value, resp) == (0, AxiResp.SLVERR), f"unmapped read: {resp}, 0x{value:X}"
    assert await host.write_word(0x02C, 1) == AxiResp.SLVERR
    assert await host.write_word(regs.RESULTS.address(0), 1) == AxiResp.SLVERR, "RESULTS is read-only"
    status = await host.run(0x7F)
    unknown = regs.STATUS.error.values["UNKNOWN_OPCODE"]
    assert status == {"busy": 0, "done": 1, "error": unknown, "error_detail": 0x7F}, status
    assert afe.conversions == [] and afe.pulses == [], "a refused command reached the AFE"
    assert (await host.read("IRQ_STATUS")) == {"done": 1, "error": 1, "over_range": 0}


@cocotb.test()
async def remap_and_refresh(dut) -> None:
    """Stuck cells in column 1: PROGRAM_MATRIX with REMAP_CONTROL.enable moves logical column 1 to the
    first spare (REMAP_MAP, REMAP_COUNT, PROG_IRQ.remap), a SOLVE converts the spare for column 1 and
    RESULTS[1] holds its linear map; then the cells drift and REFRESH re-programs exactly the cells
    out of tolerance (REFRESH_RESULT), reading the spare for column 1."""
    host, afe = await _start(dut, seed=6)
    regs = host.regs
    p = regs.params
    rows, cols, spare = p["rows"], p["cols"], p["cols"]   # the first spare's physical index
    total_cols = cols + p["spare"]
    tolerance = 3
    rng = np.random.default_rng(16)
    targets = rng.integers(300, 700, (rows, total_cols))
    afe.cells[:, :] = targets + rng.integers(-60, 60, (rows, total_cols))
    afe.stuck = {(2, 1), (5, 1)}
    afe.cells[2, 1] = afe.cells[5, 1] = 0
    await host.write_window("TARGET", targets.ravel())
    await host.write("PROGRAM_TOLERANCE", codes=tolerance)
    await host.write("PROGRAM_AMPLITUDE", start=16, step=8)
    await host.write("COL_ENABLE", enable=(1 << cols) - 1)
    await host.write("REMAP_CONTROL", enable=1)

    status = await host.run("PROGRAM_MATRIX", max_polls=MATRIX_POLLS)
    assert status["error"] == 0, f"PROGRAM_MATRIX with a spare free ends NONE, got {status}"
    column_map = [entry["physical"] for entry in await host.read_window("REMAP_MAP")]
    expected_map = list(range(total_cols))
    expected_map[1], expected_map[spare] = spare, 1
    assert column_map[:total_cols] == expected_map, column_map
    assert (await host.read("REMAP_COUNT"))["count"] == 1
    assert (await host.read("REMAP_STATUS"))["spares_left"] == p["spare"] - 1
    assert (await host.read("PROG_IRQ"))["remap"] == 1
    for r in range(rows):
        assert abs(int(afe.cells[r, spare]) - int(targets[r, 1])) <= tolerance, "spare holds column 1's targets"
    fault_words = [w["cells"] for w in await host.read_window("FAULT_MAP")]
    assert [w >> 1 & 1 for w in fault_words] == [int(r in (2, 5)) for r in range(rows)], "physical column 1 failed"

    rhs = afe.dac_zero + np.random.default_rng(17).integers(-150, 150, rows)
    for name, value in (("DAC_SETTLE", 3), ("ANALOG_SETTLE", 5), ("WATCHDOG", 50)):
        await host.write(name, cycles=value)
    await host.write_window("RHS", rhs)
    afe.conversions.clear()
    status = await host.run("SOLVE")
    assert status["error"] == 0, status
    assert [mux for _, mux, _, _ in afe.conversions] == expected_map[:cols], "logical 1 converts the spare"
    results = await host.read_window("RESULTS")
    code, over = afe.column_value(spare, (1 << rows) - 1)
    assert results[1] == {"code": code, "over_range": int(over)}, f"RESULTS[1] = {results[1]}, spare gives {code}"

    drifted = [(r, c) for r in range(rows) for c in (0, spare) if r % 2 == 0]
    for r, c in drifted:
        afe.cells[r, c] -= 20
    pulses_before = len(afe.pulses)
    status = await host.run("REFRESH", max_polls=MATRIX_POLLS)
    assert status["error"] == 0, status
    result = await host.read("REFRESH_RESULT")
    assert result == {"checked": rows * cols, "reprogrammed": len(drifted)}, result
    assert (await host.read("REFRESH_FAILED"))["cells"] == 0
    assert {(r, c) for r, c, _, _ in afe.pulses[pulses_before:]} == set(drifted), "only drifted cells pulsed"
    assert (await host.read("PULSE_COUNT"))["count"] == len(afe.pulses)


# ---- CALIBRATE with the AFE model ------------------------------------------------------------

@cocotb.test()
async def calibrate_then_solve_equals_golden(dut) -> None:
    """The AFE model (5 % FS ADC and DAC offset and gain errors) on the AFE port: CALIBRATE's
    coefficients over the bus, CAL_QUALITY, CAL_FAILED and its done cycle equal the golden
    model's; the corrected SOLVE_FREE equals the golden's and is closer to the fault-free AFE's
    result than the uncorrected one (CAL_CONTROL off)."""
    from anmf.hdl.codes import Opcode
    from anmf.hdl.params import BuildParams
    from anmf.model.afe import Mode
    from anmf.model.golden import CalEnable, Error, GoldenController
    from anmf.testbench.afe_binding import AFEBinding
    from anmf.testbench.bench_afe_binding import WATCHDOG, ControllerDriver, Operands
    from anmf.testbench.calibration_afe import calibration_afe

    regs = _regs()
    params = BuildParams(**regs.params)
    afe = calibration_afe(params, faulty=True)
    golden = GoldenController(params, calibration_afe(params, faulty=True))
    binding = AFEBinding(dut, afe, params, clock=dut.clk)
    Clock(dut.clk, afe.period_ps, unit="ps").start()
    dut.rst.value = 1
    await binding.start()
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    driver = ControllerDriver(dut, params, afe.period_ps)
    await driver.start()
    rows, cols = 2 ** params.rows - 1, 2 ** params.total_cols - 1
    ops = Operands(row_mask=rows, col_mask=cols, avg_log2=2, dac_settle=50, analog_settle=40)
    await driver._masks(ops)
    await driver.set("TIMING", adc_samples=4)
    await driver.set("DAC_SETTLE", cycles=50)
    await driver.set("ANALOG_SETTLE", cycles=40)
    await driver.set("CAL_SETTLE", cycles=2)
    done = await driver._run(Opcode.CALIBRATE)
    expected = golden.calibrate(col_mask=cols, row_mask=rows, avg_log2=2, cal_settle=2, dac_settle=50,
                                analog_settle=40, watchdog_limit=WATCHDOG, start_s=done.start_s)
    assert (done.error, done.done_cycle) == (expected.error, expected.done_cycle), (done, expected)
    words = await driver.read_window("CAL_COEFF")
    assert words == [int(w) for w in golden.cal_words], "CAL_COEFF differs from the golden words"
    assert (await driver.get("CAL_QUALITY"))["residual"] == expected.quality
    assert (await driver.get("CAL_FAILED"))["count"] == expected.failed_count
    assert expected.error == Error.NONE and expected.quality < 16, expected
    cocotb.log.info("CALIBRATE: done in cycle %d, quality %d/16 LSB, %d failed entries", done.done_cycle,
                    expected.quality, expected.failed_count)

    rhs = np.array([560 + 8 * (r % 5) for r in range(params.rows)])
    codes = {}
    for label, enable in (("corrected", CalEnable()), ("raw", CalEnable(adc=False, dac=False))):
        await driver.set("CAL_CONTROL", adc=int(enable.adc), dac=int(enable.dac), opamp=int(enable.opamp))
        golden.cal_enable = enable
        solved = await driver.solve(Mode.SOLVE_FREE, rhs, ops)
        golden.load_rhs(rhs)
        reference = golden.solve(Mode.SOLVE_FREE, row_mask=rows, col_mask=cols, avg_log2=2, dac_settle=50,
                                 analog_settle=40, watchdog_limit=WATCHDOG, start_s=solved.start_s)
        results = await driver.results()
        assert results == [reference.words[c] for c in range(params.total_cols)], (label, results, reference)
        assert solved.done_cycle == reference.done_cycle, (label, solved, reference)
        codes[label] = [w & (2 ** params.adc_bits - 1) for w in results]
        if label == "corrected":
            ideal = GoldenController(params, calibration_afe(params, faulty=False))
            ideal.load_rhs(rhs)
            fault_free = ideal.solve(Mode.SOLVE_FREE, row_mask=rows, col_mask=cols, avg_log2=2, dac_settle=50,
                                     analog_settle=40, start_s=solved.start_s)
            codes["fault-free"] = [fault_free.words[c] & (2 ** params.adc_bits - 1)
                                   for c in range(params.total_cols)]
    errors = {label: max(abs(a - b) for a, b in zip(codes[label], codes["fault-free"]))
              for label in ("corrected", "raw")}
    cocotb.log.info("SOLVE_FREE codes %s; worst error vs fault-free %s", codes, errors)
    assert errors["corrected"] < errors["raw"], errors
    assert not binding.all_violations, binding.all_violations
