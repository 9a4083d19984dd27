"""fglib.models.patches against hand examples and loop references written from the definitions."""
import math

import pytest
import torch

from fglib.data.memory import augment
from fglib.models.patches import augment_params, cut, map_points, ranked_peaks, square_boxes


def test_square_boxes_keep_their_side_and_stay_in_the_frame():
    centres = torch.tensor([[20.0, 20.0], [1.0, 39.5], [-5.0, 3.0], [39.9, 0.0]])
    boxes = square_boxes(centres, 10, 40)
    assert torch.equal(boxes[0], torch.tensor([15.0, 15.0, 25.0, 25.0]))     # inside: unchanged
    assert torch.equal(boxes[1], torch.tensor([0.0, 30.0, 10.0, 40.0]))      # shifted, not shrunk
    assert ((boxes[:, 2] - boxes[:, 0]) == 10).all() and ((boxes[:, 3] - boxes[:, 1]) == 10).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 40).all()
    with pytest.raises(ValueError, match="does not fit"):
        square_boxes(centres, 41, 40)


def reference_peaks(m, k, size, min_distance):
    """Greedy NMS with loops: best remaining cell, then drop cells closer than min_distance."""
    h, w = m.shape
    cells = [((j + 0.5) * size / w, (i + 0.5) * size / h, m[i, j].item())
             for i in range(h) for j in range(w)]
    out, alive = [], list(range(len(cells)))
    for _ in range(k):
        if not alive:
            out.append(out[0])
            continue
        best = max(alive, key=lambda c: (cells[c][2], -c))
        x, y = cells[best][:2]
        out.append((x, y))
        alive = [c for c in alive if math.dist(cells[c][:2], (x, y)) >= min_distance]
    return out


@pytest.mark.parametrize("k,min_distance", [(1, 5.0), (3, 5.0), (4, 12.0), (6, 30.0)])
def test_ranked_peaks_match_the_loop_reference(k, min_distance):
    torch.manual_seed(0)
    maps = torch.rand(3, 5, 5, dtype=torch.float64)
    got = ranked_peaks(maps, k, 40, min_distance)
    for b in range(3):
        ref = torch.tensor(reference_peaks(maps[b], k, 40, min_distance), dtype=got.dtype)
        torch.testing.assert_close(got[b], ref)


def test_ranked_peaks_hand_example():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0], m[0, 0, 1], m[0, 3, 3] = 3.0, 2.0, 1.0      # the runner-up is next to the best
    got = ranked_peaks(m, 2, 8, min_distance=2.5)           # cells are 2 pixels apart
    assert got[0].tolist() == [[1.0, 1.0], [7.0, 7.0]]      # the neighbour is suppressed


def test_cut_reads_the_pixels_of_an_aligned_box_and_interpolates_a_ramp():
    ramp = torch.arange(16, dtype=torch.float64).repeat(2, 3, 16, 1)   # value = column j
    boxes = torch.tensor([[[4.0, 2.0, 8.0, 6.0]], [[6.0, 6.0, 14.0, 14.0]]], dtype=torch.float64)
    p = cut(ramp, boxes, 4)
    assert p.shape == (2, 1, 3, 4, 4)
    assert torch.allclose(p[0, 0, 0], ramp[0, 0, 2:6, 4:8])           # whole pixels
    # an 8-pixel box read at 4 x 4: bin centres at 6 + 2 (t + 1/2), value = centre - 1/2
    assert torch.allclose(p[1, 0, 0, 0], torch.tensor([6.5, 8.5, 10.5, 12.5], dtype=torch.float64))


def test_cut_copies_boxes_on_the_pixel_grid_pixel_for_pixel():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)                 # no ramp: a blur would show
    boxes = torch.tensor([[[0.0, 0.0, 6.0, 6.0], [10.0, 3.0, 16.0, 9.0]],
                          [[5.0, 10.0, 11.0, 16.0], [4.0, 4.0, 10.0, 10.0]]], dtype=torch.float64)
    p = cut(x, boxes, 6)
    for b in range(2):
        for k in range(2):
            x0, y0, x1, y1 = boxes[b, k].long().tolist()
            assert torch.equal(p[b, k], x[b, :, y0:y1, x0:x1]), (b, k)
    # the same boxes read at 3 x 3: the exact crop, resized bilinearly
    small = cut(x, boxes, 3)
    crop = x[0, :, 0:6, 0:6][None]
    assert torch.equal(small[0, 0], torch.nn.functional.interpolate(
        crop, size=(3, 3), mode="bilinear", align_corners=False)[0])


@pytest.mark.parametrize("padding,flip", [(0, True), (4, False), (4, True), (6, True)])
def test_mapped_points_land_on_the_marked_pixels_after_augment(padding, flip):
    size, b = 24, 16
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(padding, size - padding, (b,), generator=g)
    cols = torch.randint(padding, size - padding, (b,), generator=g)
    x = torch.zeros(b, 1, size, size, dtype=torch.uint8)
    x[torch.arange(b), 0, rows, cols] = 255                   # one marked pixel per image
    xy = torch.stack([cols + 0.5, rows + 0.5], 1).double()   # its centre, as a part point
    out = augment(x, padding, flip, torch.Generator().manual_seed(11))
    dy, dx, flipped = augment_params(b, padding, flip, torch.Generator().manual_seed(11))
    moved = map_points(xy, dy, dx, flipped, padding, size)
    for i in range(b):
        j, r = int(moved[i, 0].floor()), int(moved[i, 1].floor())
        assert 0 <= j < size and 0 <= r < size
        assert out[i, 0, r, j] == 255 and out[i, 0].sum() == 255, i
    if flip:
        assert flipped.any() and not flipped.all()


def test_map_points_keeps_extra_dimensions():
    xy = torch.rand(2, 3, 5, 2)
    z = torch.zeros(2, dtype=torch.long)
    same = map_points(xy, z, z, torch.tensor([False, True]), 0, 10)
    assert torch.equal(same[0], xy[0])
    assert torch.allclose(same[1, ..., 0], 10 - xy[1, ..., 0])
