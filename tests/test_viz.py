"""Tests for the chapters' plotting helpers (fglib.book.viz)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fglib.book.viz import as_jpeg, circle_part, draw_box, image_grid, mark_parts, show_image  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_show_image_uses_pixel_corner_coordinates():
    ax = plt.subplots()[1]
    show_image(ax, np.zeros((10, 20, 3), np.uint8), title="t")
    # pixel (i, j) covers [i, i + 1): the image spans 0..W and 0..H with y pointing down
    assert ax.get_images()[0].get_extent() == [0, 20, 10, 0]
    assert ax.get_xlim() == (0, 20) and ax.get_ylim() == (10, 0)
    assert ax.get_title() == "t" and not ax.get_xticks().size


def test_image_grid_shape_titles_and_hidden_panels():
    images = [np.full((8, 8, 3), k, np.uint8) for k in range(5)]
    fig, axes = image_grid(images, [f"#{k}" for k in range(5)], ncols=3)
    assert axes.shape == (2, 3)
    assert [ax.get_title() for ax in axes.flat][:5] == ["#0", "#1", "#2", "#3", "#4"]
    assert not axes[1, 2].axison                     # the sixth panel has no image
    assert len(fig.axes) == 6


def test_image_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one image"):
        image_grid([])
    with pytest.raises(ValueError, match="titles"):
        image_grid([np.zeros((4, 4, 3))], ["a", "b"])


def test_mark_parts_skips_invisible_and_unselected_parts():
    ax = plt.subplots()[1]
    parts = {"head": (3.0, 4.0, 1), "tail": (0.0, 0.0, 0), "beak": (5.5, 2.5, 1)}
    assert mark_parts(ax, parts) == ["head", "beak"]
    assert mark_parts(ax, parts, only=["beak", "tail"], label=False) == ["beak"]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    np.testing.assert_allclose(offsets, [[3.0, 4.0], [5.5, 2.5], [5.5, 2.5]])
    assert [t.get_text() for t in ax.texts] == ["head", "beak"]


def test_mark_parts_reads_a_cub_parts_array():
    ax = plt.subplots()[1]
    arr = np.array([[1, 2, 1], [0, 0, 0], [7, 8, 1]], np.float32)
    assert mark_parts(ax, arr, names=["a", "b", "c"]) == ["a", "c"]
    assert mark_parts(ax, arr) == ["1", "3"]           # unnamed parts are numbered from 1
    with pytest.raises(ValueError, match="names"):
        mark_parts(ax, arr, names=["a"])
    with pytest.raises(ValueError, match="shape"):
        mark_parts(ax, np.zeros((3, 2)))


def test_circle_and_box_patches():
    ax = plt.subplots()[1]
    c = circle_part(ax, (2.0, 3.0), 1.5, color="red")
    r = draw_box(ax, (1.0, 2.0, 3.0, 4.0))
    assert c.center == (2.0, 3.0) and c.radius == 1.5 and not c.get_fill()
    assert (r.get_x(), r.get_y(), r.get_width(), r.get_height()) == (1.0, 2.0, 3.0, 4.0)
    assert len(ax.patches) == 2


def test_as_jpeg_returns_a_jpeg_and_closes_the_figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    show_image(ax, np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    img = as_jpeg(fig, quality=80)
    assert img.format == "jpeg" and img.data[:3] == b"\xff\xd8\xff"   # the JPEG signature
    assert not plt.fignum_exists(fig.number)
