"""The model's scalar fast paths give the general (array) paths' results bit for bit, and
the staged controls apply exactly as apply_controls does (model/afe.py, device.py,
converters.py, circuit.py); the direct AXI4-Lite master's option check (testbench/axi_bus.py).
The cocotb binding itself is covered by tests/test_afe_binding.py and the scenarios."""
from __future__ import annotations

import re

import numpy as np
import pytest

from anmf.model.afe import AnalogFrontEnd, Mode
from anmf.model.config import preset
from anmf.model.converters import ADC
from anmf.model.device import RESET, SET, DeviceArray

NS = 1e-9
SMALL = dict(rows=8, cols=4, spare=1, dac_bits=10, adc_bits=10)


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_adc_convert_one_equals_convert_with_noise_and_over_range():
    config = preset("rram-3bit").adc.replace(bits=10)
    assert config.noise_lsb > 0
    one, many = ADC(1, config, np.random.default_rng(3)), ADC(1, config, np.random.default_rng(3))
    low, high = one.input_range_v()
    voltages = np.concatenate([np.random.default_rng(4).uniform(low - 0.1, high + 0.1, 400),
                               [low, high, 0.0]])
    for v in voltages:
        codes, over = many.convert(np.array([v]))
        assert one.convert_one(float(v)) == (int(codes[0]), bool(over[0])), v


def test_adc_convert_one_checks_its_arguments():
    adc = ADC(2, preset("rram-3bit").adc.replace(bits=8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=exact("ADC channel must be an integer from 0 to 1; got 2")):
        adc.convert_one(0.1, 2)
    with pytest.raises(ValueError, match=exact("ADC input voltages must be finite")):
        adc.convert_one(float("nan"))


def test_device_pulse_on_one_cell_equals_the_array_path():
    config = preset("rram-3bit").device.replace(stuck_high_rate=0.1, stuck_low_rate=0.1)
    scalar = DeviceArray((6, 5), config, np.random.default_rng(7))
    array = DeviceArray((6, 5), config, np.random.default_rng(7))
    draws = np.random.default_rng(8)
    for _ in range(300):
        row, col = int(draws.integers(0, 6)), int(draws.integers(0, 5))
        polarity = SET if draws.random() < 0.6 else RESET
        amplitude, width = float(draws.uniform(0.0, 2.0)), float(draws.uniform(10e-9, 200e-9))
        scalar.pulse(row, col, polarity, amplitude, width)
        array.pulse(np.array([row]), np.array([col]), np.array([polarity]),
                    np.array([amplitude]), np.array([width]))
    assert np.array_equal(scalar.conductance_s, array.conductance_s)
    assert scalar.stuck_mask.any()


def test_device_pulse_on_one_cell_keeps_the_array_paths_errors():
    cells = DeviceArray((2, 2), preset("rram-3bit").device, np.random.default_rng(0))
    with pytest.raises(ValueError, match=exact("rows must be in [0, 1]; got values from 2 to 2")):
        cells.pulse(2, 0, SET, 1.5, 100e-9)
    with pytest.raises(ValueError, match=exact("width_s must be finite and > 0 (s)")):
        cells.pulse(0, 0, SET, 1.5, 0.0)


def _solving_afe() -> AnalogFrontEnd:
    afe = AnalogFrontEnd(preset("rram-3bit"), **SMALL)
    levels = afe.config.device.level_targets_s()
    afe.set_conductances(levels[np.random.default_rng(1).integers(1, levels.size, (8, 5))], 0.0)
    for row in range(8):
        afe.write_dac(row, 600 + 40 * row)
    afe.load_dacs(10 * NS)
    return afe


def test_staged_controls_apply_as_apply_controls_at_their_time():
    staged, direct = _solving_afe(), _solving_afe()
    solve = dict(mode=int(Mode.SOLVE), loop=1, row_en=0xFF, col_en=0x0F)
    # Changes of one time step staged one by one, then a conversion later on.
    for name, value in solve.items():
        staged.stage_controls(200 * NS, **{name: value})
    direct.apply_controls(200 * NS, **solve, cell_row=0, cell_col=0, cal_ref_sel=0)
    samples = [(col, t * NS) for t in (260, 400, 900) for col in range(4)]
    codes = [staged.convert(col, t) for col, t in samples]
    assert codes == [direct.convert(col, t) for col, t in samples]
    assert len(set(codes)) > 4  # the transient moves and the columns differ
    # A later step's change commits the earlier one; queries commit too.
    staged.stage_controls(1000 * NS, mode=int(Mode.READ_CELL), cell_row=3, cell_col=2)
    staged.stage_controls(1000 * NS, loop=0)
    assert staged.mode == Mode.READ_CELL and not staged.loop_closed
    direct.apply_controls(1000 * NS, mode=int(Mode.READ_CELL), loop=0, row_en=0xFF, col_en=0x0F,
                          cell_row=3, cell_col=2)
    assert staged.convert(0, 1030 * NS) == direct.convert(0, 1030 * NS)


def test_staged_controls_check_names_and_time():
    afe = AnalogFrontEnd(preset("rram-3bit"), **SMALL)
    with pytest.raises(ValueError, match=exact(
            "unknown AFE controls ['loops']; accepted: mode, loop, row_en, col_en, cell_row, "
            "cell_col, cal_ref_sel")):
        afe.stage_controls(0.0, loops=1)
    afe.convert(0, 50 * NS)
    with pytest.raises(ValueError, match=exact(
            "AnalogFrontEnd time must not go backwards: got 2e-08 s after 5e-08 s")):
        afe.stage_controls(20 * NS, mode=1)
    # A bad value surfaces (with apply_controls' message) when the model applies it.
    afe.stage_controls(60 * NS, mode=9)
    with pytest.raises(ValueError, match=exact(
            "AnalogFrontEnd mode must be an integer from 0 to 6; got 9")):
        afe.commit_controls()


def test_transient_at_one_time_equals_the_general_path():
    afe = _solving_afe()
    afe.apply_controls(200 * NS, mode=int(Mode.SOLVE), loop=1, row_en=0xFF, col_en=0x0F)
    transient = afe.solution().transient(0)
    assert transient.phases > 1  # a clamp event: more than one phase to pick from
    times = np.concatenate([[0.0], np.geomspace(1e-10, 5e-6, 40), transient.event_times_s])
    for t in times:
        # A one-element time vector takes the general path (grouping by phase), which is
        # what a scalar time took before its fast path.
        one = transient.state_at(float(t))
        assert one.shape == (4,) and np.array_equal(one, transient.state_at(np.array([t]))[:, 0]), t


def test_axi_bus_rejects_an_unknown_master():
    from anmf.testbench.axi_bus import AxiLiteRegisterBus

    with pytest.raises(ValueError, match=exact(
            "master must be one of direct, cocotbext-axi; got 'fast'")):
        AxiLiteRegisterBus(None, None, None, master="fast")


@pytest.mark.parametrize("ir_drop", [False, True])
def test_crossbar_one_cell_read_equals_the_array_read(ir_drop: bool):
    from anmf.model.crossbar import Crossbar

    config = preset("rram-3bit")
    crossbar_config = config.crossbar.replace(rows=8, cols=4, spare=1, ir_drop=ir_drop)
    one, many = (Crossbar(crossbar_config, config.device, np.random.default_rng(7)) for _ in range(2))
    cells = np.random.default_rng(8).integers(0, (8, 5), size=(50, 2))
    for row, col in cells:
        expected = many.read(np.array(row), np.array(col))   # the array path (0-d index arrays)
        assert one.read(int(row), int(col)) == expected
    assert one.read(7, 4) == many.read(np.array(7), np.array(4))
