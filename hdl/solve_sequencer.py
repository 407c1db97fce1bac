"""Solve sequencer: one analog solve (SOLVE, SOLVE_FREE) or product (MVM) from the
right-hand side buffer to the result buffer.

Sequence (docs/solve-timing.md has the cycle formula, docs/afe-interface.md the signals):

1. Load-DAC: the enabled rows' right-hand side codes go from the rhs buffer into the row
   DACs, one write per cycle, pipelined with the buffer's 1-cycle read latency. Disabled
   rows are skipped (their DACs keep the zero-volt code ``dac_zero_code``, which every
   block leaves behind, and their row switches stay open).
2. Load-LDAC: ``dac_ldac`` applies all DAC outputs at once.
3. Settle-DAC: ``dac_settle`` cycles with the analog core still idle.
4. Settle-Analog: mode, loop and switches set; ``analog_settle`` cycles.
5. Convert: every enabled column, lowest first, through the ADC mux, ``2**avg_log2`` samples
   each; result = (sum + 2**(avg_log2-1)) >> avg_log2 (round half up; the sum itself when
   avg_log2 = 0); over-range flag = OR over the samples. A conversion starts the cycle
   after the previous one ended; each result is written the cycle after its last sample.
6. Zero-DAC: loop opened, mode IDLE, switches open (first cycle); the zero-volt code
   ``dac_zero_code`` (offset binary: 2**(DAC_BITS-1)) written into the DACs of the enabled
   rows; Zero-LDAC applies them. The DAC bus stays quiet during the
   conversions on purpose (digital activity next to the ADC), which costs these N+1 cycles.
7. Done: ``done`` for one cycle with ``error``.

Calibration corrections (a build with ``params.calibration``, docs/calibration.md): ``coeff``
reads the calibration memory, the row's DAC word in Load-DAC (with the RHS read, same
latency) and the column's ADC word during its conversions; ``opamp_coeff`` reads the column's
op-amp word. With ``cal_enable.dac`` the code written into a row DAC is the RHS code corrected
by the row's word (combinational between the RHS read and ``dac_data``, which leaves the
chip). A result goes through two more registered stages instead of one: the cycle after the
last sample the averaged code, minus the ADC offset, times the gain (registered: the product
is the long path); the next cycle rounded, the op-amp offset subtracted (``cal_enable.opamp``,
SOLVE and SOLVE_FREE), rounded, clamped, written with over_range also set when clamped. The
last result is still written before Zero-LDAC, so the cycle count does not change.

Every ADC wait is bounded by the watchdog (``watchdog_limit`` cycles from adc_start to the
end of the conversion): on expiry, or on ``abort`` in any busy state, the safe exit writes
the zero-volt code to every DAC, applies them, and reports ADC_TIMEOUT or ABORTED.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..model import calibration as cal   # the correction's one definition
from .afe import SAFE_EXIT_STATE, AFEMode, AFESignature, GroupedWalk, emit_safe_exit, lowest_set_index
from .codes import ErrorCode
from .params import BuildParams
from .watchdog import Watchdog

__all__ = ["SolveSequencer", "result_layout", "solve_cycles", "SOLVE_MODES", "CalEnable", "readout_rounding", "readout_code",
           "scaled_deviation"]

#: Which calibration corrections a solve applies (CAL_CONTROL's bits, latched at start).
CalEnable = data.StructLayout({"adc": 1, "dac": 1, "opamp": 1})

#: AFE modes the sequencer runs; any other ``mode`` is rejected with UNKNOWN_OPCODE.
SOLVE_MODES: tuple[AFEMode, ...] = (AFEMode.SOLVE, AFEMode.SOLVE_FREE, AFEMode.MVM)


def result_layout(params: BuildParams) -> data.StructLayout:
    """A stored result word: ``code`` in bits [adc_bits-1:0], ``over_range`` in bit adc_bits."""
    return data.StructLayout({"code": unsigned(params.adc_bits), "over_range": unsigned(1)})


def solve_cycles(*, rows: int, cols: int, avg_log2: int, dac_settle: int,
                 analog_settle: int, adc_cycles: int) -> int:
    """Cycles from the ``start`` cycle to the ``done`` cycle of a successful solve.

    ``rows``/``cols``: enabled rows and columns; ``adc_cycles``: cycles from an adc_start
    strobe to the first cycle with adc_busy low again (the AFE's latency plus busy time).
    docs/solve-timing.md derives it phase by phase.
    """
    for name, value, low in (("rows", rows, 1), ("cols", cols, 1), ("avg_log2", avg_log2, 0),
                             ("dac_settle", dac_settle, 0), ("analog_settle", analog_settle, 0),
                             ("adc_cycles", adc_cycles, 2)):
        if type(value) is not int or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    conversions = cols * 2 ** avg_log2
    return 2 * rows + 4 + dac_settle + analog_settle + conversions * (adc_cycles + 1)


def rounding_half(avg_log2, width: int):
    """2**(avg_log2-1), 0 when avg_log2 = 0: what rounds a sum of 2**avg_log2 samples."""
    return ((Const(1, width + 1) << avg_log2) >> 1)[:width]


def rounded_average(total, avg_log2, width: int):
    """(total + 2**(avg_log2-1)) >> avg_log2 with 0 added when avg_log2 = 0 (RTL expression)."""
    return (total + rounding_half(avg_log2, width)) >> avg_log2


def readout_rounding(subtract: Value) -> Value:
    """K = 2^(G-1) + (2^(F-1) - subtract) * 2^G (G = GAIN_FRAC_BITS, F = FRAC_BITS): what
    :func:`readout_code` adds to the correction's product (an expression)."""
    gain_frac, frac = cal.GAIN_FRAC_BITS, cal.FRAC_BITS
    return (1 << (gain_frac - 1)) + (((1 << (frac - 1)) - subtract.as_signed()) << gain_frac)


def scaled_deviation(code: Value) -> Value:
    """(code - zero) * 2^F for an unsigned code, zero = 2^(bits-1): the code with its top bit
    inverted is its two's complement deviation, so this is wiring, no subtracter (in front of
    a multiplier, docs/synthesis.md E53, E56)."""
    code = Value.cast(code)
    return Cat(Const(0, cal.FRAC_BITS), code[:-1], ~code[-1]).as_signed()


def readout_code(product: Value, rounding: Value, bits: int) -> tuple[Value, Value]:
    """``model.calibration.code_from_deviation(round_shift(product, G) - subtract, bits)`` as
    (code, saturated) expressions, with ``rounding`` = :func:`readout_rounding` (subtract):
    zero + ((round(P / 2^G) - S + 2^(F-1)) >> F) is (P + K) >> (G + F) plus the zero code (an
    integer added after a floor is exact), and adding the zero code 2^(B-1) and clamping to B bits
    is: in range when the bits from B-1 up are all equal, then the top bit inverted. One adder,
    no comparators."""
    low = cal.GAIN_FRAC_BITS + cal.FRAC_BITS
    scaled = Value.cast(product.as_signed() + rounding.as_signed())
    from_sign = scaled[low + bits - 1:]
    in_range = from_sign.all() | ~from_sign.any()
    code = Mux(in_range, Cat(scaled[low:low + bits - 1], ~scaled[low + bits - 1]),
               Mux(scaled[-1], 0, (1 << bits) - 1))
    return code, ~in_range


class SolveSequencer(wiring.Component):
    """One solve or MVM. Parameters are sampled in the ``start`` cycle and must be held
    from the cycle before it (the start checks see that cycle's operands).

    Ports (besides start/abort/busy/done/error, see docs/solve-timing.md):
    ``mode`` (SOLVE, SOLVE_FREE or MVM), ``row_mask``, ``col_mask`` (physical columns),
    ``avg_log2`` (2**avg_log2 samples per result), ``dac_settle``, ``analog_settle``,
    ``watchdog_limit`` (cycles), ``over_range_count`` (over-range samples of the last solve),
    ``rhs`` (read port, address = row, DAC codes), ``result`` (write port,
    address = physical column, :func:`result_layout`), ``afe``.

    Errors, checked in this order at start (nothing else happens then): mode not a solve
    mode -> UNKNOWN_OPCODE; no enabled row or column -> BAD_DIMENSION; avg_log2 above
    avg_max_log2 -> BAD_AVERAGING; watchdog_limit 0 -> BAD_TIMING.
    """

    def __init__(self, params: BuildParams):
        if not isinstance(params, BuildParams):
            self._MustUse__silence = True  # a rejected object is no unused design to warn of
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        self._params = params
        p = params
        calibration_ports = {}
        if p.calibration:
            from .calibrator import calibration_memory_depth, coefficient_layout  # (it imports this module)
            coeff_port = memory.ReadPort.Signature(
                addr_width=max(1, (calibration_memory_depth(p) - 1).bit_length()), shape=coefficient_layout(p))
            calibration_ports = {"cal_enable": In(CalEnable), "coeff": In(coeff_port),
                                 "opamp_coeff": In(coeff_port)}
        super().__init__({**calibration_ports,
            "start": In(1),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            "mode": In(AFEMode),
            "row_mask": In(p.rows),
            "col_mask": In(p.total_cols),
            "avg_log2": In(p.avg_log2_bits),
            "dac_settle": In(p.timer_bits),
            "analog_settle": In(p.timer_bits),
            "watchdog_limit": In(p.timer_bits),
            "over_range_count": Out(range(p.total_cols * 2 ** p.avg_max_log2 + 1)),
            "rhs": In(memory.ReadPort.Signature(addr_width=p.row_addr_bits, shape=p.dac_bits)),
            "result": In(memory.WritePort.Signature(addr_width=p.col_addr_bits,
                                                    shape=result_layout(p))),
            "afe": Out(AFESignature(p)),
        })

    @property
    def params(self) -> BuildParams:
        return self._params

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        afe = self.afe

        # The accumulator must hold 2**avg_max_log2 full-scale samples without wrapping.
        assert 2 ** p.avg_max_log2 * (2 ** p.adc_bits - 1) < 2 ** p.sum_bits, \
            "sample accumulator too narrow for the largest averaging count"

        m.submodules.watchdog = watchdog = Watchdog(p.timer_bits)

        # Parameters sampled at start.
        solve_mode = Signal(AFEMode)
        row_mask = Signal(p.rows)
        col_mask = Signal(p.total_cols)
        avg_log2 = Signal(p.avg_log2_bits)
        analog_settle = Signal(p.timer_bits)
        dac_settle = Signal(p.timer_bits)
        watchdog_limit = Signal(p.timer_bits)
        m.d.comb += watchdog.limit.eq(watchdog_limit)

        # Row walk (load and zeroing) and DAC write pipeline.
        # The rows left to visit are kept as registers of what the walk reads: their lowest row,
        # registered with every update (the search over the whole mask in front of the RHS read
        # address was too deep for 100 MHz, docs/synthesis.md E13), whether none or at most one
        # is left (E26); each step from registers of the row's group of eight and per-group
        # tables of the mask, loaded with it in Idle (the 64-bit search was E57's and E63's path).
        row_walk = GroupedWalk(m, p.rows, "row_walk")
        next_row, rows_empty, rows_after_empty = row_walk.index, row_walk.empty, row_walk.last
        write_pending = Signal()
        write_row = Signal(p.row_addr_bits)

        # Column walk and averaging.
        current_col = Signal(p.col_addr_bits)
        cols_left = Signal(p.total_cols)   # enabled columns after current_col
        samples_left = Signal(max(1, p.avg_max_log2))
        sample_sum = Signal(p.sum_bits)
        sample_over_range = Signal()
        saw_busy = Signal()
        wait_timer = Signal(p.timer_bits)

        # Result store, one cycle after a column's last sample.
        store_pending = Signal()
        store_col = Signal(p.col_addr_bits)
        # The column's averaged code: the sum started at the rounding half (below), so only the
        # shift is left, done before the register (after it, it was in front of the calibration's
        # subtract and multiply, docs/synthesis.md E22).
        averaged_code = Signal(p.adc_bits)
        store_over_range = Signal()

        error = Signal(ErrorCode)
        over_range_count = Signal.like(self.over_range_count)
        m.d.comb += [self.error.eq(error), self.over_range_count.eq(over_range_count)]

        m.d.sync += store_pending.eq(0)
        cal_enable = Signal(CalEnable)
        dac_code = Signal(p.dac_bits)
        if not p.calibration:
            m.d.comb += dac_code.eq(self.rhs.data)
            with m.If(store_pending):
                m.d.comb += [
                    self.result.en.eq(1),
                    self.result.addr.eq(store_col),
                    self.result.data.code.eq(averaged_code),
                    self.result.data.over_range.eq(store_over_range),
                ]
        else:
            self._elaborate_corrections(m, averaged_code, dac_code, cal_enable, solve_mode, store_pending,
                                        store_col, store_over_range)

        # Validation of the start parameters, in the documented priority order.
        start_error = Signal(ErrorCode)
        mode_ok = Cat(self.mode == mode for mode in SOLVE_MODES).any()
        with m.If(~mode_ok):
            m.d.comb += start_error.eq(ErrorCode.UNKNOWN_OPCODE)
        with m.Elif((self.row_mask == 0) | (self.col_mask == 0)):
            m.d.comb += start_error.eq(ErrorCode.BAD_DIMENSION)
        with m.Elif(self.avg_log2 > p.avg_max_log2):
            m.d.comb += start_error.eq(ErrorCode.BAD_AVERAGING)
        with m.Elif(self.watchdog_limit == 0):
            m.d.comb += start_error.eq(ErrorCode.BAD_TIMING)
        with m.Else():
            m.d.comb += start_error.eq(ErrorCode.NONE)
        # The checks are evaluated every cycle into a register, so a start sees the outcome for
        # the operands of the cycle before: the checks and the decisions behind the start are
        # too deep for 100 MHz in one cycle (docs/synthesis.md). Both drivers hold the operands
        # from the cycle before the start (the controller: registers written at least
        # REGISTER_WRITE_SPACING cycles earlier; the ANLS sequencer: registered in the states
        # before Solve-Start).
        settled_start_error = Signal(ErrorCode)
        m.d.sync += settled_start_error.eq(start_error)

        def abortable():
            # Last in a state so that it overrides that state's own next-state choice.
            with m.If(self.abort):
                m.d.sync += error.eq(ErrorCode.ABORTED)
                m.next = SAFE_EXIT_STATE

        def enter_analog_settle():
            # Settle-Analog lasts analog_settle cycles; 0 skips it.
            m.d.sync += wait_timer.eq(analog_settle)
            with m.If(analog_settle == 0):
                m.next = "Convert-Start"
            with m.Else():
                m.next = "Settle-Analog"

        def count_down(then):
            m.d.sync += wait_timer.eq(wait_timer - 1)
            with m.If(wait_timer == 1):
                then()

        # Whether the column has samples left and the walk columns left, registered every cycle:
        # samples_left and cols_left change only at a conversion's end (and in Idle), and the next
        # end is at least three cycles later (Convert-Start, two Convert-Wait cycles). The zero
        # tests behind the end's FSM decode were the iCE40's critical path (docs/synthesis.md I37).
        more_samples, more_cols = Signal(), Signal()
        m.d.sync += [more_samples.eq(samples_left != 0), more_cols.eq(cols_left != 0)]

        def last_sample_index(exponent):
            # (1 << exponent) - 1 as its bits: no subtracter for Yosys to share with
            # `samples_left - 1` (docs/synthesis.md I23, as the programmer's I16).
            return Cat(exponent > bit for bit in range(len(samples_left)))

        def go_convert():
            m.next = "Convert-Start"

        with m.FSM(init="Idle") as fsm:
            with m.State("Idle"):
                # The operands and the first column are loaded in every idle cycle, not only on
                # start (internal state: nothing reads it before a start): the start then only
                # decides the next state, instead of enabling all these registers (too deep
                # for 100 MHz behind the command decode, docs/synthesis.md).
                first_col = lowest_set_index(self.col_mask)
                m.d.sync += [
                    solve_mode.eq(self.mode),
                    row_mask.eq(self.row_mask),
                    col_mask.eq(self.col_mask),
                    avg_log2.eq(self.avg_log2),
                    dac_settle.eq(self.dac_settle),
                    analog_settle.eq(self.analog_settle),
                    watchdog_limit.eq(self.watchdog_limit),
                    write_pending.eq(0),
                    current_col.eq(first_col),
                    cols_left.eq(self.col_mask & (self.col_mask - 1)),
                    samples_left.eq(last_sample_index(self.avg_log2)),
                    sample_sum.eq(rounding_half(self.avg_log2, p.sum_bits)),
                    sample_over_range.eq(0),
                ]
                row_walk.load(self.row_mask)
                if p.calibration:
                    m.d.sync += cal_enable.eq(self.cal_enable)
                with m.If(self.start):
                    m.d.sync += error.eq(settled_start_error)
                    with m.If(settled_start_error != ErrorCode.NONE):
                        m.next = "Done"
                    with m.Else():
                        m.d.sync += over_range_count.eq(0)
                        m.next = "Load-DAC"

            with m.State("Load-DAC"):
                # Read row r in cycle k, write its DAC in cycle k+1 (buffer read latency).
                m.d.comb += [self.rhs.en.eq(1), self.rhs.addr.eq(next_row)]
                # No enable from the FSM's decode: the step in the cycle that leaves (rows_empty)
                # leaves the walk undefined, and nothing reads it before Convert-Start restarts it.
                row_walk.step()
                with m.If(~rows_empty):
                    m.d.sync += [write_row.eq(next_row), write_pending.eq(1)]
                with m.Else():
                    m.d.sync += write_pending.eq(0)
                    m.next = "Load-LDAC"
                with m.If(write_pending):
                    m.d.comb += [
                        afe.dac_we.eq(1),
                        afe.dac_addr.eq(write_row),
                        afe.dac_data.eq(dac_code),
                    ]
                abortable()

            with m.State("Load-LDAC"):
                m.d.comb += afe.dac_ldac.eq(1)
                m.d.sync += wait_timer.eq(dac_settle)
                with m.If(dac_settle == 0):
                    enter_analog_settle()
                with m.Else():
                    m.next = "Settle-DAC"
                abortable()

            with m.State("Settle-DAC"):
                count_down(enter_analog_settle)
                abortable()

            with m.State("Settle-Analog"):
                count_down(go_convert)
                abortable()

            with m.State("Convert-Start"):
                # The zeroing walk restarts in every conversion's states (nothing reads it there),
                # not only in the last one's end: the end's decisions stay out of its enables (E63).
                row_walk.restart()
                m.d.comb += [afe.adc_start.eq(~self.abort), watchdog.restart.eq(1)]
                m.d.sync += saw_busy.eq(0)
                m.next = "Convert-Wait"
                abortable()

            with m.State("Convert-Wait"):
                row_walk.restart()
                with m.If(~saw_busy):
                    m.d.sync += saw_busy.eq(afe.adc_busy)
                    with m.If(watchdog.expired):
                        m.d.sync += error.eq(ErrorCode.ADC_TIMEOUT)
                        m.next = SAFE_EXIT_STATE
                with m.Elif(afe.adc_busy):
                    with m.If(watchdog.expired):
                        m.d.sync += error.eq(ErrorCode.ADC_TIMEOUT)
                        m.next = SAFE_EXIT_STATE
                with m.Else():
                    # Conversion ended: adc_data and adc_ovr are valid in this cycle.
                    total = sample_sum + afe.adc_data
                    over_range = sample_over_range | afe.adc_ovr
                    with m.If(afe.adc_ovr):
                        m.d.sync += over_range_count.eq(over_range_count + 1)
                    with m.If(more_samples):
                        m.d.sync += [
                            sample_sum.eq(total),
                            sample_over_range.eq(over_range),
                            samples_left.eq(samples_left - 1),
                        ]
                        m.next = "Convert-Start"
                    with m.Else():
                        m.d.sync += [
                            store_pending.eq(1),
                            store_col.eq(current_col),
                            averaged_code.eq(total >> avg_log2),
                            store_over_range.eq(over_range),
                            sample_sum.eq(rounding_half(avg_log2, p.sum_bits)),
                            sample_over_range.eq(0),
                            samples_left.eq(last_sample_index(avg_log2)),
                        ]
                        with m.If(more_cols):
                            m.d.sync += [
                                current_col.eq(lowest_set_index(cols_left)),
                                cols_left.eq(cols_left & (cols_left - 1)),
                            ]
                            m.next = "Convert-Start"
                        with m.Else():
                            m.next = "Zero-DAC"
                abortable()

            with m.State("Zero-DAC"):
                # First cycle is the release: mode, loop and switches are back to 0.
                m.d.comb += [afe.dac_we.eq(1), afe.dac_addr.eq(next_row),
                             afe.dac_data.eq(p.dac_zero_code)]
                row_walk.step()
                with m.If(rows_after_empty):
                    m.next = "Zero-LDAC"
                abortable()

            with m.State("Zero-LDAC"):
                m.d.comb += afe.dac_ldac.eq(1)
                m.next = "Done"
                abortable()

            emit_safe_exit(m, afe, p, then="Done")

            with m.State("Done"):
                m.d.comb += self.done.eq(1)
                m.next = "Idle"

        analog_active = (fsm.ongoing("Settle-Analog") | fsm.ongoing("Convert-Start") |
                         fsm.ongoing("Convert-Wait"))
        with m.If(analog_active):
            m.d.comb += [
                afe.mode.eq(solve_mode),
                afe.loop.eq(1),
                afe.row_en.eq(row_mask),
                afe.col_en.eq(col_mask),
                afe.adc_mux.eq(current_col),
            ]
        m.d.comb += self.busy.eq(~fsm.ongoing("Idle"))
        if p.calibration:
            # The row's DAC word with the RHS read (Load-DAC), else the column's ADC word; en rests at 1.
            m.d.comb += [
                self.coeff.addr.eq(Mux(fsm.ongoing("Load-DAC"), p.total_cols + next_row, current_col)),
                self.coeff.en.eq(1),
                self.opamp_coeff.addr.eq(p.total_cols + p.rows + current_col),
                self.opamp_coeff.en.eq(1),
            ]
        return m

    def _elaborate_corrections(self, m: Module, averaged_code: Value, dac_code: Signal, cal_enable: Value,
                               solve_mode: Value, store_pending: Value, store_col: Value,
                               store_over_range: Value) -> None:
        """The DAC path's correction and the readout path's two registered stages."""
        from .calibrator import corrected_code  # (it imports this module)
        p = self._params
        corrected_dac, _ = corrected_code(self.rhs.data, self.coeff.data, p.dac_bits)
        m.d.comb += dac_code.eq(Mux(cal_enable.dac, corrected_dac, self.rhs.data))

        # The column's words, registered every cycle: in a column's last-sample cycle they hold
        # that column's words (addressed since the cycle after the column began), so stage 1
        # starts from registers, not from the memory's output (its clock-to-out is long). The
        # ADC word is registered as the stage uses it, with or without the correction (cal_enable
        # is fixed from start on): the choice is off the multiplier's path (E22).
        offset = Signal.like(self.coeff.data.offset)
        gain = Signal.like(self.coeff.data.gain)
        opamp_offset = Signal.like(self.opamp_coeff.data.offset)
        m.d.sync += [offset.eq(Mux(cal_enable.adc, self.coeff.data.offset, 0)),
                     gain.eq(Mux(cal_enable.adc, self.coeff.data.gain, cal.GAIN_ONE)),
                     opamp_offset.eq(self.opamp_coeff.data.offset)]

        # Stage 1 (store_pending): ((code - zero) * 2^F - offset) * gain in two terms: the
        # deviation's, registered from the averaged code's register alone (no subtracter in
        # front of the multiplier, E56), and offset * gain, registered every cycle (offset
        # holds the column's word from its last-sample cycle on, so offset * gain does from the
        # cycle after, stage 1) and taken off with the rounding.
        deviation = scaled_deviation(averaged_code)
        product = Signal(signed(len(deviation) + cal.GAIN_BITS + 1))
        offset_gain = Signal(signed(len(offset) + cal.GAIN_BITS + 1))
        subtract = Signal.like(self.opamp_coeff.data.offset)
        corrected_pending = Signal()
        corrected_col = Signal.like(store_col)
        corrected_over_range = Signal()
        m.d.sync += [product.eq(deviation * gain), offset_gain.eq(offset * gain),
                     corrected_pending.eq(store_pending), corrected_col.eq(store_col),
                     corrected_over_range.eq(store_over_range)]
        m.d.comb += subtract.eq(Mux(cal_enable.opamp & (solve_mode != AFEMode.MVM), opamp_offset, 0))

        # Stage 2: rounded, the op-amp offset off, rounded to a code, clamped, written; the
        # rounding constant with the offsets in it registered in stage 1 (E37: three adders and
        # the clamp's compares were in front of RESULTS).
        rounding = Signal(signed(max(len(product), len(offset_gain)) + 3))
        m.d.sync += rounding.eq(readout_rounding(subtract) - offset_gain)
        clamped, saturated = readout_code(product, rounding, p.adc_bits)
        with m.If(corrected_pending):
            m.d.comb += [
                self.result.en.eq(1),
                self.result.addr.eq(corrected_col),
                self.result.data.code.eq(clamped),
                self.result.data.over_range.eq(corrected_over_range | saturated),
            ]
