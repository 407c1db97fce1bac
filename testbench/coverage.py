"""Functional coverage of the controller, with bins derived from the design (docs/coverage.md).

Nothing here lists a state, an error code, an opcode or an access kind by hand:

* FSM states and transitions come from the elaborated Amaranth design: every ``m.FSM`` is a
  ``Switch`` on a ``<name>_state`` signal whose decoder names the states; the legal transitions
  are the constant assignments to that signal inside each state's case (:func:`design_fsms`).
  A block named in :data:`REQUIRED_FSM_BLOCKS` without an FSM is an error, not a hole.
* opcodes and error codes are the members of ``Opcode`` and ``ErrorCode`` (hdl/codes.py),
  plus one bin for opcodes outside ``Opcode``;
* register access kinds are the access classes of the register map (hdl/registers.py), each
  with the bus operations that make sense for it (:func:`access_classes`), and the response
  the documented bus rules give (:func:`expected_response`);
* abort and soft reset are crossed with what runs when they land: idle or one of the command
  blocks (the FSM blocks other than the bus slave).

A new enum member, FSM state, transition, register kind or block adds its bins by itself.

Sampling goes through cocotb-coverage (``CoverPoint``/``CoverCross`` in its ``coverage_db``),
inside the cocotb process; :meth:`CoverageModel.hits` gives the hit counts, which
:func:`write_json` exports and :func:`merge` adds up across runs (one file per seed).

    python -m anmf.testbench.coverage FILE.json [FILE.json ...] [--goal 0.95] [--out MERGED.json]

prints the merged report and exits 1 when the covered share is below the goal.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from amaranth.hdl import Const, Fragment, Signal
from amaranth.hdl._ast import Assign, Switch  # the statement classes an elaborated Fragment holds

from anmf.hdl.codes import ErrorCode, Opcode
from anmf.hdl.regmap import MapEntry, MemoryWindow, Register, RegisterMap, VectorWindow

__all__ = ["FSMModel", "design_fsms", "REQUIRED_FSM_BLOCKS", "BUS_BLOCK", "AccessClass", "access_classes",
           "UNMAPPED", "WINDOW_GAP", "READ", "WRITE", "WRITE_PARTIAL", "expected_response",
           "UNKNOWN_OPCODE_BIN", "IDLE_TARGET", "CONTROL_ACTIONS", "RETRY_OUTCOMES", "CoverageModel", "design_groups",
           "design_points", "design_crosses",
           "write_json", "read_json", "read_stats", "merge_stats", "merge", "covered", "report", "main"]

#: Blocks of the controller (dotted submodule paths) that must have an FSM: a design change
#: that loses one fails the coverage model instead of silently dropping its bins.
REQUIRED_FSM_BLOCKS: tuple[str, ...] = ("registers.axil_slave", "sequencer", "programmer", "anls", "remap", "calibrator",
                                        "refiner")
#: The bus slave's FSM: not a command block (abort/soft reset targets are the others).
BUS_BLOCK = "registers.axil_slave"

READ, WRITE, WRITE_PARTIAL = "read", "write", "write-partial"
UNMAPPED = "unmapped"        #: an address in no register or window
WINDOW_GAP = "window-gap"    #: a window index between its depth and its span
UNKNOWN_OPCODE_BIN = "unknown"
IDLE_TARGET = "idle"
CONTROL_ACTIONS: tuple[str, ...] = ("abort", "soft_reset")
#: Outcomes of a host solve's over-range retry (docs/controller.md), a group in builds whose map
#: has SOLVE_RETRIES: over range with the retry off, in range at once, in range after retries,
#: retries run out (the last results still over range).
RETRY_OUTCOMES: tuple[str, ...] = ("off-over-range", "in-range", "resolved", "exhausted")


# --- FSMs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FSMModel:
    """One ``m.FSM`` of the elaborated design.

    ``block`` is its module's dotted path under the top level (``sequencer``,
    ``registers.axil_slave``), ``signal`` the state register's name in that module (what the
    Verilog keeps: ``fsm_state``), ``states`` the state names by encoding and
    ``transitions`` the (from, to) pairs the RTL can take (self-loops left out).
    """

    block: str
    path: tuple[str, ...]
    signal: str
    states: tuple[str, ...]
    transitions: tuple[tuple[str, str], ...]

    @property
    def init(self) -> str:
        """Amaranth encodes the initial state as 0."""
        return self.states[0]

    def state_name(self, code: int) -> str:
        if not 0 <= code < len(self.states):
            raise ValueError(f"{self.block}: state code {code} is not one of the {len(self.states)} "
                             f"encoded states")
        return self.states[code]


def _fragments(fragment: Fragment, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Fragment]]:
    yield path, fragment
    for sub, name, _src_loc in fragment.subfragments:
        yield from _fragments(sub, path + (str(name),))


def _flatten(statements: Iterable[Any]) -> Iterator[Any]:
    for statement in statements:
        if isinstance(statement, Switch):
            for _patterns, body, _src_loc in statement.cases:
                yield from _flatten(body)
        else:
            yield statement


def _state_names(signal: Signal) -> tuple[str, ...]:
    """Decode every code of an FSM state signal with its decoder (``"Name/code"``)."""
    names = []
    for code in range(1 << len(signal)):
        try:
            text = signal.decoder(code)
        except KeyError:   # codes past the last state
            break
        name, _, number = text.rpartition("/")
        if number != str(code) or not name:
            raise ValueError(f"FSM signal {signal.name}: decoder gave {text!r} for code {code}")
        names.append(name)
    return tuple(names)


def design_fsms(design: Any, required: Sequence[str] = REQUIRED_FSM_BLOCKS) -> tuple[FSMModel, ...]:
    """Every FSM of ``design`` (an Elaboratable; elaborated here), with states and transitions.

    Raises ValueError naming the blocks of ``required`` that have no FSM (or more than one: the
    Verilog name of its state register would then be ambiguous).
    """
    fragment = Fragment.get(design, None)
    found: list[FSMModel] = []
    for path, frag in _fragments(fragment):
        for statement in frag.statements.get("sync", []):
            test = statement.test if isinstance(statement, Switch) else None
            if not (isinstance(test, Signal) and test.name.endswith("_state") and test.decoder is not None):
                continue
            states = _state_names(test)
            if not states:
                continue
            transitions = []
            for patterns, body, _src_loc in statement.cases:
                if patterns is None:
                    continue
                for pattern in patterns:
                    source = states[int(pattern, 2)]
                    for assign in _flatten(body):
                        if isinstance(assign, Assign) and assign.lhs is test and isinstance(assign.rhs, Const):
                            target = states[assign.rhs.value]
                            if target != source and (source, target) not in transitions:
                                transitions.append((source, target))
            found.append(FSMModel(".".join(path), path, test.name, states, tuple(transitions)))
    blocks = [fsm.block for fsm in found]
    missing = [b for b in required if b not in blocks]
    doubled = sorted({b for b in blocks if blocks.count(b) > 1})
    if missing or doubled:
        shown = ", ".join(b or "(top level)" for b in blocks) or "none"
        raise ValueError(f"FSMs of the design: {shown}; "
                         + (f"no FSM found in {', '.join(missing)}" if missing else "")
                         + ("; " if missing and doubled else "")
                         + (f"more than one FSM in {', '.join(doubled)}" if doubled else ""))
    return tuple(found)


# --- register access kinds --------------------------------------------------------------------

@dataclass(frozen=True)
class AccessClass:
    """Map entries that the bus treats alike, and the operations that exercise them."""

    label: str
    entries: tuple[MapEntry, ...]
    ops: tuple[str, ...]


def _register_label(register: Register) -> str:
    kinds = []
    for placed in register.fields.values():
        kind = placed.access.value + {"constant": "-const", "counter": "-counter"}.get(placed.field.kind, "")
        if kind not in kinds:
            kinds.append(kind)
    return "register " + "/".join(sorted(kinds))


def _entry_label(entry: MapEntry) -> str:
    item = entry.item
    if isinstance(item, Register):
        return _register_label(item)
    if isinstance(item, VectorWindow):
        return f"vector {item.access.value}"
    return f"window {item.access.value}"


def access_classes(register_map: RegisterMap) -> tuple[AccessClass, ...]:
    """The map's access classes, in map order, plus the unmapped addresses and window gaps.

    Writes are full-word (``write``) or with some byte lanes left out (``write-partial``); the
    unmapped classes have a read and a write.
    """
    classes: dict[str, list[MapEntry]] = {}
    for entry in register_map:
        classes.setdefault(_entry_label(entry), []).append(entry)
    found = [AccessClass(label, tuple(entries), (READ, WRITE, WRITE_PARTIAL))
             for label, entries in classes.items()]
    gapped = tuple(e for e in register_map if not e.is_register and e.item.span > e.item.depth)
    found.append(AccessClass(UNMAPPED, (), (READ, WRITE)))
    if gapped:
        found.append(AccessClass(WINDOW_GAP, gapped, (READ, WRITE)))
    return tuple(found)


def expected_response(entry: MapEntry | None, op: str, *, index: int = 0, strobe: int = 0xF) -> str:
    """"OKAY" or "SLVERR" for an access, by the documented bus rules (docs/registers.md): SLVERR
    for an unmapped address (``entry`` None, or a window index past the depth), a write to a
    register without writable fields or to a read-only window, and a window write whose strobe
    leaves out a byte lane holding element bits."""
    if op not in (READ, WRITE, WRITE_PARTIAL):
        raise ValueError(f"op must be one of {READ}, {WRITE}, {WRITE_PARTIAL}; got {op!r}")
    if entry is None:
        return "SLVERR"
    item = entry.item
    if not isinstance(item, Register) and index >= item.depth:
        return "SLVERR"
    if op == READ:
        return "OKAY"
    if isinstance(item, Register):
        return "OKAY" if item.writable else "SLVERR"
    if isinstance(item, VectorWindow):
        return "OKAY"
    assert isinstance(item, MemoryWindow)
    lanes = (1 << -(-item.width // 8)) - 1
    if not item.access.writable or strobe & lanes != lanes:
        return "SLVERR"
    return "OKAY"


# --- the groups and their sampling ------------------------------------------------------------

def _command_blocks(fsms: Sequence[FSMModel]) -> tuple[str, ...]:
    return tuple(f.block for f in fsms if f.block != BUS_BLOCK)


def design_groups(fsms: Sequence[FSMModel], register_map: RegisterMap) -> dict[str, tuple[str, ...]]:
    """Every coverage group and its bins (strings), derived from the design."""
    groups: dict[str, tuple[str, ...]] = {}
    for fsm in fsms:
        groups[f"fsm.{fsm.block}.state"] = fsm.states
        groups[f"fsm.{fsm.block}.transition"] = tuple(f"{a}->{b}" for a, b in fsm.transitions)
    groups["command.opcode"] = tuple(op.name for op in Opcode) + (UNKNOWN_OPCODE_BIN,)
    groups["command.error"] = tuple(code.name for code in ErrorCode)
    if any(entry.name == "SOLVE_RETRIES" for entry in register_map):
        groups["command.solve_retry"] = RETRY_OUTCOMES
    groups["bus.access"] = tuple(f"{c.label}: {op}" for c in access_classes(register_map) for op in c.ops)
    for cross, (a, b) in design_crosses(fsms).items():
        points = design_points(fsms)
        groups[cross] = tuple(f"{x} @ {y}" for x in points[a] for y in points[b])
    return groups


def design_crosses(fsms: Sequence[FSMModel]) -> dict[str, tuple[str, str]]:
    """Crossed groups (name -> the two groups crossed): each abort or soft reset by what runs."""
    return {"control.action_x_target": ("control.action", "control.target")}


def design_points(fsms: Sequence[FSMModel]) -> dict[str, tuple[str, ...]]:
    """The groups the crosses are made of (only sampled through :meth:`CoverageModel.sample_cross`)."""
    return {"control.action": CONTROL_ACTIONS, "control.target": (IDLE_TARGET,) + _command_blocks(fsms)}


class CoverageModel:
    """cocotb-coverage cover points for ``groups`` (:func:`design_groups`) and crosses of
    ``points`` (:func:`design_crosses`); :meth:`sample` hits one bin, :meth:`sample_cross` one
    pair. A value outside a group's bins is an error (a value the design cannot produce, or a
    stale model). One model per process (cocotb-coverage keeps one global database).
    """

    def __init__(self, groups: Mapping[str, Sequence[str]],
                 points: Mapping[str, Sequence[str]] | None = None,
                 crosses: Mapping[str, tuple[str, str]] | None = None):
        from cocotb_coverage.coverage import CoverCross, CoverPoint, coverage_db

        self._db = coverage_db
        self.points = {name: tuple(bins) for name, bins in (points or {}).items()}
        self.crosses = dict(crosses or {})
        self.groups = {name: tuple(bins) for name, bins in groups.items() if name not in self.crosses}
        self._samplers = {}
        used = [g for pair in self.crosses.values() for g in pair]
        if len(used) != len(set(used)) or set(used) != set(self.points):
            raise ValueError(f"each point must be in exactly one cross; points {', '.join(self.points)}, "
                             f"crosses {self.crosses}")
        for group, bins in {**self.groups, **self.points}.items():
            if not bins:
                raise ValueError(f"coverage group {group} has no bins")
            if "anmf." + group in coverage_db:
                raise ValueError(f"cover point anmf.{group} exists already: one CoverageModel per process")
            if group in self.points:
                continue   # created with its cross below

            def sample(value: str) -> None:
                return None
            self._samplers[group] = CoverPoint("anmf." + group, xf=lambda value: value, bins=list(bins))(sample)
        for cross, (a, b) in self.crosses.items():
            if a not in self.points or b not in self.points:
                raise ValueError(f"cross {cross}: {a} and {b} must both be in points ({', '.join(self.points)})")

            def sample_pair(first: str, second: str) -> None:
                return None
            first_point = CoverPoint("anmf." + a, xf=lambda first, second: first, bins=list(self.points[a]))
            second_point = CoverPoint("anmf." + b, xf=lambda first, second: second, bins=list(self.points[b]))
            # The points record their hits before the cross reads them: the cross is innermost.
            wrapped = CoverCross("anmf." + cross, items=["anmf." + a, "anmf." + b])(sample_pair)
            wrapped = first_point(second_point(wrapped))
            self._samplers[cross] = wrapped

    @classmethod
    def from_design(cls, design: Any, register_map: RegisterMap) -> "CoverageModel":
        fsms = design_fsms(design)
        return cls(design_groups(fsms, register_map), design_points(fsms), design_crosses(fsms))

    def _check(self, bins: Mapping[str, Sequence[str]], group: str, value: str) -> None:
        if group not in bins:
            raise ValueError(f"no coverage group {group!r}; groups: {', '.join(bins)}")
        if value not in bins[group]:
            raise ValueError(f"{value!r} is not a bin of {group} (bins: {', '.join(bins[group])})")

    def sample(self, group: str, value: str) -> None:
        self._check(self.groups, group, value)
        self._samplers[group](value)

    def sample_cross(self, cross: str, first: str, second: str) -> None:
        if cross not in self.crosses:
            raise ValueError(f"no cross {cross!r}; crosses: {', '.join(self.crosses)}")
        a, b = self.crosses[cross]
        self._check(self.points, a, first)
        self._check(self.points, b, second)
        self._samplers[cross](first, second)

    def hits(self) -> dict[str, dict[str, int]]:
        """Hit counts by group and bin (a cross's bins as ``"first @ second"``), in group order."""
        found: dict[str, dict[str, int]] = {}
        for group in self.groups:
            found[group] = {str(b): int(n) for b, n in self._db["anmf." + group].detailed_coverage.items()}
        for cross in self.crosses:
            found[cross] = {f"{x} @ {y}": int(n) for (x, y), n in self._db["anmf." + cross].detailed_coverage.items()}
        return found


# --- export, merge, report --------------------------------------------------------------------

Hits = dict[str, dict[str, int]]


def write_json(path: Path, hits: Hits, *, seeds: Sequence[int] = (), runs: int = 1,
               stats: Mapping[str, int] | None = None) -> None:
    """The coverage file: hit counts by group and bin, the seeds and runs it covers, and what
    the bench checked (``stats``: check kind -> count, added up by :func:`merge_stats`)."""
    Path(path).write_text(json.dumps({"seeds": list(seeds), "runs": runs, "groups": hits,
                                      "stats": dict(stats or {})}, indent=1))


def read_stats(path: Path) -> dict[str, int]:
    """The ``stats`` of a coverage file ({} if it has none)."""
    try:
        return {k: int(v) for k, v in json.loads(Path(path).read_text()).get("stats", {}).items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a coverage file ({type(exc).__name__}: {exc})") from None


def merge_stats(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for stats in parts:
        for name, count in stats.items():
            total[name] = total.get(name, 0) + count
    return total


def read_json(path: Path) -> tuple[Hits, list[int], int]:
    try:
        data = json.loads(Path(path).read_text())
        return ({g: {b: int(n) for b, n in bins.items()} for g, bins in data["groups"].items()},
                [int(s) for s in data.get("seeds", [])], int(data.get("runs", 1)))
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path}: not a coverage file ({type(exc).__name__}: {exc})") from None


def merge(parts: Iterable[Hits]) -> Hits:
    """Hit counts added up bin by bin; the bins are the union (a design change between runs
    shows as bins some runs lack)."""
    merged: Hits = {}
    for hits in parts:
        for group, bins in hits.items():
            target = merged.setdefault(group, {})
            for name, count in bins.items():
                target[name] = target.get(name, 0) + count
    return merged


def covered(hits: Hits) -> tuple[int, int]:
    """(bins hit at least once, bins)."""
    total = sum(len(bins) for bins in hits.values())
    return sum(1 for bins in hits.values() for n in bins.values() if n > 0), total


def report(hits: Hits, *, goal: float | None = None) -> str:
    """Per group covered/total and the uncovered bins; the overall share against ``goal``."""
    lines = []
    width = max((len(g) for g in hits), default=10)
    for group, bins in hits.items():
        hit = sum(1 for n in bins.values() if n > 0)
        lines.append(f"{group:<{width}}  {hit:3}/{len(bins):<3} {100 * hit / len(bins):5.1f}%")
        missing = [b for b, n in bins.items() if n == 0]
        if missing:
            lines.append(f"{'':<{width}}  uncovered: {', '.join(missing)}")
    hit, total = covered(hits)
    share = hit / total if total else 0.0
    verdict = "" if goal is None else (f" >= {100 * goal:.0f}%: PASS" if share >= goal
                                       else f" < {100 * goal:.0f}%: FAIL")
    lines.append(f"{'total':<{width}}  {hit:3}/{total:<3} {100 * share:5.1f}%{verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anmf.testbench.coverage",
                                     description="Merge coverage JSON files and report")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--goal", type=float, default=0.95, help="covered share required (default 0.95)")
    parser.add_argument("--out", type=Path, default=None, help="write the merged JSON here")
    args = parser.parse_args(argv)
    try:
        loaded = [read_json(f) for f in args.files]
    except ValueError as exc:
        print(f"coverage: error: {exc}", file=sys.stderr)
        return 2
    hits = merge(h for h, _, _ in loaded)
    seeds = [s for _, ss, _ in loaded for s in ss]
    stats = merge_stats(read_stats(f) for f in args.files)
    if args.out is not None:
        write_json(args.out, hits, seeds=seeds, runs=sum(r for _, _, r in loaded), stats=stats)
    print(f"checked: {stats}")
    print(report(hits, goal=args.goal))
    hit, total = covered(hits)
    return 0 if total and hit / total >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
