"""The AFE configuration tree: presets, TOML loading, and the messages for bad files."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from anmf.model.config import PRESETS, AFEConfig, ConfigError, load_config, preset, resolve_afe


def test_presets_differ_in_the_expected_direction() -> None:
    ideal, real, bad = preset("ideal"), preset("rram-3bit"), preset("pessimistic")
    assert set(PRESETS) == {"ideal", "rram-3bit", "pessimistic"}
    assert ideal.exact_programming and not real.exact_programming
    assert ideal.device.read_noise_rel == 0 < real.device.read_noise_rel < bad.device.read_noise_rel
    assert ideal.dac.bits is None and real.adc.bits == 10
    assert math.isinf(ideal.circuit.opamp_gain) and bad.circuit.opamp_gain < real.circuit.opamp_gain
    assert real.device.g_min_s == 0.5e-6 and real.device.g_max_s == 35e-6 and real.device.levels == 8
    assert AFEConfig() == real.replace(name="rram-3bit")


def test_toml_overrides_one_field_of_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text('preset = "pessimistic"\nseed = 7\nexact_programming = true\n'
                    '[adc]\nbits = 8\n[device]\nread_noise_rel = 0.02\n')
    config = load_config(path)
    assert config.name == "board" and config.seed == 7 and config.exact_programming
    assert config.adc.bits == 8 and config.device.read_noise_rel == 0.02
    assert config.circuit == preset("pessimistic").circuit
    assert resolve_afe(str(path)) == config


@pytest.mark.parametrize(
    "text, message",
    [
        ("[adcc]\nbits = 8\n", "unknown section [adcc]; accepted: preset, seed, exact_programming, [device]"),
        ("[adc]\nbitz = 8\n", "unknown key adc.bitz in AFE config; accepted in [adc]: bits,"),
        ("[adc]\nbits = -3\n", "invalid value in [adc]: ADCConfig.bits"),
        ('preset = "best"\n', "unknown AFE preset 'best'; accepted: ideal, rram-3bit, pessimistic"),
        ("seed = -1\n", "'seed' must be a non-negative integer, got -1"),
        ("adc = 3\n", "[adc] must be a table of key = value pairs"),
        ("[adc\n", "is not valid TOML"),
    ],
)
def test_bad_toml_is_reported_with_what_is_accepted(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_unknown_preset_and_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"unknown AFE preset 'x'; accepted: ideal, rram-3bit, pessimistic or a path"):
        resolve_afe("x")
    with pytest.raises(ConfigError, match=r"cannot read AFE config 'nope.toml'"):
        resolve_afe("nope.toml")
