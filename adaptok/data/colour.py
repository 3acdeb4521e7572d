"""Colour handling of decoded frames: alpha compositing, HDR tone mapping, gamut mapping.

Every frame the suite stores or feeds a network is 8-bit SDR RGB in BT.709 primaries. Sources
that are not (an alpha channel, HDR10 / HLG transfer, BT.2020 primaries) are converted here
with a named method, and the conversion is reported so the writer can record it:

* alpha: composited over a stated background colour (default black);
* HDR (PQ, SMPTE ST 2084; HLG, ARIB STD-B67): ITU-R BT.2390 EETF on max(R, G, B) in the PQ
  domain from a 1000-nit source peak to a 100-nit SDR peak, BT.2020 -> BT.709 primaries, then
  the inverse of the BT.1886 display gamma (2.4); HLG is first turned into display light with
  the BT.2100 OOTF at 1000 nits;
* BT.2020 primaries with an SDR transfer: gamut mapping to BT.709 (linear light, clipped).

Work is done on row bands of at most :data:`BAND_ROWS` rows, so a 4K frame never needs more
than a few megabytes of float temporaries.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BAND_ROWS",
    "HDR_TRANSFERS",
    "TONE_MAPPING",
    "composite_alpha",
    "hdr_to_sdr",
    "parse_background",
    "transfer_name",
    "primaries_name",
    "matrix_name",
    "range_name",
]

BAND_ROWS = 64
"""Rows converted at a time (bounds the float temporaries of a large frame)."""

TONE_MAPPING = "bt2390-eetf(1000->100 nits)+bt2020->bt709+gamma2.4"
"""Name of the HDR -> SDR conversion, recorded in a clip's metadata."""

HDR_TRANSFERS = {16: "smpte2084", 18: "arib-std-b67"}
"""FFmpeg transfer characteristics treated as HDR (PQ, HLG)."""

_TRANSFERS = {
    1: "bt709",
    2: "unspecified",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
_PRIMARIES = {1: "bt709", 2: "unspecified", 5: "bt470bg", 6: "smpte170m", 9: "bt2020"}
_MATRICES = {0: "rgb", 1: "bt709", 2: "unspecified", 5: "bt470bg", 6: "smpte170m", 9: "bt2020nc"}
_RANGES = {0: "unspecified", 1: "tv", 2: "pc"}

_BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}

# SMPTE ST 2084 (PQ) constants.
_M1, _M2 = 2610 / 16384, 2523 / 4096 * 128
_C1, _C2, _C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
# ARIB STD-B67 (HLG) constants.
_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4 * _HLG_A)
_SOURCE_PEAK, _TARGET_PEAK = 1000.0, 100.0
_BT2020_TO_BT709 = np.array(
    [
        [1.660491, -0.587641, -0.072850],
        [-0.124550, 1.132900, -0.008349],
        [-0.018151, -0.100579, 1.118730],
    ],
    dtype=np.float32,
)
_BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593], dtype=np.float32)


def transfer_name(code: int) -> str:
    """FFmpeg name of a transfer characteristic code."""
    return _TRANSFERS.get(int(code), f"trc{int(code)}")


def primaries_name(code: int) -> str:
    """FFmpeg name of a colour primaries code."""
    return _PRIMARIES.get(int(code), f"primaries{int(code)}")


def matrix_name(code: int) -> str:
    """FFmpeg name of a colour matrix (colorspace) code."""
    return _MATRICES.get(int(code), f"matrix{int(code)}")


def range_name(code: int) -> str:
    """FFmpeg name of a colour range code (``tv`` limited, ``pc`` full)."""
    return _RANGES.get(int(code), f"range{int(code)}")


def parse_background(value: str | tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """A background colour from ``black``/``white``/``gray``, ``#RRGGBB`` or ``R,G,B``.

    Raises:
        ValueError: Not one of those forms (the message names the value).
    """
    if isinstance(value, tuple | list):
        parts = [int(v) for v in value]
    else:
        text = str(value).strip().lower()
        if text in _BACKGROUNDS:
            return _BACKGROUNDS[text]
        try:
            if text.startswith("#") and len(text) == 7:
                parts = [int(text[i : i + 2], 16) for i in (1, 3, 5)]
            else:
                parts = [int(p) for p in text.split(",")]
        except ValueError:
            parts = []
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(
            f"background colour {value!r} is not black, white, gray, #RRGGBB or R,G,B (0..255)"
        )
    return parts[0], parts[1], parts[2]


def composite_alpha(rgba: np.ndarray, background: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """Composite an ``(H, W, 4)`` uint8 RGBA frame over a solid background.

    Returns:
        ``(H, W, 3)`` uint8 RGB and whether any pixel was not fully opaque.
    """
    alpha = rgba[..., 3:4]
    if bool(alpha.min() == 255):
        return np.ascontiguousarray(rgba[..., :3]), False
    out = np.empty(rgba.shape[:2] + (3,), dtype=np.uint8)
    back = np.asarray(background, dtype=np.uint16)
    for top in range(0, rgba.shape[0], BAND_ROWS):
        band = slice(top, top + BAND_ROWS)
        a = alpha[band].astype(np.uint16)
        mixed = rgba[band, :, :3].astype(np.uint16) * a + back * (255 - a) + 127
        out[band] = (mixed // 255).astype(np.uint8)
    return out, True


def _pq_to_nits(signal: np.ndarray) -> np.ndarray:
    power = np.power(np.clip(signal, 0.0, 1.0), 1.0 / _M2)
    return 10000.0 * np.power(np.maximum(power - _C1, 0.0) / (_C2 - _C3 * power), 1.0 / _M1)


def _nits_to_pq(nits: np.ndarray) -> np.ndarray:
    y = np.power(np.clip(nits / 10000.0, 0.0, 1.0), _M1)
    return np.power((_C1 + _C2 * y) / (1.0 + _C3 * y), _M2)


def _hlg_to_nits(signal: np.ndarray) -> np.ndarray:
    """HLG signal -> display light (BT.2100 inverse OETF, then OOTF at a 1000-nit peak)."""
    e = np.clip(signal, 0.0, 1.0)
    low = e * e / 3.0
    high = (np.exp((e - _HLG_C) / _HLG_A) + _HLG_B) / 12.0
    scene = np.where(e <= 0.5, low, high)
    luma = np.maximum(scene @ _BT2020_LUMA, 1e-6)[..., None]
    return _SOURCE_PEAK * np.power(luma, 0.2) * scene


def _eetf(nits: np.ndarray) -> np.ndarray:
    """ITU-R BT.2390 EETF: source [0, 1000] nits -> target [0, 100] nits (PQ domain)."""
    source_max = float(_nits_to_pq(np.float32(_SOURCE_PEAK)))
    max_lum = float(_nits_to_pq(np.float32(_TARGET_PEAK))) / source_max
    knee = 1.5 * max_lum - 0.5
    e1 = np.minimum(_nits_to_pq(nits) / source_max, 1.0)
    t = np.clip((e1 - knee) / (1.0 - knee), 0.0, 1.0)
    t2, t3 = t * t, t * t * t
    spline = (
        (2 * t3 - 3 * t2 + 1) * knee + (t3 - 2 * t2 + t) * (1 - knee) + (-2 * t3 + 3 * t2) * max_lum
    )
    e2 = np.where(e1 < knee, e1, spline)
    return _pq_to_nits(e2 * source_max)


def hdr_to_sdr(rgb48: np.ndarray, transfer: int, primaries: int) -> np.ndarray:
    """Convert ``(H, W, 3)`` uint16 non-linear R'G'B' to 8-bit SDR BT.709 RGB.

    Args:
        rgb48: R'G'B' in 0..65535 (swscale's ``rgb48le`` output of the source).
        transfer: Source transfer characteristic (16 PQ, 18 HLG; others: SDR, gamma 2.4).
        primaries: Source primaries (9 = BT.2020 is mapped to BT.709; others kept).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    out = np.empty(rgb48.shape, dtype=np.uint8)
    wide = int(primaries) == 9
    for top in range(0, rgb48.shape[0], BAND_ROWS):
        band = rgb48[top : top + BAND_ROWS].astype(np.float32) / np.float32(65535.0)
        if transfer == 16 or transfer == 18:
            nits = _pq_to_nits(band) if transfer == 16 else _hlg_to_nits(band)
            peak = np.maximum(nits.max(axis=-1, keepdims=True), 1e-6)
            nits = nits * (_eetf(peak) / peak)
            linear = nits / np.float32(_TARGET_PEAK)
        else:
            linear = np.power(band, np.float32(2.4))
        if wide:
            linear = linear @ _BT2020_TO_BT709.T
        signal = np.power(np.clip(linear, 0.0, 1.0), np.float32(1 / 2.4))
        out[top : top + BAND_ROWS] = np.round(signal * 255.0).astype(np.uint8)
    return out
