"""Tile planning and blending: pure numpy, no model inside.

The plan counts tiles first and then picks an even tile size (as chaiNNer's auto split does), so
every tile of a run has one fixed shape and onnxruntime never re-plans. Tiles that reach past the
image are reflect-padded. Overlaps are blended with raised-cosine (half-sine squared) weights,
accumulated in float32, and finished pixels are handed out block by block, so memory is set by
the tile size, not by the image size.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class TileSource(Protocol):
    """Anything with a shape (H, W, C) that returns float32 tiles for 2-D slices."""

    shape: tuple[int, ...]

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray: ...


@dataclass(frozen=True)
class Axis:
    """Tile starts along one axis; every tile has ``size`` samples."""

    length: int
    size: int
    starts: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go, in input (packed) samples."""

    rows: Axis
    cols: Axis
    overlap: int
    scale: int

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.rows.size, self.cols.size

    @property
    def count(self) -> int:
        return self.rows.count * self.cols.count

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.rows.length * self.scale, self.cols.length * self.scale


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def plan_axis(length: int, max_tile: int, overlap: int, align: int) -> Axis:
    """Split ``length`` into the fewest tiles of at most ``max_tile`` with at least ``overlap``.

    The count comes first, then the smallest aligned size that covers the axis with that count;
    starts are aligned and spread evenly, so overlaps are never below ``overlap``.
    """
    if length <= 0:
        raise ValueError("cannot tile an empty axis")
    max_tile = max(align, (max_tile // align) * align)
    overlap = min(_round_up(overlap, align), max_tile - align) if max_tile > align else 0
    if length <= max_tile:
        return Axis(length, _round_up(length, align), (0,))
    count = math.ceil((length - overlap) / (max_tile - overlap))
    size = _round_up(math.ceil((length + (count - 1) * overlap) / count), align)
    size = min(size, max_tile)
    span = _round_up(length, align) - size
    starts = tuple(int(round(i * span / (count - 1) / align)) * align for i in range(count))
    return Axis(length, size, starts)


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 2, scale: int = 1) -> TilePlan:
    """Plan tiles of at most ``tile`` x ``tile`` input samples over an (height, width) input."""
    return TilePlan(plan_axis(height, tile, overlap, align), plan_axis(width, tile, overlap, align), overlap, scale)


def blend_ramp(size: int, lead: int, trail: int) -> np.ndarray:
    """Weights along one tile axis: a raised-cosine rise over ``lead`` samples at the start and
    fall over ``trail`` at the end, 1 in between. Rising and falling ramps of one overlap add to
    exactly one (up to rounding), so a flat image stays flat."""
    w = np.ones(size, np.float32)
    if lead:
        t = (np.arange(lead, dtype=np.float64) + 0.5) / lead
        w[:lead] = (np.sin(t * np.pi / 2) ** 2).astype(np.float32)
    if trail:
        t = (np.arange(trail, dtype=np.float64) + 0.5) / trail
        w[size - trail :] = (np.cos(t * np.pi / 2) ** 2).astype(np.float32)
    return w


def _overlaps(axis: Axis) -> list[tuple[int, int]]:
    """(lead, trail) overlap lengths of each tile with its neighbours."""
    out = []
    for i, s in enumerate(axis.starts):
        lead = axis.starts[i - 1] + axis.size - s if i > 0 else 0
        trail = s + axis.size - axis.starts[i + 1] if i + 1 < axis.count else 0
        out.append((max(lead, 0), max(trail, 0)))
    return out


def read_tile(source: TileSource, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Slice a tile out of ``source``; parts past the edge are reflected (or repeated when the
    image is too small to reflect)."""
    height, width = source.shape[:2]
    y1, x1 = min(y0 + h, height), min(x0 + w, width)
    tile = np.asarray(source[y0:y1, x0:x1], dtype=np.float32)
    pad_h, pad_w = h - (y1 - y0), w - (x1 - x0)
    if pad_h or pad_w:
        mode = "reflect" if tile.shape[0] > pad_h and tile.shape[1] > pad_w else "symmetric"
        if mode == "symmetric" and (pad_h > tile.shape[0] or pad_w > tile.shape[1]):
            mode = "edge"
        tile = np.pad(tile, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return tile


def _normalized_ramps(axis: Axis, scale: int) -> list[np.ndarray]:
    """Each tile's blending ramp along one axis divided by the sum of all ramps there.

    The tiles form a product grid, so the sum of the 2-D weights w_r(y) * w_c(x) over all tiles is
    the product of the 1-D sums: normalizing each axis once makes every pixel's weights add up to
    one, and no weight image has to be accumulated or divided by."""
    size = axis.size * scale
    length = axis.length * scale
    ramps = [blend_ramp(size, lead * scale, trail * scale) for lead, trail in _overlaps(axis)]
    total = np.zeros(axis.starts[-1] * scale + size, np.float64)
    for start, ramp in zip(axis.starts, ramps):
        total[start * scale : start * scale + size] += ramp
    total[length:] = 1.0  # past the image: padding that is cropped away
    return [(ramp / total[s * scale : s * scale + size]).astype(np.float32) for s, ramp in zip(axis.starts, ramps)]


def _ramped_span(weights: np.ndarray) -> tuple[int, int]:
    """(a, b) with ``weights[a:b]`` all exactly 1: only the bands outside need multiplying."""
    ramped = np.flatnonzero(weights != 1.0)
    lead = ramped[ramped < len(weights) // 2]
    trail = ramped[ramped >= len(weights) // 2]
    return (int(lead[-1]) + 1 if lead.size else 0), (int(trail[0]) if trail.size else len(weights))


@dataclass(frozen=True)
class Block:
    """A finished rectangle of the blended output: ``pixels`` placed at (y0, x0)."""

    y0: int
    x0: int
    pixels: np.ndarray  # (h, w, K) float32


def tile_results(
    source: TileSource,
    infer: Callable[[np.ndarray], np.ndarray],
    plan: TilePlan,
    concurrency: int = 1,
) -> Iterator[np.ndarray]:
    """``infer`` of every tile of ``plan``, rows first, in order.

    ``concurrency`` > 1: that many tiles are read and inferred at once in threads (``infer`` must
    be thread-safe, as an onnxruntime session is), so the caller blends one while the next run;
    at most ``concurrency`` results wait. An error in any tile is raised at that tile's turn."""
    starts = [(y0, x0) for y0 in plan.rows.starts for x0 in plan.cols.starts]

    def run(start: tuple[int, int]) -> np.ndarray:
        return np.asarray(infer(read_tile(source, *start, plan.rows.size, plan.cols.size)), dtype=np.float32)

    if concurrency <= 1 or len(starts) == 1:
        yield from map(run, starts)
        return
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="rawdev-tile")
    pending: deque = deque()
    try:
        for start in starts:
            pending.append(pool.submit(run, start))
            if len(pending) >= concurrency:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def blend_tiles(
    source: TileSource,
    infer: Callable[[np.ndarray], np.ndarray],
    plan: TilePlan,
    on_tile: Callable[[int, int], None] | None = None,
    concurrency: int = 1,
) -> Iterator[Block]:
    """Run ``infer`` on every tile and yield each output pixel once, in finished blocks.

    ``infer`` takes one (h, w, C) float32 tile and returns (h*scale, w*scale, K). A tile's block is
    finished where no later tile reaches: the part left of the next tile in its row and above the
    next row of tiles. What later tiles still add to is kept: the overlap columns of the previous
    tile and the overlap rows of the previous tile row, so memory is one tile plus one overlap
    strip across the image, whatever the image's size. ``concurrency``: tiles inferred at once
    (:func:`tile_results`); the blocks are the same.
    """
    results = tile_results(source, infer, plan, concurrency)
    try:
        yield from _blend(results, plan, on_tile)
    finally:
        results.close()  # stops the tile threads when the caller stops early or fails


def _blend(results: Iterator[np.ndarray], plan: TilePlan,
           on_tile: Callable[[int, int], None] | None) -> Iterator[Block]:
    s = plan.scale
    out_h, out_w = plan.output_shape
    row_weights = _normalized_ramps(plan.rows, s)
    col_weights = _normalized_ramps(plan.cols, s)
    col_spans = [_ramped_span(w) for w in col_weights]
    expected = (plan.rows.size * s, plan.cols.size * s)
    above: np.ndarray | None = None  # sums for rows [ty0, ty0 + above_rows) from the tile row above
    done = 0
    for r, y0 in enumerate(plan.rows.starts):
        ty0 = y0 * s
        vy = min(ty0 + expected[0], out_h) - ty0
        final_rows = (plan.rows.starts[r + 1] * s if r + 1 < plan.rows.count else out_h) - ty0
        below: np.ndarray | None = None  # sums this tile row leaves for the next one
        left: np.ndarray | None = None  # sums of the previous tile's overlap columns
        for c, x0 in enumerate(plan.cols.starts):
            result = next(results)
            if result.shape[:2] != expected:
                raise ValueError(f"model returned a {result.shape[:2]} tile, expected {expected}")
            tx0 = x0 * s
            vx = min(tx0 + expected[1], out_w) - tx0
            block = result[:vy, :vx] * row_weights[r][:vy, None, None]  # a new array: never
            a, b = min(col_spans[c][0], vx), min(col_spans[c][1], vx)  # write into what the model returned
            block[:, :a] *= col_weights[c][None, :a, None]  # the column ramps; 1 between a and b
            block[:, b:] *= col_weights[c][None, b:vx, None]
            done_cols = 0
            if left is not None:
                block[:, : left.shape[1]] += left  # already holds the row above's share there
                done_cols = left.shape[1]
            if above is not None:
                block[: above.shape[0], done_cols:] += above[:, tx0 + done_cols : tx0 + vx]
            final_cols = (plan.cols.starts[c + 1] * s if c + 1 < plan.cols.count else out_w) - tx0
            if final_rows < vy:
                if below is None:
                    below = np.zeros((vy - final_rows, out_w, block.shape[2]), np.float32)
                below[:, tx0 : tx0 + final_cols] = block[final_rows:, :final_cols]
            left = block[:, final_cols:].copy() if final_cols < vx else None
            done += 1
            if on_tile is not None:
                on_tile(done, plan.count)
            yield Block(ty0, tx0, block[:final_rows, :final_cols])
        above = below


def run_tiled(
    source: TileSource,
    infer: Callable[[np.ndarray], np.ndarray],
    plan: TilePlan,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Whole output as one float32 array (for tests and small images)."""
    out_h, out_w = plan.output_shape
    out: np.ndarray | None = None
    for block in blend_tiles(source, infer, plan, on_tile):
        if out is None:
            out = np.empty((out_h, out_w, block.pixels.shape[2]), np.float32)
        h, w = block.pixels.shape[:2]
        out[block.y0 : block.y0 + h, block.x0 : block.x0 + w] = block.pixels
    assert out is not None
    return out
