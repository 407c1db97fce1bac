"""Calibrator: CALIBRATE as a standalone block: ADC offset/gain per channel from the CAL
references, DAC offset/gain per row through the loopback, op-amp output offsets from a
zero-input solve; coefficients into the calibration memory; a quality figure.

The arithmetic is ``anmf.model.calibration`` (the one definition; docs/calibration.md has
the formats and the cycle formula). Sequence, for a start in cycle 0:

1. ADC phase, per enabled channel c (``col_mask``, lowest first), references +1/2, -1/2,
   0, +7/8, -7/8 (``ADC_REFERENCE_ORDER``): Setup (mode CAL, ``cal_ref_sel``, ``adc_mux`` = c),
   ``cal_settle`` cycles, ``2**avg_log2`` conversions. After the pair: Offset, Divide
   (``DIVIDE_CYCLES``, a restoring divider), Store (word into the memory); after each check
   reference: Correct (the registered multiply), Check (corrected residual, worst kept in
   ``quality``).
2. DAC phase, per enabled row r: Write (the low loopback code), LDAC, ``dac_settle`` cycles,
   Setup (``cal_ref_sel`` = loopback, ``cell_row`` = r), ``cal_settle``, conversions,
   Correct, Point (corrected through the loopback channel's coefficient); the same at the
   high code;
   Write-Zero, Zero-LDAC (the row back at 0 V), Offset, Divide, Store.
3. Op-amp phase: ``dac_settle`` cycles with the AFE idle, Close (SOLVE_FREE, loop, the
   enabled rows and columns), ``analog_settle`` cycles, then per column Fetch (its ADC
   coefficient from the memory), conversions, Correct, Point (offset word stored). Then Done.

Controls (mode, loop, switches, ``adc_mux``, ``cal_ref_sel``, ``cell_row``) are registers
set by the Setup/Close cycles and driven only outside Idle, Done and the safe exit, so the
block is idle (all zeros) when not running. Every ADC wait has the watchdog; a timeout
(ADC_TIMEOUT) or ``abort`` (ABORTED) takes the safe exit (zero code into every DAC, ldac).

Start errors, in this order (``done`` in cycle 1, nothing else happens): ``col_mask`` or
``row_mask`` zero -> BAD_DIMENSION; ``avg_log2`` above ``avg_max_log2`` -> BAD_AVERAGING;
``watchdog_limit`` 0 -> BAD_TIMING.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..model import calibration as cal   # the arithmetic's one definition
from .afe import SAFE_EXIT_STATE, AFEMode, AFESignature, emit_safe_exit, lowest_set_index
from .codes import ErrorCode
from .params import BuildParams
from .watchdog import Watchdog

__all__ = ["Calibrator", "CodeCorrection", "coefficient_layout", "corrected_deviation",
           "calibration_memory_depth", "round_shift_value", "round_shift_bound", "corrected_code",
           "code_from_corrected"]


def _check_params(params: object) -> BuildParams:
    if not isinstance(params, BuildParams):
        raise TypeError(f"params must be a BuildParams, got {params!r}")
    if params.cal_ref_bits < 3:
        raise ValueError(f"calibration needs cal_ref_bits >= 3 to select the references 0 to "
                         f"{cal.REF_DAC_LOOPBACK}, got {params.cal_ref_bits}")
    for name in ("adc_bits", "dac_bits"):
        if getattr(params, name) < 2:
            raise ValueError(f"calibration needs {name} >= 2 (the +-1/2 full-scale points), "
                             f"got {getattr(params, name)}")
    return params


def coefficient_layout(params: BuildParams) -> data.StructLayout:
    """A calibration memory word (``anmf.model.calibration.pack_coefficient``): ``offset``
    (signed, 2^-FRAC_BITS LSB), ``gain`` (GAIN_FRAC_BITS fractional bits), ``valid``."""
    return data.StructLayout({
        "offset": signed(cal.offset_bits(params.adc_bits, params.dac_bits)),
        "gain": unsigned(cal.GAIN_BITS),
        "valid": unsigned(1),
    })


def calibration_memory_depth(params: BuildParams) -> int:
    """Words: ADC channels [0, C), DAC rows [C, C + ROWS), op-amp columns [C + ROWS, 2C + ROWS)."""
    return cal.memory_depth(params.rows, params.total_cols)


def round_shift_value(value: Value, shift: int) -> Value:
    """``model.calibration.round_shift`` on a signed value (arithmetic shift)."""
    if shift <= 0:
        return value << -shift
    return (value + (1 << (shift - 1))) >> shift


def round_shift_bound(bound: int, shift: int) -> int:
    """B 2^s - 2^(s-1): ``model.calibration.round_shift(v, s) >= B`` <=> v >= this (shift >=
    1; floor((v + 2^(s-1)) / 2^s) is monotonic), and ``< B`` <=> v < this: a range check of a
    rounded value as compares of the value itself, no rounding adder in front."""
    return (bound << shift) - (1 << (shift - 1))


def corrected_deviation(deviation: Value, offset: Value, gain: Value) -> Value:
    """``(deviation - offset) * gain`` rounded by GAIN_FRAC_BITS (``correct_deviation``):
    one signed multiplier."""
    product = (deviation.as_signed() - offset.as_signed()) * gain.as_unsigned()
    return round_shift_value(product, cal.GAIN_FRAC_BITS)


def code_from_corrected(corrected: Value, bits: int) -> tuple[Value, Value]:
    """``model.calibration.code_from_deviation``: zero + round(corrected / 2^F), clamped to a
    ``bits``-bit code, and whether it was clamped (expressions)."""
    code = (1 << (bits - 1)) + round_shift_value(corrected, cal.FRAC_BITS)
    top = (1 << bits) - 1
    clamped = Mux(code < 0, 0, Mux(code > top, top, code))
    return clamped[:bits], (code < 0) | (code > top)


def corrected_code(code: Value, coefficient: Value, bits: int,
                   subtract: Value | None = None) -> tuple[Value, Value]:
    """``model.calibration.correct_code`` as expressions: (corrected code, clamped)."""
    deviation = (Cat(code, Const(0, 1)).as_signed() - (1 << (bits - 1))) << cal.FRAC_BITS
    corrected = corrected_deviation(deviation, coefficient.offset, coefficient.gain)
    if subtract is not None:
        corrected = corrected - subtract
    return code_from_corrected(corrected, bits)


class CodeCorrection(wiring.Component):
    """Combinational correction of a ``bits``-bit code (``model.calibration.correct_code``):
    ``corrected`` = zero + round((code - zero) * 2^F - offset) * gain - subtract), saturated,
    ``saturated`` high when clipped. Readout path: ``bits`` = ADC_BITS, ``coefficient`` = the
    channel's word, ``subtract`` = the column's op-amp offset (or 0). DAC path: ``bits`` =
    DAC_BITS, the row's word, no ``subtract`` (``with_subtract=False``)."""

    def __init__(self, params: BuildParams, bits: int, *, with_subtract: bool = True):
        try:
            _check_params(params)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        if type(bits) is not int or bits not in (params.adc_bits, params.dac_bits):
            self._MustUse__silence = True
            raise ValueError(f"bits must be the build's adc_bits ({params.adc_bits}) or dac_bits "
                             f"({params.dac_bits}), got {bits!r}")
        self._bits = bits
        self._with_subtract = with_subtract
        members = {
            "code": In(bits),
            "coefficient": In(coefficient_layout(params)),
            "corrected": Out(bits),
            "saturated": Out(1),
        }
        if with_subtract:
            members["subtract"] = In(signed(cal.offset_bits(params.adc_bits, params.dac_bits)))
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        corrected, saturated = corrected_code(self.code, self.coefficient, self._bits,
                                              self.subtract if self._with_subtract else None)
        m.d.comb += [self.corrected.eq(corrected), self.saturated.eq(saturated)]
        return m


class Calibrator(wiring.Component):
    """CALIBRATE. Parameters are sampled at ``start``.

    Ports (besides start/abort/busy/done/error): ``col_mask`` (ADC channels and op-amp
    columns), ``row_mask`` (DAC rows; the rows of the zero-input solve), ``avg_log2``,
    ``cal_settle``, ``dac_settle``, ``analog_settle``, ``watchdog_limit`` (cycles);
    ``coeff_write`` (write port of the calibration memory, :func:`coefficient_layout` words
    at the addresses of :func:`calibration_memory_depth`), ``coeff_read`` (read port of the
    same memory, 1-cycle latency, used for the op-amp phase); ``quality`` (worst check
    residual of the last calibration, 2^-FRAC_BITS LSB, saturating), ``failed_count``
    (entries stored as identity because their measurement failed); ``afe``.
    """

    def __init__(self, params: BuildParams):
        try:
            _check_params(params)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # a rejected object is no unused design to warn of
            raise
        self._params = p = params
        depth = calibration_memory_depth(p)
        addr_width = max(1, (depth - 1).bit_length())
        super().__init__({
            "start": In(1),
            "abort": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(ErrorCode),
            "col_mask": In(p.total_cols),
            "row_mask": In(p.rows),
            "avg_log2": In(p.avg_log2_bits),
            "cal_settle": In(p.timer_bits),
            "dac_settle": In(p.timer_bits),
            "analog_settle": In(p.timer_bits),
            "watchdog_limit": In(p.timer_bits),
            "quality": Out(cal.QUALITY_BITS),
            "failed_count": Out(range(depth + 1)),
            "coeff_write": In(memory.WritePort.Signature(addr_width=addr_width,
                                                        shape=coefficient_layout(p))),
            "coeff_read": In(memory.ReadPort.Signature(addr_width=addr_width,
                                                      shape=coefficient_layout(p))),
            "afe": Out(AFESignature(p)),
        })

    @property
    def params(self) -> BuildParams:
        return self._params

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        afe = self.afe
        adc_bits, dac_bits = p.adc_bits, p.dac_bits
        ob = cal.offset_bits(adc_bits, dac_bits)
        wide = max(adc_bits, dac_bits) + cal.FRAC_BITS + abs(adc_bits - dac_bits) + 6
        qb = cal.QUOTIENT_BITS

        assert 2 ** p.avg_max_log2 * (2 ** adc_bits - 1) < 2 ** p.sum_bits, \
            "sample accumulator too narrow for the largest averaging count"

        m.submodules.watchdog = watchdog = Watchdog(p.timer_bits)

        # Parameters sampled at start.
        col_mask = Signal(p.total_cols)
        row_mask = Signal(p.rows)
        avg_log2 = Signal(p.avg_log2_bits)
        cal_settle = Signal(p.timer_bits)
        dac_settle = Signal(p.timer_bits)
        analog_settle = Signal(p.timer_bits)
        watchdog_limit = Signal(p.timer_bits)
        m.d.comb += watchdog.limit.eq(watchdog_limit)

        # AFE controls, registered (set by Setup / Close, driven while running).
        ctl_mode = Signal(AFEMode)
        ctl_loop = Signal()
        ctl_ref = Signal(p.cal_ref_bits)
        ctl_cell_row = Signal(p.row_addr_bits)
        ctl_row_en = Signal(p.rows)
        ctl_col_en = Signal(p.total_cols)
        ctl_mux = Signal(p.col_addr_bits)

        # Walks.
        channel = Signal(p.col_addr_bits)
        cols_left = Signal(p.total_cols)    # enabled columns after ``channel``
        loopback_channel = Signal(p.col_addr_bits)
        first_channel = Signal()            # the channel being calibrated is the loopback one
        fresh = Signal()                    # no point measured yet: quality, failed_count to clear
        check_residual = Signal(signed(wide + 2))   # the last check point's residual
        residual_pending = Signal()                 # ... to be made a magnitude in this cycle
        check_magnitude = Signal(wide + 2)  # |residual| of the last check point
        check_pending = Signal()            # ... to be compared with quality in this cycle
        row = Signal(p.row_addr_bits)
        rows_left = Signal(p.rows)          # enabled rows after ``row``
        # The DAC walk's next step, registered every cycle from rows_left and row_mask (E30: the
        # 64-bit lowest-row search and ``rows_left != 0`` in Store's cycle, in front of every
        # enable of the state, was the ECP5's worst path). Valid wherever the walk steps: rows_left
        # changes only in ADC-Check and Store, row_mask only in Idle, and each of those is followed
        # by DAC-Write (or several ADC states) before the next ADC-Check or Store.
        next_row = Signal(p.row_addr_bits)  # the lowest row of rows_left
        rows_after_next = Signal(p.rows)    # rows_left without it
        more_rows = Signal()                # rows_left != 0
        # The column walks' next step alike (E38: ADC-Check's `cols_left != 0` in front of the
        # DAC phase's enables was the ECP5's worst path after E37): cols_left changes in Idle,
        # ADC-Check, Opamp-Close and Opamp-Point, each followed by several states before the
        # next ADC-Check or Opamp-Point.
        next_col = Signal(p.col_addr_bits)          # the lowest column of cols_left
        cols_after_next = Signal(p.total_cols)      # cols_left without it
        more_cols = Signal()                        # cols_left != 0
        m.d.sync += [next_col.eq(lowest_set_index(cols_left)),
                     cols_after_next.eq(cols_left & (cols_left - 1)), more_cols.eq(cols_left != 0)]
        first_row = Signal(p.row_addr_bits)         # the lowest row of row_mask
        rows_after_first = Signal(p.rows)           # row_mask without it
        m.d.sync += [next_row.eq(lowest_set_index(rows_left)),
                     rows_after_next.eq(rows_left & (rows_left - 1)), more_rows.eq(rows_left != 0),
                     first_row.eq(lowest_set_index(row_mask)),
                     rows_after_first.eq(row_mask & (row_mask - 1))]
        ref_index = Signal(range(len(cal.ADC_REFERENCE_ORDER)))
        high_level = Signal()               # DAC phase: measuring the high loopback code
        phase = Signal(2)                   # 0 ADC, 1 DAC, 2 op-amp
        ADC, DAC, OPAMP = 0, 1, 2

        # Conversions and averaging.
        samples_left = Signal(max(1, p.avg_max_log2))
        sample_sum = Signal(p.sum_bits)
        point_over = Signal()
        saw_busy = Signal()
        wait_timer = Signal(p.timer_bits + 1)

        # Measured points and coefficients.
        point = Signal(signed(wide))        # the last point's deviation (2^-F LSB)
        high = Signal(signed(wide))
        low = Signal(signed(wide))
        pair_over = Signal()
        offset = Signal(signed(wide))
        cur_offset = Signal(signed(ob))     # the channel's fresh ADC coefficient
        cur_gain = Signal(cal.GAIN_BITS, init=cal.GAIN_ONE)
        lb_offset = Signal(signed(ob))      # the loopback channel's coefficient
        lb_gain = Signal(cal.GAIN_BITS, init=cal.GAIN_ONE)

        # Restoring divider: quotient = floor(dividend / divisor), one bit per cycle.
        divisor = Signal(wide + 2)
        remainder = Signal(wide + 3)
        dividend_low = Signal(qb)
        quotient = Signal(qb)
        divide_ok = Signal()                # the measured distance admits a gain below 2
        divide_count = Signal(range(qb + 1))

        error = Signal(ErrorCode)
        quality = Signal(cal.QUALITY_BITS)
        failed_count = Signal.like(self.failed_count)
        m.d.comb += [self.error.eq(error), self.quality.eq(quality),
                     self.failed_count.eq(failed_count)]

        # The shared multiplier, registered: Correct multiplies the point with the phase's
        # gain (registers only: the op-amp phase copies its memory word into cur_* first), the
        # state after it rounds the product. (A memory read, the multiply and the quality
        # update in one cycle were a 30 ns path on the ECP5.) The coefficient is picked into a
        # register every cycle, off the multiplier's path (E21): phase and the coefficients are
        # written two cycles or more before Correct (Convert-Start at the latest), so mul_offset
        # and mul_gain are the phase's from the cycle after Convert-Start on.
        # (point - offset) * gain in two terms (E58): point * gain in Correct, from the point's
        # register alone (the subtraction behind the last sample's add and shift was the
        # calibrator's critical path), and offset * gain, registered every cycle (a second
        # multiplier) and taken off with the rounding constants below: a conversion ends two
        # cycles after its Convert-Start at the earliest, so offset * gain is the phase's from
        # Correct on and the constants from the state after it, where they are used.
        mul_offset = Signal(signed(ob))
        mul_gain = Signal(cal.GAIN_BITS)
        m.d.sync += [mul_offset.eq(Mux(phase == DAC, lb_offset, cur_offset)),
                     mul_gain.eq(Mux(phase == DAC, lb_gain, cur_gain))]
        offset_gain = Signal(signed(ob + cal.GAIN_BITS + 1))
        m.d.sync += offset_gain.eq(mul_offset * mul_gain)
        product = Signal(signed(wide + cal.GAIN_BITS + 1))           # point * gain
        gain_frac = cal.GAIN_FRAC_BITS
        # corrected = round_shift(point * gain - offset * gain, G): one adder, the rounding
        # half with offset * gain taken off registered.
        rounding = Signal(signed(len(offset_gain) + 2))
        m.d.sync += rounding.eq((1 << (gain_frac - 1)) - offset_gain)
        corrected = Signal(signed(wide))
        m.d.comb += corrected.eq((product + rounding) >> gain_frac)

        # Mean of the finished point as a deviation (combinational in the last sample's cycle):
        # round((sum * 2^F) / 2^a) = ((sum + h) * 2^F) >> a with h = 2^(a-1-F) (0 when a <= F:
        # the low a bits of sum * 2^F are zero), so the sums start at h (``sum_start``, loaded
        # with avg_log2 in Idle) and no rounding adder sits behind the sum's; the mean is
        # below 2^n (n = ADC_BITS + F), so its deviation from the zero code 2^(n-1) is the
        # mean with its top bit inverted, read as signed (E33: the rounding adder and that
        # subtraction were the calibrator's longest path).
        sum_start = Signal(p.sum_bits)
        total = Signal(p.sum_bits)
        m.d.comb += total.eq(sample_sum + afe.adc_data)
        n = adc_bits + cal.FRAC_BITS
        mean_q = (Cat(Const(0, cal.FRAC_BITS), total) >> avg_log2)[:n]
        point_now = Cat(mean_q[:n - 1], ~mean_q[n - 1]).as_signed()   # (wiring only: no named net)

        # Start validation, in the documented order.
        start_error = Signal(ErrorCode)
        with m.If((self.col_mask == 0) | (self.row_mask == 0)):
            m.d.comb += start_error.eq(ErrorCode.BAD_DIMENSION)
        with m.Elif(self.avg_log2 > p.avg_max_log2):
            m.d.comb += start_error.eq(ErrorCode.BAD_AVERAGING)
        with m.Elif(self.watchdog_limit == 0):
            m.d.comb += start_error.eq(ErrorCode.BAD_TIMING)
        with m.Else():
            m.d.comb += start_error.eq(ErrorCode.NONE)

        def abortable():
            # Last in a state so that it overrides that state's own next-state choice.
            with m.If(self.abort):
                m.d.sync += error.eq(ErrorCode.ABORTED)
                m.next = SAFE_EXIT_STATE

        def wait_then(cycles, waiting_state, then_state):
            """Go to ``waiting_state`` for ``cycles`` cycles, then ``then_state`` (0: at once)."""
            m.d.sync += wait_timer.eq(cycles)
            with m.If(cycles == 0):
                m.next = then_state
            with m.Else():
                m.next = waiting_state

        def count_down(then_state):
            m.d.sync += wait_timer.eq(wait_timer - 1)
            with m.If(wait_timer == 1):
                m.next = then_state

        def begin_point():
            m.d.sync += [samples_left.eq((Const(1, p.avg_max_log2 + 1) << avg_log2) - 1),
                         sample_sum.eq(sum_start), point_over.eq(0)]
            wait_then(cal_settle, "Cal-Settle", "Convert-Start")

        def adc_reference(index):
            return Mux(index == 0, cal.ADC_REFERENCE_ORDER[0],
                       Mux(index == 1, cal.ADC_REFERENCE_ORDER[1],
                           Mux(index == 2, cal.ADC_REFERENCE_ORDER[2],
                               Mux(index == 3, cal.ADC_REFERENCE_ORDER[3],
                                   cal.ADC_REFERENCE_ORDER[4]))))

        def load_divider(distance, span_log2):
            numerator = 1 << (span_log2 + cal.FRAC_BITS + cal.GAIN_FRAC_BITS)
            dividend = Signal(wide + qb + 2, name=f"dividend_{span_log2}")
            m.d.comb += dividend.eq(2 * numerator + distance)
            m.d.sync += [
                divide_ok.eq(distance > (numerator >> (cal.GAIN_FRAC_BITS + 1))),
                divisor.eq(distance << 1),
                remainder.eq(dividend >> qb),
                dividend_low.eq(dividend[:qb]),
                quotient.eq(0),
                divide_count.eq(qb),
            ]

        def next_channel_or(then):
            with m.If(more_cols):
                m.d.sync += [channel.eq(next_col), cols_left.eq(cols_after_next)]
            with m.Else():
                then()

        top = (1 << cal.QUALITY_BITS) - 1
        # A check point's residual corrected - ideal = (product + 2^(G-1) - ideal 2^G) >> G
        # (an integer subtracted after a floor is exact): one adder from the product, with the
        # reference's constant registered every cycle (ref_index changes in Idle, ADC-Check, Store
        # and a conversion's end, each at least three states before the next ADC-Check). The
        # rounding, the subtraction and the magnitude in one cycle were the calibrator's
        # critical path (docs/synthesis.md E55): the residual, its magnitude and the quality
        # update take a cycle each, after ADC-Check (whatever states follow).
        check_rounding = Signal(signed(max(wide + gain_frac, len(offset_gain)) + 3))

        def rounding_less(reference: int) -> int:
            return (1 << (gain_frac - 1)) - (cal.ideal_q(reference, adc_bits) << gain_frac)
        m.d.sync += check_rounding.eq(Mux(ref_index == 3, rounding_less(cal.REF_PLUS_7_8),
                                          Mux(ref_index == 4, rounding_less(cal.REF_MINUS_7_8),
                                              1 << (gain_frac - 1))) - offset_gain)
        m.d.sync += [residual_pending.eq(0), check_pending.eq(residual_pending)]
        with m.If(residual_pending):
            m.d.sync += check_magnitude.eq(Mux(check_residual < 0, -check_residual,
                                               check_residual))
        with m.If(check_pending & (check_magnitude > quality)):
            m.d.sync += quality.eq(Mux(check_magnitude > top, top, check_magnitude))

        dac_low, dac_high = cal.loopback_codes(dac_bits)
        limit = 1 << (ob - 1)
        # An op-amp point's corrected offset (product - offset * gain + 2^(G-1)) >> G is in
        # [-limit, limit) iff product - offset * gain is in [-limit * 2^G - 2^(G-1), limit *
        # 2^G - 2^(G-1)) (the floor is monotonic): compares of the product register with
        # bounds registered from offset * gain, not behind the rounding adder
        # (docs/synthesis.md E54, E58).
        range_low, range_high = (Signal(signed(max(len(product), len(offset_gain)) + 3))
                                 for _ in range(2))
        m.d.sync += [range_low.eq(round_shift_bound(-limit, gain_frac) + offset_gain),
                     range_high.eq(round_shift_bound(limit, gain_frac) + offset_gain)]
        point_in_range = (product >= range_low) & (product < range_high)
        # failed_count + 1 kept as a register: a failed word picks it (a mux, no adder behind
        # the decision, E54). failed_count changes in ADC-Setup (cleared), Store and
        # Opamp-Point, each at least three cycles before the next of them.
        failed_more = Signal.like(failed_count)
        m.d.sync += failed_more.eq(failed_count + 1)

        def count_failed(valid: Value):
            m.d.sync += failed_count.eq(Mux(valid, failed_count, failed_more))

        with m.FSM(init="Idle") as fsm:
            with m.State("Idle"):
                # The operands and the walks are loaded in every idle cycle, not only on start
                # (internal state: nothing reads it before a start), so that the start only
                # decides the next state: behind the controller's command decode, a start that
                # enables all these registers was a 16 ns path on the ECP5. quality and
                # failed_count keep the last calibration's figures until ADC-Setup clears them.
                first_col = lowest_set_index(self.col_mask)
                m.d.sync += [
                    col_mask.eq(self.col_mask), row_mask.eq(self.row_mask),
                    avg_log2.eq(self.avg_log2), cal_settle.eq(self.cal_settle),
                    sum_start.eq((Const(1, p.sum_bits + cal.FRAC_BITS + 1) << self.avg_log2)
                                 >> (cal.FRAC_BITS + 1)),
                    dac_settle.eq(self.dac_settle),
                    analog_settle.eq(self.analog_settle),
                    watchdog_limit.eq(self.watchdog_limit),
                    channel.eq(first_col), loopback_channel.eq(first_col),
                    first_channel.eq(1), fresh.eq(1),
                    cols_left.eq(self.col_mask & (self.col_mask - 1)),
                    ref_index.eq(0), phase.eq(ADC),
                    ctl_mode.eq(AFEMode.IDLE), ctl_loop.eq(0), ctl_ref.eq(0),
                    ctl_cell_row.eq(0), ctl_row_en.eq(0), ctl_col_en.eq(0),
                    ctl_mux.eq(0),
                ]
                with m.If(self.start):
                    m.d.sync += error.eq(start_error)
                    with m.If(start_error != ErrorCode.NONE):
                        m.next = "Done"
                    with m.Else():
                        m.next = "ADC-Setup"

            # ---- ADC phase --------------------------------------------------------------
            with m.State("ADC-Setup"):
                with m.If(fresh):   # the first cycle of this calibration
                    m.d.sync += [quality.eq(0), failed_count.eq(0), fresh.eq(0)]
                m.d.sync += [ctl_mode.eq(AFEMode.CAL), ctl_ref.eq(adc_reference(ref_index)),
                             ctl_mux.eq(channel), phase.eq(ADC)]
                begin_point()
                abortable()

            with m.State("Correct"):
                m.d.sync += product.eq(point * mul_gain)
                with m.Switch(phase):
                    with m.Case(ADC):
                        m.next = "ADC-Check"
                    with m.Case(DAC):
                        m.next = "DAC-Point"
                    with m.Default():
                        m.next = "Opamp-Point"
                abortable()

            with m.State("ADC-Check"):
                # The worst residual is kept two cycles later (above, E55).
                m.d.sync += [check_residual.eq((product + check_rounding) >> gain_frac),
                             residual_pending.eq(1)]
                m.d.sync += ref_index.eq(ref_index + 1)
                m.next = "ADC-Setup"
                with m.If(ref_index == len(cal.ADC_REFERENCE_ORDER) - 1):
                    m.d.sync += [ref_index.eq(0), first_channel.eq(0)]

                    def to_dac_phase():
                        m.d.sync += [row.eq(first_row), rows_left.eq(rows_after_first),
                                     high_level.eq(0), phase.eq(DAC)]
                        m.next = "DAC-Write"
                    next_channel_or(to_dac_phase)
                abortable()

            # ---- two-point coefficient (ADC and DAC) --------------------------------------
            with m.State("Offset"):
                m.d.sync += offset.eq(round_shift_value(high + low, 1))
                distance = high - low
                with m.If(phase == ADC):
                    load_divider(distance, adc_bits - 1)
                with m.Else():
                    load_divider(distance, dac_bits - 1)
                m.next = "Divide"
                abortable()

            with m.State("Divide"):
                trial = Cat(dividend_low[-1], remainder)
                with m.If(trial >= divisor):
                    m.d.sync += [remainder.eq(trial - divisor), quotient.eq(Cat(1, quotient))]
                with m.Else():
                    m.d.sync += [remainder.eq(trial), quotient.eq(Cat(0, quotient))]
                m.d.sync += [dividend_low.eq(dividend_low << 1),
                             divide_count.eq(divide_count - 1)]
                with m.If(divide_count == 1):
                    m.next = "Store"
                abortable()

            with m.State("Store"):
                valid = Signal()
                m.d.comb += valid.eq(~pair_over & divide_ok
                                     & (quotient >= (cal.GAIN_ONE >> 1))
                                     & (quotient < (cal.GAIN_ONE << 1))
                                     & (offset >= -limit) & (offset < limit))
                word_offset = Mux(valid, offset, 0)
                word_gain = Mux(valid, quotient, cal.GAIN_ONE)
                m.d.comb += [self.coeff_write.en.eq(1),
                             self.coeff_write.data.offset.eq(word_offset),
                             self.coeff_write.data.gain.eq(word_gain),
                             self.coeff_write.data.valid.eq(valid)]
                count_failed(valid)
                with m.If(phase == ADC):
                    m.d.comb += self.coeff_write.addr.eq(channel)
                    m.d.sync += [cur_offset.eq(word_offset), cur_gain.eq(word_gain),
                                 ref_index.eq(2)]
                    with m.If(first_channel):
                        m.d.sync += [lb_offset.eq(word_offset), lb_gain.eq(word_gain)]
                    m.next = "ADC-Setup"
                with m.Else():
                    m.d.comb += self.coeff_write.addr.eq(p.total_cols + row)
                    with m.If(more_rows):
                        m.d.sync += [row.eq(next_row), rows_left.eq(rows_after_next),
                                     high_level.eq(0)]
                        m.next = "DAC-Write"
                    with m.Else():
                        # Op-amp phase: the AFE idle while the last row's DAC settles at 0 V.
                        m.d.sync += [ctl_mode.eq(AFEMode.IDLE), ctl_ref.eq(0),
                                     ctl_cell_row.eq(0), phase.eq(OPAMP)]
                        wait_then(dac_settle, "Opamp-Settle-DAC", "Opamp-Close")
                abortable()

            # ---- DAC phase -----------------------------------------------------------------
            with m.State("DAC-Write"):
                m.d.comb += [afe.dac_we.eq(1), afe.dac_addr.eq(row),
                             afe.dac_data.eq(Mux(high_level, dac_high, dac_low))]
                m.next = "DAC-LDAC"
                abortable()

            with m.State("DAC-LDAC"):
                m.d.comb += afe.dac_ldac.eq(1)
                wait_then(dac_settle, "DAC-Settle", "DAC-Setup")
                abortable()

            with m.State("DAC-Settle"):
                count_down("DAC-Setup")
                abortable()

            with m.State("DAC-Setup"):
                m.d.sync += [ctl_mode.eq(AFEMode.CAL), ctl_ref.eq(cal.REF_DAC_LOOPBACK),
                             ctl_cell_row.eq(row), ctl_mux.eq(loopback_channel)]
                begin_point()
                abortable()

            with m.State("DAC-Point"):
                in_dac_lsb = round_shift_value(corrected, adc_bits - dac_bits)
                with m.If(high_level):
                    m.d.sync += [high.eq(in_dac_lsb), pair_over.eq(pair_over | point_over)]
                    m.next = "DAC-Zero"
                with m.Else():
                    m.d.sync += [low.eq(in_dac_lsb), pair_over.eq(point_over),
                                 high_level.eq(1)]
                    m.next = "DAC-Write"
                abortable()

            with m.State("DAC-Zero"):
                m.d.comb += [afe.dac_we.eq(1), afe.dac_addr.eq(row),
                             afe.dac_data.eq(p.dac_zero_code)]
                m.next = "DAC-Zero-LDAC"
                abortable()

            with m.State("DAC-Zero-LDAC"):
                m.d.comb += afe.dac_ldac.eq(1)
                m.next = "Offset"
                abortable()

            # ---- op-amp phase --------------------------------------------------------------
            with m.State("Opamp-Settle-DAC"):
                count_down("Opamp-Close")
                abortable()

            with m.State("Opamp-Close"):
                first_col = lowest_set_index(col_mask)
                m.d.sync += [ctl_mode.eq(AFEMode.SOLVE_FREE), ctl_loop.eq(1),
                             ctl_row_en.eq(row_mask), ctl_col_en.eq(col_mask),
                             ctl_mux.eq(first_col), channel.eq(first_col),
                             cols_left.eq(col_mask & (col_mask - 1))]
                wait_then(analog_settle, "Settle-Analog", "Opamp-Fetch")
                abortable()

            with m.State("Settle-Analog"):
                count_down("Opamp-Fetch")
                abortable()

            with m.State("Opamp-Fetch"):
                m.d.comb += self.coeff_read.addr.eq(channel)
                m.d.sync += [samples_left.eq((Const(1, p.avg_max_log2 + 1) << avg_log2) - 1),
                             sample_sum.eq(sum_start), point_over.eq(0)]
                m.next = "Convert-Start"
                abortable()

            with m.State("Opamp-Point"):
                valid = Signal(name="opamp_valid")
                m.d.comb += valid.eq(~point_over & point_in_range)
                m.d.comb += [self.coeff_write.en.eq(1),
                             self.coeff_write.addr.eq(p.total_cols + p.rows + channel),
                             self.coeff_write.data.offset.eq(Mux(valid, corrected, 0)),
                             self.coeff_write.data.gain.eq(0),
                             self.coeff_write.data.valid.eq(valid)]
                count_failed(valid)
                with m.If(more_cols):
                    m.d.sync += [channel.eq(next_col), ctl_mux.eq(next_col),
                                 cols_left.eq(cols_after_next)]
                    m.next = "Opamp-Fetch"
                with m.Else():
                    m.next = "Done"
                abortable()

            # ---- one measured point (shared) ------------------------------------------------
            with m.State("Cal-Settle"):
                count_down("Convert-Start")
                abortable()

            with m.State("Convert-Start"):
                m.d.comb += [afe.adc_start.eq(~self.abort), watchdog.restart.eq(1)]
                m.d.sync += saw_busy.eq(0)
                with m.If(phase == OPAMP):
                    # The column's ADC word, fetched in Opamp-Fetch (held: en rests at 0).
                    m.d.sync += [cur_offset.eq(self.coeff_read.data.offset),
                                 cur_gain.eq(self.coeff_read.data.gain)]
                m.next = "Convert-Wait"
                abortable()

            with m.State("Convert-Wait"):
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
                    over = point_over | afe.adc_ovr
                    with m.If(samples_left != 0):
                        m.d.sync += [sample_sum.eq(total), point_over.eq(over),
                                     samples_left.eq(samples_left - 1)]
                        m.next = "Convert-Start"
                    with m.Else():
                        # mul_offset is the phase's from the cycle after Convert-Start on (E21),
                        # and a conversion ends two cycles after its Convert-Start at the earliest.
                        m.d.sync += [point.eq(point_now), point_over.eq(over)]
                        with m.Switch(phase):
                            with m.Case(ADC):
                                with m.Switch(ref_index):
                                    with m.Case(0):
                                        m.d.sync += [high.eq(point_now), pair_over.eq(over),
                                                     ref_index.eq(1)]
                                        m.next = "ADC-Setup"
                                    with m.Case(1):
                                        m.d.sync += [low.eq(point_now),
                                                     pair_over.eq(pair_over | over)]
                                        m.next = "Offset"
                                    with m.Default():
                                        m.next = "Correct"
                            with m.Default():
                                m.next = "Correct"
                abortable()

            emit_safe_exit(m, afe, p, then="Done")

            with m.State("Done"):
                m.d.comb += self.done.eq(1)
                m.next = "Idle"

        running = ~(fsm.ongoing("Idle") | fsm.ongoing("Done") | fsm.ongoing(SAFE_EXIT_STATE)
                    | fsm.ongoing("Safe-LDAC"))
        with m.If(running):
            m.d.comb += [afe.mode.eq(ctl_mode), afe.loop.eq(ctl_loop),
                         afe.cal_ref_sel.eq(ctl_ref), afe.cell_row.eq(ctl_cell_row),
                         afe.row_en.eq(ctl_row_en), afe.col_en.eq(ctl_col_en),
                         afe.adc_mux.eq(ctl_mux)]
        # A read port's en rests at 1: hold the fetched word through the conversions.
        m.d.comb += self.coeff_read.en.eq(fsm.ongoing("Opamp-Fetch"))
        m.d.comb += self.busy.eq(~fsm.ongoing("Idle"))
        return m
