"""ANLS sequencer: RUN_NMF, the outer alternating-NNLS loop of the chip.

It drives the command ports of the solve sequencer and the write-verify programmer (never the
AFE itself) and keeps the factors in block floating point (docs/anls-sequencer.md has the
number formats, the phases and their cycle counts; model/formats.py the same arithmetic in
Python and ``GoldenController.run_nmf`` the same sequence):

per iteration, an H-step (stored factor F = W, m rows; one right-hand side per column of R)
then a W-step (F = H^T, n rows; one right-hand side per row of R). A half-step:

1. Prepare: scan F (leading one of every column's largest entry, live columns), read F's
   component exponents and compute the new factor's, write F's cells' TARGET codes.
2. Program: PROGRAM_MATRIX of F's rows x live columns (skipped when every column is dead).
3. Solve, per right-hand side t: scan its entries of R and MASK (the row mask is the
   observed entries, the exponent the leading one of their largest value); a right-hand side
   with nothing observed, all zero, or no live column gets a zero row without a solve;
   otherwise SOLVE with the RHS codes served on the fly from R, the results written into a
   scratch buffer as the sequencer writes them; an over-range result halves the input and
   solves again (at most ``range_retries`` times).
4. Commit: the scratch mantissas and exponents are copied into the output factor's buffers.

Abort: forwarded to the running block (which takes its safe exit); between blocks the
sequencer stops in the next cycle. A half-step's buffers change only in its commit, which an
abort does not interrupt: after an abort the NMF buffers hold the last committed half-step.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, ValueLike, signed
from amaranth.lib import enum, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .afe import AFEMode
from .codes import ErrorCode
from .params import MAX_RANGE_RETRIES, BuildParams
from .programmer import ProgrammerCommand
from .solve_sequencer import result_layout

__all__ = ["ANLSSequencer", "NMFPhase", "NMFStep", "solve_command_signature",
           "program_command_signature", "factor_buffer_signature", "highest_set_index",
           "MASK_WORD_BITS", "ITERATION_BITS", "RETRY_BITS"]

MASK_WORD_BITS = 32   #: bits per MASK buffer word (entry i * ROWS + j of R is one bit)
ITERATION_BITS = 16   #: width of the iteration count and the iteration progress output
RETRY_BITS = 4        #: width of range_retries (MAX_RANGE_RETRIES = 15)
assert (1 << RETRY_BITS) - 1 == MAX_RANGE_RETRIES


class NMFPhase(enum.Enum, shape=3):
    """What RUN_NMF is doing (the progress output ``phase``)."""

    IDLE = 0     #: no RUN_NMF runs
    PREPARE = 1  #: scanning the stored factor, exponents, TARGET codes
    PROGRAM = 2  #: write-verify of the stored factor
    SOLVE = 3    #: right-hand sides: scan, solve, over-range retries
    COMMIT = 4   #: copying the new factor into its buffers


class NMFStep(enum.Enum, shape=1):
    """Which half of an iteration runs (the progress output ``step``)."""

    H = 0  #: H-step: W programmed, one solve per column of R
    W = 1  #: W-step: H^T programmed, one solve per row of R


def highest_set_index(vector: ValueLike) -> Value:
    """Index of the highest set bit of ``vector`` (0 when none is set): the leading-one
    detector of the block floating point. A tree of muxes, log2(width) levels."""
    vector = Value.cast(vector)

    def highest(bits: Value) -> tuple[Value, Value]:
        if len(bits) == 1:
            return bits[0], Const(0, 1)
        half = 1 << (ceil_log2(len(bits)) - 1)
        low_any, low_index = highest(bits[:half])
        high_any, high_index = highest(bits[half:])
        return low_any | high_any, Mux(high_any, high_index + half, low_index)

    any_set, index = highest(vector)
    return Mux(any_set, index, 0)


def solve_command_signature(params: BuildParams) -> wiring.Signature:
    """The solve sequencer's command ports as the ANLS sequencer drives them (Out) and reads
    them back (In); the member names are the SolveSequencer's. ``col_mask`` covers the COLS
    solution columns only (RUN_NMF never uses a spare): zero-extend it to the block's port."""
    p = params
    return wiring.Signature({
        "start": Out(1), "abort": Out(1), "mode": Out(AFEMode), "row_mask": Out(p.rows),
        "col_mask": Out(p.cols), "avg_log2": Out(p.avg_log2_bits),
        "dac_settle": Out(p.timer_bits), "analog_settle": Out(p.timer_bits),
        "watchdog_limit": Out(p.timer_bits),
        "busy": In(1), "done": In(1), "error": In(ErrorCode),
    })


def program_command_signature(params: BuildParams) -> wiring.Signature:
    """The write-verify programmer's command ports as the ANLS sequencer drives them; the
    member names are the WriteVerifyProgrammer's (``col_mask``: COLS bits, as for the solve)."""
    p = params
    return wiring.Signature({
        "start": Out(1), "abort": Out(1), "command": Out(ProgrammerCommand),
        "cell_row": Out(p.row_addr_bits), "cell_col": Out(p.col_addr_bits),
        "row_mask": Out(p.rows), "col_mask": Out(p.cols),
        "tolerance": Out(p.tolerance_bits), "amp_start": Out(p.prog_amp_bits),
        "amp_step": Out(p.prog_amp_bits), "amp_max": Out(p.prog_amp_bits),
        "pulse_width": Out(p.prog_width_bits), "pulse_budget": Out(p.pulse_budget_bits),
        "avg_log2": Out(p.avg_log2_bits), "read_settle": Out(p.timer_bits),
        "watchdog_limit": Out(p.timer_bits),
        "busy": In(1), "done": In(1), "error": In(ErrorCode),
    })


def factor_buffer_signature(depth: int, shape: int) -> wiring.Signature:
    """A buffer the sequencer reads and writes, as the register file's memory presents it
    (``read`` and ``write`` port signatures); the sequencer's member is ``In`` of it."""
    addr_width = ceil_log2(depth)
    return wiring.Signature({
        "read": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=shape)),
        "write": Out(memory.WritePort.Signature(addr_width=addr_width, shape=shape)),
    })


class ANLSSequencer(wiring.Component):
    """RUN_NMF. Operands are sampled in the ``start`` cycle and must be held from the cycle
    before it (the start checks see that cycle's operands).

    Operands: ``m``, ``n`` (rows and columns of R, 1..rows), ``k`` (rank, 1..cols),
    ``iterations`` (1..2**16-1), ``range_retries`` (over-range retries per right-hand side),
    ``g_offset``, ``g_span`` (the conductance window in TARGET codes), and the blocks'
    operands: ``avg_log2`` (both), ``dac_settle``, ``analog_settle`` (solves),
    ``tolerance``, ``amp_start``, ``amp_step``, ``amp_max``, ``pulse_width``,
    ``pulse_budget``, ``read_settle`` (write-verify), ``watchdog_limit`` (both).

    Progress: ``iteration`` (iterations completed), ``step`` (:class:`NMFStep`), ``phase``
    (:class:`NMFPhase`), ``rhs_done`` (right-hand sides finished in this half-step); strobes
    ``retry`` (an over-range retry starts), ``unresolved`` (a right-hand side stays over range
    after its last retry), ``iteration_done``.

    Blocks: ``solve`` (:func:`solve_command_signature`), ``program``
    (:func:`program_command_signature`), ``rhs`` (serves the solve sequencer's rhs reads),
    ``result`` (watches the solve sequencer's result writes).

    Buffers (the register file's memories): ``r`` (R codes, entry (i, j) at i * rows + j),
    ``mask`` (32-bit words, entry (i, j) at bit index i * rows + j), ``w`` (W mantissas,
    (i, c) at i * cols + c), ``h`` (H mantissas, (c, j) at c * rows + j), ``w_exp``, ``h_exp``
    (exponents: per right-hand side at [0, rows), per component at rows + c), ``target``
    (TARGET codes written before each programming, cell (i, c) at i * (cols + spare) + c).

    Errors, checked in this order at start (``done`` in cycle 1, nothing else happens): m, n,
    k or iterations 0 or beyond the build -> BAD_DIMENSION; avg_log2 above avg_max_log2 ->
    BAD_AVERAGING; tolerance 0 or >= 2**adc_bits -> BAD_TOLERANCE; g_span 0 or g_offset +
    g_span > 2**adc_bits -> BAD_WINDOW; watchdog_limit or pulse_width 0 -> BAD_TIMING. While
    running: a block's ADC_TIMEOUT, PROGRAM_TIMEOUT or ABORTED ends RUN_NMF with it (a
    programming's CELLS_FAILED does not); a new component exponent beyond the exp_bits range
    -> EXPONENT_RANGE (``error_detail`` = that component), before anything is programmed.
    """

    def __init__(self, params: BuildParams):
        if not isinstance(params, BuildParams):
            self._MustUse__silence = True  # a rejected object is no unused design to warn of
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        for name in ("dac_bits", "adc_bits"):
            if getattr(params, name) < 2:
                self._MustUse__silence = True
                raise ValueError(f"{name} must be at least 2 for RUN_NMF (a sign bit and a "
                                 f"magnitude), got {getattr(params, name)}")
        self._params = params
        p = params
        mantissa_bits = p.mantissa_bits
        super().__init__({
            "start": In(1),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            "error_detail": Out(range(p.cols)),
            # operands
            "m": In(range(p.rows + 2)),
            "n": In(range(p.rows + 2)),
            "k": In(range(p.cols + 2)),
            "iterations": In(ITERATION_BITS),
            "range_retries": In(RETRY_BITS),
            "g_offset": In(p.adc_bits),
            "g_span": In(p.adc_bits + 1),
            "avg_log2": In(p.avg_log2_bits),
            "dac_settle": In(p.timer_bits),
            "analog_settle": In(p.timer_bits),
            "watchdog_limit": In(p.timer_bits),
            "tolerance": In(p.tolerance_bits),
            "amp_start": In(p.prog_amp_bits),
            "amp_step": In(p.prog_amp_bits),
            "amp_max": In(p.prog_amp_bits),
            "pulse_width": In(p.prog_width_bits),
            "pulse_budget": In(p.pulse_budget_bits),
            "read_settle": In(p.timer_bits),
            # progress
            "iteration": Out(ITERATION_BITS),
            "step": Out(NMFStep),
            "phase": Out(NMFPhase),
            "rhs_done": Out(range(p.rows + 1)),
            "retry": Out(1),
            "unresolved": Out(1),
            "iteration_done": Out(1),
            # blocks
            "solve": Out(solve_command_signature(p)),
            "program": Out(program_command_signature(p)),
            "rhs": Out(memory.ReadPort.Signature(addr_width=p.row_addr_bits, shape=p.dac_bits)),
            "result": Out(memory.WritePort.Signature(addr_width=p.col_addr_bits,
                                                     shape=result_layout(p))),
            # buffers
            "r": In(memory.ReadPort.Signature(addr_width=ceil_log2(p.rows * p.rows),
                                              shape=p.r_bits)),
            "mask": In(memory.ReadPort.Signature(addr_width=ceil_log2(self.mask_depth(p)),
                                                 shape=MASK_WORD_BITS)),
            "w": In(factor_buffer_signature(p.rows * p.cols, mantissa_bits)),
            "h": In(factor_buffer_signature(p.cols * p.rows, mantissa_bits)),
            "w_exp": In(factor_buffer_signature(p.rows + p.cols, p.exp_bits)),
            "h_exp": In(factor_buffer_signature(p.rows + p.cols, p.exp_bits)),
            "target": In(memory.WritePort.Signature(addr_width=p.cell_addr_bits,
                                                    shape=p.adc_bits)),
        })

    @staticmethod
    def mask_depth(params: BuildParams) -> int:
        """Words of the MASK buffer: one bit per entry of a rows x rows R."""
        return -(-params.rows * params.rows // MASK_WORD_BITS)

    @property
    def params(self) -> BuildParams:
        return self._params

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        rows, cols, exp_bits = p.rows, p.cols, p.exp_bits
        mantissa_bits = p.mantissa_bits
        headroom = p.dac_bits - 2            # L: an RHS code's magnitude is (r << L) >> shift
        exp_high = 2 ** (exp_bits - 1) - 1
        msb_shape = signed(exp_bits + 2)     # leading one + row exponent
        assert p.rhs_exp_max <= exp_high, "exp_bits must hold every right-hand side exponent"
        word_bits = ceil_log2(MASK_WORD_BITS)

        # --- scratch buffers of the half-step's new factor (committed at its end) ---------------
        m.submodules.scratch = scratch = memory.Memory(shape=mantissa_bits, depth=rows * cols,
                                                       init=[])
        m.submodules.scratch_exp = scratch_exp = memory.Memory(
            shape=exp_bits, depth=rows, init=[])
        scratch_write, scratch_read = scratch.write_port(), scratch.read_port()
        scratch_exp_write, scratch_exp_read = scratch_exp.write_port(), scratch_exp.read_port()

        # --- operands latched at start ----------------------------------------------------------
        size_m = Signal(range(rows + 1))
        size_n = Signal(range(rows + 1))
        rank = Signal(range(cols + 1))
        iterations = Signal(ITERATION_BITS)
        range_retries = Signal(RETRY_BITS)
        g_offset = Signal(p.adc_bits)
        g_span = Signal(p.adc_bits + 1)
        latched = {name: Signal.like(getattr(self, name), name=f"latched_{name}")
                   for name in ("avg_log2", "dac_settle", "analog_settle", "watchdog_limit",
                                "tolerance", "amp_start", "amp_step", "amp_max", "pulse_width",
                                "pulse_budget", "read_settle")}

        # --- state ------------------------------------------------------------------------------
        error = Signal(ErrorCode)
        error_detail = Signal(range(cols))
        abort_pending = Signal()
        abort_any = self.abort | abort_pending
        step = Signal(NMFStep)
        h_step = step == NMFStep.H
        iteration = Signal(ITERATION_BITS)
        rhs_done = Signal(range(rows + 1))
        m.d.comb += [self.error.eq(error), self.error_detail.eq(error_detail),
                     self.step.eq(step), self.iteration.eq(iteration),
                     self.rhs_done.eq(rhs_done)]
        f_rows = Mux(h_step, size_m, size_n)   # rows of the stored factor = RHS length

        outer = Signal(range(rows))   # factor row i, or right-hand side t
        inner = Signal(range(cols))   # component c
        index = Signal(range(rows))   # entry u of the right-hand side being scanned
        rhs = outer                   # the right-hand side being solved (t)

        # The walks' end decisions are flags kept a step ahead, set with every assignment of
        # their counter from registers: `inner_last` (inner = rank - 1), `outer_last_row`
        # (outer = f - 1, the last factor row), `outer_last_rhs` (outer = the half-step's last
        # right-hand side), `index_last` (index = f - 1). A counter restarting at 0 takes the
        # "single" flag of its bound, one advancing compares its value with the bound less 2
        # (which it then reaches). The compares of the counters with the sizes less 1 in front of
        # the FSM's enables were the ECP5's worst paths (docs/synthesis.md E29, E40).
        inner_last, outer_last_row, outer_last_rhs, index_last = (
            Signal(name=name) for name in ("inner_last", "outer_last_row", "outer_last_rhs", "index_last"))
        # Of the operands (fixed from the cycle after a start on; registered every cycle):
        rank_single = Signal()
        inner_before_last = Signal(range(cols))                 # rank - 2 (wraps for rank 1)
        m_single, n_single = Signal(), Signal()
        m_before_last, n_before_last = Signal(range(rows)), Signal(range(rows))
        m.d.sync += [rank_single.eq(rank == 1), inner_before_last.eq(rank - 2),
                     m_single.eq(size_m == 1), n_single.eq(size_n == 1),
                     m_before_last.eq(size_m - 2), n_before_last.eq(size_n - 2)]
        # Of the step (set with it: in Idle from the sizes, in Half-Done from the registers above):
        f_single, rhs_single = Signal(), Signal()
        f_row_before_last, rhs_before_last = Signal(range(rows)), Signal(range(rows))

        def set_step(new_step: NMFStep) -> None:
            h = new_step == NMFStep.H
            m.d.sync += [step.eq(new_step),
                         f_single.eq(m_single if h else n_single),
                         rhs_single.eq(n_single if h else m_single),
                         f_row_before_last.eq(m_before_last if h else n_before_last),
                         rhs_before_last.eq(n_before_last if h else m_before_last)]

        def restart_inner() -> None:
            m.d.sync += [inner.eq(0), inner_last.eq(rank_single)]

        def advance_inner() -> None:
            m.d.sync += [inner.eq(inner + 1), inner_last.eq(inner == inner_before_last)]

        def restart_outer(new_step: NMFStep | None = None) -> None:
            """outer = 0 in this half-step, or in the one ``new_step`` starts (set_step's cycle)."""
            if new_step is None:
                first_single, rhs_first_single = f_single, rhs_single
            elif new_step == NMFStep.H:
                first_single, rhs_first_single = m_single, n_single
            else:
                first_single, rhs_first_single = n_single, m_single
            m.d.sync += [outer.eq(0), outer_last_row.eq(first_single),
                         outer_last_rhs.eq(rhs_first_single)]

        def advance_outer() -> None:
            m.d.sync += [outer.eq(outer + 1), outer_last_row.eq(outer == f_row_before_last),
                         outer_last_rhs.eq(outer == rhs_before_last)]

        # Whether the iteration ending in the next Half-Done of a W-step is the last, registered
        # every cycle: iteration changes at a start and in a W-step's Half-Done, each at least a
        # half-step (over 5 cycles) before the next Half-Done.
        iteration_last = Signal()
        m.d.sync += iteration_last.eq(iteration + 1 == iterations)

        live = Signal(cols)                                    # columns of F not all zero
        # Per column, as flat words (not data.ArrayLayout views: Amaranth names a view's elements
        # `msb[0]`, ..., which Yosys's abc9 reintegration takes for bits of `msb`, an assertion
        # failure in synth_ecp5 with some netlists, docs/synthesis.md round 5).
        msb_flat = Signal(msb_shape.width * cols, name="msb")          # leading one
        new_exp_flat = Signal(exp_bits * cols, name="new_exp")

        def msb(column: Value) -> Value:
            return msb_flat.word_select(column, msb_shape.width).as_signed()
        exp_bad = Signal()

        rhs_max = Signal(p.r_bits)
        rhs_rows = Signal(rows)                                # observed entries
        shift = Signal(range(p.rhs_exp_max + 1))               # the RHS exponent p
        retries_done = Signal(RETRY_BITS)
        # Whether an over-range solve is tried again, registered every cycle: retries_done changes
        # in RHS-Decide and at a retry, each at least a solve before the next done.
        retries_left = Signal()
        m.d.sync += retries_left.eq(retries_done < range_retries)
        over_range = Signal()

        # --- buffer addresses -------------------------------------------------------------------
        def factor_address(i, c):
            """F[i, c] in its buffer: W (i * cols + c) in the H-step, H (c * rows + i) else."""
            return Mux(h_step, i * cols + c, c * rows + i)

        def output_address(t, c):
            """The new factor's entry for right-hand side t, component c: H[c, t] or W[t, c]."""
            return Mux(h_step, c * rows + t, t * cols + c)

        def r_address(t, u):
            """Entry u of right-hand side t: R[u, t] in the H-step, R[t, u] in the W-step."""
            return Mux(h_step, u * rows + t, t * rows + u)

        f_read = Mux(h_step, self.w.read.data, self.h.read.data)
        f_exp_read = Mux(h_step, self.w_exp.read.data, self.h_exp.read.data).as_signed()

        def read_factor(address):
            for port, active in ((self.w.read, h_step), (self.h.read, ~h_step)):
                m.d.comb += [port.addr.eq(address), port.en.eq(active)]

        def read_factor_exp(address):
            for port, active in ((self.w_exp.read, h_step), (self.h_exp.read, ~h_step)):
                m.d.comb += [port.addr.eq(address), port.en.eq(active)]

        def write_output(address, value):
            for port, active in ((self.h.write, h_step), (self.w.write, ~h_step)):
                m.d.comb += [port.addr.eq(address), port.data.eq(value), port.en.eq(active)]

        def write_output_exp(address, value):
            for port, active in ((self.h_exp.write, h_step), (self.w_exp.write, ~h_step)):
                m.d.comb += [port.addr.eq(address), port.data.eq(value), port.en.eq(active)]

        # --- pipelines: each consumes the buffer data the cycle after its read ------------------
        scan_pending = Signal()       # Scan-Factor: fold F[i, c] into msb[c], live[c]
        exp_pending = Signal()        # Read-Exponents: the new component exponent of c
        target_pending = Signal()     # Targets: write the TARGET code of (i, c)
        rhs_pending = Signal()        # Scan-RHS: fold entry u into rhs_max, rhs_rows
        commit_pending = Signal()     # Commit: write scratch (t, c) into the output factor
        pipe_i = Signal(range(rows))
        pipe_c = Signal(range(cols))
        pipe_bit = Signal(range(MASK_WORD_BITS))
        m.d.sync += [scan_pending.eq(0), exp_pending.eq(0), target_pending.eq(0),
                     rhs_pending.eq(0), commit_pending.eq(0), pipe_i.eq(outer), pipe_c.eq(inner)]
        # A block RAM's clock-to-out takes over half of a 100 MHz cycle (docs/synthesis.md), so
        # every consumer of buffer data but the TARGET pipeline's first stage registers the word
        # first and works on it in the cycle after (the "folded" stage below).
        fold_valid = Signal()             # Scan-Factor: factor word and row exponent registered
        fold_factor = Signal(mantissa_bits)
        fold_exp = Signal(signed(exp_bits))
        fold_c = Signal(range(cols))
        rhs_valid = Signal()              # Scan-RHS: R entry and MASK word registered
        rhs_entry = Signal(p.r_bits)
        rhs_word = Signal(MASK_WORD_BITS)
        rhs_bit = Signal(range(MASK_WORD_BITS))
        rhs_u = Signal(range(rows))
        commit_valid = Signal()           # Commit: scratch mantissa registered
        commit_data = Signal(mantissa_bits, reset_less=True)   # no reset LUT after the RAM (E45)
        commit_live = Signal()            # its column is live (a dead column's entries are 0)
        commit_address = Signal(ceil_log2(rows * cols))
        m.d.sync += [fold_valid.eq(scan_pending), rhs_valid.eq(rhs_pending),
                     commit_valid.eq(commit_pending)]
        with m.If(scan_pending):
            m.d.sync += [fold_factor.eq(f_read), fold_exp.eq(f_exp_read), fold_c.eq(pipe_c)]
        with m.If(rhs_pending):
            m.d.sync += [rhs_entry.eq(self.r.data), rhs_word.eq(self.mask.data),
                         rhs_bit.eq(pipe_bit), rhs_u.eq(pipe_i)]

        # msb[c] and live[c] registered with pipe_c for the TARGET codes and the new exponents (not
        # a mux behind pipe_c: that mux and the arithmetic after it were too deep for 100 MHz,
        # docs/synthesis.md E12, E44). They are final before Read-Exponents' second cycle but for
        # a rank-1 factor, whose only column's last fold lands in Read-Exponents' first (and only)
        # cycle (E24): there the registers take the fold's outcome (`fold_write`, below).
        target_msb = Signal(msb_shape)
        target_live = Signal()
        # The fold in two registered steps: the word's leading one plus the row exponent (the
        # candidate peak), then its comparison with the column's peak and the update; the search,
        # the comparisons and the enables in one cycle were the ECP5's critical path
        # (docs/synthesis.md E15, E20, E24). Hence two Scan-Fold cycles.
        candidate_now = highest_set_index(fold_factor) + fold_exp
        peak_candidate = Signal.like(candidate_now)
        # The candidate's column one-hot, none for a zero word (no candidate): each column's
        # update is then its own bit, its "not live yet" and its comparison, one LUT after the
        # comparison's carry chain (the column picked by a mux after the comparisons and the
        # enables decoded from it were the ANLS sequencer's longest path alone, E42).
        peak_columns = Signal(cols)
        fold_second = Signal()            # Scan-Fold's second cycle
        m.d.sync += peak_columns.eq(Mux(fold_valid & (fold_factor != 0), 1 << fold_c, 0))
        with m.If(fold_valid):
            m.d.sync += peak_candidate.eq(candidate_now)
        fold_write = Signal(cols)
        for c in range(cols):
            # One comparison per column (E20).
            m.d.comb += fold_write[c].eq(peak_columns[c] & (~live[c] | (peak_candidate > msb(c))))
            with m.If(fold_write[c]):
                m.d.sync += [msb_flat.word_select(c, msb_shape.width).eq(peak_candidate),
                             live[c].eq(1)]
        m.d.sync += [target_msb.eq(Mux(rank_single & fold_write[0], peak_candidate, msb(inner))),
                     target_live.eq((live | peak_columns).bit_select(inner, 1))]
        with m.If(exp_pending):
            next_exp = Signal(signed(exp_bits + 4))
            m.d.comb += next_exp.eq(-headroom - 1 - f_exp_read - target_msb)
            alive = target_live
            m.d.sync += new_exp_flat.word_select(pipe_c, exp_bits).eq(Mux(alive, next_exp, 0))
            # Outside exp_low .. exp_high (the exp_bits-bit signed range) is: the bits from the
            # sign of an exp_bits-bit word up not all equal; no comparator behind the subtraction
            # (E34: the two comparisons were the tail of the sequencer's longest path).
            sign_and_above = next_exp[exp_bits - 1:]
            with m.If(alive & sign_and_above.any() & ~sign_and_above.all() & ~exp_bad):
                m.d.sync += [exp_bad.eq(1), error_detail.eq(pipe_c)]
        # TARGET codes, g_offset + ((F * g_span) >> (msb[c] + 1 - row_exp[i])): the column's
        # largest entry in the upper half of the window, never past g_offset + g_span - 1.
        # Three stages after the factor read, so that no cycle holds more than one of the block
        # RAM's clock-to-out, the multiplier, and the shift and add (docs/synthesis.md):
        # (1) register the factor word, the shift distance and the cell address; (2) multiply;
        # (3) shift, add, write. The last write lands in the programmer's first Fetch-Target
        # cycle; TARGET's core read port is transparent for it (hdl/regmap.py).
        product_bits = mantissa_bits + p.adc_bits + 1
        target_factor = Signal(mantissa_bits)
        # The distance unclamped in stage 1, clamped to 0 .. product_bits in stage 2.
        target_distance = [Signal(signed(exp_bits + 4), name="target_distance_1"),
                           Signal(range(product_bits + 1), name="target_distance_2")]
        target_cell = [Signal(p.cell_addr_bits, name=f"target_cell_{stage}") for stage in (1, 2)]
        # The cell (pipe_i, pipe_c)'s address registered with them, from (outer, inner), the
        # constant product as shifts and adds: the multiplier (a MULT18X18D) in front of stage 1
        # was the ANLS sequencer's longest path alone (docs/synthesis.md E43).
        pipe_cell = Signal(p.cell_addr_bits)
        m.d.sync += pipe_cell.eq(sum(outer << bit for bit in range(p.total_cols.bit_length())
                                     if p.total_cols >> bit & 1) + inner)
        target_valid = [Signal(name=f"target_valid_{stage}") for stage in (1, 2)]
        target_product = Signal(product_bits)
        m.d.sync += [target_valid[0].eq(target_pending), target_valid[1].eq(target_valid[0])]
        with m.If(target_pending):
            m.d.sync += [
                target_factor.eq(f_read),
                target_distance[0].eq(target_msb + 1 - f_exp_read),
                target_cell[0].eq(pipe_cell),
            ]
        distance = target_distance[0]
        m.d.sync += [target_product.eq(target_factor * g_span),
                     target_distance[1].eq(Mux(distance < 0, 0, Mux(distance > product_bits, product_bits, distance))),
                     target_cell[1].eq(target_cell[0])]
        m.d.comb += [self.target.en.eq(target_valid[1]),
                     self.target.addr.eq(target_cell[1]),
                     self.target.data.eq(g_offset + (target_product >> target_distance[1]))]
        with m.If(rhs_valid):
            with m.If(rhs_word.bit_select(rhs_bit, 1)):
                m.d.sync += rhs_rows.bit_select(rhs_u, 1).eq(1)
                with m.If(rhs_entry > rhs_max):
                    m.d.sync += rhs_max.eq(rhs_entry)
        # The mantissa one cycle later, read and registered in every cycle (it counts only with
        # commit_valid) straight from the block RAM, the dead columns' zero after the register:
        # the RAM's clock-to-out leaves no room for a LUT in this cycle (docs/synthesis.md E45;
        # the scratch's ports share one address, below, for the same reason). The row exponent
        # (LUT RAM) at once.
        m.d.comb += scratch_read.en.eq(1)
        m.d.sync += commit_data.eq(scratch_read.data)
        with m.If(commit_pending):
            m.d.sync += [commit_live.eq(live.bit_select(pipe_c, 1)),
                         commit_address.eq(output_address(pipe_i, pipe_c))]
            with m.If(pipe_c == 0):
                write_output_exp(pipe_i, scratch_exp_read.data)
        with m.If(commit_valid):
            write_output(commit_address, Mux(commit_live, commit_data, 0))

        # --- the solve sequencer's RHS reads, served from R; its results, into the scratch ------
        solving = Signal()
        # The scratch addresses do not depend on the decisions that enable the writes (the
        # solve's done and error, the retry, in front of the LUT RAM's write address were the ANLS
        # sequencer's longest path alone, docs/synthesis.md E41): the right-hand side's row, the
        # column of the result or of Clear-Row's and Commit's walks. The read port takes the same
        # address (Commit reads right-hand side `outer`): Yosys then maps both to one port of the
        # DP16KD; a read port beside a write port gets a bypass mux after the RAM for their
        # same-address collisions (DP16KD's ports have no defined cross-port read-during-write),
        # in front of `commit_data` (E45).
        scratch_column = Signal.like(self.result.addr)   # all of the result address (a column < cols)
        m.d.comb += [scratch_column.eq(self.result.addr),
                     scratch_write.addr.eq(rhs * cols + scratch_column),
                     scratch_read.addr.eq(rhs * cols + scratch_column),
                     scratch_exp_write.addr.eq(rhs), scratch_exp_write.data.eq(shift)]
        with m.If(solving):
            m.d.comb += [self.r.addr.eq(r_address(rhs, self.rhs.addr)), self.r.en.eq(self.rhs.en)]
        magnitude = ((self.r.data << headroom) >> shift)[:p.dac_bits - 1]
        m.d.comb += self.rhs.data.eq(p.dac_zero_code + magnitude)
        with m.If(solving & self.result.en):
            code = self.result.data.code
            m.d.comb += [scratch_write.en.eq(1),
                         scratch_write.data.eq(Mux(code[-1], code[:-1], 0))]   # floored at 0
            m.d.sync += over_range.eq(over_range | self.result.data.over_range)

        # --- block operands ---------------------------------------------------------------------
        solve, program = self.solve, self.program
        # The programmer's row mask (the factor's rows 0 .. f_rows - 1) is registered: f_rows is
        # fixed from a half-step's first cycle, long before Program-Start, and the shift behind it
        # is too deep to sit in front of the programmer's start (docs/synthesis.md).
        unused_rows = Signal(range(rows + 1))
        factor_rows_mask = Signal(rows)
        m.d.comb += unused_rows.eq(rows - f_rows)
        m.d.sync += factor_rows_mask.eq(Const(2 ** rows - 1, rows) >> unused_rows)
        m.d.comb += [
            solve.abort.eq(abort_any & self.busy),
            solve.mode.eq(AFEMode.SOLVE),
            solve.row_mask.eq(rhs_rows),
            solve.col_mask.eq(live),
            program.abort.eq(abort_any & self.busy),
            program.command.eq(ProgrammerCommand.PROGRAM_MATRIX),
            program.row_mask.eq(factor_rows_mask),
            program.col_mask.eq(live),
        ]
        for name in ("avg_log2", "dac_settle", "analog_settle", "watchdog_limit"):
            m.d.comb += getattr(solve, name).eq(latched[name])
        for name in ("tolerance", "amp_start", "amp_step", "amp_max", "pulse_width",
                     "pulse_budget", "avg_log2", "read_settle", "watchdog_limit"):
            m.d.comb += getattr(program, name).eq(latched[name])

        # --- start checks, in the documented order ----------------------------------------------
        start_error = Signal(ErrorCode)
        bad_size = ((self.m == 0) | (self.m > rows) | (self.n == 0) | (self.n > rows) |
                    (self.k == 0) | (self.k > cols) | (self.iterations == 0))
        with m.If(bad_size):
            m.d.comb += start_error.eq(ErrorCode.BAD_DIMENSION)
        with m.Elif(self.avg_log2 > p.avg_max_log2):
            m.d.comb += start_error.eq(ErrorCode.BAD_AVERAGING)
        with m.Elif((self.tolerance == 0) | (self.tolerance >= 2 ** p.adc_bits)):
            m.d.comb += start_error.eq(ErrorCode.BAD_TOLERANCE)
        with m.Elif((self.g_span == 0) | (self.g_offset + self.g_span > 2 ** p.adc_bits)):
            m.d.comb += start_error.eq(ErrorCode.BAD_WINDOW)
        with m.Elif((self.watchdog_limit == 0) | (self.pulse_width == 0)):
            m.d.comb += start_error.eq(ErrorCode.BAD_TIMING)
        # Evaluated every cycle into a register, as in the solve sequencer (E8): the operand
        # muxes in the controller, these checks and the start's state enables were too deep for
        # 100 MHz in one cycle (docs/synthesis.md, E17). The controller holds the operands (its
        # registers, written at least REGISTER_WRITE_SPACING cycles before a start).
        settled_start_error = Signal(ErrorCode)
        m.d.sync += settled_start_error.eq(start_error)
        # busy as a flip-flop (set by a start in Idle, cleared in Done) rather than a decode of the
        # state: it selects every block operand in the controller (E16, E23).
        busy = Signal()

        # --- helpers ----------------------------------------------------------------------------
        def stop(outcome):
            m.d.sync += error.eq(outcome)
            m.next = "Done"

        def abortable():
            # Last in a state: an abort overrides the state's own next-state choice.
            with m.If(abort_any):
                stop(ErrorCode.ABORTED)

        def walk(outer_last: Signal, then: str):
            """Step (outer, inner) over the rows up to the one ``outer_last`` flags x rank
            columns, inner fastest; go to state ``then`` after the last pair."""
            advance_inner()
            with m.If(inner_last):
                restart_inner()
                advance_outer()
                with m.If(outer_last):
                    restart_outer()
                    m.next = then

        def begin_half_step(new_step: NMFStep):
            # fold_second too: an abort in Scan-Fold's first cycle leaves it set.
            set_step(new_step)
            restart_outer(new_step)
            restart_inner()
            m.d.sync += [live.eq(0), exp_bad.eq(0),
                         error_detail.eq(0), rhs_done.eq(0), fold_second.eq(0)]
            m.next = "Scan-Factor"

        def begin_rhs():
            m.d.sync += [index.eq(0), index_last.eq(f_single), rhs_max.eq(0), rhs_rows.eq(0)]
            m.next = "Scan-RHS"

        with m.FSM(init="Idle") as fsm:
            with m.State("Idle"):
                # Operands loaded in every idle cycle (internal; read only after a start), so
                # that the start does not enable all of them (docs/synthesis.md).
                m.d.sync += [size_m.eq(self.m), size_n.eq(self.n), rank.eq(self.k),
                             iterations.eq(self.iterations), range_retries.eq(self.range_retries),
                             g_offset.eq(self.g_offset), g_span.eq(self.g_span)]
                m.d.sync += [latched[name].eq(getattr(self, name)) for name in latched]
                m.d.sync += busy.eq(self.start)
                # The first half-step's internal state too (begin_half_step and set_step's walk
                # ends): the controller's refusal -> start -> these enables was the ECP5's worst
                # path (docs/synthesis.md E36). The start enables only what the host sees.
                m.d.sync += [live.eq(0), exp_bad.eq(0), fold_second.eq(0), abort_pending.eq(0),
                             inner.eq(0), inner_last.eq(rank == 1), outer.eq(0),
                             outer_last_row.eq(size_m == 1), outer_last_rhs.eq(size_n == 1),
                             f_single.eq(size_m == 1), rhs_single.eq(size_n == 1),
                             f_row_before_last.eq(size_m - 2), rhs_before_last.eq(size_n - 2)]
                with m.If(self.start):
                    m.d.sync += [error.eq(settled_start_error), error_detail.eq(0)]
                    with m.If(settled_start_error != ErrorCode.NONE):
                        m.next = "Done"
                    with m.Else():
                        m.d.sync += [step.eq(NMFStep.H), iteration.eq(0), rhs_done.eq(0)]
                        m.next = "Scan-Factor"

            # -- prepare ------------------------------------------------------------------------
            with m.State("Scan-Factor"):
                read_factor(factor_address(outer, inner))
                read_factor_exp(outer)
                m.d.sync += scan_pending.eq(1)
                walk(outer_last_row, "Scan-Fold")
                abortable()

            with m.State("Scan-Fold"):
                # The last factor word is registered, its candidate, then folded in the first
                # cycle of Read-Exponents: msb and live are final after it.
                m.d.sync += fold_second.eq(~fold_second)
                with m.If(fold_second):
                    m.next = "Read-Exponents"
                abortable()

            with m.State("Read-Exponents"):
                read_factor_exp(rows + inner)
                m.d.sync += exp_pending.eq(1)
                advance_inner()
                with m.If(inner_last):
                    restart_inner()
                    m.next = "Targets"
                abortable()

            with m.State("Targets"):
                read_factor(factor_address(outer, inner))
                read_factor_exp(outer)
                m.d.sync += target_pending.eq(1)
                walk(outer_last_row, "Program-Start")
                abortable()

            # -- program ------------------------------------------------------------------------
            with m.State("Program-Start"):
                with m.If(exp_bad):
                    stop(ErrorCode.EXPONENT_RANGE)
                with m.Elif(live == 0):
                    begin_rhs()
                with m.Else():
                    m.d.comb += program.start.eq(~abort_any)
                    m.next = "Program-Wait"
                abortable()

            with m.State("Program-Wait"):
                with m.If(program.done):
                    with m.If((program.error != ErrorCode.NONE) &
                              (program.error != ErrorCode.CELLS_FAILED)):
                        stop(program.error)
                    with m.Elif(abort_any):
                        stop(ErrorCode.ABORTED)
                    with m.Else():
                        begin_rhs()

            # -- solve --------------------------------------------------------------------------
            with m.State("Scan-RHS"):
                address = r_address(rhs, index)
                m.d.comb += [self.r.addr.eq(address), self.r.en.eq(1),
                             self.mask.addr.eq(address >> word_bits), self.mask.en.eq(1)]
                m.d.sync += [rhs_pending.eq(1), pipe_bit.eq(address[:word_bits]),
                             pipe_i.eq(index),
                             index.eq(index + 1), index_last.eq(index == f_row_before_last)]
                with m.If(index_last):
                    m.next = "Scan-Drain"
                abortable()

            with m.State("Scan-Drain"):
                m.next = "Scan-Last"
                abortable()

            with m.State("Scan-Last"):
                # The last entry is folded in this cycle: rhs_max and rhs_rows are final after it.
                m.next = "RHS-Hold"
                abortable()

            with m.State("RHS-Hold"):
                # The controller registers the solve sequencer's operands (the mux of the host's,
                # RUN_NMF's and REFINE's in front of its start checks was the ECP5's worst path,
                # docs/synthesis.md E46), and the sequencer checks them as they were the cycle
                # before its start: the row mask must be final two cycles before Solve-Start.
                m.next = "RHS-Decide"
                abortable()

            with m.State("RHS-Decide"):
                m.d.sync += [shift.eq(highest_set_index(rhs_max)), retries_done.eq(0)]
                restart_inner()
                with m.If((rhs_max == 0) | (live == 0)):
                    m.next = "Clear-Row"
                with m.Else():
                    m.next = "Solve-Start"
                abortable()

            with m.State("Clear-Row"):
                # Nothing observed, all zero, or no live column: the solution is 0.
                m.d.comb += [scratch_write.en.eq(1), scratch_column.eq(inner),
                             scratch_write.data.eq(0), scratch_exp_write.data.eq(0)]
                with m.If(inner == 0):
                    m.d.comb += scratch_exp_write.en.eq(1)
                advance_inner()
                with m.If(inner_last):
                    restart_inner()
                    m.next = "RHS-Next"
                abortable()

            with m.State("Solve-Start"):
                m.d.comb += solve.start.eq(~abort_any)
                m.d.sync += over_range.eq(0)
                m.next = "Solve-Wait"
                abortable()

            with m.State("Solve-Wait"):
                m.d.comb += solving.eq(1)
                with m.If(solve.done):
                    with m.If(solve.error != ErrorCode.NONE):
                        stop(solve.error)
                    with m.Elif(abort_any):
                        stop(ErrorCode.ABORTED)
                    with m.Elif(over_range & retries_left):
                        # Halve the input (one more bit of exponent) and solve again.
                        m.d.comb += self.retry.eq(1)
                        m.d.sync += [shift.eq(shift + 1), retries_done.eq(retries_done + 1)]
                        m.next = "Solve-Start"
                    with m.Else():
                        m.d.comb += [self.unresolved.eq(over_range), scratch_exp_write.en.eq(1)]
                        m.next = "RHS-Next"

            with m.State("RHS-Next"):
                m.d.sync += rhs_done.eq(rhs_done + 1)
                with m.If(outer_last_rhs):
                    restart_outer()
                    restart_inner()
                    m.next = "Commit"
                with m.Else():
                    advance_outer()
                    begin_rhs()
                abortable()

            # -- commit: runs to its end even when an abort arrives -----------------------------
            with m.State("Commit"):
                m.d.comb += [scratch_column.eq(inner),
                             scratch_exp_read.addr.eq(outer), scratch_exp_read.en.eq(1)]
                m.d.sync += commit_pending.eq(1)
                walk(outer_last_rhs, "Commit-Drain")

            with m.State("Commit-Drain"):
                m.next = "Commit-Exponents"

            with m.State("Commit-Exponents"):
                write_output_exp(rows + inner, new_exp_flat.word_select(inner, exp_bits))
                advance_inner()
                with m.If(inner_last):
                    restart_inner()
                    m.next = "Half-Done"

            with m.State("Half-Done"):
                with m.If(abort_any):
                    stop(ErrorCode.ABORTED)
                with m.Elif(h_step):
                    begin_half_step(NMFStep.W)
                with m.Else():
                    m.d.comb += self.iteration_done.eq(1)
                    m.d.sync += iteration.eq(iteration + 1)
                    with m.If(iteration_last):
                        set_step(NMFStep.H)   # the progress after the last iteration shows H
                        stop(ErrorCode.NONE)
                    with m.Else():
                        begin_half_step(NMFStep.H)

            with m.State("Done"):
                m.d.comb += self.done.eq(1)
                m.d.sync += busy.eq(0)
                m.next = "Idle"

        with m.If(self.abort & ~fsm.ongoing("Idle") & ~fsm.ongoing("Done")):
            m.d.sync += abort_pending.eq(1)

        phases = {
            NMFPhase.PREPARE: ("Scan-Factor", "Scan-Fold", "Read-Exponents", "Targets"),
            NMFPhase.PROGRAM: ("Program-Start", "Program-Wait"),
            NMFPhase.SOLVE: ("Scan-RHS", "Scan-Drain", "Scan-Last", "RHS-Hold", "RHS-Decide", "Clear-Row", "Solve-Start",
                             "Solve-Wait", "RHS-Next"),
            NMFPhase.COMMIT: ("Commit", "Commit-Drain", "Commit-Exponents", "Half-Done"),
        }
        for phase, states in phases.items():
            with m.If(Cat(fsm.ongoing(state) for state in states).any()):
                m.d.comb += self.phase.eq(phase)
        m.d.comb += self.busy.eq(busy)
        return m
