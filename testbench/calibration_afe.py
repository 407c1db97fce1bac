"""The AFE model the CALIBRATE benches put behind the controller: one definition for the
cocotb controller bench (testbench/bench_controller.py) and the amaranth.sim one
(tests/test_controller_calibration.py, which tests/test_host_driver.py reuses)."""
from __future__ import annotations

import numpy as np

from anmf.model.afe import AnalogFrontEnd, BuildParamsLike
from anmf.model.config import preset

__all__ = ["calibration_afe"]


def calibration_afe(params: BuildParamsLike, *, faulty: bool) -> AnalogFrontEnd:
    """rram-3bit (seed 3, deterministic, 100 MHz clock, a 30 ns ADC for short runs), every cell
    at a random level above the lowest; ``faulty``: ADC +50 mV (5 % of the 1 V full scale) and
    +5 % gain, every DAC -50 mV and -5 %."""
    config = preset("rram-3bit").replace(seed=3)
    config = config.replace(adc=config.adc.replace(conversion_time_s=30e-9))
    afe = AnalogFrontEnd.from_build_params(config, params, deterministic=True, clock_hz=100e6)
    levels = afe.config.device.level_targets_s()
    afe.set_conductances(levels[np.random.default_rng(1).integers(1, levels.size,
                                                                  (afe.rows, afe.total_cols))], 0.0)
    if faulty:
        afe.adc.offset_v[:], afe.adc.gain_error[:] = 0.05, 0.05
        afe.dac.offset_v[:], afe.dac.gain_error[:] = -0.05, -0.05
    return afe
