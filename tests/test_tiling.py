"""The tiler through its invariants."""

import numpy as np
import pytest

from rawdev.tiling import blend_ramp, blend_tiles, plan_axis, plan_tiles, read_tile, run_tiled


def identity(tile: np.ndarray) -> np.ndarray:
    return tile


def upsample2(tile: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(tile, 2, axis=0), 2, axis=1)


@pytest.mark.parametrize("length,tile,overlap", [(1, 64, 8), (100, 64, 8), (513, 128, 16), (4000, 512, 32),
                                                 (130, 64, 0), (67, 66, 8)])
def test_axis_plan_covers_everything_with_one_size_and_enough_overlap(length, tile, overlap):
    axis = plan_axis(length, tile, overlap, align=2)
    assert axis.size <= max(tile, 2) and axis.size % 2 == 0
    assert axis.starts[0] == 0
    assert axis.starts[-1] + axis.size >= length
    assert all(s % 2 == 0 for s in axis.starts)
    for a, b in zip(axis.starts, axis.starts[1:]):
        assert a + axis.size - b >= overlap  # neighbours overlap by at least the request
        assert b > a


def test_count_comes_first_then_an_even_size():
    axis = plan_axis(900, 512, 32, align=2)
    # two tiles are enough, so the size shrinks to what two tiles need instead of staying 512
    assert axis.count == 2
    assert axis.size == (900 + 32) // 2


@pytest.mark.parametrize("shape,tile,overlap", [((37, 53), 16, 4), ((64, 64), 16, 6), ((10, 7), 32, 8),
                                                ((120, 90), 40, 10)])
def test_identity_model_gives_back_its_input(shape, tile, overlap):
    rng = np.random.default_rng(0)
    image = (rng.integers(0, 65536, (*shape, 4)) / 65535).astype(np.float32)
    plan = plan_tiles(*shape, tile=tile, overlap=overlap)
    out = run_tiled(image, identity, plan)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, image, rtol=0, atol=2e-7)
    # 16-bit input quantized again, as written to disk, comes back exactly
    q = lambda a: np.round(a * 65535).astype(np.uint16)  # noqa: E731
    assert np.array_equal(q(out), q(image))


def test_upsampling_model_keeps_geometry():
    rng = np.random.default_rng(1)
    image = rng.random((30, 46, 3), dtype=np.float32)
    plan = plan_tiles(30, 46, tile=12, overlap=4, scale=2)
    out = run_tiled(image, upsample2, plan)
    np.testing.assert_allclose(out, upsample2(image), atol=2e-7)


def test_flat_image_stays_flat_whatever_the_model_does_per_tile():
    image = np.full((64, 80, 4), 0.25, np.float32)
    plan = plan_tiles(64, 80, tile=24, overlap=8)
    out = run_tiled(image, lambda t: t * 2.0, plan)
    np.testing.assert_allclose(out, 0.5, atol=1e-6)


def test_tile_differences_blend_smoothly_without_steps():
    # Each tile adds its own offset (what per-tile channel attention statistics can do);
    # blending must turn the step into a ramp no steeper than offset / overlap per sample.
    image = np.zeros((16, 200, 1), np.float32)
    plan = plan_tiles(16, 200, tile=64, overlap=32)
    counter = iter(range(100))
    out = run_tiled(image, lambda t: t + 0.1 * next(counter), plan)
    steps = np.abs(np.diff(out[0, :, 0]))
    assert steps.max() < 0.1 / 32 * 2


def test_ramps_of_one_overlap_sum_to_one():
    up = blend_ramp(40, 16, 0)[:16]
    down = blend_ramp(40, 0, 16)[-16:]
    np.testing.assert_allclose(up + down, 1.0, atol=1e-6)


def test_every_tile_has_the_same_shape():
    shapes = set()
    plan = plan_tiles(101, 77, tile=32, overlap=8)

    def record(tile):
        shapes.add(tile.shape)
        return tile

    run_tiled(np.zeros((101, 77, 4), np.float32), record, plan)
    assert shapes == {(*plan.tile_shape, 4)}


def test_wrong_output_size_is_an_error():
    plan = plan_tiles(16, 16, tile=8, overlap=2, scale=2)
    with pytest.raises(ValueError, match="expected"):
        run_tiled(np.zeros((16, 16, 4), np.float32), identity, plan)


@pytest.mark.parametrize("shape,tile,overlap,scale", [((37, 53), 16, 4, 1), ((70, 90), 12, 10, 1),
                                                      ((30, 46), 12, 4, 2), ((9, 9), 32, 8, 2)])
def test_blocks_hand_out_every_output_pixel_exactly_once(shape, tile, overlap, scale):
    plan = plan_tiles(*shape, tile=tile, overlap=overlap, scale=scale)
    model = upsample2 if scale == 2 else identity
    seen = np.zeros(plan.output_shape, np.int32)
    for block in blend_tiles(np.zeros((*shape, 1), np.float32), model, plan):
        h, w = block.pixels.shape[:2]
        seen[block.y0 : block.y0 + h, block.x0 : block.x0 + w] += 1
    assert np.array_equal(seen, np.ones_like(seen))


@pytest.mark.parametrize("tile,overlap", [(16, 6), (12, 10)])  # 12/10: each pixel in up to 6 tiles per axis
def test_streamed_blend_equals_the_weighted_average_of_all_tiles(tile, overlap):
    # Reference: every tile's output placed whole into a full-size sum of weights and values.
    rng = np.random.default_rng(3)
    image = rng.random((50, 70, 2), dtype=np.float32)
    plan = plan_tiles(50, 70, tile=tile, overlap=overlap)
    offsets = rng.random(plan.count).astype(np.float32)

    def per_tile_model():  # each tile shifted by its own offset, as channel attention can do
        index = iter(range(plan.count))
        return lambda t: t * 0.5 + offsets[next(index)]

    out = run_tiled(image, per_tile_model(), plan)
    model = per_tile_model()
    total = np.zeros((50, 70, 2))
    weight = np.zeros((50, 70, 1))
    for r, y0 in enumerate(plan.rows.starts):
        for c, x0 in enumerate(plan.cols.starts):
            lead_y = plan.rows.starts[r - 1] + plan.rows.size - y0 if r else 0
            trail_y = y0 + plan.rows.size - plan.rows.starts[r + 1] if r + 1 < plan.rows.count else 0
            lead_x = plan.cols.starts[c - 1] + plan.cols.size - x0 if c else 0
            trail_x = x0 + plan.cols.size - plan.cols.starts[c + 1] if c + 1 < plan.cols.count else 0
            wy = blend_ramp(plan.rows.size, lead_y, trail_y)
            wx = blend_ramp(plan.cols.size, lead_x, trail_x)
            t = model(read_tile(image, y0, x0, *plan.tile_shape))
            w2 = (wy[:, None] * wx[None, :])[..., None]
            vy, vx = min(plan.rows.size, 50 - y0), min(plan.cols.size, 70 - x0)
            total[y0 : y0 + vy, x0 : x0 + vx] += (t * w2)[:vy, :vx]
            weight[y0 : y0 + vy, x0 : x0 + vx] += w2[:vy, :vx]
    np.testing.assert_allclose(out, total / weight, atol=1e-5)


def _blocks(image, model, plan, concurrency):
    return [(b.y0, b.x0, b.pixels) for b in blend_tiles(image, model, plan, concurrency=concurrency)]


def test_tiles_run_several_at_once_and_the_blocks_are_the_same():
    import threading
    import time

    rng = np.random.default_rng(5)
    image = rng.random((60, 84, 3), dtype=np.float32)
    plan = plan_tiles(60, 84, tile=16, overlap=4, scale=2)
    lock, running, peak = threading.Lock(), [0], [0]

    def slow_model(tile):  # a pure function of its tile, slow enough for runs to meet
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return upsample2(np.sin(tile * 3.0))

    serial = _blocks(image, slow_model, plan, 1)
    assert peak[0] == 1
    together = _blocks(image, slow_model, plan, 3)
    assert peak[0] == 3  # never more at once than asked
    assert len(serial) == len(together) == plan.count
    for (y, x, a), (y2, x2, b) in zip(serial, together):
        assert (y, x) == (y2, x2) and np.array_equal(a, b)


def test_a_failing_tile_among_concurrent_ones_raises_and_stops_the_rest():
    import threading

    plan = plan_tiles(64, 64, tile=8, overlap=2)
    calls, lock = [0], threading.Lock()

    def model(tile):
        with lock:
            calls[0] += 1
            n = calls[0]
        if n == 5:
            raise RuntimeError("tile 5 broke")
        return tile

    with pytest.raises(RuntimeError, match="tile 5 broke"):
        _blocks(np.zeros((64, 64, 1), np.float32), model, plan, 2)
    assert calls[0] < plan.count  # the tiles after the failure were not all run
    assert not [t for t in threading.enumerate() if t.name.startswith("rawdev-tile")]
