"""Write-verify programmer: reads one cell, or programs one cell or a whole matrix of cells
to their target codes with SET/RESET pulses of increasing amplitude.

Per cell (the algorithm of ``model.device.write_verify``, in ADC codes):

1. read: mode READ_CELL on (cell_row, cell_col), ``read_settle`` cycles, then
   ``2**avg_log2`` conversions; code = (sum + 2**(avg_log2-1)) >> avg_log2 (as the solve
   sequencer); in a build with calibration the code goes through the channel's ADC word
   (``cal_adc``, docs/calibration.md) first, in the same cycles; if |code - target| <=
   tolerance: the cell passes.
2. if the cell has had ``pulse_budget`` pulses: the cell fails.
3. polarity = SET if code < target else RESET. The first pulse, and every pulse whose
   polarity differs from the previous one (an overshoot), uses ``amp_start``; otherwise
   the amplitude grows by ``amp_step``. Amplitudes are capped at ``amp_max``.
4. mode PROGRAM, one ``prog_fire`` with the polarity, amplitude and ``pulse_width``; wait
   for ``prog_done``; count the pulse; go to 1.

A programmed cell's pass (0) or fail (1) goes into the fault map, so the map shows the
outcome of the last programming of each cell. The fault map has the host's layout (the
FAULT_MAP register window): one ``total_cols``-bit word per row, bit c = column c, written
with one write enable per bit, so the programmer sets or clears a single cell's bit without
a read-modify-write. PROGRAM_MATRIX visits every enabled
row x enabled column, row by row, lowest first. A program command ends with
CELLS_FAILED when any cell failed (``failed_count``), else NONE.

Every ADC wait and every pulse is bounded by ``watchdog_limit`` cycles; timeout
(ADC_TIMEOUT, PROGRAM_TIMEOUT) or ``abort`` (ABORTED) takes the safe exit: mode IDLE,
loop open, every DAC written the zero-volt code and applied, then done.
"""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import enum, memory, wiring
from amaranth.lib.wiring import In, Out

from .afe import SAFE_EXIT_STATE, AFEMode, AFESignature, ProgPolarity, emit_safe_exit, \
    lowest_set_index
from .codes import ErrorCode
from .params import BuildParams
from ..model import calibration as cal   # the correction's one definition
from .solve_sequencer import readout_code, readout_rounding, rounding_half, scaled_deviation
from .watchdog import Watchdog

__all__ = ["ProgrammerCommand", "WriteVerifyProgrammer"]


@dataclass(frozen=True)
class _CorrectedRead:
    """The verify read's correction stage: ``stage`` registers the product (drive it in
    Average); ``code`` / ``saturated`` are the corrected code and its clamp flag from it."""

    stage: Value
    code: Value
    saturated: Value


class ProgrammerCommand(enum.Enum, shape=2):
    """What the programmer does on start; the value 3 is rejected with UNKNOWN_OPCODE."""

    READ_CELL = 0       #: averaged read of (cell_row, cell_col) into read_code
    PROGRAM_CELL = 1    #: write-verify (cell_row, cell_col)
    PROGRAM_MATRIX = 2  #: write-verify every enabled row x enabled column


class WriteVerifyProgrammer(wiring.Component):
    """Write-verify of RRAM cells through the AFE. Parameters are sampled at ``start`` and must
    be held from the cycle before it (the start checks see that cycle's operands).

    Ports (besides start/abort/busy/done/error): ``command``, ``cell_row``, ``cell_col``,
    ``row_mask``, ``col_mask``, ``tolerance`` (codes), ``amp_start``, ``amp_step``,
    ``amp_max`` (amplitude codes), ``pulse_width``, ``pulse_budget`` (pulses per cell),
    ``avg_log2``, ``read_settle``, ``watchdog_limit`` (cycles); ``target`` (read port, cell
    address ``row * total_cols + col``, target codes), ``fault_map`` (write port, address =
    row, ``total_cols`` bits with a write enable per bit); ``read_code``/``read_over_range``
    (last averaged read), ``pulse_count`` (pulses of the last command), ``failed_count``
    (cells failed by the last command), ``failed_cols`` (bit c: a cell of column c failed in
    the last command), ``checked_count`` (cells the last program command verified),
    ``reprogrammed_count`` (those of them that got at least one pulse; these counts are cleared
    in the second cycle of an accepted command), ``over_range_sample``
    (high in each cycle a sample flagged ``adc_ovr`` is accumulated, for the controller's
    counter); ``afe``. With ``params.calibration``: ``cal_adc`` (CAL_CONTROL.adc, sampled while
    idle), ``coeff_channel`` (the CAL_COEFF index of the current column's ADC word: the logical
    column) and ``coeff_word`` (that word, one cycle later). The controller's column remap (hdl/column_remap.py) translates the
    columns on the AFE port and the fault map's bit enable: the programmer sees logical columns.

    ``rerun`` (held from the cycle before a start, like the operands): the start runs the last
    started command again, with its rows and settings, on the columns ``rerun_col_mask``
    instead of the operand ports' (the remap's spare trials after a PROGRAM_MATRIX walk). While
    ``rerun`` is high the idle programmer keeps the operands of its last start instead of
    loading the ports, and a start skips the checks: those operands passed them at that start.

    Errors, checked in this order at start (nothing else happens then): command 3 ->
    UNKNOWN_OPCODE; READ_CELL/PROGRAM_CELL with cell_row >= rows or cell_col >= total_cols,
    or PROGRAM_MATRIX with an empty row or column mask -> BAD_DIMENSION; avg_log2 above
    avg_max_log2 -> BAD_AVERAGING; a program command with tolerance 0 or >= 2**adc_bits ->
    BAD_TOLERANCE; watchdog_limit 0, or a program command with pulse_width 0 -> BAD_TIMING.
    A pulse budget of 0 is legal (verify only: out-of-tolerance cells fail at once).
    """

    def __init__(self, params: BuildParams):
        if not isinstance(params, BuildParams):
            self._MustUse__silence = True  # a rejected object is no unused design to warn of
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        self._params = params
        p = params
        calibration_ports = {}
        if p.calibration:
            from .calibrator import coefficient_layout  # (it imports the solve sequencer)
            calibration_ports = {"cal_adc": In(1), "coeff_channel": Out(p.col_addr_bits),
                                 "coeff_word": In(coefficient_layout(p))}
        super().__init__({
            **calibration_ports,
            "start": In(1),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            "command": In(ProgrammerCommand),
            "cell_row": In(p.row_addr_bits),
            "cell_col": In(p.col_addr_bits),
            "row_mask": In(p.rows),
            "col_mask": In(p.total_cols),
            "tolerance": In(p.tolerance_bits),
            "amp_start": In(p.prog_amp_bits),
            "amp_step": In(p.prog_amp_bits),
            "amp_max": In(p.prog_amp_bits),
            "pulse_width": In(p.prog_width_bits),
            "pulse_budget": In(p.pulse_budget_bits),
            "avg_log2": In(p.avg_log2_bits),
            "read_settle": In(p.timer_bits),
            "watchdog_limit": In(p.timer_bits),
            "rerun": In(1),
            "rerun_col_mask": In(p.total_cols),
            "target": In(memory.ReadPort.Signature(addr_width=p.cell_addr_bits,
                                                   shape=p.adc_bits)),
            "fault_map": In(memory.WritePort.Signature(addr_width=p.row_addr_bits,
                                                      shape=p.total_cols, granularity=1)),
            "read_code": Out(p.adc_bits),
            "read_over_range": Out(1),
            "pulse_count": Out(range(p.cell_count * (2 ** p.pulse_budget_bits - 1) + 1)),
            "failed_count": Out(range(p.cell_count + 1)),
            "failed_cols": Out(p.total_cols),
            "checked_count": Out(range(p.cell_count + 1)),
            "reprogrammed_count": Out(range(p.cell_count + 1)),
            "over_range_sample": Out(1),
            "afe": Out(AFESignature(p)),
        })

    @property
    def params(self) -> BuildParams:
        return self._params

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        afe = self.afe

        assert 2 ** p.avg_max_log2 * (2 ** p.adc_bits - 1) < 2 ** p.sum_bits, \
            "sample accumulator too narrow for the largest averaging count"

        m.submodules.watchdog = watchdog = Watchdog(p.timer_bits)

        # Parameters sampled at start.
        command = Signal(ProgrammerCommand)
        col_mask = Signal(p.total_cols)
        tolerance = Signal(p.tolerance_bits)
        amp_start = Signal(p.prog_amp_bits)
        amp_step = Signal(p.prog_amp_bits)
        amp_max = Signal(p.prog_amp_bits)
        pulse_width = Signal(p.prog_width_bits)
        pulse_budget = Signal(p.pulse_budget_bits)
        avg_log2 = Signal(p.avg_log2_bits)
        read_settle = Signal(p.timer_bits)
        watchdog_limit = Signal(p.timer_bits)
        m.d.comb += watchdog.limit.eq(watchdog_limit)

        # Cell walk: rows_left holds the current row as its lowest bit; start_rows the rows of the
        # last start (a rerun walks them again).
        rows_left = Signal(p.rows)
        start_rows = Signal(p.rows)
        # rows_left without its lowest bit, and whether that leaves none, registered from
        # rows_left in every cycle: rows_left changes only in Next-Cell (and in Idle), and the
        # row-finished branch that reads these is never taken in the cycle after such a change
        # (the first Next-Cell after a start or a row change always has columns left). The
        # subtraction and the wide zero test are too deep in front of the done decision
        # (docs/synthesis.md).
        rows_after = Signal(p.rows)
        on_last_row = Signal()
        m.d.sync += [rows_after.eq(rows_left & (rows_left - 1)),
                     on_last_row.eq((rows_left & (rows_left - 1)) == 0)]
        any_failed = Signal()   # failed_count != 0, kept as a flag for the same reason
        fresh = Signal()        # started, the counts not cleared yet (the first Next-Cell does)
        cols_left = Signal(p.total_cols)
        row = Signal(p.row_addr_bits)
        col = Signal(p.col_addr_bits)
        # TARGET's address row * total_cols + col: the product is registered from the row the
        # walk would pick now (lowest_set_index(rows_left)) in every cycle, so in Fetch-Target,
        # the cycle after Next-Cell picked row and col, it is that row's; the multiply in front
        # of the buffer's address and its bypass compare is too deep (docs/synthesis.md).
        # The product is an OR of constants selected by the lowest row as a one-hot vector
        # (rows_left & -rows_left): no multiplier (Yosys maps `* total_cols` to a DSP, 3.9 ns
        # on the ECP5), and no index search and adders in front of the register (the iCE40's
        # critical path, docs/synthesis.md I38).
        row_base = Signal(p.cell_addr_bits)
        lowest_row = rows_left & (~rows_left + 1)[:p.rows]
        m.d.sync += row_base.eq(functools.reduce(
            operator.or_, (Mux(lowest_row[r], r * p.total_cols, 0) for r in range(p.rows))))
        cell_address = Signal(p.cell_addr_bits)
        m.d.comb += cell_address.eq(row_base + col)
        target_code = Signal(p.adc_bits)
        target_pending = Signal()

        # Read (averaging) and pulse state of the current cell.
        wait_timer = Signal(p.timer_bits)
        samples_left = Signal(max(1, p.avg_max_log2))
        sample_sum = Signal(p.sum_bits)
        sample_over_range = Signal()
        saw_busy = Signal()
        cell_pulses = Signal(p.pulse_budget_bits)
        polarity = Signal(ProgPolarity)
        pulsed = Signal()          # the cell has had a pulse (the polarity above is valid)
        amplitude = Signal(p.prog_amp_bits)
        cell_failed = Signal()

        error = Signal(ErrorCode)
        read_code = Signal(p.adc_bits)
        read_over_range = Signal()
        pulse_count = Signal.like(self.pulse_count)
        failed_count = Signal.like(self.failed_count)
        failed_cols = Signal.like(self.failed_cols)
        checked_count = Signal.like(self.checked_count)
        reprogrammed_count = Signal.like(self.reprogrammed_count)
        m.d.comb += [
            self.failed_cols.eq(failed_cols), self.checked_count.eq(checked_count),
            self.reprogrammed_count.eq(reprogrammed_count),
            self.error.eq(error), self.read_code.eq(read_code),
            self.read_over_range.eq(read_over_range), self.pulse_count.eq(pulse_count),
            self.failed_count.eq(failed_count),
        ]

        # The target is latched the cycle after Fetch-Target drove its address.
        m.d.sync += target_pending.eq(0)
        with m.If(target_pending):
            m.d.sync += target_code.eq(self.target.data)

        # Validation of the start parameters, in the documented priority order.
        start_error = Signal(ErrorCode)
        single_cell = (self.command == ProgrammerCommand.READ_CELL) | \
                      (self.command == ProgrammerCommand.PROGRAM_CELL)
        programs = (self.command == ProgrammerCommand.PROGRAM_CELL) | \
                   (self.command == ProgrammerCommand.PROGRAM_MATRIX)
        bad_cell = (self.cell_row >= p.rows) | (self.cell_col >= p.total_cols)
        no_cells = (self.row_mask == 0) | (self.col_mask == 0)
        with m.If(~single_cell & ~programs):
            m.d.comb += start_error.eq(ErrorCode.UNKNOWN_OPCODE)
        with m.Elif(Mux(single_cell, bad_cell, no_cells)):
            m.d.comb += start_error.eq(ErrorCode.BAD_DIMENSION)
        with m.Elif(self.avg_log2 > p.avg_max_log2):
            m.d.comb += start_error.eq(ErrorCode.BAD_AVERAGING)
        with m.Elif(programs & ((self.tolerance == 0) | (self.tolerance >= 2 ** p.adc_bits))):
            m.d.comb += start_error.eq(ErrorCode.BAD_TOLERANCE)
        with m.Elif((self.watchdog_limit == 0) | (programs & (self.pulse_width == 0))):
            m.d.comb += start_error.eq(ErrorCode.BAD_TIMING)
        with m.Else():
            m.d.comb += start_error.eq(ErrorCode.NONE)
        # Registered as in the solve sequencer: a start sees the outcome for the operands of the
        # cycle before, which both drivers hold (docs/synthesis.md). A rerun's operands passed
        # the checks at the last start: `rerun` picks NONE behind the checks, so the ports need
        # no source mux in front of them (the remap's select of its trial operands in front of
        # these checks was the iCE40's critical path, docs/synthesis.md I45).
        settled_start_error = Signal(ErrorCode)
        m.d.sync += settled_start_error.eq(Mux(self.rerun, ErrorCode.NONE, start_error))

        def abortable():
            with m.If(self.abort):
                m.d.sync += error.eq(ErrorCode.ABORTED)
                m.next = SAFE_EXIT_STATE

        def last_sample_index(exponent):
            # (1 << exponent) - 1 as its bits (bit i set iff i < exponent): no subtracter, which
            # Yosys shared with Read-Wait's `samples_left - 1` behind a mux selected by the FSM's
            # next-state logic (the iCE40's critical path, docs/synthesis.md I16).
            return Cat(exponent > bit for bit in range(len(samples_left)))

        def begin_read():
            m.d.sync += [
                wait_timer.eq(read_settle),
                samples_left.eq(last_sample_index(avg_log2)),
                # The sum starts at the rounding half: the average is then a shift only.
                sample_sum.eq(rounding_half(avg_log2, p.sum_bits)),
                sample_over_range.eq(0),
            ]
            with m.If(read_settle == 0):
                m.next = "Read-Start"
            with m.Else():
                m.next = "Read-Settle"

        # Compare: the averaged code against the target.
        average = Signal(p.adc_bits)
        m.d.comb += average.eq(sample_sum >> avg_log2)
        # |code - target| <= tolerance and code < target are decided on the sample sum, against
        # bounds scaled to it, and registered in Average with the code (Compare then decides on
        # flags, docs/synthesis.md I6): the sum starts at the rounding half, code = sum >>
        # avg_log2, so code >= L <=> sum >= L << avg_log2, code <= H <=> sum <= ((H + 1) <<
        # avg_log2) - 1, code < T <=> sum < T << avg_log2. The bounds take two registered steps
        # after the target latch (the cycle after Fetch-Target): code-domain bounds, then the
        # scaling (one step was the iCE40's critical path, I9). They are valid from the fourth
        # cycle after Fetch-Target, the earliest Average (Read-Start, at least two Read-Wait
        # cycles).
        code_bound_shape = signed(max(p.adc_bits, p.tolerance_bits) + 3)
        code_low, code_high_next = Signal(code_bound_shape), Signal(code_bound_shape)
        m.d.sync += [code_low.eq(target_code - tolerance),
                     code_high_next.eq(target_code + tolerance + 1)]
        bound_shape = signed(max(p.adc_bits, p.tolerance_bits) + p.avg_max_log2 + 3)
        sum_low, sum_high, sum_target = (Signal(bound_shape) for _ in range(3))
        m.d.sync += [
            sum_low.eq(code_low << avg_log2),
            sum_high.eq((code_high_next << avg_log2) - 1),
            sum_target.eq(target_code << avg_log2),
        ]
        within = Signal()
        below_target = Signal()
        # With calibration, the averaged code is registered in the last sample's cycle (the
        # shift before the register, not in front of the correction's subtract and multiply:
        # the ECP5's critical path, docs/synthesis.md E27).
        last_average = Signal(p.adc_bits)
        if p.calibration:
            corrected_product = self._elaborate_read_correction(m, last_average, code_low, code_high_next,
                                                                target_code, col, within, below_target)
        # The cell's pulse budget spent, registered every cycle: cell_pulses changes in
        # Fetch-Target and Fire, at least four cycles before a Compare (a read in between), and
        # pulse_budget is latched at the start; the compare in Compare was in front of the FSM's
        # next state (the iCE40's critical path, docs/synthesis.md I27).
        budget_spent = Signal()
        m.d.sync += budget_spent.eq(cell_pulses == pulse_budget)
        wanted = Signal(ProgPolarity)
        m.d.comb += wanted.eq(Mux(below_target, ProgPolarity.SET, ProgPolarity.RESET))
        grown = amplitude + amp_step                         # one bit wider: no wrap
        next_amplitude = Mux(pulsed & (wanted == polarity),
                             Mux(grown > amp_max, amp_max, grown),
                             Mux(amp_start > amp_max, amp_max, amp_start))

        with m.FSM(init="Idle") as fsm:
            with m.State("Idle"):
                # The operands are loaded in every idle cycle (internal state, read only after a
                # start): the start decides the next state and clears the outputs' counts only,
                # instead of enabling all these registers (docs/synthesis.md). A rerun keeps
                # them, the walk's rows (`start_rows`) and the rerun's columns.
                one_row = Const(1, p.rows) << self.cell_row
                one_col = Const(1, p.total_cols) << self.cell_col
                with m.If(self.rerun):
                    m.d.sync += [rows_left.eq(start_rows), cols_left.eq(self.rerun_col_mask),
                                 col_mask.eq(self.rerun_col_mask)]
                with m.Else():
                    m.d.sync += [
                        command.eq(self.command),
                        start_rows.eq(Mux(single_cell, one_row, self.row_mask)),
                        rows_left.eq(Mux(single_cell, one_row, self.row_mask)),
                        cols_left.eq(Mux(single_cell, one_col, self.col_mask)),
                        col_mask.eq(Mux(single_cell, one_col, self.col_mask)),
                        tolerance.eq(self.tolerance),
                        amp_start.eq(self.amp_start),
                        amp_step.eq(self.amp_step),
                        amp_max.eq(self.amp_max),
                        pulse_width.eq(self.pulse_width),
                        pulse_budget.eq(self.pulse_budget),
                        avg_log2.eq(self.avg_log2),
                        read_settle.eq(self.read_settle),
                        watchdog_limit.eq(self.watchdog_limit),
                    ]
                with m.If(self.start):
                    m.d.sync += error.eq(settled_start_error)
                    with m.If(settled_start_error != ErrorCode.NONE):
                        m.next = "Done"
                    with m.Else():
                        m.d.sync += fresh.eq(1)
                        m.next = "Next-Cell"

            with m.State("Next-Cell"):
                # The command's counts are cleared here, in its first Next-Cell (before any
                # Record), not by the start: the start's fan-out to their enables was the
                # iCE40's critical path (docs/synthesis.md I36). They keep the last command's
                # values until then.
                with m.If(fresh):
                    m.d.sync += [pulse_count.eq(0), failed_count.eq(0), any_failed.eq(0),
                                 failed_cols.eq(0), checked_count.eq(0),
                                 reprogrammed_count.eq(0), fresh.eq(0)]
                with m.If(cols_left != 0):
                    m.d.sync += [
                        row.eq(lowest_set_index(rows_left)),
                        col.eq(lowest_set_index(cols_left)),
                        cols_left.eq(cols_left & (cols_left - 1)),
                    ]
                    m.next = "Fetch-Target"
                with m.Else():
                    # Row finished: the next row starts over with every enabled column.
                    m.d.sync += [rows_left.eq(rows_after), cols_left.eq(col_mask)]
                    with m.If(on_last_row):
                        m.d.sync += error.eq(Mux(any_failed, ErrorCode.CELLS_FAILED,
                                                 ErrorCode.NONE))
                        m.next = "Done"
                abortable()

            with m.State("Fetch-Target"):
                m.d.comb += [self.target.en.eq(1), self.target.addr.eq(cell_address)]
                m.d.sync += [target_pending.eq(1), cell_pulses.eq(0), pulsed.eq(0)]
                begin_read()
                abortable()

            with m.State("Read-Settle"):
                m.d.sync += wait_timer.eq(wait_timer - 1)
                with m.If(wait_timer == 1):
                    m.next = "Read-Start"
                abortable()

            with m.State("Read-Start"):
                m.d.comb += [afe.adc_start.eq(~self.abort), watchdog.restart.eq(1)]
                m.d.sync += saw_busy.eq(0)
                m.next = "Read-Wait"
                abortable()

            with m.State("Read-Wait"):
                with m.If(~saw_busy | afe.adc_busy):
                    m.d.sync += saw_busy.eq(saw_busy | afe.adc_busy)
                    with m.If(watchdog.expired):
                        m.d.sync += error.eq(ErrorCode.ADC_TIMEOUT)
                        m.next = SAFE_EXIT_STATE
                with m.Else():
                    m.d.comb += self.over_range_sample.eq(afe.adc_ovr)
                    m.d.sync += [
                        sample_sum.eq(sample_sum + afe.adc_data),
                        sample_over_range.eq(sample_over_range | afe.adc_ovr),
                        samples_left.eq(samples_left - 1),
                    ]
                    with m.If(samples_left == 0):
                        if p.calibration:
                            m.d.sync += last_average.eq((sample_sum + afe.adc_data) >> avg_log2)
                        m.next = "Average"
                    with m.Else():
                        m.next = "Read-Start"
                abortable()

            with m.State("Average"):
                # The averaged code is registered here and compared in the next cycle: both in
                # one cycle are too deep for 100 MHz (docs/synthesis.md). With calibration the
                # register is the corrected product and Compare decides on it.
                m.d.sync += read_over_range.eq(sample_over_range)
                if p.calibration:
                    m.d.comb += corrected_product.stage.eq(1)
                else:
                    m.d.sync += [read_code.eq(average),
                                 within.eq((sample_sum >= sum_low) & (sample_sum <= sum_high)),
                                 below_target.eq(sample_sum < sum_target)]
                m.next = "Compare"
                abortable()

            with m.State("Compare"):
                if p.calibration:
                    # The corrected code (rounded, clamped; a clamp flags over range as in the
                    # solves) is the reading READ_CELL and REFINE_A get.
                    m.d.sync += [read_code.eq(corrected_product.code),
                                 read_over_range.eq(read_over_range | corrected_product.saturated)]
                with m.If(command == ProgrammerCommand.READ_CELL):
                    m.d.sync += error.eq(ErrorCode.NONE)
                    m.next = "Done"
                with m.Elif(within):
                    m.d.sync += cell_failed.eq(0)
                    m.next = "Record"
                with m.Elif(budget_spent):
                    m.d.sync += cell_failed.eq(1)
                    m.next = "Record"
                with m.Else():
                    m.d.sync += [polarity.eq(wanted), amplitude.eq(next_amplitude),
                                 pulsed.eq(1)]
                    m.next = "Fire"
                abortable()

            with m.State("Fire"):
                m.d.comb += [afe.prog_fire.eq(~self.abort), watchdog.restart.eq(1)]
                with m.If(~self.abort):
                    m.d.sync += [cell_pulses.eq(cell_pulses + 1),
                                 pulse_count.eq(pulse_count + 1)]
                m.next = "Pulse-Wait"
                abortable()

            with m.State("Pulse-Wait"):
                with m.If(afe.prog_done):
                    begin_read()
                with m.Elif(watchdog.expired):
                    m.d.sync += error.eq(ErrorCode.PROGRAM_TIMEOUT)
                    m.next = SAFE_EXIT_STATE
                abortable()

            with m.State("Record"):
                m.d.comb += [
                    self.fault_map.en.eq(Const(1, p.total_cols) << col),
                    self.fault_map.addr.eq(row),
                    self.fault_map.data.eq(cell_failed.replicate(p.total_cols)),
                ]
                m.d.sync += [failed_count.eq(failed_count + cell_failed),
                             any_failed.eq(any_failed | cell_failed),
                             failed_cols.eq(failed_cols | (cell_failed << col)),
                             checked_count.eq(checked_count + 1),
                             reprogrammed_count.eq(reprogrammed_count + pulsed)]
                m.next = "Next-Cell"
                abortable()

            emit_safe_exit(m, afe, p, then="Done")

            with m.State("Done"):
                m.d.comb += self.done.eq(1)
                m.next = "Idle"

        reading = fsm.ongoing("Read-Settle") | fsm.ongoing("Read-Start") | \
            fsm.ongoing("Read-Wait")
        pulsing = fsm.ongoing("Fire") | fsm.ongoing("Pulse-Wait")
        with m.If(reading | pulsing):
            m.d.comb += [afe.cell_row.eq(row), afe.cell_col.eq(col)]
        with m.If(reading):
            # The AFE routes cell_col to the ADC in READ_CELL; adc_mux follows for clarity.
            m.d.comb += [afe.mode.eq(AFEMode.READ_CELL), afe.adc_mux.eq(col)]
        with m.If(pulsing):
            m.d.comb += [
                afe.mode.eq(AFEMode.PROGRAM),
                afe.prog_polarity.eq(polarity),
                afe.prog_amplitude.eq(amplitude),
                afe.prog_width.eq(pulse_width),
            ]
        m.d.comb += self.busy.eq(~fsm.ongoing("Idle"))
        return m

    def _elaborate_read_correction(self, m: Module, average: Signal, code_low: Signal,
                                   code_high_next: Signal, target_code: Signal, col: Signal,
                                   within: Signal, below_target: Signal) -> "_CorrectedRead":
        """The readout correction of a verify read (``cal_adc``: the channel's ADC word, else
        the identity): the product ((code - zero) * 2^F - offset) * gain of the averaged code.
        Its two terms apart: (code - zero) * 2^F * gain is registered in Average (``stage``)
        from the average's register alone (the deviation is the code with its top bit
        inverted: no adder in front of the multiplier, docs/synthesis.md E53); offset * gain,
        fixed per column, is registered every cycle and goes into the bounds and the rounding.
        Compare rounds and clamps the product into ``read_code`` and decides ``within`` /
        ``below_target`` on it against the code bounds mapped into the product's scale.

        corrected code = clamp(zero + round_shift(round_shift(product, GF), F)) and both
        round_shifts are monotonic, so for a code bound K: unclamped code >= K <=> product >=
        ((K - zero) << (F + GF)) - 2^(F - 1 + GF) - 2^(GF - 1) (an affine map, no division).
        The clamp: code >= L holds for every product when L <= 0, code <= H when H >= 2^B - 1.
        code < T needs no such flag: it matters only out of tolerance, where T = 0 means a code
        above the tolerance, never a clamped 0.

        Timing: col is set in Next-Cell (N); the word is read in N + 1, registered (offset,
        gain) in N + 2, offset * gain in N + 3, and the bounds and the rounding in N + 4 with
        the code bounds (from the target read in Fetch-Target, N + 1): valid from N + 5, the
        earliest Average (the fourth cycle after Fetch-Target), as before."""
        p = self._params
        zero = 1 << (p.adc_bits - 1)
        top = (1 << p.adc_bits) - 1
        frac, gain_frac = cal.FRAC_BITS, cal.GAIN_FRAC_BITS

        cal_adc = Signal()
        # CAL_CONTROL.adc is sampled with the other operands in every idle cycle.
        with m.If(~self.busy):
            m.d.sync += cal_adc.eq(self.cal_adc)
        # The column's word is read in every cycle (col is set in Next-Cell, at least four
        # cycles before an Average) and registered, the identity chosen before the register
        # when the correction is off (cal_adc is fixed while busy): the product starts from
        # registers (E27). ADC channel c's word is at index c (cal.adc_address): the logical
        # column, as calibrated.
        offset = Signal.like(self.coeff_word.offset)
        gain = Signal.like(self.coeff_word.gain)
        m.d.comb += self.coeff_channel.eq(col)
        m.d.sync += [offset.eq(Mux(cal_adc, self.coeff_word.offset, 0)),
                     gain.eq(Mux(cal_adc, self.coeff_word.gain, cal.GAIN_ONE))]

        deviation = scaled_deviation(average)      # (average - zero) << F, wiring
        product = Signal(signed(len(deviation) + cal.GAIN_BITS + 1))     # the deviation's term
        offset_gain = Signal(signed(len(offset) + cal.GAIN_BITS + 1))
        m.d.sync += offset_gain.eq(offset * gain)
        stage = Signal()
        with m.If(stage):
            m.d.sync += product.eq(deviation * gain)

        # Product-scale bounds, registered from the code bounds (the same step as the sum
        # bounds: valid from the fourth cycle after Fetch-Target, before the earliest Compare),
        # with offset * gain added: product - offset * gain >= bound <=> product >= bound +
        # offset * gain.
        bound_shape = signed(max(len(product), len(offset_gain),
                                 len(code_low) + frac + gain_frac) + 3)
        low_bound, high_bound, target_bound = (Signal(bound_shape) for _ in range(3))
        low_open, high_open = Signal(), Signal()

        def product_bound(code: Value) -> Value:
            return ((code - zero) << (frac + gain_frac)) - (1 << (frac - 1 + gain_frac)) - \
                (1 << (gain_frac - 1))

        # The code's rounding (solve_sequencer.readout_code) with offset * gain taken off.
        rounding = Signal(signed(len(offset_gain) + 2))
        m.d.sync += [
            low_bound.eq(product_bound(code_low) + offset_gain),
            high_bound.eq(product_bound(code_high_next) + offset_gain),
            target_bound.eq(product_bound(target_code) + offset_gain),
            low_open.eq(code_low <= 0), high_open.eq(code_high_next > top),
            rounding.eq(readout_rounding(Const(0, 1)) - offset_gain),
        ]
        m.d.comb += [
            within.eq((low_open | (product >= low_bound)) & (high_open | (product < high_bound))),
            below_target.eq(product < target_bound),
        ]
        code, saturated = readout_code(product, rounding, p.adc_bits)
        return _CorrectedRead(stage=stage, code=code, saturated=saturated)
