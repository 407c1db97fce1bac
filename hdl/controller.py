"""The controller's top level: AXI4-Lite register file, command decode, solve sequencer and
write-verify programmer behind one AFE port.

docs/controller.md describes the behaviour (command decode and validation order, STATUS and
error_detail, interrupts, counters, abort and soft reset, the cycle overhead); in short:

* CONTROL.start validates COMMAND and the registers it uses in the cycle the strobe arrives and,
  if they pass, starts the block in that same cycle: SOLVE/SOLVE_FREE/MVM go to the solve
  sequencer, READ_CELL/PROGRAM_CELL/PROGRAM_MATRIX to the programmer, RUN_NMF to the ANLS
  sequencer (which then drives the other two blocks' command ports), CALIBRATE to the
  calibrator, NOP completes at once.
  A refused command sets STATUS.error and error_detail and changes nothing else.
* STATUS.done/error/error_detail show a block's outcome two cycles after its done cycle (the
  outcome is registered in the done cycle, STATUS updated from that register: STATUS_DELAY),
  a refused command's or NOP's in the cycle after the start strobe (REFUSAL_STATUS_DELAY);
  STATUS.busy falls in the cycle STATUS.done rises.
* The blocks drive all-zero AFE outputs while idle and only one runs at a time, so their AFE
  outputs are ORed; the AFE's answers go to all of them.
* REFRESH runs the programmer's PROGRAM_MATRIX walk; the column remap (hdl/column_remap.py,
  docs/fault-handling.md) translates the blocks' logical columns to physical ones on the AFE
  port and may follow a PROGRAM_MATRIX / REFRESH walk with spare trials before it ends.
* The calibration memory (CAL_COEFF) is written by the calibrator and read by the bus, the
  calibrator and the solve sequencer (its corrections, enabled by CAL_CONTROL).
"""
from __future__ import annotations

import functools
import operator
from typing import Any

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, ValueLike, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .afe import AFEMode, AFESignature, lowest_set_index
from .anls_sequencer import ANLSSequencer, program_command_signature, solve_command_signature
from .axi4lite import AXI4LiteRegisterFile
from .calibrator import Calibrator
from .codes import ErrorCode, Opcode
from .column_remap import ColumnRemap
from .params import BuildParams
from .programmer import ProgrammerCommand, WriteVerifyProgrammer
from .refiner import Refiner
from .regmap import discard_unbuilt
from .registers import REFINE_B_BITS, REFINE_X_BITS, REFRESH_TICK_CYCLES, SOLVE_RETRY_BITS, ControllerRegisters
from .solve_sequencer import SolveSequencer

__all__ = ["Controller", "saturate", "verilog_text", "TOP_MODULE", "STATUS_DELAY", "REFUSAL_STATUS_DELAY",
           "SOLVE_OPCODES", "PROGRAMMER_OPCODES"]

TOP_MODULE = "anmf_controller"  #: name of the generated Verilog module

#: Opcodes the solve sequencer runs, with the AFE mode each one uses.
SOLVE_OPCODES: dict[Opcode, AFEMode] = {
    Opcode.SOLVE: AFEMode.SOLVE, Opcode.SOLVE_FREE: AFEMode.SOLVE_FREE, Opcode.MVM: AFEMode.MVM}
#: Opcodes the write-verify programmer runs, with its command for each.
PROGRAMMER_OPCODES: dict[Opcode, ProgrammerCommand] = {
    Opcode.READ_CELL: ProgrammerCommand.READ_CELL,
    Opcode.PROGRAM_CELL: ProgrammerCommand.PROGRAM_CELL,
    Opcode.PROGRAM_MATRIX: ProgrammerCommand.PROGRAM_MATRIX,
}

DETAIL_BITS = 16  #: width of STATUS.error_detail
#: Fewest cycles between two register-file write strobes the AXI4-Lite slave produces (one
#: write in flight: AW/W, the write, B, then the next AW). The controller's command checks
#: read the registers one cycle late, which needs at least 2 (tests/test_controller.py).
REGISTER_WRITE_SPACING = 6
#: Cycles from a block's ``done`` cycle to the first cycle STATUS shows the outcome (done 1,
#: busy 0) and IRQ_STATUS.done is set: the outcome is registered in the done cycle and STATUS
#: from that register (the STATUS update behind the blocks' end decisions was the iCE40's
#: critical path, docs/synthesis.md I25). A command whose CONTROL.start strobe is in cycle 0 and
#: whose block takes T cycles (docs/solve-timing.md) reads STATUS.done = 1 from cycle
#: T + STATUS_DELAY.
STATUS_DELAY = 2
#: Cycles from the CONTROL.start strobe of a refused command or a NOP to STATUS.done = 1.
REFUSAL_STATUS_DELAY = 1


def at_least(value: ValueLike, bound: int) -> Value:
    """``value >= bound`` for a constant ``bound``; a power of two as a test of the bits from its
    position up (a compare's carry chain in front of a register was the iCE40's critical path,
    docs/synthesis.md I31)."""
    value = Value.cast(value)
    if bound > 0 and bound & (bound - 1) == 0:
        position = bound.bit_length() - 1
        return value[position:].any() if position < len(value) else Const(0)
    return value >= bound


def saturate(value: ValueLike, width: int) -> Value:
    """``value`` narrowed to ``width`` bits, clamped at the largest ``width``-bit value instead of
    wrapping: an out-of-range register value can then never turn into an accepted small one."""
    value = Value.cast(value)
    if len(value) <= width:
        return value
    largest = (1 << width) - 1
    if value.shape().signed:
        return Mux(value > largest, largest, value[:width])
    # value > largest as a test of the bits above the width: no compare's carry chain in front
    # of the blocks' operands and start checks (docs/synthesis.md I44).
    return Mux(value[width:].any(), largest, value[:width])


class Controller(wiring.Component):
    """The anmf controller: ``axil`` (AXI4-Lite slave, ports ``axil__<signal>``), ``irq`` and
    ``afe`` (:class:`~.afe.AFESignature`).

    ``registers``, ``sequencer``, ``programmer`` and ``anls`` give the sub-blocks (for simulation
    probes).
    ``params`` must also fit the register map: ROWS <= 1024, COLS + SPARE <= 32.
    """

    def __init__(self, params: BuildParams) -> None:
        if not isinstance(params, BuildParams):
            discard_unbuilt(self)
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        try:
            registers = AXI4LiteRegisterFile(ControllerRegisters(params))
        except ValueError:
            discard_unbuilt(self)
            raise
        self._params = params
        self._registers = registers
        self._running_flag = Signal(name="running_flag")
        self._blocks_running = Signal(name="blocks_running")
        self._sequencer = SolveSequencer(params)
        self._programmer = WriteVerifyProgrammer(params)
        self._remap = ColumnRemap(params) if params.spare_remap else None
        try:
            self._anls = ANLSSequencer(params) if params.run_nmf else None
            self._calibrator = Calibrator(params) if params.calibration else None
            self._refiner = Refiner(params, x_bits=REFINE_X_BITS, b_bits=REFINE_B_BITS) \
                if params.refinement else None
        except ValueError:
            self.discard()
            raise
        super().__init__({
            "axil": registers.signature.members["axil"],
            "irq": Out(1),
            "afe": Out(AFESignature(params)),
        })

    def discard(self) -> None:
        """Mark the controller and every block it holds as deliberately never elaborated (a
        refused construction, or a wrapper that looked at its ports without a build): no
        UnusedElaboratable warning for any of them."""
        registers = self._registers
        blocks = [self, registers, registers.register_file, registers._slave]
        blocks += [getattr(self, name, None) for name in ("_sequencer", "_programmer", "_remap", "_anls",
                                                           "_calibrator", "_refiner")]
        for block in blocks:
            if block is not None:   # not built (refused before it, or not in this build)
                discard_unbuilt(block)

    @property
    def params(self) -> BuildParams:
        return self._params

    @property
    def registers(self) -> AXI4LiteRegisterFile:
        return self._registers

    @property
    def sequencer(self) -> SolveSequencer:
        return self._sequencer

    @property
    def programmer(self) -> WriteVerifyProgrammer:
        return self._programmer

    @property
    def anls(self) -> ANLSSequencer | None:
        """The ANLS sequencer; None in a build without RUN_NMF (``params.run_nmf`` False)."""
        return self._anls

    @property
    def calibrator(self) -> Calibrator | None:
        """The calibrator; None in a build without CALIBRATE (``params.calibration`` False)."""
        return self._calibrator

    @property
    def refiner(self) -> Refiner | None:
        """The Refiner; None in a build without REFINE (``params.refinement`` False)."""
        return self._refiner

    @property
    def remap(self) -> ColumnRemap | None:
        """The column remap; None in a build without it (``params.spare_remap`` False)."""
        return self._remap

    @property
    def running_flag(self) -> Signal:
        """The flip-flop the BUSY check reads and STATUS.busy shows: set by an accepted start
        (not NOP), cleared when the outcome reaches STATUS; it equals :attr:`blocks_running`
        of this cycle OR of the cycle before (for simulation probes)."""
        return self._running_flag

    @property
    def blocks_running(self) -> Signal:
        """The OR of the blocks' busy states (for simulation probes)."""
        return self._blocks_running

    def register_offset(self, name: str) -> int:
        """Byte offset of register or window ``name`` (what error_detail reports)."""
        return self._registers.register_file.register_map[name].offset

    def elaborate(self, platform: Any) -> Module:
        p = self._params
        m = Module()
        m.submodules.registers = regs = self._registers
        m.submodules.sequencer = seq = self._sequencer
        m.submodules.programmer = prog = self._programmer
        anls = self._anls
        if anls is not None:
            m.submodules.anls = anls
        calibrator = self._calibrator
        if calibrator is not None:
            m.submodules.calibrator = calibrator
        afe_blocks = [seq.afe, prog.afe] + ([calibrator.afe] if calibrator is not None else [])
        refiner = self._refiner
        if refiner is not None:
            m.submodules.refiner = refiner
        remap = self._remap
        if remap is not None:
            m.submodules.remap = remap

        wiring.connect(m, wiring.flipped(self.axil), regs.axil)
        m.d.comb += self.irq.eq(regs.irq)

        # --- AFE: idle blocks drive 0, so OR the outputs; the AFE's answers go to all of them ------
        # The blocks work in logical columns; the remap translates the column members to
        # physical ones (hdl/column_remap.py).
        translated = ("col_en", "adc_mux", "cell_col")
        logical_outputs: dict[str, Value] = {}   # the blocks' outputs, before the remap
        for port in AFESignature(p).ports():
            outer = Value.cast(getattr(self.afe, port.name))
            members = [Value.cast(getattr(block, port.name)) for block in afe_blocks]
            if port.flow == wiring.Out:
                driven = functools.reduce(operator.or_, members)
                logical_outputs[port.name] = driven
                if remap is not None and port.name in translated:
                    m.d.comb += [getattr(remap, f"logical_{port.name}").eq(driven),
                                 outer.eq(getattr(remap, f"physical_{port.name}"))]
                else:
                    m.d.comb += outer.eq(driven)
            else:
                m.d.comb += [member.eq(outer) for member in members]

        # --- buffers ------------------------------------------------------------------------------
        # The solve sequencer's RHS comes from the RHS window, or from R through the ANLS
        # sequencer while RUN_NMF runs; its results go to RESULTS and are watched by RUN_NMF.
        # REFINE serves the RHS from its residual and takes the results the same way.
        nmf_running = anls.busy if anls is not None else Const(0)
        refine_running = refiner.busy if refiner is not None else Const(0)
        block_rhs = nmf_running | refine_running
        m.d.comb += [
            regs.rhs.read.addr.eq(seq.rhs.addr), regs.rhs.read.en.eq(seq.rhs.en & ~block_rhs),
        ]
        # Host solves: the RHS codes scaled by 2**-solve_exponent on the way to the DACs (the
        # over-range retry): zero + ((code - zero) >> e), an arithmetic shift.
        solve_exponent = Signal(SOLVE_RETRY_BITS)
        zero = p.dac_zero_code
        host_rhs = Signal(p.dac_bits)
        offset_code = Signal(signed(p.dac_bits + 1))
        m.d.comb += [offset_code.eq(regs.rhs.read.data - zero),
                     host_rhs.eq((offset_code >> solve_exponent) + zero)]
        rhs_data = host_rhs
        if refiner is not None:
            m.d.comb += [
                refiner.rhs.addr.eq(seq.rhs.addr), refiner.rhs.en.eq(seq.rhs.en & refine_running),
                refiner.result.addr.eq(seq.result.addr), refiner.result.en.eq(seq.result.en),
                Value.cast(refiner.result.data).eq(Value.cast(seq.result.data)),
            ]
            wiring.connect(m, refiner.a, regs.refine_a.read)
            wiring.connect(m, refiner.b, regs.refine_b.read)
            wiring.connect(m, refiner.x, regs.refine_x.read)
            wiring.connect(m, refiner.x_write, regs.refine_x.write)
            rhs_data = Mux(refine_running, refiner.rhs.data, rhs_data)
            self._elaborate_a_capture(m, regs, prog)
        wiring.connect(m, prog.target, regs.target.read)
        if remap is None:
            wiring.connect(m, prog.fault_map, regs.fault_map.write)
        else:
            # FAULT_MAP is physical: the programmer's one-hot bit enable goes through the map. The
            # translated write is registered (it lands one cycle later, still before the command's
            # done): the map behind the programmer's Record state was the iCE40's critical path.
            fault_write = regs.fault_map.write
            m.d.comb += remap.logical_fault_en.eq(prog.fault_map.en)
            m.d.sync += [fault_write.addr.eq(prog.fault_map.addr), fault_write.data.eq(prog.fault_map.data),
                         fault_write.en.eq(remap.physical_fault_en)]
            wiring.connect(m, remap.map_write, regs.remap_map.write)
        m.d.comb += regs.fault_map.read.en.eq(0)  # the core only writes the fault map (so far)
        if anls is not None:
            m.d.comb += [
                anls.rhs.addr.eq(seq.rhs.addr), anls.rhs.en.eq(seq.rhs.en & nmf_running),
                seq.rhs.data.eq(Mux(nmf_running, anls.rhs.data, rhs_data)),
                anls.result.addr.eq(seq.result.addr), anls.result.en.eq(seq.result.en),
                Value.cast(anls.result.data).eq(Value.cast(seq.result.data)),
            ]
            wiring.connect(m, anls.target, regs.target.write)
            wiring.connect(m, anls.r, regs.nmf_r.read)
            wiring.connect(m, anls.mask, regs.nmf_mask.read)
            for name in ("w", "h", "w_exp", "h_exp"):
                wiring.connect(m, getattr(anls, name), getattr(regs, f"nmf_{name}"))
        else:
            m.d.comb += [seq.rhs.data.eq(rhs_data), regs.target.write.en.eq(0)]

        # --- command decode -----------------------------------------------------------------------
        opcode = Value.cast(regs.command.opcode)
        row, col = regs.command.row, regs.command.col
        row_mask, col_mask = regs.row_mask, regs.col_enable.enable
        adc_samples = regs.timing.adc_samples
        tolerance = regs.program_tolerance.codes

        def opcode_in(opcodes) -> Value:
            return Cat(opcode == op.value for op in opcodes).any()

        is_nop = opcode == Opcode.NOP.value
        is_solve = opcode_in(SOLVE_OPCODES)
        is_cell = opcode_in((Opcode.READ_CELL, Opcode.PROGRAM_CELL))
        # REFRESH runs the programmer's PROGRAM_MATRIX walk: it takes the same checks.
        is_refresh = (opcode == Opcode.REFRESH.value) if remap is not None else Const(0)
        is_matrix = (opcode == Opcode.PROGRAM_MATRIX.value) | is_refresh
        is_program = opcode_in((Opcode.PROGRAM_CELL, Opcode.PROGRAM_MATRIX)) | is_refresh
        is_read = opcode == Opcode.READ_CELL.value
        # Without RUN_NMF in the build its opcode is unknown (UNKNOWN_OPCODE).
        is_nmf = (opcode == Opcode.RUN_NMF.value) if anls is not None else Const(0)
        # Without CALIBRATE in the build its opcode is unknown too.
        is_cal = (opcode == Opcode.CALIBRATE.value) if calibrator is not None else Const(0)
        is_refine = (opcode == Opcode.REFINE.value) if refiner is not None else Const(0)

        # The opcode's classes are registered: every use is at a start (or behind the registered
        # checks), and COMMAND is written at least REGISTER_WRITE_SPACING cycles before
        # CONTROL.start, which pulses the cycle after its own write. The decode in front of the
        # start's fan-out (accepted -> block starts -> their states) was the iCE40's critical
        # path (docs/synthesis.md I18, I19).
        def settled(flag: Value, name: str) -> Value:
            if isinstance(flag, Const):
                return flag
            register = Signal(name=name)
            m.d.sync += register.eq(flag)
            return register
        is_nop, is_solve, is_cell = settled(is_nop, "is_nop"), settled(is_solve, "is_solve"), settled(is_cell, "is_cell")
        is_refresh, is_matrix = settled(is_refresh, "is_refresh"), settled(is_matrix, "is_matrix")
        is_program, is_read = settled(is_program, "is_program"), settled(is_read, "is_read")
        is_nmf, is_cal, is_refine = settled(is_nmf, "is_nmf"), settled(is_cal, "is_cal"), settled(is_refine, "is_refine")
        uses_masks = is_solve | is_matrix | is_cal | is_refine
        uses_adc = is_solve | is_cell | is_matrix | is_nmf | is_cal | is_refine
        runs_solves = is_solve | is_nmf | is_cal | is_refine
        runs_programs = is_program | is_nmf
        reads_cells = is_cell | is_matrix | is_nmf

        # The averaging count must be a power of two from 1 to 2**avg_max_log2; the blocks get
        # the exponent, the position of its single set bit, registered (TIMING is written at
        # least REGISTER_WRITE_SPACING cycles before CONTROL.start; the blocks' start checks and
        # operand loads behind the search were the iCE40's critical paths, docs/synthesis.md I28).
        # As bit tests, without the subtract and compare carry chains (a check's compare was the
        # iCE40's critical path, docs/synthesis.md I31).
        low_samples = adc_samples[:p.avg_max_log2 + 1]
        count_ok = (adc_samples[p.avg_max_log2 + 1:] == 0) & \
            Cat(low_samples == 1 << k for k in range(p.avg_max_log2 + 1)).any()
        avg_log2 = Signal(p.avg_log2_bits)
        m.d.sync += avg_log2.eq(lowest_set_index(adc_samples[:p.avg_max_log2 + 1]))

        running = self._blocks_running
        retry_pending = Signal()  # a host solve's over-range retry starts in this cycle
        remap_busy = remap.busy if remap is not None else Const(0)
        cal_busy = calibrator.busy if calibrator is not None else Const(0)
        m.d.comb += running.eq(seq.busy | prog.busy | nmf_running | refine_running | retry_pending | remap_busy |
                               cal_busy)
        forgetting = Signal()  # a soft reset aborted the running command: report nothing of it

        def nmf_checks(group: str) -> list[tuple[Value, ErrorCode, int]]:
            """RUN_NMF's own checks (none without RUN_NMF in the build)."""
            if anls is None:
                return []
            if group == "size":
                size = regs.nmf_size
                bad_size = ((size.m == 0) | (size.m > p.rows) | (size.n == 0) | (size.n > p.rows) |
                            (size.k == 0) | (size.k > p.cols))
                return [(is_nmf & bad_size, ErrorCode.BAD_DIMENSION, offset("NMF_SIZE")),
                        (is_nmf & (regs.nmf_iterations.count == 0), ErrorCode.BAD_DIMENSION,
                         offset("NMF_ITERATIONS"))]
            base, span = regs.nmf_window_base.code, regs.nmf_window_span.codes
            return [(is_nmf & (span == 0), ErrorCode.BAD_WINDOW, offset("NMF_WINDOW_SPAN")),
                    (is_nmf & (base + span > 1 << p.adc_bits), ErrorCode.BAD_WINDOW,
                     offset("NMF_WINDOW_BASE"))]

        # Validation, in the documented order (docs/controller.md); the first failing check wins.
        refusal = Signal(ErrorCode)
        refusal_detail = Signal(DETAIL_BITS)
        offset = self.register_offset
        checks = [
            (~(is_nop | uses_adc), ErrorCode.UNKNOWN_OPCODE, opcode),
            (is_cell & (at_least(row, p.rows) | at_least(col, p.total_cols)), ErrorCode.BAD_DIMENSION,
             offset("COMMAND")),
            (uses_masks & (row_mask == 0), ErrorCode.BAD_DIMENSION, offset("ROW_MASK")),
            (uses_masks & (col_mask == 0), ErrorCode.BAD_DIMENSION, offset("COL_ENABLE")),
            # REFINE solves on the COLS columns only (not the spares).
            (is_refine & (col_mask[:p.cols] == 0), ErrorCode.BAD_DIMENSION, offset("COL_ENABLE")),
            *nmf_checks("size"),
            (uses_adc & ~count_ok, ErrorCode.BAD_AVERAGING, offset("TIMING")),
            (runs_programs & ((tolerance == 0) | at_least(tolerance, 1 << p.adc_bits)),
             ErrorCode.BAD_TOLERANCE, offset("PROGRAM_TOLERANCE")),
            *nmf_checks("window"),
            (uses_adc & (regs.watchdog.cycles == 0), ErrorCode.BAD_TIMING, offset("WATCHDOG")),
            (runs_solves & (regs.dac_settle.cycles == 0), ErrorCode.BAD_TIMING, offset("DAC_SETTLE")),
            (runs_solves & (regs.analog_settle.cycles == 0), ErrorCode.BAD_TIMING,
             offset("ANALOG_SETTLE")),
            (reads_cells & (regs.read_settle.cycles == 0), ErrorCode.BAD_TIMING,
             offset("READ_SETTLE")),
            (runs_programs & (regs.program_pulse.width == 0), ErrorCode.BAD_TIMING,
             offset("PROGRAM_PULSE")),
            *([(is_cal & (regs.cal_settle.cycles == 0), ErrorCode.BAD_TIMING, offset("CAL_SETTLE"))]
              if calibrator is not None else []),
        ]
        # The checks but BUSY depend on registers only the bus writes; they are evaluated in two
        # registered stages (each check's outcome, then the first failing one), so the start
        # strobe sees the outcome for the registers of two cycles before (three for the opcode's
        # classes, registered above) (a priority chain of 16
        # checks behind their comparisons is too deep for 100 MHz, docs/synthesis.md). That is
        # the outcome for the current registers: the register file takes at most one bus write
        # per REGISTER_WRITE_SPACING (>= 2) cycles, and CONTROL.start pulses the cycle after its
        # own write (CONTROL is no operand of any check).
        check_failed = Signal(len(checks))
        check_details = [Signal(DETAIL_BITS, name=f"check_detail_{index}")
                         for index in range(len(checks))]
        for index, (failed, _, detail) in enumerate(checks):
            m.d.sync += check_failed[index].eq(failed)
            if isinstance(detail, int):
                m.d.comb += check_details[index].eq(saturate(detail, DETAIL_BITS))
            else:
                m.d.sync += check_details[index].eq(saturate(detail, DETAIL_BITS))
        register_refusal = Signal(ErrorCode)
        register_detail = Signal(DETAIL_BITS)
        for index, (_, error, _) in enumerate(checks):
            with (m.If if index == 0 else m.Elif)(check_failed[index]):
                m.d.comb += [register_refusal.eq(error), register_detail.eq(check_details[index])]
        settled_refusal = Signal(ErrorCode)
        settled_detail = Signal(DETAIL_BITS)
        m.d.sync += [settled_refusal.eq(register_refusal), settled_detail.eq(register_detail)]
        # Whether a start strobe in this cycle is accepted (the checks pass and nothing runs),
        # registered from the cycle before: no start strobe came then (they are at least
        # REGISTER_WRITE_SPACING cycles apart), so running_flag changed only by `ending`. The
        # acceptance then needs no compare of the refusal code nor the flag (they were in front
        # of the blocks' start enables, the iCE40's critical path, docs/synthesis.md I42, I43).
        running_flag = self._running_flag
        ending = Signal()   # `finished` of the cycle before (below)
        start_ok = Signal()
        m.d.sync += start_ok.eq(~(running_flag & ~ending) & ~check_failed.any())
        # BUSY reads a flip-flop (set below by an accepted start, cleared when the outcome
        # reaches STATUS, one cycle after the finishing cycle): the OR of the blocks' states in
        # front of the start decision was the iCE40's critical path (docs/synthesis.md, I12).
        m.d.comb += [refusal.eq(Mux(running_flag, ErrorCode.BUSY, settled_refusal)),
                     refusal_detail.eq(Mux(running_flag, opcode, settled_detail))]

        soft_reset = regs.control.soft_reset
        start = Signal()
        m.d.comb += start.eq(regs.control.start & ~soft_reset)
        accepted = start & start_ok

        # --- block operands: straight from the registers, saturated to the block ports ----------
        # The opcode's mode and programmer command are registered like its classes above (the
        # blocks' start checks read their operands of the cycle before the start).
        solve_mode_now = Signal(AFEMode)
        for op, mode in SOLVE_OPCODES.items():
            with m.If(opcode == op.value):
                m.d.comb += solve_mode_now.eq(mode)
        prog_command_now = Signal(ProgrammerCommand)
        for op, command in PROGRAMMER_OPCODES.items():
            with m.If(opcode == op.value):
                m.d.comb += prog_command_now.eq(command)
        if remap is not None:
            with m.If(opcode == Opcode.REFRESH.value):
                m.d.comb += prog_command_now.eq(ProgrammerCommand.PROGRAM_MATRIX)
        solve_mode = Signal(AFEMode)
        prog_command = Signal(ProgrammerCommand)
        m.d.sync += [solve_mode.eq(solve_mode_now), prog_command.eq(prog_command_now)]
        # The cell's row and column saturated and registered alike: the saturation in front of
        # the programmer's one-hot decode and operand load was near the iCE40's critical path
        # (docs/synthesis.md I30).
        cell_row = Signal(p.row_addr_bits)
        cell_col = Signal(p.col_addr_bits)
        m.d.sync += [cell_row.eq(saturate(row, p.row_addr_bits)), cell_col.eq(saturate(col, p.col_addr_bits))]
        # The masks too (the blocks' "no cells" start checks behind the window's flip-flops and
        # the remap's mux were the iCE40's critical path, docs/synthesis.md I35).
        block_row_mask = Signal(p.rows)
        block_col_mask = Signal(p.total_cols)
        m.d.sync += [block_row_mask.eq(row_mask), block_col_mask.eq(saturate(col_mask, p.total_cols))]
        abort = regs.control.abort | soft_reset
        host_solve = {
            "start": (accepted & is_solve) | (retry_pending & ~abort),
            "abort": abort,
            "mode": solve_mode,
            "row_mask": block_row_mask,
            "col_mask": block_col_mask,
            "avg_log2": avg_log2,
            "dac_settle": saturate(regs.dac_settle.cycles, p.timer_bits),
            "analog_settle": saturate(regs.analog_settle.cycles, p.timer_bits),
            "watchdog_limit": saturate(regs.watchdog.cycles, p.timer_bits),
        }
        host_program = {
            "start": accepted & (is_cell | is_matrix),
            "abort": abort,
            "command": prog_command,
            "cell_row": cell_row,
            "cell_col": cell_col,
            "row_mask": block_row_mask,
            "col_mask": block_col_mask,
            "tolerance": saturate(tolerance, p.tolerance_bits),
            "amp_start": saturate(regs.program_amplitude.start, p.prog_amp_bits),
            "amp_step": saturate(regs.program_amplitude.step, p.prog_amp_bits),
            "amp_max": saturate(regs.program_amplitude_max.max, p.prog_amp_bits),
            "pulse_width": saturate(regs.program_pulse.width, p.prog_width_bits),
            "pulse_budget": saturate(regs.program_pulses.max_pulses, p.pulse_budget_bits),
            "avg_log2": avg_log2,
            "read_settle": saturate(regs.read_settle.cycles, p.timer_bits),
            "watchdog_limit": saturate(regs.watchdog.cycles, p.timer_bits),
        }
        if calibrator is not None:
            self._elaborate_calibration(m, calibrator, regs, seq, accepted & is_cal, abort, host_solve)
        # A host PROGRAM_MATRIX / REFRESH: its walk's end goes to the remap, which may run spare
        # trials before the command ends: the programmer runs the walk again (its rows and settings,
        # kept from the walk's start) on the trial's column. The programmer keeps them itself
        # (`rerun`), so no mux of the host's and the trial's operands sits in front of its start
        # checks (the iCE40's critical path, docs/synthesis.md I45).
        walk_running = Signal()
        walk_is_refresh = Signal()
        walk_failed = Signal.like(prog.failed_count)
        if remap is not None:
            m.d.comb += [prog.rerun.eq(remap.busy), prog.rerun_col_mask.eq(remap.trial_col_mask)]
            host_program = {**host_program, "start": host_program["start"] | remap.trial_start}
        # While RUN_NMF or REFINE runs, its sequencer drives the blocks' commands (their starts
        # and aborts are ORed: the host cannot start a block then, and all may abort).
        solve_drivers: list[tuple[Value, Any]] = []
        program_drivers: list[tuple[Value, Any]] = []
        if anls is not None:
            solve_drivers.append((nmf_running, anls.solve))
            program_drivers.append((nmf_running, anls.program))
            self._elaborate_nmf(m, anls, regs, host_solve, host_program, accepted, is_nmf, abort)
        if refiner is not None:
            solve_drivers.append((refine_running, refiner.solve))
            self._elaborate_refine(m, refiner, regs, host_solve, accepted & is_refine, abort)
        # The solve sequencer's row mask and its timing operands are selected into registers: the
        # busy flip-flops' mux in front of the sequencer's start checks and walk loads was the
        # ECP5's worst path (docs/synthesis.md E16, E46). The sequencer checks its operands as they
        # were the cycle before its start, so every driver holds them from two cycles before:
        # the host's registers (written at least REGISTER_WRITE_SPACING cycles before a start),
        # REFINE's (fixed from its start) and RUN_NMF's (constant, and the row mask final from
        # RHS-Hold, a cycle before RHS-Decide). The column mask and the mode stay a mux of this
        # cycle: REFINE's change up to the cycle before its solve's start.
        registered_solve_operands = ("row_mask", "avg_log2", "dac_settle", "analog_settle", "watchdog_limit")
        for block, signature, host, drivers in (
                (seq, solve_command_signature(p), host_solve, solve_drivers),
                (prog, program_command_signature(p), host_program, program_drivers)):
            for name, member in signature.members.items():
                port = getattr(block, name)
                if member.flow == wiring.In:
                    for _, command in drivers:
                        m.d.comb += getattr(command, name).eq(port)
                elif name in ("start", "abort"):
                    m.d.comb += port.eq(host[name] | Cat(getattr(c, name) for _, c in drivers).any()
                                        if drivers else host[name])
                else:
                    value = host[name]
                    for busy, command in drivers:
                        value = Mux(busy, getattr(command, name), value)
                    if block is seq and drivers and name in registered_solve_operands:
                        selected = Signal.like(port, name=f"solve_{name}")
                        m.d.sync += selected.eq(value)
                        value = selected
                    m.d.comb += port.eq(value)

        # The cell of a READ_CELL, kept for storing its reading into RESULTS at the end.
        reading_cell = Signal()
        read_col = Signal(p.col_addr_bits)
        with m.If(accepted):
            m.d.sync += [reading_cell.eq(is_read), read_col.eq(saturate(col, p.col_addr_bits))]

        # The column or cell of the last conversion: what a timeout concerns. (A pulse always
        # follows a read of its own cell, so this names the cell of a PROGRAM_TIMEOUT too.)
        afe = self.afe
        # The AFE values are recorded and the cell index computed from the records (not from the
        # strobe cycle's AFE outputs: the multiply behind them was on the ECP5's critical path).
        # The strobe cycle's values are registered every cycle and recorded one cycle later: the
        # blocks' state -> adc_start as the records' enable, behind the AFE outputs' OR and the
        # remap, was the ECP5's worst path (docs/synthesis.md E31). The registered values are the
        # blocks' logical ones, the recorded column (the cell's or the ADC channel) translated by
        # the remap after that register: the blocks' outputs -> the remap -> the strobe registers
        # was the ECP5's worst path then (E47). The map is the same in the strobe's cycle and the
        # next (it changes when a spare trial starts or ends, around the programmer's walk).
        last_was_cell = Signal()
        last_row, last_column = Signal.like(afe.cell_row), Signal.like(afe.cell_col)
        strobe_seen, strobe_cell = Signal(), Signal()
        strobe_row, strobe_col = Signal.like(afe.cell_row), Signal.like(afe.cell_col)
        strobe_mux = Signal.like(afe.adc_mux)
        m.d.sync += [strobe_seen.eq(afe.adc_start), strobe_cell.eq(afe.mode == AFEMode.READ_CELL),
                     strobe_row.eq(afe.cell_row), strobe_col.eq(logical_outputs["cell_col"]),
                     strobe_mux.eq(logical_outputs["adc_mux"])]
        strobe_column = Mux(strobe_cell, strobe_col, strobe_mux)
        if remap is not None:
            m.d.comb += remap.logical_recorded_col.eq(strobe_column)
            strobe_column = remap.physical_recorded_col
        with m.If(strobe_seen):
            m.d.sync += [last_was_cell.eq(strobe_cell), last_row.eq(strobe_row), last_column.eq(strobe_column)]
        # Registered too: a timeout ends at least the watchdog limit and the safe exit (ROWS + 2
        # cycles) after its conversion started, more than these two cycles; in the done cycle the multiply-add was behind
        # the error_detail selection (docs/synthesis.md I20).
        target_now = Mux(last_was_cell, last_row * p.total_cols + last_column, last_column)
        last_target = Signal(target_now.shape())
        m.d.sync += last_target.eq(target_now)

        # --- results: the sequencer's columns, or a READ_CELL reading at COMMAND.col ------------
        # A block's done inside RUN_NMF is the ANLS sequencer's business, not the host's.
        nmf_done = anls.done if anls is not None else Const(0)
        refine_done = refiner.done if refiner is not None else Const(0)
        # The over-range retry (docs/controller.md): a host solve whose results are over range
        # runs again, the cycle after its done, with the input halved once more, until
        # SOLVE_RETRIES.limit retries; the last run's results stand (still over range or not).
        host_solving = Signal()
        retrying = Signal()
        retry_limit = regs.solve_retries.limit
        # The retry's conditions but the done cycle's own (error, abort) registered every cycle:
        # their operands change at a start, in a retry's cycle and with conversions, all at least
        # two cycles before a done, and a bus write of SOLVE_RETRIES is no earlier than that either
        # when the host writes it before the start (the limit is read one cycle before the done).
        # In the done cycle they were behind the command's `finished` (docs/synthesis.md I17).
        retry_ready = Signal()
        m.d.sync += retry_ready.eq(host_solving & (seq.over_range_count != 0) & (solve_exponent < retry_limit))
        m.d.comb += retrying.eq(retry_ready & seq.done & (seq.error == ErrorCode.NONE) & ~abort)
        m.d.sync += retry_pending.eq(retrying)
        with m.If(retrying):
            m.d.sync += solve_exponent.eq(solve_exponent + 1)
        with m.Elif(accepted & is_solve):
            m.d.sync += solve_exponent.eq(0)
        aborted_retry = retry_pending & abort   # the retry is not started: the solve ends ABORTED
        # A host PROGRAM_MATRIX / REFRESH walk's done goes to the remap, which ends the command.
        prog_finished = prog.done if remap is None else prog.done & ~walk_running
        cal_done = calibrator.done if calibrator is not None else Const(0)
        finished = nmf_done | refine_done | aborted_retry | \
            ((seq.done | prog_finished | cal_done) & ~nmf_running & ~refine_running & ~retrying)
        if remap is not None:
            walk_done = prog.done & walk_running & ~remap.busy
            m.d.comb += [remap.walk_done.eq(walk_done), remap.prog_done.eq(prog.done),
                         remap.prog_error.eq(prog.error), remap.failed_cols.eq(prog.failed_cols),
                         remap.abort.eq(abort), remap.enable.eq(regs.remap_control.enable),
                         remap.clear.eq(regs.remap_control.clear & ~running_flag)]
            finished = finished | remap.finished
            with m.If(walk_done):
                m.d.sync += walk_failed.eq(prog.failed_count)
        # The finishing cycle's outcome reaches STATUS one cycle later (below); until then the
        # command counts as running, so a start is refused with BUSY and cannot meet the report.
        # The command's flags are cleared then too (nothing finishes in that cycle): the end
        # decisions behind `finished` in front of their enables were near the iCE40's critical
        # path (docs/synthesis.md I29).
        m.d.sync += ending.eq(finished)
        with m.If(accepted):
            m.d.sync += [walk_running.eq(is_matrix), walk_is_refresh.eq(is_refresh)]
        with m.Elif(ending):
            m.d.sync += walk_running.eq(0)
        with m.If(accepted & ~is_nop):
            m.d.sync += running_flag.eq(1)
        with m.Elif(ending):
            m.d.sync += running_flag.eq(0)
        with m.If(accepted & is_solve):
            m.d.sync += host_solving.eq(1)
        with m.Elif(ending):
            m.d.sync += host_solving.eq(0)
        m.d.comb += regs.solve_exponent.exponent.eq(solve_exponent)
        finished_error = Signal(ErrorCode)
        # The finishing block's error, later sources first.
        error_sources: list[tuple[Value, Any]] = [(seq.done, seq.error), (aborted_retry, ErrorCode.ABORTED)]
        if calibrator is not None:
            # The calibrator ends with NONE when it ran through; failed entries make it CAL_FAILED.
            cal_failed = (calibrator.error == ErrorCode.NONE) & (calibrator.failed_count != 0)
            error_sources.append((cal_done, Mux(cal_failed, ErrorCode.CAL_FAILED, calibrator.error)))
        if remap is not None:
            # Selected by walk_running, a flip-flop, instead of remap.finished (the walk's end and
            # the repair decision, I20): the values here count only when the command finishes,
            # and a command finishing while a host walk runs is the remap's (the walk's done goes
            # to it; nothing else runs), which finishes only then.
            error_sources.append((walk_running, remap.outcome))
        if anls is not None:
            error_sources.append((anls.done, anls.error))
        if refiner is not None:
            error_sources.append((refiner.done, refiner.error))

        finished_value: Value = Value.cast(prog.error)
        for source_done, source_error in error_sources:
            finished_value = Mux(source_done, source_error, finished_value)
        m.d.comb += finished_error.eq(finished_value)
        store_reading = prog.done & reading_cell & (prog.error == ErrorCode.NONE)
        results = regs.results.write
        with m.If(seq.result.en):
            m.d.comb += [results.en.eq(1), results.addr.eq(seq.result.addr),
                         Value.cast(results.data).eq(Value.cast(seq.result.data))]
        with m.Elif(store_reading):
            m.d.comb += [results.en.eq(1), results.addr.eq(read_col),
                         results.data.code.eq(prog.read_code),
                         results.data.over_range.eq(prog.read_over_range)]

        # --- counters: nothing counts in a soft reset's cycle nor for the command it aborted
        reporting = ~forgetting & ~soft_reset
        over_range_samples = Mux(seq.done, seq.over_range_count, 0) | prog.over_range_sample
        m.d.comb += [
            regs.solve_count.count_inc.eq(seq.done & (seq.error == ErrorCode.NONE) & reporting),
            regs.pulse_count.count_inc.eq(prog.afe.prog_fire & reporting),
            regs.failed_cell_count.count_inc.eq(
                (prog.fault_map.en & prog.fault_map.data).any() & reporting),
            regs.over_range_count.count_inc.eq(Mux(reporting, over_range_samples, 0)),
            regs.irq_status.over_range_set.eq((over_range_samples != 0) & reporting),
        ]
        m.d.comb += regs.range_retry_count.count_inc.eq(retrying & reporting)
        if anls is not None:
            m.d.comb += [
                regs.nmf_retry_count.count_inc.eq(anls.retry & reporting),
                regs.nmf_unresolved_count.count_inc.eq(anls.unresolved & reporting),
                regs.nmf_irq.progress_set.eq(anls.iteration_done & reporting),
            ]

        # --- STATUS and interrupts ----------------------------------------------------------------
        done = Signal()
        error = Signal(ErrorCode)
        error_detail = Signal(DETAIL_BITS)
        m.d.comb += [
            regs.status.busy.eq(running_flag),
            regs.status.done.eq(done),
            regs.status.error.eq(error),
            regs.status.error_detail.eq(error_detail),
        ]
        def report(outcome: ValueLike, detail: ValueLike, failed: ValueLike) -> None:
            m.d.sync += [done.eq(1), error.eq(outcome), error_detail.eq(detail)]
            m.d.comb += [regs.irq_status.done_set.eq(1), regs.irq_status.error_set.eq(failed)]

        # The finishing cycle registers the outcome and the values its detail may be (every
        # cycle: they count only with `reported`); STATUS and IRQ_STATUS take them one cycle
        # later, the detail selected by the registered error. The end decisions behind
        # `finished` then stop at these flip-flops instead of running on through the detail
        # selection and the start and refusal priority into STATUS (docs/synthesis.md I25, I29).
        reported = Signal()
        reported_error = Signal(ErrorCode)
        m.d.sync += [reported.eq(finished & reporting), reported_error.eq(finished_error)]

        def registered(value: ValueLike, name: str) -> Signal:
            register = Signal(DETAIL_BITS, name=name)
            m.d.sync += register.eq(saturate(value, DETAIL_BITS))
            return register
        # After spare trials CELLS_FAILED gives the walk's count (latched), not the last trial's.
        detail_by_error: list[tuple[Value, Value]] = [
            ((reported_error == ErrorCode.ADC_TIMEOUT) | (reported_error == ErrorCode.PROGRAM_TIMEOUT),
             registered(last_target, "reported_target")),
            (reported_error == ErrorCode.CELLS_FAILED,
             registered(Mux(remap_busy, walk_failed, prog.failed_count), "reported_failed_cells")),
        ]
        if calibrator is not None:
            detail_by_error.append((reported_error == ErrorCode.CAL_FAILED,
                                    registered(calibrator.failed_count, "reported_failed_entries")))
        if anls is not None:
            detail_by_error.append((reported_error == ErrorCode.EXPONENT_RANGE,
                                    registered(anls.error_detail, "reported_component")))
        reported_detail = Signal(DETAIL_BITS)
        for index, (selected, value) in enumerate(detail_by_error):
            with (m.If if index == 0 else m.Elif)(selected):
                m.d.comb += reported_detail.eq(value)
        reported_failed = reported_error != ErrorCode.NONE

        if remap is not None:
            # The drift timer restarts in the cycle a PROGRAM_MATRIX / REFRESH / RUN_NMF end is
            # reported (from flip-flops: walk_running is cleared only after it, I34).
            nmf_reported = Signal()
            m.d.sync += nmf_reported.eq(nmf_done & reporting)
            self._elaborate_refresh(m, regs, prog, remap, walk_done & walk_is_refresh,
                                    reported & walk_running | nmf_reported, reporting)

        # A soft reset forgets the running command: the flag is cleared a cycle after the next
        # finish (`ending`; nothing is reported in that cycle), so a command that finishes in the
        # soft reset's own cycle (not reported either) needs no test of `finished` here (the end
        # decision in front of the flag was the iCE40's critical path, docs/synthesis.md I41).
        with m.If(soft_reset):
            m.d.sync += forgetting.eq(running)
        with m.Elif(ending):
            m.d.sync += forgetting.eq(0)
        # A soft reset in the cycle between the finishing cycle and the report forgets the
        # outcome like one in the finishing cycle. A start in either cycle is refused (BUSY:
        # running_flag is still set); STATUS then shows the outcome, IRQ_STATUS.error the refusal.
        with m.If(soft_reset):
            m.d.sync += [done.eq(0), error.eq(ErrorCode.NONE), error_detail.eq(0)]
        with m.Elif(reported):
            report(reported_error, reported_detail, reported_failed)
            with m.If(start):
                m.d.comb += regs.irq_status.error_set.eq(1)
        with m.Elif(start):
            with m.If(refusal == ErrorCode.BUSY):
                # The running command goes on: only the error fields change.
                m.d.sync += [error.eq(ErrorCode.BUSY), error_detail.eq(refusal_detail)]
                m.d.comb += regs.irq_status.error_set.eq(1)
            with m.Elif((refusal != ErrorCode.NONE) | is_nop):
                report(refusal, refusal_detail, refusal != ErrorCode.NONE)
            with m.Else():
                m.d.sync += [done.eq(0), error.eq(ErrorCode.NONE), error_detail.eq(0)]
        return m


    def _elaborate_refresh(self, m: Module, regs: ControllerRegisters, prog: WriteVerifyProgrammer,
                           remap: ColumnRemap, refresh_walk_done: Value, restart: Value,
                           reporting: Value) -> None:
        """REFRESH's result registers, the drift timer (``restart``: a matrix programming's end
        is reported in this cycle) and the remap's registers."""
        result = regs.refresh_result
        with m.If(refresh_walk_done & reporting):
            m.d.sync += [result.checked.eq(saturate(prog.checked_count, 16)),
                         result.reprogrammed.eq(saturate(prog.reprogrammed_count, 16)),
                         regs.refresh_failed.cells.eq(saturate(prog.failed_count, 16))]
        m.d.comb += [regs.remap_count.count_inc.eq(remap.remapped & reporting),
                     regs.prog_irq.remap_set.eq(remap.remapped & reporting),
                     regs.remap_status.spares_left.eq(remap.spares_left)]

        # Drift timer: ticks of REFRESH_TICK_CYCLES since the last matrix programming ended
        # (armed by the first); refresh_due rises in the tick that makes elapsed = interval.
        armed = Signal()
        prescaler = Signal(range(REFRESH_TICK_CYCLES))
        elapsed = Signal(32)
        # elapsed + 1, kept as a register beside it: the increment's carry chain in front of the
        # compare with the interval was near the iCE40's critical path (docs/synthesis.md I33).
        elapsed_next = Signal(32, init=1)
        interval = regs.refresh_interval.ticks
        m.d.comb += regs.refresh_elapsed.ticks.eq(elapsed)
        tick = armed & (prescaler == REFRESH_TICK_CYCLES - 1)
        # The restart comes from the outcome's register stage, a cycle after the finishing cycle:
        # the end-of-command decision in front of the timer's 32-bit enable was the iCE40's
        # critical path (and, registered on its own, near it: docs/synthesis.md I34).
        with m.If(restart):
            m.d.sync += [armed.eq(1), prescaler.eq(0), elapsed.eq(0), elapsed_next.eq(1)]
        with m.Elif(armed):
            m.d.sync += prescaler.eq(prescaler + 1)
            with m.If(tick & (elapsed != 0xFFFF_FFFF)):
                m.d.sync += [elapsed.eq(elapsed_next), elapsed_next.eq(elapsed_next + 1)]
                m.d.comb += regs.prog_irq.refresh_due_set.eq((interval != 0) & (elapsed_next == interval))

    def _elaborate_calibration(self, m: Module, calibrator: Calibrator, regs: ControllerRegisters,
                               seq: SolveSequencer, start: Value, abort: Value,
                               host_solve: dict[str, Value]) -> None:
        """CALIBRATE's wiring: the calibrator's operands, the calibration memory's ports (the
        calibrator writes it and reads it back, the solve sequencer and the programmer read their
        corrections), the corrections' enables and the outcome registers."""
        p = self._params
        prog = self._programmer   # reads the ADC words for its verify reads and READ_CELL
        m.d.comb += [
            calibrator.start.eq(start),
            calibrator.abort.eq(abort),
            calibrator.col_mask.eq(host_solve["col_mask"]),
            calibrator.row_mask.eq(host_solve["row_mask"]),
            calibrator.cal_settle.eq(saturate(regs.cal_settle.cycles, p.timer_bits)),
        ]
        for name in ("avg_log2", "dac_settle", "analog_settle", "watchdog_limit"):
            m.d.comb += getattr(calibrator, name).eq(host_solve[name])
        window = regs.cal_coeff
        write = calibrator.coeff_write
        m.d.comb += [window.write.en.eq(write.en), window.write.addr.eq(write.addr),
                     Value.cast(window.write.data).eq(Value.cast(write.data))]
        for port, reader in ((window.read, calibrator.coeff_read), (window.read_1, seq.coeff),
                             (window.read_2, seq.opamp_coeff)):
            m.d.comb += [port.addr.eq(reader.addr), port.en.eq(reader.en),
                         Value.cast(reader.data).eq(Value.cast(port.data))]
        # The programmer's ADC words come through the solve sequencer's port: the two never run
        # at once (RUN_NMF alternates them), and a fourth port would be another copy of the memory.
        with m.If(prog.busy):
            m.d.comb += [window.read_1.addr.eq(prog.coeff_channel), window.read_1.en.eq(1)]
        m.d.comb += Value.cast(prog.coeff_word).eq(Value.cast(window.read_1.data))
        control = regs.cal_control
        m.d.comb += [seq.cal_enable.adc.eq(control.adc), seq.cal_enable.dac.eq(control.dac),
                     seq.cal_enable.opamp.eq(control.opamp), prog.cal_adc.eq(control.adc),
                     regs.cal_quality.residual.eq(calibrator.quality),
                     regs.cal_failed.count.eq(calibrator.failed_count)]

    def _elaborate_nmf(self, m: Module, anls: ANLSSequencer, regs: ControllerRegisters,
                       host_solve: dict[str, Value], host_program: dict[str, Value],
                       accepted: Value, is_nmf: Value, abort: Value) -> None:
        """RUN_NMF's wiring: the ANLS sequencer's operands and progress (its command ports are
        wired in front of the blocks' in elaborate)."""
        p = self._params
        nmf_port_width = {name: len(getattr(anls, name)) for name in ("m", "n", "k")}
        m.d.comb += [
            anls.start.eq(accepted & is_nmf),
            anls.abort.eq(abort),
            anls.m.eq(saturate(regs.nmf_size.m, nmf_port_width["m"])),
            anls.n.eq(saturate(regs.nmf_size.n, nmf_port_width["n"])),
            anls.k.eq(saturate(regs.nmf_size.k, nmf_port_width["k"])),
            anls.iterations.eq(regs.nmf_iterations.count),
            anls.range_retries.eq(regs.nmf_iterations.range_retries),
            anls.g_offset.eq(saturate(regs.nmf_window_base.code, p.adc_bits)),
            anls.g_span.eq(regs.nmf_window_span.codes),
        ]
        for name in ("avg_log2", "dac_settle", "analog_settle", "watchdog_limit"):
            m.d.comb += getattr(anls, name).eq(host_solve[name])
        for name in ("tolerance", "amp_start", "amp_step", "amp_max", "pulse_width", "pulse_budget",
                     "read_settle"):
            m.d.comb += getattr(anls, name).eq(host_program[name])
        progress = regs.nmf_progress
        m.d.comb += [progress.iteration.eq(anls.iteration), progress.step.eq(anls.step),
                     progress.phase.eq(anls.phase), progress.rhs_done.eq(anls.rhs_done)]


    def _elaborate_refine(self, m: Module, refiner: Refiner, regs: ControllerRegisters,
                          host_solve: dict[str, Value], start: Value, abort: Value) -> None:
        """REFINE's wiring: the Refiner's operands and progress."""
        p = self._params
        control, gain = regs.refine_control, regs.refine_gain
        m.d.comb += [
            refiner.start.eq(start), refiner.abort.eq(abort),
            refiner.row_mask.eq(regs.row_mask), refiner.col_mask.eq(regs.col_enable.enable[:p.cols]),
            refiner.passes.eq(control.passes), refiner.headroom.eq(control.headroom),
            refiner.a_offset.eq(control.a_offset),
            refiner.gain.eq(gain.gain), refiner.gain_shift.eq(gain.shift),
        ]
        for name in ("avg_log2", "dac_settle", "analog_settle", "watchdog_limit"):
            m.d.comb += getattr(refiner, name).eq(host_solve[name])
        status = regs.refine_status
        m.d.comb += [status.passes_done.eq(refiner.passes_done),
                     status.residual_msb.eq(refiner.residual_msb),
                     status.over_range.eq(refiner.over_range)]

    def _elaborate_a_capture(self, m: Module, regs: ControllerRegisters, prog: WriteVerifyProgrammer) -> None:
        """REFINE_A: the programmer's final verify reading of each cell it records (its fault-map
        write, one column bit, in the cycle after the reading was registered) goes to cell
        (row, col) of A, for the COLS columns (not the spares)."""
        p = self._params
        col = lowest_set_index(prog.fault_map.en)
        capture = regs.refine_a.write
        m.d.comb += [
            capture.en.eq(prog.fault_map.en[:p.cols].any()),
            capture.addr.eq(prog.fault_map.addr * p.cols + col),
            capture.data.eq(prog.read_code),
        ]


def verilog_text(params: BuildParams | None = None) -> str:
    """The controller's Verilog, top module ``anmf_controller`` (what ``anmf verilog`` writes).

    No source locations are emitted (``emit_src=False``): the text holds no absolute paths
    and does not change with the checkout's location.
    """
    from amaranth.back import verilog

    params = params if params is not None else BuildParams()
    return verilog.convert(Controller(params), name=TOP_MODULE, emit_src=False)
