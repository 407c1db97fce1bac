"""Row DACs and solution ADCs: quantization, static errors, noise, timing.

Code convention (offset binary, shared by the RTL, the golden model and the host): an
N-bit converter over [v_min_v, v_max_v] has ``lsb_v = (v_max_v - v_min_v) / 2**N`` and
code c stands for ``v_min_v + c * lsb_v``, c = 0 .. 2**N - 1. With a symmetric range the
mid code 2**(N-1) is exactly 0 V, so a zero entry of b is driven as 0 V and x = 0 reads
back as the mid code. The top code sits one LSB below v_max_v.

``bits=None`` is the ideal converter of the ``ideal`` preset: no quantization, and its
"codes" are the voltages themselves (floats), clipped to the range.

Static errors are drawn once per channel from the Generator passed in: an offset (V), a
relative gain error (applied about 0 V), and a smooth bow-shaped INL that is zero at both
ends (endpoint definition). The ADC also has random per-code widths (DNL) and per-
conversion input-referred noise. Sources of the defaults: docs/model-circuit.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._fields import below_one as _below_one
from ._fields import integer as _integer
from ._fields import non_negative as _non_negative
from ._fields import positive as _positive
from ._fields import real as _real

__all__ = ["DACConfig", "ADCConfig", "DAC", "ADC"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Widest converter the model accepts (the ADC keeps a 2**bits table per channel).
MAX_BITS = 16


def _bits(obj: Any) -> int | None:
    value = obj.bits
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= MAX_BITS:
        raise ValueError(
            f"{type(obj).__name__}.bits must be an integer from 1 to {MAX_BITS}, or None for an "
            f"ideal converter without quantization; got {value!r}")
    object.__setattr__(obj, "bits", int(value))
    return int(value)


def _range(obj: Any) -> None:
    low, high = _real(obj, "v_min_v"), _real(obj, "v_max_v")
    if not low < high:
        raise ValueError(
            f"{type(obj).__name__} needs v_min_v < v_max_v; got {low!r} and {high!r}")


def _lsb_fields_need_bits(obj: Any, names: tuple[str, ...]) -> None:
    """Errors given in LSB have no meaning without an LSB: the ideal converter has none."""
    if obj.bits is not None:
        return
    for name in names:
        if getattr(obj, name) != 0.0:
            raise ValueError(
                f"{type(obj).__name__}.{name} must be 0 when bits is None (an ideal converter "
                f"has no LSB); got {getattr(obj, name)!r}")


# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DACConfig:
    """Row DACs (one per crossbar row). Defaults: the realistic ``rram-3bit`` preset.

    Units are in the names (``_v`` volts, ``_s`` seconds, ``_lsb`` LSBs); ``_std`` fields
    are standard deviations of per-channel draws.
    """

    #: Resolution; None = ideal (no quantization, codes are volts).
    bits: int | None = 10
    #: Output range (V). Bipolar so that refinement residuals (signed) can be driven.
    v_min_v: float = -1.0
    v_max_v: float = 1.0
    #: Per-channel offset, std (V). AD5310R: +-1.5 mV max (trimmed part); assumption:
    #: an untrimmed on-chip buffer is of the same order.
    offset_std_v: float = 1.0e-3
    #: Per-channel relative gain error, std. AD5316R: +-0.1 % FSR max; assumption: 0.2 %
    #: untrimmed.
    gain_error_std: float = 2.0e-3
    #: Bow-shaped INL: each channel's amplitude is drawn uniformly in +-inl_lsb.
    #: AD5310R: +-0.5 LSB max.
    inl_lsb: float = 0.5
    #: Output settling time after LDAC (s). Assumption for an on-chip buffered string DAC
    #: driving one crossbar row (a few pF).
    settle_time_s: float = 500e-9

    def __post_init__(self) -> None:
        _bits(self)
        _range(self)
        for name in ("offset_std_v", "inl_lsb", "settle_time_s"):
            _non_negative(self, name)
        _below_one(self, "gain_error_std")
        _lsb_fields_need_bits(self, ("inl_lsb",))

    @classmethod
    def ideal(cls) -> "DACConfig":
        """No quantization and no static errors; the realistic settling time is kept."""
        return cls(bits=None, offset_std_v=0.0, gain_error_std=0.0, inl_lsb=0.0)

    @classmethod
    def pessimistic(cls) -> "DACConfig":
        """Several times the realistic errors, slower settling."""
        return cls(offset_std_v=5.0e-3, gain_error_std=1.0e-2, inl_lsb=2.0, settle_time_s=2e-6)

    def replace(self, **changes: Any) -> "DACConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ADCConfig:
    """Solution ADCs (SAR, one per solution column or muxed). Defaults: ``rram-3bit``."""

    #: Resolution; None = ideal (no quantization, codes are volts).
    bits: int | None = 10
    #: Input range (V). Bipolar: free-mode (refinement) solutions are signed, and clamped
    #: outputs sit a clamp drop below 0 V. Inside the op-amp rails, so a saturated
    #: output reads as over-range.
    v_min_v: float = -1.0
    v_max_v: float = 1.0
    #: Per-channel offset, std (V). MCP3008 (10-bit SAR): +-1.5 LSB max.
    offset_std_v: float = 1.0e-3
    #: Per-channel relative gain error, std. MCP3008: +-1 LSB max (0.1 %); assumption:
    #: 0.2 % untrimmed on chip.
    gain_error_std: float = 2.0e-3
    #: Bow-shaped INL amplitude bound (LSB). MCP3008: +-0.5 LSB typical.
    inl_lsb: float = 0.5
    #: Random code widths: every transition level is displaced uniformly within
    #: +-dnl_lsb/2, so code widths lie in 1 +- dnl_lsb. MCP3008: +-0.25 LSB typical.
    dnl_lsb: float = 0.25
    #: Input-referred noise per conversion, rms (LSB). Assumption (comparator and kT/C).
    noise_lsb: float = 0.3
    #: ADC clock cycles per conversion: sampling + one per bit + one to latch.
    #: MCP3008: 1.5 sample + 10 conversion cycles.
    conversion_cycles: int = 12
    #: Time of one conversion (s): 12 cycles of an assumed 10 MHz SAR clock.
    conversion_time_s: float = 1.2e-6

    def __post_init__(self) -> None:
        bits = _bits(self)
        _range(self)
        for name in ("offset_std_v", "inl_lsb", "noise_lsb"):
            _non_negative(self, name)
        _below_one(self, "gain_error_std")
        _below_one(self, "dnl_lsb")
        _integer(self, "conversion_cycles", 1)
        _positive(self, "conversion_time_s")
        _lsb_fields_need_bits(self, ("inl_lsb", "dnl_lsb", "noise_lsb"))
        if bits is not None and self.conversion_cycles < bits:
            raise ValueError(
                "ADCConfig.conversion_cycles must be >= bits (a SAR decides one bit per "
                f"cycle); got {self.conversion_cycles!r} cycles for {bits} bits")

    @classmethod
    def ideal(cls) -> "ADCConfig":
        """No quantization, static errors or noise; the realistic timing is kept."""
        return cls(bits=None, offset_std_v=0.0, gain_error_std=0.0, inl_lsb=0.0, dnl_lsb=0.0,
                   noise_lsb=0.0)

    @classmethod
    def pessimistic(cls) -> "ADCConfig":
        """Several times the realistic errors, a slower clock."""
        return cls(offset_std_v=5.0e-3, gain_error_std=1.0e-2, inl_lsb=2.0, dnl_lsb=0.75,
                   noise_lsb=1.0, conversion_cycles=14, conversion_time_s=2.8e-6)

    def replace(self, **changes: Any) -> "ADCConfig":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------------------


def _check_channel_count(channels: Any, kind: str) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"{kind} channels must be an integer >= 1; got {channels!r}")
    return int(channels)


def _check_rng(rng: Any, kind: str) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{kind} needs a numpy.random.Generator; got {type(rng).__name__}")
    return rng


def _channel_index(n_channels: int, shape: tuple[int, ...], channels: ArrayLike | None,
                   kind: str) -> IntArray:
    """Channel number of every element of an input of the given shape.

    channels=None: axis 0 of the input runs over all channels in order. Otherwise an
    integer array broadcastable to the input's shape.
    """
    if channels is None:
        if len(shape) == 0 or shape[0] != n_channels:
            raise ValueError(
                f"{kind} input must have {n_channels} entries along axis 0 (one per channel) "
                f"when channels is None; got shape {shape}")
        index = np.arange(n_channels).reshape((n_channels,) + (1,) * (len(shape) - 1))
        return np.broadcast_to(index, shape)
    index = np.asarray(channels)
    if index.dtype.kind not in "iu":
        raise ValueError(f"{kind} channels must be integers; got dtype {index.dtype}")
    if index.size and (index.min() < 0 or index.max() >= n_channels):
        raise ValueError(
            f"{kind} channels must be in 0..{n_channels - 1}; got values from {index.min()} "
            f"to {index.max()}")
    try:
        return np.broadcast_to(index, shape).astype(np.int64)
    except ValueError:
        raise ValueError(
            f"{kind} channels of shape {index.shape} do not broadcast to the input's shape "
            f"{shape}") from None


def _bow(position: FloatArray) -> FloatArray:
    """Unit bow: 0 at both ends of [0, 1], 1 in the middle."""
    return 4.0 * position * (1.0 - position)


class _Converter:
    """What the DAC and ADC share: the code convention and the per-channel static errors."""

    _kind = "converter"

    def __init__(self, channels: int, config: DACConfig | ADCConfig, rng: np.random.Generator):
        self._channels = _check_channel_count(channels, self._kind)
        self._rng = _check_rng(rng, self._kind)
        self._config = config
        self.offset_v: FloatArray = rng.normal(0.0, config.offset_std_v, self._channels)
        self.gain_error: FloatArray = rng.normal(0.0, config.gain_error_std, self._channels)
        #: Each channel's INL bow amplitude (LSB), uniform in +-inl_lsb.
        self.inl_amplitude_lsb: FloatArray = rng.uniform(-1.0, 1.0, self._channels) \
            * config.inl_lsb

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def bits(self) -> int | None:
        return self._config.bits

    @property
    def lsb_v(self) -> float:
        """One code step (V); 0.0 for the ideal converter (no quantization)."""
        if self._config.bits is None:
            return 0.0
        return (self._config.v_max_v - self._config.v_min_v) / 2 ** self._config.bits

    @property
    def full_scale_code(self) -> int | None:
        """Largest code, 2**bits - 1 (None for the ideal converter)."""
        return None if self._config.bits is None else 2 ** self._config.bits - 1

    def _check_codes(self, codes: ArrayLike) -> NDArray[Any]:
        array = np.asarray(codes)
        if self._config.bits is None:
            if array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
                raise ValueError(f"{self._kind} codes must be finite numbers (volts, bits=None)")
            return array.astype(np.float64)
        top = 2 ** self._config.bits - 1
        if array.dtype.kind not in "iu":
            raise ValueError(
                f"{self._kind} codes must be integers from 0 to {top} when bits is "
                f"{self._config.bits}; got dtype {array.dtype}")
        if array.size and (array.min() < 0 or array.max() > top):
            raise ValueError(
                f"{self._kind} codes must be integers from 0 to {top}; got values from "
                f"{array.min()} to {array.max()}")
        return array.astype(np.int64)

    def _ideal_code_for(self, voltage: ArrayLike) -> NDArray[Any]:
        v = np.asarray(voltage, dtype=np.float64)
        c = self._config
        if c.bits is None:
            return np.clip(v, c.v_min_v, c.v_max_v)
        codes = np.rint((v - c.v_min_v) / self.lsb_v)
        return np.clip(codes, 0, 2 ** c.bits - 1).astype(np.int64)

    def _ideal_voltage_of(self, codes: ArrayLike) -> FloatArray:
        array = self._check_codes(codes)
        if self._config.bits is None:
            return array
        return self._config.v_min_v + array * self.lsb_v


class DAC(_Converter):
    """``channels`` DACs with per-channel offset, gain error and bow-shaped INL."""

    _kind = "DAC"

    def __init__(self, channels: int, config: DACConfig, rng: np.random.Generator):
        if not isinstance(config, DACConfig):
            raise ValueError(f"DAC needs a DACConfig; got {type(config).__name__}")
        super().__init__(channels, config, rng)

    @property
    def config(self) -> DACConfig:
        return self._config  # type: ignore[return-value]

    def voltage(self, codes: ArrayLike, channels: ArrayLike | None = None) -> FloatArray:
        """Settled output voltage (V) for the given codes.

        Args:
            codes: integer codes (floats, in volts, only when bits is None).
            channels: None when axis 0 of ``codes`` runs over all channels, else the
                channel number of every code (broadcastable to ``codes``).
        """
        array = self._check_codes(codes)
        index = _channel_index(self._channels, array.shape, channels, "DAC")
        c = self.config
        if c.bits is None:
            ideal = np.clip(array, c.v_min_v, c.v_max_v)
        else:
            position = array / (2 ** c.bits - 1)
            ideal = c.v_min_v + (array + self.inl_amplitude_lsb[index] * _bow(position)) \
                * self.lsb_v
        return (1.0 + self.gain_error[index]) * ideal + self.offset_v[index]

    def code_for(self, voltage: ArrayLike) -> NDArray[Any]:
        """Host side: the nearest code for a wanted voltage (ideal inverse, clipped to the
        range). Integer codes, or clipped volts when bits is None."""
        return self._ideal_code_for(voltage)

    def ideal_voltage(self, codes: ArrayLike) -> FloatArray:
        """Host side: the nominal voltage a code stands for (no channel errors)."""
        return self._ideal_voltage_of(codes)


class ADC(_Converter):
    """``channels`` SAR ADCs with offset, gain error, INL, DNL and per-conversion noise."""

    _kind = "ADC"

    def __init__(self, channels: int, config: ADCConfig, rng: np.random.Generator):
        if not isinstance(config, ADCConfig):
            raise ValueError(f"ADC needs an ADCConfig; got {type(config).__name__}")
        super().__init__(channels, config, rng)
        self._transitions_v: FloatArray | None = None
        if config.bits is not None:
            n_codes = 2 ** config.bits
            k = np.arange(1, n_codes)
            jitter = rng.uniform(-0.5, 0.5, (self._channels, n_codes - 1)) * config.dnl_lsb
            inl = self.inl_amplitude_lsb[:, None] * _bow(k / n_codes)[None, :]
            levels = config.v_min_v + (k - 0.5 + inl + jitter) * self.lsb_v
            if np.any(np.diff(levels, axis=1) <= 0.0):
                raise ValueError(
                    "ADC transition levels are not monotonic: inl_lsb is too large for "
                    f"{config.bits} bits; got inl_lsb={config.inl_lsb!r}")
            # Column 0 (-inf) lets the SAR search index every code uniformly.
            self._transitions_v = np.concatenate(
                [np.full((self._channels, 1), -np.inf), levels], axis=1)
        self._input_range = self.input_range_v()  # the configuration is frozen

    @property
    def config(self) -> ADCConfig:
        return self._config  # type: ignore[return-value]

    @property
    def transitions_v(self) -> FloatArray | None:
        """(channels, 2**bits) input levels where code k-1 turns into k (column 0 is -inf),
        before the channel's gain and offset error; None for the ideal converter."""
        return self._transitions_v

    def input_range_v(self) -> tuple[float, float]:
        """Inputs outside [low, high) are flagged over-range (and the code clipped).

        The range is that of the ideal transfer: code 0 reaches down to half an LSB below
        v_min_v and the top code up to half an LSB below v_max_v.
        """
        c = self.config
        half = 0.5 * self.lsb_v
        return c.v_min_v - half, c.v_max_v - half

    def convert(self, voltages: ArrayLike,
                channels: ArrayLike | None = None) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """Convert input voltages; one noise draw per conversion.

        Args:
            voltages: input voltages (V), any shape.
            channels: None when axis 0 runs over all channels, else the channel number of
                every input (broadcastable).

        Returns:
            (codes, over_range): integer codes (volts when bits is None) and a flag that is
            True where the input was outside the range and the code was clipped.
        """
        v = np.asarray(voltages, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError("ADC input voltages must be finite")
        index = _channel_index(self._channels, v.shape, channels, "ADC")
        c = self.config
        v_in = (1.0 + self.gain_error[index]) * v + self.offset_v[index]
        if c.noise_lsb > 0.0:
            v_in = v_in + self._rng.normal(0.0, c.noise_lsb * self.lsb_v, v.shape)
        if c.bits is None:
            over = (v_in < c.v_min_v) | (v_in > c.v_max_v)
            return np.clip(v_in, c.v_min_v, c.v_max_v), over
        low, high = self.input_range_v()
        over = (v_in < low) | (v_in >= high)
        # Successive approximation: keep each trial bit if the input reaches its level.
        assert self._transitions_v is not None
        codes = np.zeros(v.shape, dtype=np.int64)
        for bit in reversed(range(c.bits)):
            trial = codes | (1 << bit)
            keep = v_in >= self._transitions_v[index, trial]
            codes = np.where(keep, trial, codes)
        return codes, over

    def convert_one(self, voltage: float, channel: int = 0) -> tuple[int | float, bool]:
        """:meth:`convert` of one input on one channel without building arrays (the AFE's
        ADC converts one sample per ``adc_start``): the same arithmetic in the same order,
        the same noise draw, the same code. The SAR search over monotonic levels (checked
        at construction) is the number of levels at or below the input."""
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) \
                or not 0 <= channel < self._channels:
            raise ValueError(f"ADC channel must be an integer from 0 to {self._channels - 1}; "
                             f"got {channel!r}")
        v = float(voltage)
        if not math.isfinite(v):
            raise ValueError("ADC input voltages must be finite")
        c = self.config
        v_in = (1.0 + self.gain_error[channel]) * v + self.offset_v[channel]
        if c.noise_lsb > 0.0:
            v_in = v_in + self._rng.normal(0.0, c.noise_lsb * self.lsb_v)
        if c.bits is None:
            return float(min(max(v_in, c.v_min_v), c.v_max_v)), bool(v_in < c.v_min_v
                                                                       or v_in > c.v_max_v)
        low, high = self._input_range
        assert self._transitions_v is not None
        # Column 0 is -inf: it counts once for every input, as code 0.
        code = int(np.searchsorted(self._transitions_v[channel], v_in, side="right")) - 1
        return code, bool(v_in < low or v_in >= high)

    def voltage_of(self, codes: ArrayLike) -> FloatArray:
        """Host side: the nominal voltage a code stands for (ideal inverse)."""
        return self._ideal_voltage_of(codes)
