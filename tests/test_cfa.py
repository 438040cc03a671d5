"""rawdev.cfa: patterns, mosaicking, phase normalization, packing and Quad-Bayer."""

from __future__ import annotations

import numpy as np
import pytest

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
    # measured: mean 0.006, max 0.064 (at the border) for a signal spanning 0.6
    assert err.mean() < 0.01 and err.max() < 0.08
    assert err.mean() < naive.mean() / 10
    # sites whose Quad colour already is the Bayer colour keep their exact value
    keep = colour_index_map(quad, *raw.shape) == colour_index_map(bayer, *raw.shape)
    assert keep.mean() == 6 / 16  # per 4x4 repeat: one R, one B and four G sites
    np.testing.assert_array_equal(out[keep], raw[keep].astype(np.float32))
    assert not np.array_equal(out[~keep], raw[~keep])


def test_remosaic_refuses_bayer_and_validate_refuses_misaligned_quads():
    with pytest.raises(CFAError, match="not a Quad-Bayer"):
        remosaic_quad(np.zeros((8, 8)), parse_cfa("GRBG"))
    with pytest.raises(CFAError):
        parse_cfa("RGGRRGGRGBBGGBBG")  # 2x2 blocks that straddle the 4x4 repeat
    assert str(parse_cfa("quad-RGGB")).startswith("quad ")
    assert CFA(((0, 1), (1, 2))).kind == "bayer"
