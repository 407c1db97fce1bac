"""Transparent spare-column remap: the column map between the blocks (which work in logical
columns) and the AFE port (physical columns), and the repair sequence that fills it.

The map is a permutation of the ``total_cols`` columns, the identity after reset and after
``clear``. Moving logical column j to a free spare s swaps two entries: j goes to s, and
logical s (a spare the host no longer should use) to j's old physical column. Translated
on the way to the AFE: ``col_en`` and the fault map's bit enables (bit vectors), ``adc_mux``
and ``cell_col`` (indices). RESULTS, TARGET and COL_ENABLE stay logical; FAULT_MAP is
physical (it describes the array's cells).

Repair (docs/fault-handling.md), when ``enable`` is set: a host PROGRAM_MATRIX or REFRESH
whose walk ends (``walk_done``, cycle T) with CELLS_FAILED and failed cells in a column
below COLS, with a spare free, is not finished: per such column j, lowest first, and per
free spare s, lowest first:

* Choose (T + 1): the map swaps j and s; ``trial_col_mask`` = 1 << j.
* Hold (T + 2): the programmer's operands settle (its start reads the cycle before).
* Start (T + 3): ``trial_start``: the programmer runs PROGRAM_MATRIX on column j (the walk's
  rows and settings, which it keeps while ``busy``: its ``rerun`` input), that is on physical
  spare s with column j's targets.
* Trial, until the programmer's done (cycle U): NONE keeps the swap (``remapped``), the spare
  is taken and j is repaired; CELLS_FAILED undoes the swap and marks s bad (taken); any other
  error undoes the swap and ends the command with it. With columns and spares left the next
  Choose is U + 1; otherwise the command ends in U (``finished``).

The outcome is CELLS_FAILED while any failed column of the walk is unrepaired (spares
used up, or failed cells in a spare column the host enabled), else NONE. An ``abort``
in Choose, Hold or Start ends the command there with ABORTED (swap undone); in Trial the
programmer takes it (ABORTED, its safe exit).
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .afe import lowest_set_index
from .codes import ErrorCode
from .params import BuildParams

__all__ = ["ColumnRemap", "MAP_ENTRY_LAYOUT"]

#: A REMAP_MAP window entry: the physical column of a logical one, and whether it moved.
MAP_ENTRY_LAYOUT = data.StructLayout({"physical": 8, "remapped": 1})


class ColumnRemap(wiring.Component):
    """Column map, AFE column translation and the repair sequence (module docstring).

    Ports: ``enable``, ``clear`` (ignored while busy; never in a ``walk_done`` cycle), ``abort``; ``walk_done`` (the walk of a
    host PROGRAM_MATRIX / REFRESH ends this cycle), ``prog_done``, ``prog_error``, ``failed_cols``
    (the programmer's); ``busy`` (a repair runs), ``trial_start``, ``trial_col_mask``,
    ``finished`` / ``outcome`` (the command ends this cycle, with this error), ``remapped``
    (a swap was kept this cycle), ``spares_left``; translation ``logical_*`` -> ``physical_*``;
    ``map_write`` (the REMAP_MAP window, written from ``dirty`` entries one per cycle).
    """

    def __init__(self, params: BuildParams):
        if not isinstance(params, BuildParams):
            self._MustUse__silence = True
            raise TypeError(f"params must be a BuildParams, got {params!r}")
        self._params = p = params
        super().__init__({
            "enable": In(1),
            "clear": In(1),
            "abort": In(1),
            "walk_done": In(1),
            "prog_done": In(1),
            "prog_error": In(ErrorCode),
            "failed_cols": In(p.total_cols),
            "busy": Out(1),
            "trial_start": Out(1),
            "trial_col_mask": Out(p.total_cols),
            "finished": Out(1),
            "outcome": Out(ErrorCode),
            "remapped": Out(1),
            "spares_left": Out(range(p.spare + 1)),
            "logical_col_en": In(p.total_cols),
            "physical_col_en": Out(p.total_cols),
            "logical_fault_en": In(p.total_cols),
            "physical_fault_en": Out(p.total_cols),
            "logical_adc_mux": In(p.col_addr_bits),
            "physical_adc_mux": Out(p.col_addr_bits),
            "logical_cell_col": In(p.col_addr_bits),
            "physical_cell_col": Out(p.col_addr_bits),
            # The controller's record of the last conversion's column, translated after its
            # register (docs/synthesis.md E47).
            "logical_recorded_col": In(p.col_addr_bits),
            "physical_recorded_col": Out(p.col_addr_bits),
            "map_write": In(memory.WritePort.Signature(addr_width=p.col_addr_bits,
                                                        shape=MAP_ENTRY_LAYOUT)),
        })

    @property
    def params(self) -> BuildParams:
        return self._params

    def elaborate(self, platform) -> Module:
        p = self._params
        m = Module()
        n = p.total_cols
        main_mask = (1 << p.cols) - 1
        spare_mask = ((1 << n) - 1) ^ main_mask   # physical spare columns, as a column vector

        physical = Array(Signal(p.col_addr_bits, init=c, name=f"physical_{c}") for c in range(n))
        # A spare is taken when it holds a remapped column or failed its trial.
        taken = Signal(n)
        free = Signal(n)
        m.d.comb += free.eq(~taken & spare_mask)
        m.d.comb += self.spares_left.eq(sum(free[c] for c in range(p.cols, n)) if p.spare else 0)

        # --- translation ---------------------------------------------------------------------
        def to_physical(vector):
            # Bit l moves to bit physical[l]: one shifted one-hot per column, ORed (a single
            # expression, so that the named result is one net).
            moved = Const(0, n)
            for l in range(n):
                moved = moved | Mux(vector[l], Const(1, n) << physical[l], 0)
            return moved[:n]
        m.d.comb += [
            self.physical_col_en.eq(to_physical(self.logical_col_en)),
            self.physical_fault_en.eq(to_physical(self.logical_fault_en)),
            self.physical_adc_mux.eq(physical[self.logical_adc_mux]),
            self.physical_cell_col.eq(physical[self.logical_cell_col]),
            self.physical_recorded_col.eq(physical[self.logical_recorded_col]),
        ]

        # --- REMAP_MAP mirror: one dirty entry written per cycle (all after reset) -------------
        # The entry and its word are registered and written the cycle after (the lowest dirty
        # entry, its physical column and the compare in front of the window's LUT RAM write were
        # the ECP5's worst path, docs/synthesis.md E35); an entry that changes in between is
        # marked dirty again and rewritten.
        dirty = Signal(n, init=(1 << n) - 1)
        entry = lowest_set_index(dirty)
        staged = Signal()
        staged_entry = Signal(range(n))
        staged_physical = Signal(p.col_addr_bits)
        staged_remapped = Signal()
        m.d.sync += [staged.eq(dirty != 0), staged_entry.eq(entry), staged_physical.eq(physical[entry]),
                     staged_remapped.eq(physical[entry] != entry)]
        m.d.comb += [
            self.map_write.en.eq(staged),
            self.map_write.addr.eq(staged_entry),
            self.map_write.data.physical.eq(staged_physical),
            self.map_write.data.remapped.eq(staged_remapped),
        ]
        mark_dirty = Signal(n)
        m.d.sync += dirty.eq((dirty & ~(Const(1, n) << entry)) | mark_dirty)

        # --- repair sequence -----------------------------------------------------------------
        pending = Signal(n)        # failed columns of the walk not repaired yet
        column = Signal(p.col_addr_bits)   # j of the running trial
        spare = Signal(p.col_addr_bits)    # s of the running trial
        column_was = Signal(p.col_addr_bits)  # physical[j] before the swap

        def undo_swap():
            m.d.sync += [physical[column].eq(column_was), physical[spare].eq(spare)]

        # busy from a flip-flop (set leaving Idle, cleared by finish), not the state decode: the
        # controller's walk-done and STATUS logic behind it was the iCE40's critical path
        # (docs/synthesis.md, I14).
        busy = Signal()
        # In Trial, as a flip-flop too: `finished` and `outcome` are built from the two flags
        # below the FSM, not from its state decode (docs/synthesis.md I22).
        trial = Signal()

        def finish():
            m.d.sync += [busy.eq(0), trial.eq(0)]
            m.next = "Idle"

        # What a trial's end decides, precomputed: pending, free, column and spare are fixed from
        # Hold to the trial's done (set in Choose), so the registers hold the current outcome in
        # Start and Trial and the done cycle only picks one by the programmer's error.
        trial_spare_bit = Const(1, n) << spare
        trial_column_bit = Const(1, n) << column
        free_after_trial = (free & ~trial_spare_bit) != 0
        more_if_passed, more_if_spare_bad = Signal(), Signal()
        left_if_passed, left_if_spare_bad = Signal(), Signal()
        m.d.sync += [
            more_if_passed.eq(((pending & ~trial_column_bit & main_mask) != 0) & free_after_trial),
            more_if_spare_bad.eq(((pending & main_mask) != 0) & free_after_trial),
            left_if_passed.eq((pending & ~trial_column_bit) != 0),
            left_if_spare_bad.eq(pending != 0),
        ]

        # Whether a walk ending with CELLS_FAILED now would be repaired, but for the enable:
        # registered every cycle (failed_cols is final at least two cycles before the walk's done;
        # free changes in Trial and by a clear, never in the cycle before a walk_done).
        repair_ready = Signal()
        m.d.sync += repair_ready.eq(((self.failed_cols & main_mask) != 0) & (free != 0))

        with m.FSM(init="Idle"):
            with m.State("Idle"):
                with m.If(self.walk_done):
                    with m.If(self.enable & (self.prog_error == ErrorCode.CELLS_FAILED) & repair_ready):
                        m.d.sync += [pending.eq(self.failed_cols), busy.eq(1)]
                        m.next = "Choose"
                # Not behind walk_done: the controller passes a clear only while no command runs
                # (the walk-done decision in front of the map's enables was the iCE40's critical
                # path, docs/synthesis.md I39).
                with m.If(self.clear):
                    m.d.sync += [taken.eq(0)] + [physical[c].eq(c) for c in range(n)]
                    m.d.comb += mark_dirty.eq((1 << n) - 1)

            with m.State("Choose"):
                j = lowest_set_index(pending & main_mask)
                s = lowest_set_index(free)
                with m.If(self.abort):
                    finish()
                with m.Else():
                    m.d.sync += [column.eq(j), spare.eq(s), column_was.eq(physical[j]),
                                 physical[j].eq(s), physical[s].eq(physical[j]),
                                 self.trial_col_mask.eq(Const(1, n) << j)]
                    m.next = "Hold"

            with m.State("Hold"):
                with m.If(self.abort):
                    undo_swap()
                    finish()
                with m.Else():
                    m.next = "Start"

            with m.State("Start"):
                with m.If(self.abort):
                    undo_swap()
                    finish()
                with m.Else():
                    m.d.comb += self.trial_start.eq(1)
                    m.d.sync += trial.eq(1)
                    m.next = "Trial"

            with m.State("Trial"):
                with m.If(self.prog_done):
                    passed = self.prog_error == ErrorCode.NONE
                    spare_bad = self.prog_error == ErrorCode.CELLS_FAILED
                    column_bit, spare_bit = trial_column_bit, trial_spare_bit
                    pending_next = Signal(n)
                    m.d.comb += pending_next.eq(pending & ~(column_bit & passed.replicate(n)))
                    # The trial's entries and flags are written whatever the outcome, the outcome
                    # choosing the data (kept or undone): the error decode in front of their
                    # enables was the iCE40's critical path (docs/synthesis.md I40).
                    m.d.sync += [taken.eq(Mux(passed | spare_bad, taken | spare_bit, taken)),
                                 pending.eq(pending_next)]
                    for c in range(n):
                        with m.If((column == c) | (spare == c)):
                            m.d.sync += physical[c].eq(Mux(passed, physical[c],
                                                           Mux(column == c, column_was, c)))
                    with m.If(passed):
                        m.d.comb += [self.remapped.eq(1), mark_dirty.eq(column_bit | spare_bit)]
                    with m.If(~passed & ~spare_bad | ~Mux(passed, more_if_passed, more_if_spare_bad)):
                        finish()
                    with m.Else():
                        m.d.sync += trial.eq(0)
                        m.next = "Choose"

        # The command ends: a walk's done in Idle that starts no repair (its error), an abort in
        # Choose, Hold or Start (ABORTED), a trial's done with no trial to follow (the trial's own
        # error when it is neither NONE nor CELLS_FAILED; else CELLS_FAILED while a failed column
        # is left unrepaired, NONE when none is).
        passed = self.prog_error == ErrorCode.NONE
        spare_bad = self.prog_error == ErrorCode.CELLS_FAILED
        repairs = self.enable & spare_bad & repair_ready
        trial_ends = ~passed & ~spare_bad | ~Mux(passed, more_if_passed, more_if_spare_bad)
        with m.If(~busy):
            m.d.comb += [self.finished.eq(self.walk_done & ~repairs), self.outcome.eq(self.prog_error)]
        with m.Elif(~trial):
            m.d.comb += [self.finished.eq(self.abort), self.outcome.eq(ErrorCode.ABORTED)]
        with m.Else():
            m.d.comb += [self.finished.eq(self.prog_done & trial_ends),
                         self.outcome.eq(Mux(passed | spare_bad,
                                             Mux(Mux(passed, left_if_passed, left_if_spare_bad),
                                                 ErrorCode.CELLS_FAILED, ErrorCode.NONE),
                                             self.prog_error))]
        m.d.comb += self.busy.eq(busy)
        return m
