"""The start-check contract of the blocks that register their start checks (E17, E23 in
docs/synthesis.md): the checks see the operands of the cycle before the start."""
from __future__ import annotations

from typing import Any, Mapping

from anmf.hdl.codes import ErrorCode


async def start_after_operand_change(ctx: Any, block: Any, operands: Mapping[str, int], name: str,
                                     before: int, at_start: int) -> tuple[int, ErrorCode]:
    """Set ``operands`` with ``name`` = ``before`` for a cycle, then ``name`` = ``at_start`` with
    the start strobe, then abort at once; return the cycles to ``done`` and the error."""
    for port, value in operands.items():
        ctx.set(getattr(block, port), value)
    ctx.set(getattr(block, name), before)
    await ctx.tick()
    ctx.set(getattr(block, name), at_start)
    ctx.set(block.start, 1)
    await ctx.tick()
    ctx.set(block.start, 0)
    ctx.set(block.abort, 1)
    cycles = 1
    while not ctx.get(block.done):
        await ctx.tick()
        cycles += 1
    ctx.set(block.abort, 0)
    error = ErrorCode(ctx.get(block.error))
    await ctx.tick()
    return cycles, error
