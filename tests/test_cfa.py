"""rawdev.cfa: patterns, mosaicking, phase normalization, packing and Quad-Bayer."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rawdev import cfa as cfa_module
from rawdev.cfa import (
    BAYER_NAMES,
    CFA,
    CFAError,
    bin_quad,
    cfa_from_libraw,
    colour_index_map,
    mosaic,
    pack_rggb,
    parse_cfa,
    remosaic_quad,
    to_canonical,
    unpack_rggb,
)
from rawdev.develop import DevelopOptions, develop_mosaic
from rawdev.raw import Mosaic

QUAD_NAMES = tuple(f"quad-{n}" for n in BAYER_NAMES)
ALL_NAMES = BAYER_NAMES + QUAD_NAMES
ODD_AND_EVEN = [(6, 8), (7, 8), (6, 9), (7, 9), (2, 3), (37, 53)]
X_TRANS = np.array([[1, 1, 0, 1, 1, 2], [1, 1, 2, 1, 1, 0], [2, 0, 1, 0, 2, 1],
                    [1, 1, 2, 1, 1, 0], [1, 1, 0, 1, 1, 2], [0, 2, 1, 2, 0, 1]])


def smooth_rgb(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([0.5 + 0.3 * np.sin(x / 9 + y / 13),
                     0.5 + 0.3 * np.cos(x / 11 - y / 7),
                     0.4 + 0.2 * np.sin((x + y) / 10)], axis=-1)


def shaded_rgb(h: int, w: int) -> np.ndarray:
    """Smooth shading times a slowly changing tint: channels that vary together, as in photographs."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    shade = 0.55 + 0.25 * np.sin(x / 5 + y / 7) * np.cos(y / 6 - x / 11)
    tint = np.stack([0.8 + 0.25 * np.sin(x / 40), np.ones_like(x), 0.7 + 0.2 * np.cos(y / 35)], axis=-1)
    return shade[..., None] * tint


def edges_rgb(h: int, w: int) -> np.ndarray:
    """Flat regions with sharp edges: a vertical and a horizontal one, an orange disc and a slanted
    light band, differing in brightness and colour."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = np.empty((h, w, 3))
    rgb[:] = (0.25, 0.3, 0.35)
    rgb[x > 0.8 * w] = (0.7, 0.72, 0.75)
    rgb[y > 0.8 * h] = (0.1, 0.12, 0.1)
    rgb[(x - 0.4 * w) ** 2 + (y - 0.45 * h) ** 2 < (0.25 * h) ** 2] = (0.9, 0.6, 0.3)
    rgb[np.abs(0.8 * (x - 0.55 * w) - 0.6 * (y - 0.5 * h)) < 3] = (0.6, 0.65, 0.7)
    return rgb


def gaussian_remosaic(raw: np.ndarray, quad: CFA) -> np.ndarray:
    """The remosaic rawdev had before (each site that needs another colour gets a Gaussian
    normalized convolution of the nearest samples of it), kept as the baseline to beat."""
    h, w = raw.shape
    src = colour_index_map(quad, h, w)
    dst = colour_index_map(CFA(tuple(map(tuple, quad.array[::2, ::2]))), h, w)
    g = np.exp(-np.arange(-2, 3) ** 2 / 2)
    kernel = np.outer(g, g)

    def smooth(a: np.ndarray) -> np.ndarray:
        p = np.pad(a, 2, mode="reflect")
        return sum(kernel[dy, dx] * p[dy : dy + h, dx : dx + w] for dy in range(5) for dx in range(5))

    out = raw.astype(np.float64)
    for c in range(3):
        need = (dst == c) & (src != c)
        mask = (src == c).astype(np.float64)
        out[need] = (smooth(raw * mask) / np.maximum(smooth(mask), 1e-6))[need]
    return out


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a))))


@pytest.mark.parametrize("name", ALL_NAMES)
def test_parse_gives_the_pattern_it_names(name):
    cfa = parse_cfa(name)
    letters = name.split("-")[-1]
    blocks = cfa.array[::2, ::2] if cfa.kind == "quad" else cfa.array
    assert "".join("RGB"[c] for c in blocks.ravel()) == letters
    assert cfa.period == (4 if name.startswith("quad") else 2)
    assert parse_cfa(name.lower().replace("-", " ")) == cfa  # case and spacing do not matter
    assert parse_cfa(cfa.name) == cfa  # the 4- or 16-letter name reads back


@pytest.mark.parametrize("name", ALL_NAMES)
def test_mosaic_takes_each_sites_colour(name):
    cfa = parse_cfa(name)
    rgb = np.random.default_rng(1).random((9, 11, 3))
    m = mosaic(rgb, cfa)
    colours = colour_index_map(cfa, 9, 11)
    assert m.shape == (9, 11)
    np.testing.assert_array_equal(m, np.take_along_axis(rgb, colours[..., None], axis=2)[..., 0])
    # every colour really appears where the pattern says
    for c in range(3):
        assert (colours == c).any()
        assert (colours[: cfa.period, : cfa.period] == cfa.array).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pack_then_unpack_gives_back_the_mosaic(name):
    m = mosaic(np.random.default_rng(2).random((12, 16, 3)), parse_cfa(name))
    packed = pack_rggb(m)
    assert packed.shape == (6, 8, 4)
    np.testing.assert_array_equal(unpack_rggb(packed), m)
    np.testing.assert_array_equal(pack_rggb(unpack_rggb(packed)), packed)


def test_packing_of_an_rggb_mosaic_is_r_g_g_b():
    cfa = parse_cfa("RGGB")
    colours = pack_rggb(colour_index_map(cfa, 8, 10))
    for plane, colour in enumerate((0, 1, 1, 2)):
        assert (colours[..., plane] == colour).all()


@pytest.mark.parametrize("size", ODD_AND_EVEN, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", BAYER_NAMES)
def test_canonical_is_even_rggb_and_crops_back_exactly(name, size):
    h, w = size
    cfa = parse_cfa(name)
    raw = np.random.default_rng(3).integers(0, 65535, (h, w)).astype(np.uint16)
    padded, canon = to_canonical(raw, cfa)
    assert padded.shape[0] % 2 == 0 and padded.shape[1] % 2 == 0
    assert padded.shape[0] - h <= 2 and padded.shape[1] - w <= 2
    # the padded mosaic is RGGB: padding the map of true colours the same way gives RGGB's map
    true_colours, _ = to_canonical(colour_index_map(cfa, h, w), cfa)
    np.testing.assert_array_equal(true_colours, colour_index_map(parse_cfa("RGGB"), *padded.shape))
    cropped = canon.crop(padded)
    assert cropped.dtype == raw.dtype
    np.testing.assert_array_equal(cropped, raw)
    # at twice the resolution too (the scale the network's output comes at)
    up = np.repeat(np.repeat(padded, 2, 0), 2, 1)
    np.testing.assert_array_equal(canon.crop(up, scale=2), np.repeat(np.repeat(raw, 2, 0), 2, 1))


@pytest.mark.parametrize("size", [(37, 53), (32, 32)], ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", ALL_NAMES)
def test_flat_grey_develops_flat_through_every_phase(bilinear_session, name, size):
    cfa = parse_cfa(name)
    level = 1000
    mos = Mosaic(data=np.full(size, level + 64, np.uint16), cfa=cfa, black=np.full((cfa.period,) * 2, 64.0),
                 white=4095.0, cam_to_srgb=np.eye(3))
    options = DevelopOptions(wb="none", exposure="0", look="neutral", tile=8, overlap=2)
    image = develop_mosaic(mos, bilinear_session, options).image
    h, w = size
    assert image.shape == ((h // 2, w // 2, 3) if cfa.kind == "quad" else (h, w, 3))
    assert int(image.max()) - int(image.min()) <= 1
    expected = np.round(65535 * float(np.asarray(_srgb(level / (4095 - 64)))))
    assert abs(float(image.mean()) - expected) <= 1


def _srgb(x: float) -> float:
    return 12.92 * x if x <= 0.0031308 else 1.055 * x ** (1 / 2.4) - 0.055


@pytest.mark.parametrize(
    "text,words",
    [
        ("RGGX", ["RGGX", "4 letters", "quad-RGGB"]),
        ("RGB", ["RGB", "4 letters", "16 letters"]),
        ("RGGBR", ["RGGBR", "4 letters"]),
        ("RRGB", ["not a Bayer pattern"]),  # two reds: right letters, not Bayer
        ("RGBG", ["not a Bayer pattern"]),  # greens in a column, not on the diagonal
        ("RBGG", ["not a Bayer pattern"]),  # greens in a row
        ("quad-RGGX", ["RGGX"]),
        ("RGGBRGGBRGGBRGGB", ["not made of 2x2 same-colour blocks"]),
    ],
)
def test_parse_errors_say_what_is_wrong_and_what_works(text, words):
    with pytest.raises(CFAError) as info:
        parse_cfa(text)
    message = str(info.value)
    for word in words:
        assert word in message
    assert isinstance(info.value, ValueError)  # the CLI turns ValueErrors into usage errors


def test_libraw_patterns_that_a_bayer_network_cannot_take():
    with pytest.raises(CFAError, match="X-Trans"):
        cfa_from_libraw(X_TRANS, b"RGBG")
    with pytest.raises(CFAError, match="CMYG"):
        cfa_from_libraw(np.array([[0, 1], [3, 2]]), b"CMYG")
    with pytest.raises(CFAError, match="linear or demosaiced"):
        cfa_from_libraw(None, b"RGBG")
    with pytest.raises(CFAError, match="not Bayer"):
        cfa_from_libraw(np.zeros((3, 3), int), b"RGBG")
    # what LibRaw reports for a real Bayer sensor: 4 channels, two greens mapped to G
    assert cfa_from_libraw(np.array([[0, 1], [3, 2]]), b"RGBG") == parse_cfa("RGGB")
    assert cfa_from_libraw(np.array([[3, 2], [0, 1]]), "RGBG") == parse_cfa("GBRG")


@pytest.mark.parametrize("name", BAYER_NAMES)
def test_binning_a_flat_colour_quad_gives_the_bayer_mosaic_of_that_colour(name):
    quad = parse_cfa(f"quad-{name}")
    colour = np.array([0.61, 0.37, 0.22])
    flat = np.broadcast_to(colour, (24, 36, 3))
    binned, bayer = bin_quad(mosaic(flat, quad), quad)
    assert bayer == parse_cfa(name)
    assert binned.shape == (12, 18) and binned.dtype == np.float32
    np.testing.assert_allclose(binned, mosaic(np.broadcast_to(colour, (12, 18, 3)), bayer), rtol=1e-6)


def test_binning_averages_each_block_and_drops_an_odd_edge():
    quad = parse_cfa("quad-RGGB")
    raw = np.arange(7 * 9, dtype=np.uint16).reshape(7, 9)
    binned, _ = bin_quad(raw, quad)
    assert binned.shape == (3, 4)
    assert binned[1, 2] == pytest.approx(raw[2:4, 4:6].mean())
    with pytest.raises(CFAError, match="not a Quad-Bayer"):
        bin_quad(raw, parse_cfa("RGGB"))


@pytest.mark.parametrize("name", BAYER_NAMES)
def test_remosaic_of_a_smooth_image_is_close_to_the_true_bayer_mosaic(name):
    quad = parse_cfa(f"quad-{name}")
    rgb = smooth_rgb(64, 96)
    raw = mosaic(rgb, quad)
    out, bayer = remosaic_quad(raw, quad)
    assert bayer == parse_cfa(name)
    assert out.shape == raw.shape
    truth = mosaic(rgb, bayer)
    err = np.abs(out - truth)
    naive = np.abs(raw - truth)  # taking the Quad samples as if they were Bayer
    # measured: mean 0.0076-0.0091, max 0.049-0.058 for a signal spanning 0.6 (the Gaussian remosaic
    # before: mean 0.006, max 0.064); its three channels vary independently, the one case where
    # colour differences are no smoother than the colours (see the tests below for photographs' case)
    assert err.mean() < 0.01 and err.max() < 0.08
    assert err.mean() < naive.mean() / 10
    # sites whose Quad colour already is the Bayer colour keep their exact value
    keep = colour_index_map(quad, *raw.shape) == colour_index_map(bayer, *raw.shape)
    assert keep.mean() == 6 / 16  # per 4x4 repeat: one R, one B and four G sites
    np.testing.assert_array_equal(out[keep], raw[keep].astype(np.float32))
    assert not np.array_equal(out[~keep], raw[~keep])


# Measured RMS error against the true Bayer mosaic, new / Gaussian, over the four phases and both
# sizes: shaded 0.19-0.28 (new RMS 0.003-0.0043), edges 0.50-0.78 (new RMS 0.032-0.044; the orange
# disc's edge, where blue falls as green rises, is most of what is left).
BEATS_GAUSSIAN = {"shaded": (shaded_rgb, 0.35, 0.006), "edges": (edges_rgb, 0.85, 0.05)}


@pytest.mark.parametrize("size", [(64, 96), (37, 53)], ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("image", BEATS_GAUSSIAN)
@pytest.mark.parametrize("name", BAYER_NAMES)
def test_remosaic_is_closer_to_the_true_bayer_mosaic_than_the_gaussian_one(name, image, size):
    make, ratio, bound = BEATS_GAUSSIAN[image]
    quad = parse_cfa(f"quad-{name}")
    rgb = make(*size)
    raw = mosaic(rgb, quad)
    out, bayer = remosaic_quad(raw, quad)
    assert out.dtype == np.float32 and out.shape == raw.shape and np.isfinite(out).all()
    truth = mosaic(rgb, bayer)
    new, old = rms(out - truth), rms(gaussian_remosaic(raw, quad) - truth)
    assert new < ratio * old and new < bound
    keep = colour_index_map(quad, *size) == colour_index_map(bayer, *size)
    np.testing.assert_array_equal(out[keep], raw[keep].astype(np.float32))


@pytest.mark.parametrize("name", QUAD_NAMES)
def test_remosaic_follows_the_edges_of_a_grey_image(name):
    """Interpolation along edges, not across: a vertical and a horizontal step meeting in a
    corner, a disc and a slanted band come back with an RMS error 7 to 70 times lower than the
    Gaussian's (measured ratios 0.014-0.05, 0.035-0.04, 0.07-0.10)."""
    quad = parse_cfa(name)
    y, x = np.mgrid[0:64, 0:96]
    shapes = (((x > 45) | (y > 41), 0.1), ((x - 50) ** 2 + (y - 30) ** 2 < 400, 0.1),
              (np.abs(0.8 * (x - 48) - 0.6 * (y - 32)) < 12, 0.15))
    for inside, ratio in shapes:
        grey = np.repeat(np.where(inside, 0.8, 0.2)[..., None], 3, axis=2)
        raw = mosaic(grey, quad)
        out, bayer = remosaic_quad(raw, quad)
        truth = mosaic(grey, bayer)
        assert rms(out - truth) < ratio * rms(gaussian_remosaic(raw, quad) - truth)


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (37, 53), (64, 96)], ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", QUAD_NAMES)
def test_remosaic_keeps_a_flat_image_flat(name, size):
    quad = parse_cfa(name)
    for level in (np.uint16(1234), 0.37, 0.0):
        raw = np.full(size, level)
        out, _ = remosaic_quad(raw, quad)
        np.testing.assert_array_equal(out, np.full(size, level, np.float32))  # exactly
    colour = np.array([0.61, 0.37, 0.22])
    raw = mosaic(np.broadcast_to(colour, (*size, 3)), quad)
    out, bayer = remosaic_quad(raw, quad)
    np.testing.assert_allclose(out, mosaic(np.broadcast_to(colour, (*size, 3)), bayer), rtol=1e-6)


@pytest.mark.parametrize("size", [(4, 4), (6, 9), (37, 53), (61, 40)], ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", QUAD_NAMES)
def test_remosaic_in_bands_gives_what_the_whole_image_gives(name, size, monkeypatch):
    """Rows are remosaicked in bands with a margin; with the smallest bands (8 rows, mostly margin)
    the result must not change by one bit, and noise or saturation give no NaN or inf."""
    quad = parse_cfa(name)
    rng = np.random.default_rng(5)
    for raw in (rng.integers(0, 65536, size).astype(np.uint16), rng.random(size) * (rng.random(size) > 0.5)):
        whole, _ = remosaic_quad(raw, quad)
        monkeypatch.setattr(cfa_module, "_BAND_SAMPLES", 1)
        banded, _ = remosaic_quad(raw, quad)
        monkeypatch.undo()
        assert np.isfinite(whole).all()
        np.testing.assert_array_equal(banded, whole)


def test_remosaic_memory_is_the_output_and_a_few_bands(monkeypatch):
    """No full-size float copy besides the output: what is allocated beyond it does not grow with
    the image's height and stays well under one more plane (measured with 64 K-site bands and
    1024 columns: 5.1 MB for 2 and for 4 MP)."""
    monkeypatch.setattr(cfa_module, "_BAND_SAMPLES", 1 << 16)
    extra = []
    for rows in (2048, 4096):
        raw = np.random.default_rng(6).integers(0, 4096, (rows, 1024)).astype(np.uint16)
        tracemalloc.start()
        try:
            out, _ = remosaic_quad(raw, parse_cfa("quad-RGGB"))
            extra.append(tracemalloc.get_traced_memory()[1] - out.nbytes)
        finally:
            tracemalloc.stop()
    assert extra[1] < 1.1 * extra[0]
    assert extra[1] < out.nbytes / 2


def test_remosaic_refuses_bayer_and_validate_refuses_misaligned_quads():
    with pytest.raises(CFAError, match="not a Quad-Bayer"):
        remosaic_quad(np.zeros((8, 8)), parse_cfa("GRBG"))
    with pytest.raises(CFAError, match="too small"):
        remosaic_quad(np.zeros((3, 8)), parse_cfa("quad-RGGB"))
    with pytest.raises(CFAError):
        parse_cfa("RGGRRGGRGBBGGBBG")  # 2x2 blocks that straddle the 4x4 repeat
    assert str(parse_cfa("quad-RGGB")).startswith("quad ")
    assert CFA(((0, 1), (1, 2))).kind == "bayer"
