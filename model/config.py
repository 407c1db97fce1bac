"""One configuration tree for the analog front end, loadable from TOML, with named presets.

Every block of the analog model owns its own frozen dataclass (defaults = the realistic
``rram-3bit`` preset, plus ``ideal()`` and ``pessimistic()``); this module only composes
them. A TOML file names a preset to start from and overrides single fields::

    preset = "rram-3bit"      # optional, default "rram-3bit"
    seed = 7                  # optional

    [device]
    read_noise_rel = 0.02

    [adc]
    bits = 8
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .circuit import CircuitConfig
from .converters import ADCConfig, DACConfig
from .crossbar import CrossbarConfig
from .device import DeviceConfig, WriteVerifyConfig

__all__ = ["AFEConfig", "PRESETS", "ConfigError", "preset", "load_config", "resolve_afe"]


class ConfigError(ValueError):
    """A preset name or TOML file that cannot be used; the message says what is accepted."""


@dataclass(frozen=True)
class AFEConfig:
    """The whole analog front end: device, crossbar, closed-loop circuit and converters."""

    name: str = "rram-3bit"
    seed: int = 0
    device: DeviceConfig = field(default_factory=DeviceConfig)
    crossbar: CrossbarConfig = field(default_factory=CrossbarConfig)
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    dac: DACConfig = field(default_factory=DACConfig)
    adc: ADCConfig = field(default_factory=ADCConfig)
    #: Write-verify parameters the controller uses to program the crossbar.
    programming: WriteVerifyConfig = field(default_factory=WriteVerifyConfig)
    #: True: cells are set to their targets exactly (an oracle programmer, for the ``ideal``
    #: preset); False: write-verify through the device model.
    exact_programming: bool = False

    def replace(self, **changes: Any) -> "AFEConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = {
    "device": DeviceConfig,
    "crossbar": CrossbarConfig,
    "circuit": CircuitConfig,
    "dac": DACConfig,
    "adc": ADCConfig,
    "programming": WriteVerifyConfig,
}


def _build(name: str, variant: str) -> AFEConfig:
    parts = {}
    for section, cls in _SECTIONS.items():
        make = getattr(cls, variant, None) if variant != "default" else None
        parts[section] = make() if make is not None else cls()
    return AFEConfig(name=name, exact_programming=(variant == "ideal"), **parts)


#: Preset name -> which constructor of every block's config it uses.
PRESETS: dict[str, str] = {
    "ideal": "ideal",
    "rram-3bit": "default",
    "pessimistic": "pessimistic",
}


def preset(name: str) -> AFEConfig:
    """The configuration of a named preset (see ``PRESETS``)."""
    if name not in PRESETS:
        raise ConfigError(
            f"unknown AFE preset {name!r}; accepted: {', '.join(PRESETS)} or a path to a .toml file"
        )
    return _build(name, PRESETS[name])


def _override(obj: Any, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(obj)}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"unknown key {where}.{key} in AFE config; accepted in [{where}]: {', '.join(known)}"
            )
    try:
        return dataclasses.replace(obj, **values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value in [{where}]: {exc}") from None


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> AFEConfig:
    """Build a configuration from a parsed TOML document (a preset plus overrides)."""
    data = dict(data)
    base = data.pop("preset", "rram-3bit")
    if not isinstance(base, str):
        raise ConfigError(f"{source}: 'preset' must be a string naming one of {', '.join(PRESETS)}")
    config = preset(base).replace(name=Path(source).stem if source != "<dict>" else base)
    if "exact_programming" in data:
        exact = data.pop("exact_programming")
        if not isinstance(exact, bool):
            raise ConfigError(f"{source}: 'exact_programming' must be true or false, got {exact!r}")
        config = config.replace(exact_programming=exact)
    if "seed" in data:
        seed = data.pop("seed")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{source}: 'seed' must be a non-negative integer, got {seed!r}")
        config = config.replace(seed=seed)
    changes = {}
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; accepted: preset, seed, exact_programming, "
                + ", ".join(f"[{s}]" for s in _SECTIONS)
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of key = value pairs")
        changes[section] = _override(getattr(config, section), values, section)
    return config.replace(**changes)


def load_config(path: str | Path) -> AFEConfig:
    """Load a TOML configuration file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read AFE config {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"AFE config {str(path)!r} is not valid TOML: {exc}") from None
    return config_from_dict(data, source=str(path))


def resolve_afe(spec: str | AFEConfig) -> AFEConfig:
    """A preset name, a path to a .toml file, or a configuration (returned as is)."""
    if isinstance(spec, AFEConfig):
        return spec
    if spec in PRESETS:
        return preset(spec)
    if spec.endswith(".toml"):
        return load_config(spec)
    raise ConfigError(
        f"unknown AFE preset {spec!r}; accepted: {', '.join(PRESETS)} or a path to a .toml file"
    )
