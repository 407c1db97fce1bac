"""A small AXI4-Lite master for amaranth.sim testbenches (tests of the AXI slave and the controller)."""
from __future__ import annotations

from typing import Any

from anmf.hdl.axi4lite import Response

__all__ = ["AxiLiteHost"]


class AxiLiteHost:
    """A small AXI4-Lite master for amaranth.sim testbenches.

    Every handshake is checked on the way: a VALID the slave raised stays up with stable payload
    until READY, and the helper never sees a response before its request was accepted.
    """

    def __init__(self, ctx: Any, axil: Any, timeout: int = 60) -> None:
        self.ctx, self.axil, self.timeout = ctx, axil, timeout

    async def write(self, addr: int, data: int, strb: int = 0xF, *, aw_delay: int = 0, w_delay: int = 0,
                    b_delay: int = 0) -> Response:
        """Present AW after ``aw_delay`` cycles and W after ``w_delay``; hold BREADY low ``b_delay`` cycles."""
        ctx, axil = self.ctx, self.axil
        aw_done = w_done = False
        cycle = 0
        while not (aw_done and w_done):
            aw_on = not aw_done and cycle >= aw_delay
            w_on = not w_done and cycle >= w_delay
            ctx.set(axil.awvalid, aw_on)
            ctx.set(axil.awaddr, addr)
            ctx.set(axil.wvalid, w_on)
            ctx.set(axil.wdata, data)
            ctx.set(axil.wstrb, strb)
            aw_fire = aw_on and ctx.get(axil.awready)
            w_fire = w_on and ctx.get(axil.wready)
            assert not ctx.get(axil.bvalid), "BVALID before both AW and W were accepted"
            await ctx.tick()
            aw_done, w_done = aw_done or aw_fire, w_done or w_fire
            if aw_done and not w_done:
                assert not ctx.get(axil.awready), "AWREADY must stay low while a write is outstanding"
            if w_done and not aw_done:
                assert not ctx.get(axil.wready), "WREADY must stay low while a write is outstanding"
            cycle += 1
            assert cycle < self.timeout, "AW/W never accepted"
        ctx.set(axil.awvalid, 0)
        ctx.set(axil.wvalid, 0)
        (resp,) = await self.response(axil.bvalid, axil.bready, (axil.bresp,), b_delay)
        return resp

    async def read(self, addr: int, *, r_delay: int = 0) -> tuple[int, Response]:
        """Read a word; hold RREADY low ``r_delay`` cycles after RVALID."""
        ctx, axil = self.ctx, self.axil
        ctx.set(axil.arvalid, 1)
        ctx.set(axil.araddr, addr)
        cycle = 0
        while True:
            fire = ctx.get(axil.arready)
            await ctx.tick()
            cycle += 1
            if fire:
                break
            assert cycle < self.timeout, "AR never accepted"
        ctx.set(axil.arvalid, 0)
        resp, data = await self.response(axil.rvalid, axil.rready, (axil.rresp, axil.rdata), r_delay)
        return data, resp

    async def response(self, valid: Any, ready: Any, payload: tuple[Any, ...], delay: int) -> tuple[Any, ...]:
        ctx = self.ctx
        ctx.set(ready, 0)
        cycle = 0
        while not ctx.get(valid):
            await ctx.tick()
            cycle += 1
            assert cycle < self.timeout, "no response"
        held = tuple(ctx.get(p) for p in payload)
        for _ in range(delay):
            await ctx.tick()
            assert ctx.get(valid), "VALID dropped before READY"
            assert tuple(ctx.get(p) for p in payload) == held, "response changed while waiting for READY"
        ctx.set(ready, 1)
        await ctx.tick()
        ctx.set(ready, 0)
        assert not ctx.get(valid), "VALID must drop after the handshake (one outstanding transaction)"
        return held
