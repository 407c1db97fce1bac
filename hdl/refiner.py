"""Refiner: iterative refinement (mixed precision) of an analog NNLS solve.

The digital side keeps the problem exactly: A (the READ_CELL codes write-verify read back,
minus ``a_offset``), B (signed words) and X (unsigned words); the analog side only ever
solves for a correction. docs/refinement.md has the definition, the formats and the
measured convergence; ``anmf.model.refinement.golden_refine`` is the same sequence in
Python, bit for bit and cycle for cycle.

Sequence (``start`` in cycle 0):

1. Clear: X := 0, one word per cycle (COLS cycles).
2. Per pass: Setup; MAC: ``R_i = B_i - sum_j (A_ij - a_offset) X_j`` over the enabled rows
   and the active columns (one multiply per cycle; in pass 0 nothing is active and one
   zero product per row stands in); five pipeline cycles (the last folds the last row into
   the peak); Scale: the peak ``OR_i |R_i|`` gives the exponent
   ``e = msb(peak) - (DAC_BITS - 2) + headroom``.
3. Gradient (passes after 0, when some column of ``col_mask`` is inactive): per inactive
   column j, over the enabled rows, ``score_j = sum_i A_ij (2 s_i - sign(A_ij))`` with
   ``s_i = round(R_i / 2**(e - GRADIENT_FRACTION_BITS))`` (the DAC codes' shifter, 8 bits
   finer; one multiply per cycle, on the same multiplier); ``score_j > 0`` (the gradient
   A_j^T s exceeds what the rounding of s can contribute, sum_i |A_ij| / 2) makes j re-enter
   the active set (the NNLS KKT condition). Five pipeline cycles, then Check: nothing
   active -> done.
4. Solve: the solve sequencer runs SOLVE (pass 0, columns ``col_mask``) or SOLVE_FREE
   (later passes, the active and entering columns), its DAC codes served from R on the fly:
   ``zero + clamp(round(R_i / 2**e))``; its results are captured.
5. Accumulate, per solved column: ``X_j += round((code - zero) * gain *
   2**(msb + headroom - gain_shift))``, clamped to [0, 2**x_bits - 1]; X_j > 0 makes j
   active, X_j = 0 makes it inactive. Six pipeline cycles, then the next pass.
6. After ``passes`` + 1 solves (or when R = 0, or no column is active and none re-enters)
   the last residual has been computed (``residual_msb``) and the Refiner is done.

Abort: forwarded to the solve sequencer while it runs (it takes its safe exit and reports
ABORTED); in the Refiner's own states ``done`` follows in the next cycle with ABORTED. The
Refiner never drives the AFE itself.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .afe import AFEMode, at_most_one_set, lowest_set_index
from .anls_sequencer import highest_set_index, solve_command_signature
from .codes import ErrorCode
from .params import BuildParams
from .solve_sequencer import result_layout

__all__ = ["Refiner", "GAIN_BITS", "GAIN_SHIFT_BITS", "PASS_BITS", "HEADROOM_BITS",
           "GRADIENT_FRACTION_BITS", "serve_shifts", "twice_scaled", "twice_rounded", "dac_value"]

GAIN_BITS = 18        #: correction gain operand (unsigned)
GAIN_SHIFT_BITS = 6   #: correction shift operand
PASS_BITS = 4         #: refinement passes after pass 0 (0..15)
HEADROOM_BITS = 2     #: DAC headroom bits (0..3)
#: Fraction bits below the DAC step of the residual the gradient sweep uses.
GRADIENT_FRACTION_BITS = 8
#: Drain cycles after the last fetch before the state that sees the last term's result:
#: MAC (stages 1 to 4, then MAC-Last folding the last residual into the peak), gradient sweep
#: (stages 0 to 3, then Gradient-Last), accumulation (stages 1 to 5, then Accumulate-Last in
#: stage 6, the active bit).
MAC_DRAIN = 4
GRADIENT_DRAIN = 4
ACCUMULATE_DRAIN = 5


def serve_shifts(exponent: Value) -> tuple[Value, Value]:
    """R's shifter's amounts for exponent k: (right, left) = (k - 1, 0) when k > 0, else
    (0, 1 - k); the shifter then gives t = floor(R * 2**(1 - k)), twice R / 2**k before its
    rounding (``twice_scaled``)."""
    return Mux(exponent > 0, exponent - 1, 0), Mux(exponent > 0, 0, 1 - exponent)


def twice_scaled(word: Value, right: Value, left: Value) -> Value:
    """t = floor(word * 2**(1 - k)) by ``serve_shifts``' amounts (left != 0: a left shift)."""
    return Mux(left != 0, word << left, word >> right)


def twice_rounded(twice: Value) -> Value:
    """2 round(R / 2**k) (half up) from t: t + t[0] (t even: R / 2**k rounds down to t / 2;
    odd: up to (t + 1) / 2)."""
    return twice + twice[0]


def dac_value(twice: Value, dac_bits: int) -> Value:
    """clamp(round(R / 2**k), -top, top - 1), top = 2**(dac_bits - 1), from t: round = (t + 1)
    >> 1, which is >= top when t >= 2 top - 1 and < -top when t < -2 top - 1; inside, the low
    dac_bits + 1 bits of t give it (a (dac_bits + 1)-bit adder, no full-width one)."""
    top = 2 ** (dac_bits - 1)
    rounded = (twice[:dac_bits + 1] + 1)[1:dac_bits + 1].as_signed()
    return Mux(twice >= 2 * top - 1, top - 1, Mux(twice < -2 * top - 1, -top, rounded))


def _check_width(name: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


class Refiner(wiring.Component):
    """REFINE: pass 0 (clamped SOLVE) plus ``passes`` refinement passes. Operands are sampled
    in the ``start`` cycle and must be held from the cycle before it (the start checks see that
    cycle's operands).

    Args:
        params: build parameters (rows, cols, converter widths, averaging, timers).
        x_bits: width of X (unsigned), 4..40.
        b_bits: width of B (two's complement), 4..48.

    Operands: ``row_mask`` (rows of the problem), ``col_mask`` (its columns, COLS bits),
    ``passes``, ``a_offset`` (code of the zero conductance), ``gain``, ``gain_shift``,
    ``headroom``, and the solves' ``avg_log2``, ``dac_settle``, ``analog_settle``,
    ``watchdog_limit``.

    Outputs: ``passes_done`` (solves accumulated), ``residual_msb`` (leading one of the last
    residual's peak; 0 also when R = 0), ``over_range`` (a solve result was over range).

    Buffers, memory ports of memories outside (the controller's REFINE_A/B/X windows), read
    ports without transparency: ``a`` (A codes, cell (i, j) at i * COLS + j), ``b`` (B by
    row, ``b_bits`` two's complement), ``x`` and ``x_write`` (X by column; the Refiner reads
    and writes it). Blocks: ``solve``
    (the solve sequencer's command ports), ``rhs`` (serves its rhs reads), ``result``
    (takes its result writes).

    Errors, checked in this order at start (``done`` in cycle 1, nothing else happens):
    row_mask or col_mask zero -> BAD_DIMENSION; avg_log2 above avg_max_log2 ->
    BAD_AVERAGING; watchdog_limit zero -> BAD_TIMING. A solve's ADC_TIMEOUT or ABORTED ends
    the run with it.
    """

    def __init__(self, params: BuildParams, *, x_bits: int = 24, b_bits: int = 32):
        if not isinstance(params, BuildParams):
            self._MustUse__silence = True  # a rejected object is no unused design to warn of
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        try:
            _check_width("x_bits", x_bits, 4, 40)
            _check_width("b_bits", b_bits, 4, 48)
            if params.dac_bits < 2:
                raise ValueError(f"dac_bits must be at least 2 for REFINE (a sign bit and a "
                                 f"magnitude), got {params.dac_bits}")
        except ValueError:
            self._MustUse__silence = True
            raise
        self._params = params
        self.x_bits, self.b_bits = x_bits, b_bits
        p = params
        product_bits = p.adc_bits + 1 + x_bits
        #: Residual width: B minus COLS products never wraps (RefineFormat.r_bits).
        self.r_bits = max(b_bits, product_bits + max(1, (p.cols - 1).bit_length())) + 1
        super().__init__({
            "start": In(1),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            # operands
            "row_mask": In(p.rows),
            "col_mask": In(p.cols),
            "passes": In(PASS_BITS),
            "a_offset": In(p.adc_bits),
            "gain": In(GAIN_BITS),
            "gain_shift": In(GAIN_SHIFT_BITS),
            "headroom": In(HEADROOM_BITS),
            "avg_log2": In(p.avg_log2_bits),
            "dac_settle": In(p.timer_bits),
            "analog_settle": In(p.timer_bits),
            "watchdog_limit": In(p.timer_bits),
            # progress
            "passes_done": Out(range(2 ** PASS_BITS + 1)),
            "residual_msb": Out(range(self.r_bits)),
            "over_range": Out(1),
            # buffers (memories outside: the controller's REFINE_A/B/X windows)
            "a": In(memory.ReadPort.Signature(addr_width=ceil_log2(p.rows * p.cols),
                                              shape=p.adc_bits)),
            "b": In(memory.ReadPort.Signature(addr_width=p.row_addr_bits, shape=b_bits)),
            "x": In(memory.ReadPort.Signature(addr_width=ceil_log2(p.cols), shape=x_bits)),
            "x_write": In(memory.WritePort.Signature(addr_width=ceil_log2(p.cols),
                                                     shape=x_bits)),
            # blocks
            "solve": Out(solve_command_signature(p)),
            "rhs": Out(memory.ReadPort.Signature(addr_width=p.row_addr_bits, shape=p.dac_bits)),
            "result": Out(memory.WritePort.Signature(addr_width=p.col_addr_bits,
                                                     shape=result_layout(p))),
        })

    @property
    def params(self) -> BuildParams:
        return self._params

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        rows, cols = p.rows, p.cols
        r_bits, x_bits = self.r_bits, self.x_bits
        x_top = 2 ** x_bits - 1

        # --- buffers: A, B, X outside (non-transparent read ports); R and Y inside ---------
        m.submodules.r_mem = r_mem = memory.Memory(shape=signed(r_bits), depth=rows, init=[])
        m.submodules.y_mem = y_mem = memory.Memory(shape=result_layout(p), depth=p.total_cols,
                                                   init=[])
        a_read, b_read = self.a, self.b
        x_fetch, x_write = self.x, self.x_write
        r_write, r_serve = r_mem.write_port(), r_mem.read_port()
        y_write, y_fetch = y_mem.write_port(), y_mem.read_port()

        # --- operands sampled at start ------------------------------------------------------
        row_mask = Signal(rows)
        col_mask = Signal(cols)
        passes = Signal(PASS_BITS)
        a_offset = Signal(p.adc_bits)
        gain = Signal(GAIN_BITS)
        gain_shift = Signal(GAIN_SHIFT_BITS)
        headroom = Signal(HEADROOM_BITS)
        avg_log2 = Signal(p.avg_log2_bits)
        dac_settle = Signal(p.timer_bits)
        analog_settle = Signal(p.timer_bits)
        watchdog_limit = Signal(p.timer_bits)

        # --- state --------------------------------------------------------------------------
        error = Signal(ErrorCode)
        passes_done = Signal.like(self.passes_done)
        residual_msb = Signal.like(self.residual_msb)
        over_range = Signal()
        active = Signal(cols)          # columns with X > 0
        mac_cols = Signal(cols)        # columns the MAC walks in this pass
        entering = Signal(cols)        # inactive columns whose gradient re-admits them
        solve_cols = Signal(cols)      # columns of this pass's solve
        fetch_row = Signal(p.row_addr_bits)
        # The enabled rows after fetch_row ("rows left") are kept as registers one step ahead:
        # their lowest row, whether there are none, and the rows after that one; the first row
        # of a column is a flag. The 64-bit search and compares on the rows left in front of the
        # FSM were the Refiner's critical path (docs/synthesis.md, E18).
        rows_next = Signal(p.row_addr_bits)    # lowest_set_index(rows left)
        rows_empty = Signal()                  # rows left == 0
        rows_after = Signal(rows)              # rows left without their lowest row
        after_lowest = Signal(rows)            # rows_after's lowest row, one-hot
        first_row = Signal()                   # fetch_row is the lowest row of row_mask
        cols_left = Signal(cols)
        # cols_left has at most one column, set with every assignment of cols_left: the
        # walks' last-column decisions (rest == 0, a carry chain and a zero test) were in front
        # of the FSM's state enables (docs/synthesis.md E59).
        last_col = Signal()
        clear_col = Signal(range(cols))
        peak = Signal(r_bits)          # OR of |R_i|
        fraction = GRADIENT_FRACTION_BITS
        # R's shifter gives twice the scaled residual before its rounding, t = floor(R * 2**(1 -
        # k)) for k = e (DAC codes) or e - fraction (gradient sweep) (``serve_shifts``): the
        # rounding add sits after stage 0's register (gradient, ``twice_rounded``) or is
        # DAC_BITS + 1 bits wide (DAC codes, ``dac_value``), not in front of the shifter
        # (docs/synthesis.md E50).
        serve_right = Signal(range(r_bits + 2 ** HEADROOM_BITS))
        serve_left = Signal(range(p.dac_bits + fraction + 1))
        correction_left = Signal(range(r_bits + 2 ** HEADROOM_BITS))  # msb + headroom
        accumulating = Signal()        # the pipeline carries corrections, not MAC terms
        grading = Signal()             # the pipeline carries gradient terms, not MAC terms

        # --- the pipeline (docs/refinement.md, Cycle cost): fetch; stage 1 registers the
        # multiplier's operands; stage 2 multiplies (two DSPs, one per half of the wide
        # operand); stage 3 adds the halves into the product; stage 4 accumulates (MAC,
        # gradient) or shifts (correction); a correction's stage 5 adds it to X. A gradient
        # term has a register stage 0 ahead of stage 1 (after R's shifter). B and a
        # correction's old X are read by the stages' tags (B in stage 2, registered in stage 3;
        # X in stage 3), so they arrive in stage 4 without riding along.
        def tags(n: int) -> tuple[Signal, Signal, Signal, Signal, Signal]:
            return (Signal(name=f"s{n}_valid"), Signal(name=f"s{n}_first"),
                    Signal(name=f"s{n}_last"), Signal(p.row_addr_bits, name=f"s{n}_row"),
                    Signal(range(cols), name=f"s{n}_col"))
        stage_tags = [tags(n) for n in range(1, 5)]
        s1_valid, s1_first, s1_last, s1_row, s1_col = stage_tags[0]
        s2_row = stage_tags[1][3]
        s3_row, s3_col = stage_tags[2][3:]
        s4_valid, s4_first, s4_last, s4_row, s4_col = stage_tags[3]
        m.d.sync += s1_valid.eq(0)
        for here, there in zip(stage_tags, stage_tags[1:]):
            m.d.sync += [later.eq(now) for now, later in zip(here, there)]
        # B is read in stage 2 and its word registered in stage 3: the block RAM's clock-to-out
        # is not in front of stage 4's subtraction (the ECP5's critical path, docs/synthesis.md
        # E28). The stages advance in every cycle, so the word is stage 4's row's.
        m.d.comb += [b_read.addr.eq(s2_row)]
        b_registered = Signal.like(b_read.data)
        m.d.sync += b_registered.eq(b_read.data)
        with m.If(accumulating):
            m.d.comb += x_fetch.addr.eq(s3_col)

        # Stage 1: the operands, registered after the memories (A - a_offset, a result code
        # less the ADC zero) and R's shifter (a gradient term, through stage 0).
        operand_bits = max(x_bits, GAIN_BITS)
        # factor_b: X or gain (unsigned), or a gradient factor 2 s - sign (signed)
        s_bits = p.dac_bits + fraction + 1        # |s| <= 2**(dac_bits - 1 + fraction)
        a_term = Signal(signed(p.adc_bits + 1))
        y_term = Signal(signed(p.adc_bits + 1))
        m.d.comb += [a_term.eq(a_read.data - a_offset),
                     y_term.eq(y_fetch.data.code - (1 << (p.adc_bits - 1)))]
        # A gradient term: A_ij x (2 s_i - sign(A_ij)), from stage 0's registers; g_twice is
        # R's shifter's t, so 2 s_i = t + t[0].
        g_a = Signal(signed(p.adc_bits + 1))
        g_twice = Signal(signed(s_bits + 1))
        g_factor = Signal(signed(s_bits + 2))
        m.d.comb += g_factor.eq(twice_rounded(g_twice) - Mux(g_a > 0, 1, Mux(g_a < 0, -1, 0)))
        factor_a = Signal(signed(p.adc_bits + 1))
        factor_b = Signal(signed(max(operand_bits + 1, s_bits + 2)))
        with m.If(s1_valid):
            m.d.sync += [factor_a.eq(Mux(accumulating, y_term, Mux(grading, g_a, a_term))),
                         factor_b.eq(Mux(accumulating, gain,
                                         Mux(grading, g_factor, x_fetch.data)))]

        # Stage 2: factor_a times each half of factor_b; the low half is unsigned and 17
        # bits wide, the most an 18 x 18 signed DSP (MULT18X18D) takes unsigned.
        low_bits = 17
        low_part = Signal(signed(len(factor_a) + low_bits + 1))
        high_part = Signal(signed(len(factor_a) + len(factor_b) - low_bits))
        m.d.sync += [low_part.eq(factor_a * factor_b[:low_bits]),
                     high_part.eq(factor_a * factor_b[low_bits:].as_signed())]

        # Stage 3: the product.
        product = Signal(signed(len(factor_a) + len(factor_b)))
        m.d.sync += product.eq(low_part + (high_part << low_bits))
        b_word = b_registered.as_signed()     # B of stage 4's row (read in stage 2)
        x_old = x_fetch.data                  # X of stage 4's column, when accumulating
        # The accumulator also holds a gradient score: rows terms of A x (2 s - sign).
        score_bits = p.adc_bits + 1 + s_bits + 2 + ceil_log2(rows)
        acc = Signal(signed(max(r_bits, score_bits)))

        # Stage 4, MAC: acc = (first ? B : acc) - product; the row's last term writes R.
        # Gradient: acc = (first ? 0 : acc) - product = -score; the column's last term
        # registers the comparison score > 0 (the sign of acc_next) into ``entering``.
        acc_next = Signal.like(acc)
        m.d.comb += acc_next.eq(Mux(s4_first, Mux(grading, 0, b_word), acc) - product)
        # A row's residual goes into the peak a cycle after its R write, from acc: B's block RAM
        # read, the subtraction, the magnitude and the OR in one cycle were the ECP5's critical
        # path (docs/synthesis.md E25; hence MAC_DRAIN 4).
        magnitude = Mux(acc[-1], -acc, acc)[:r_bits]
        peak_pending = Signal()
        m.d.sync += peak_pending.eq(s4_valid & ~accumulating & s4_last & ~grading)
        # R = 0 (peak == 0) as a flag folded with the peak (from acc, beside the magnitude):
        # Scale's 39-bit zero test of the peak in front of its state enables was the next path
        # (docs/synthesis.md E52). Setup sets it.
        peak_zero = Signal()
        with m.If(peak_pending):
            m.d.sync += [peak.eq(peak | magnitude), peak_zero.eq(peak_zero & (acc == 0))]
        with m.If(s4_valid & ~accumulating):
            m.d.sync += acc.eq(acc_next)
            with m.If(s4_last & grading):
                m.d.sync += entering.bit_select(s4_col, 1).eq(acc_next[-1])
            with m.Elif(s4_last):
                m.d.comb += [r_write.en.eq(1), r_write.addr.eq(s4_row), r_write.data.eq(acc_next)]

        # Stages 4 and 5, Accumulate: X_j += round(product * 2**(msb + headroom - gain_shift)):
        # stage 4 shifts (registered), stage 5 adds, saturates and writes X. One shifter by
        # the net amount n (clamped, registered in Solve-Start): ((p << l) + 2**(g-1)) >> g
        # is p << n for n = l - g >= 0 and p / 2**-n rounded half up otherwise, that is
        # floor(p / 2**-n) plus p's bit -n - 1. Stage 4 keeps that bit: it registers
        # twice_delta = 2 delta + round bit (p << (n + 1), or p >> (-n - 1)), and stage 5
        # adds it to 2 X + 1, so the round bit is a carry-in and no adder sits before the
        # shifter. A left shift past x_bits + 1 saturates X as x_bits + 1 does, a right
        # shift past the product's width rounds to 0 as that width + 1 does: both are
        # clamped there.
        left_max, right_max = x_bits + 1, len(product) + 1
        twice_left = Signal(range(left_max + 2))     # n + 1 when n >= 0, else 0
        twice_right = Signal(range(right_max))       # -n - 1 when n < 0
        twice_delta = Mux(twice_left != 0, product << twice_left, product >> twice_right)
        s5_valid = Signal()
        s5_col = Signal(range(cols))
        s5_twice_delta = Signal(Value.cast(twice_delta).shape())
        s5_x_old = Signal(x_bits)
        m.d.sync += s5_valid.eq(s4_valid & accumulating)
        with m.If(s4_valid & accumulating):
            m.d.sync += [s5_twice_delta.eq(twice_delta), s5_x_old.eq(x_old), s5_col.eq(s4_col)]
        # Saturating add without a full-width adder: a delta outside [-2**x_bits, 2**x_bits)
        # (its bits from x_bits up not all equal) saturates X by its sign whatever X was
        # (the round bit cannot bring it back); inside, an (x_bits + 2)-bit sum decides.
        delta_top = s5_twice_delta[x_bits + 1:]
        delta_inside = delta_top.all() | ~delta_top.any()
        twice_sum = Value.cast(Cat(Const(1, 1), s5_x_old) +
                               s5_twice_delta[:x_bits + 2].as_signed())
        x_sum = twice_sum[1:]      # X + delta + round bit, x_bits + 2 bits two's complement
        x_new = Mux(delta_inside, Mux(x_sum[-1], 0, Mux(x_sum[x_bits], x_top, x_sum[:x_bits])),
                    Mux(s5_twice_delta[-1], 0, x_top))
        with m.If(s5_valid):
            m.d.comb += [x_write.en.eq(1), x_write.addr.eq(s5_col), x_write.data.eq(x_new)]
        # Stage 6: the new X word registered, then X_j > 0 into the active set (the saturating
        # add, the 24-bit zero test and the active bit's enable in one cycle were the Refiner's
        # longest path, docs/synthesis.md E31; hence ACCUMULATE_DRAIN 5). Nothing reads active
        # between a column's stage 5 and stage 6: the next reader is the next pass's Setup.
        s6_valid = Signal()
        s6_col = Signal(range(cols))
        s6_x = Signal(x_bits)
        m.d.sync += [s6_valid.eq(s5_valid), s6_col.eq(s5_col), s6_x.eq(x_new)]
        with m.If(s6_valid):
            m.d.sync += active.bit_select(s6_col, 1).eq(s6_x != 0)

        # --- the solve sequencer: RHS codes from R, results into Y -------------------------
        solving = Signal()
        # The sweep reads R by the grading flip-flop, not by a decode of the FSM state: the
        # state -> address mux -> LUT RAM -> read register path was 9.6 ns (docs/synthesis.md
        # E51). grading is set from the sweep's first cycle to Check (no solve runs then);
        # reads in its drain cycles are harmless (stage 0 takes a word only with s0_valid).
        m.d.comb += [r_serve.addr.eq(Mux(grading, fetch_row, self.rhs.addr)),
                     r_serve.en.eq(grading | self.rhs.en)]
        # The gradient sweep reads R through the same shifter, 8 bits finer, unclamped.
        twice = Signal(signed(r_bits + p.dac_bits + fraction + 1))    # t (above)
        m.d.comb += twice.eq(twice_scaled(r_serve.data, serve_right, serve_left))
        top = 2 ** (p.dac_bits - 1)
        served = Signal(signed(p.dac_bits))     # the residual as the DAC gets it: s_i
        m.d.comb += [served.eq(dac_value(twice, p.dac_bits)),
                     self.rhs.data.eq((served + top)[:p.dac_bits])]
        # Stage 0 of a gradient term: A_ij and s_i registered ahead of the multiplier.
        s0_valid, s0_first, s0_last = Signal(), Signal(), Signal()
        s0_col = Signal(range(cols))
        m.d.sync += s0_valid.eq(0)
        with m.If(s0_valid):
            m.d.sync += [g_a.eq(a_term), g_twice.eq(twice), s1_valid.eq(1),
                         s1_first.eq(s0_first), s1_last.eq(s0_last), s1_col.eq(s0_col)]
        with m.If(solving & self.result.en):
            m.d.comb += [y_write.en.eq(1), y_write.addr.eq(self.result.addr),
                         y_write.data.eq(self.result.data)]
            m.d.sync += over_range.eq(over_range | self.result.data.over_range)

        solve = self.solve
        first_pass = passes_done == 0
        m.d.comb += [
            solve.mode.eq(Mux(first_pass, AFEMode.SOLVE, AFEMode.SOLVE_FREE)),
            # The solve sequencer checks its inputs as they were the cycle before start
            # (docs/solve-timing.md): the column set comes from registers that are stable
            # from Scale (or Check) on, not from solve_cols, which those states write.
            solve.row_mask.eq(row_mask),
            solve.col_mask.eq(Mux(first_pass, col_mask, active | entering)),
            solve.avg_log2.eq(avg_log2), solve.dac_settle.eq(dac_settle),
            solve.analog_settle.eq(analog_settle), solve.watchdog_limit.eq(watchdog_limit),
        ]

        # --- validation at start ------------------------------------------------------------
        start_error = Signal(ErrorCode)
        with m.If((self.row_mask == 0) | (self.col_mask == 0)):
            m.d.comb += start_error.eq(ErrorCode.BAD_DIMENSION)
        with m.Elif(self.avg_log2 > p.avg_max_log2):
            m.d.comb += start_error.eq(ErrorCode.BAD_AVERAGING)
        with m.Elif(self.watchdog_limit == 0):
            m.d.comb += start_error.eq(ErrorCode.BAD_TIMING)
        with m.Else():
            m.d.comb += start_error.eq(ErrorCode.NONE)
        # Registered every cycle, as in the solve sequencer (E8) and the ANLS sequencer (E17):
        # the start decision reads a register. The controller holds the operands (its registers).
        settled_start_error = Signal(ErrorCode)
        m.d.sync += settled_start_error.eq(start_error)
        # busy as a flip-flop (set by a start in Idle, cleared in Done) rather than a decode of
        # the state: it selects the solve sequencer's operands in the controller (E23).
        busy = Signal()

        def abortable():
            # Last in a state so that it overrides that state's own next-state choice.
            with m.If(self.abort):
                m.d.sync += error.eq(ErrorCode.ABORTED)
                m.next = "Done"

        msb_now = highest_set_index(peak)
        # R's shift amounts follow Scale's correction_left and grading
        # a cycle later, registered off the shifter's path: the sweep's first shift is in
        # the cycle after the Gradient state's first, the solve's first RHS data two cycles
        # after Solve-Start (Check clears grading three cycles before that).
        exponent = correction_left - (p.dac_bits - 2)    # msb + headroom - (DAC_BITS - 2)
        serve_exponent = Mux(grading, exponent - fraction, exponent)
        right, left = serve_shifts(serve_exponent)
        m.d.sync += [serve_right.eq(right), serve_left.eq(left)]
        # The row walk takes one step per cycle. Its next row is kept one-hot (after_lowest)
        # beside the mask: a step is the index of a one-hot register (one OR per index bit),
        # the mask less that bit, and the new lowest bit (v & -v, one carry chain); the 64-bit
        # lowest_set_index tree in front of rows_next was the Refiner's critical path
        # (docs/synthesis.md E60). The restart's values are registered from row_mask in three
        # steps (lowest bits one-hot, then their indices), from the operand while idle: the
        # operand is held from the cycle before the start (the start checks' contract), so
        # they are ready in the second cycle after the start, before the first Setup (after at
        # least one Clear cycle); row_mask does not change while busy.
        def lowest_onehot(value: Value) -> Value:
            return Value.cast(value & -value)[:rows]

        def onehot_index(onehot: Value) -> Value:
            return Cat(Cat(onehot[i] for i in range(rows) if i >> k & 1).any()
                       for k in range(len(fetch_row)))
        mask_source = Mux(busy, row_mask, self.row_mask)
        mask_lowest, mask_second, mask_third = (Signal(rows) for _ in range(3))   # one-hot
        mask_rest, mask_rest_2 = Signal(rows), Signal(rows)   # without its lowest 1, 2 rows
        mask_first_row, mask_second_row = Signal.like(fetch_row), Signal.like(fetch_row)
        mask_rest_empty = Signal()
        m.d.sync += [
            mask_lowest.eq(lowest_onehot(mask_source)),
            mask_rest.eq(mask_source & (mask_source - 1)),
            mask_first_row.eq(onehot_index(mask_lowest)),
            mask_second.eq(lowest_onehot(mask_rest)),
            mask_rest_2.eq(mask_rest & (mask_rest - 1)),
            mask_rest_empty.eq(mask_rest == 0),
            mask_second_row.eq(onehot_index(mask_second)),
            mask_third.eq(lowest_onehot(mask_rest_2)),
        ]

        def restart_rows():
            # fetch_row := the lowest row of row_mask, the rows left := the others.
            m.d.sync += [fetch_row.eq(mask_first_row), rows_next.eq(mask_second_row),
                         rows_empty.eq(mask_rest_empty), rows_after.eq(mask_rest_2),
                         after_lowest.eq(mask_third), first_row.eq(1)]

        def advance_row():
            # fetch_row := the lowest row left; every decision from the registers ahead.
            rest = rows_after & ~after_lowest
            m.d.sync += [fetch_row.eq(rows_next), rows_next.eq(onehot_index(after_lowest)),
                         rows_empty.eq(rows_after == 0), rows_after.eq(rest),
                         after_lowest.eq(lowest_onehot(rest)), first_row.eq(0)]

        # Scale's decisions registered every cycle: passes_done and active change in
        # Accumulate-Last and stage 6 of an accumulation, at least MAC's and its drain's
        # cycles before the next Scale (E52).
        candidates = col_mask & ~active
        passes_over = Signal()
        sweep_wanted = Signal()
        m.d.sync += [passes_over.eq(passes_done == passes + 1),
                     sweep_wanted.eq(~first_pass & (candidates != 0))]

        def set_cols_left(value: Value):
            m.d.sync += [cols_left.eq(value), last_col.eq(at_most_one_set(value))]

        # Drain states wait for the pipeline's last term: ``drain`` counts their cycles.
        drain = Signal(range(max(MAC_DRAIN, GRADIENT_DRAIN, ACCUMULATE_DRAIN)))

        def drain_then(state: str):
            with m.If(drain == 0):
                m.next = state
            with m.Else():
                m.d.sync += drain.eq(drain - 1)

        with m.FSM(init="Idle"):
            with m.State("Idle"):
                # The operands are loaded in every idle cycle (nothing reads them before a
                # start), so that the start enables only the progress registers (E23).
                m.d.sync += [
                    row_mask.eq(self.row_mask), col_mask.eq(self.col_mask),
                    passes.eq(self.passes), a_offset.eq(self.a_offset),
                    gain.eq(self.gain), gain_shift.eq(self.gain_shift),
                    headroom.eq(self.headroom), avg_log2.eq(self.avg_log2),
                    dac_settle.eq(self.dac_settle),
                    analog_settle.eq(self.analog_settle),
                    watchdog_limit.eq(self.watchdog_limit),
                    busy.eq(self.start),
                ]
                with m.If(self.start):
                    m.d.sync += error.eq(settled_start_error)
                    with m.If(settled_start_error != ErrorCode.NONE):
                        m.next = "Done"
                    with m.Else():
                        m.d.sync += [passes_done.eq(0), residual_msb.eq(0), over_range.eq(0),
                                     active.eq(0), clear_col.eq(0)]
                        m.next = "Clear"

            with m.State("Clear"):
                m.d.comb += [x_write.en.eq(1), x_write.addr.eq(clear_col), x_write.data.eq(0)]
                m.d.sync += clear_col.eq(clear_col + 1)
                with m.If(clear_col == cols - 1):
                    m.next = "Setup"
                abortable()

            with m.State("Setup"):
                # Pass 0 (nothing active, X = 0): one zero product per row makes R = B.
                walk = Mux(active != 0, active, col_mask & -col_mask)
                set_cols_left(walk)
                m.d.sync += [mac_cols.eq(walk), accumulating.eq(0),
                             grading.eq(0), entering.eq(0), peak.eq(0), peak_zero.eq(1)]
                restart_rows()
                m.next = "MAC"
                abortable()

            with m.State("MAC"):
                col = lowest_set_index(cols_left)
                rest = cols_left & (cols_left - 1)
                m.d.comb += [a_read.addr.eq(fetch_row * cols + col), x_fetch.addr.eq(col)]
                m.d.sync += [s1_valid.eq(1), s1_first.eq(cols_left == mac_cols),
                             s1_last.eq(last_col), s1_row.eq(fetch_row), s1_col.eq(col)]
                with m.If(~last_col):
                    set_cols_left(rest)
                with m.Elif(~rows_empty):
                    set_cols_left(mac_cols)
                    advance_row()
                with m.Else():
                    m.d.sync += drain.eq(MAC_DRAIN - 1)
                    m.next = "MAC-Drain"
                abortable()

            with m.State("MAC-Drain"):      # the last term in stages 1 to 4
                drain_then("MAC-Last")
                abortable()

            with m.State("MAC-Last"):
                m.next = "Scale"
                abortable()

            with m.State("Scale"):
                m.d.sync += [residual_msb.eq(msb_now), correction_left.eq(msb_now + headroom),
                             solve_cols.eq(Mux(first_pass, col_mask, active))]
                # The row walk restarts whatever comes next (only the sweep reads it before the
                # next Setup restarts it again): its enables do not wait for Scale's decisions
                # (docs/synthesis.md E62).
                restart_rows()
                with m.If(passes_over | peak_zero):
                    m.next = "Done"
                with m.Elif(sweep_wanted):
                    # Gradient sweep: column outer, row inner, one term per cycle.
                    set_cols_left(candidates)
                    m.d.sync += grading.eq(1)
                    m.next = "Gradient"
                with m.Else():
                    m.next = "Solve-Start"
                abortable()

            with m.State("Gradient"):
                col = lowest_set_index(cols_left)
                m.d.comb += a_read.addr.eq(fetch_row * cols + col)
                m.d.sync += [s0_valid.eq(1), s0_first.eq(first_row),
                             s0_last.eq(rows_empty), s0_col.eq(col)]
                with m.If(~rows_empty):
                    advance_row()
                with m.Else():
                    set_cols_left(cols_left & (cols_left - 1))
                    restart_rows()
                    with m.If(last_col):
                        m.d.sync += drain.eq(GRADIENT_DRAIN - 1)
                        m.next = "Gradient-Drain"
                abortable()

            with m.State("Gradient-Drain"):     # the last term in stages 0 to 3
                drain_then("Gradient-Last")
                abortable()

            with m.State("Gradient-Last"):      # ... in stage 2: the last comparison
                m.next = "Check"
                abortable()

            with m.State("Check"):
                m.d.sync += [solve_cols.eq(active | entering), grading.eq(0)]
                with m.If((active | entering) == 0):
                    m.next = "Done"
                with m.Else():
                    m.next = "Solve-Start"
                abortable()

            with m.State("Solve-Start"):
                m.d.comb += [solve.start.eq(~self.abort), solving.eq(1)]
                net = correction_left - gain_shift
                m.d.sync += [
                    twice_left.eq(Mux(net > left_max, left_max + 1, Mux(net >= 0, net + 1, 0))),
                    twice_right.eq(Mux(net < -right_max, right_max - 1,
                                       Mux(net < 0, -net - 1, 0))),
                ]
                m.next = "Solve-Wait"
                abortable()

            with m.State("Solve-Wait"):
                m.d.comb += [solve.abort.eq(self.abort), solving.eq(1)]
                with m.If(solve.done):
                    with m.If(solve.error != ErrorCode.NONE):
                        m.d.sync += error.eq(solve.error)
                        m.next = "Done"
                    with m.Elif(self.abort):
                        m.d.sync += error.eq(ErrorCode.ABORTED)
                        m.next = "Done"
                    with m.Else():
                        set_cols_left(solve_cols)
                        m.d.sync += accumulating.eq(1)
                        m.next = "Accumulate"

            with m.State("Accumulate"):
                col = lowest_set_index(cols_left)
                rest = cols_left & (cols_left - 1)
                m.d.comb += y_fetch.addr.eq(col)
                m.d.sync += [s1_valid.eq(1), s1_col.eq(col)]
                set_cols_left(rest)
                with m.If(last_col):
                    m.d.sync += drain.eq(ACCUMULATE_DRAIN - 1)
                    m.next = "Accumulate-Drain"
                abortable()

            with m.State("Accumulate-Drain"):   # the last correction in stages 1 to 4
                drain_then("Accumulate-Last")
                abortable()

            with m.State("Accumulate-Last"):
                m.d.sync += passes_done.eq(passes_done + 1)
                m.next = "Setup"
                abortable()

            with m.State("Done"):
                m.d.comb += self.done.eq(1)
                m.d.sync += busy.eq(0)
                m.next = "Idle"

        m.d.comb += [self.busy.eq(busy), self.error.eq(error),
                     self.passes_done.eq(passes_done), self.residual_msb.eq(residual_msb),
                     self.over_range.eq(over_range)]
        return m
