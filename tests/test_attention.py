"""fglib.models.attention against a loop reference written from the definitions."""
import math

import pytest

import torch

from fglib.models.attention import chance_on_part, peak_on_part, peak_xy


def reference_hit(m, parts, which, size, radius):
    h, w = m.shape
    best, bi, bj = -math.inf, 0, 0
    for i in range(h):
        for j in range(w):
            if m[i, j] > best:
                best, bi, bj = m[i, j].item(), i, j
    x, y = (bj + 0.5) * size / w, (bi + 0.5) * size / h
    return any(which[p] and parts[p, 2] > 0 and math.dist((x, y), parts[p, :2].tolist()) <= radius
               for p in range(len(parts)))


def test_peak_xy_on_an_odd_grid():
    m = torch.zeros(1, 3, 5)
    m[0, 2, 1] = 1
    assert peak_xy(m, 30).tolist() == [[9.0, 25.0]]


def test_peak_on_part_matches_loops():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(20, 4, 6, generator=g)
    parts = torch.cat([torch.rand(20, 5, 2, generator=g) * 48, (torch.rand(20, 5, 1, generator=g) > 0.2).float()], 2)
    which = torch.rand(20, 5, generator=g) > 0.5
    ours = peak_on_part(maps, parts, which, 48, radius=10)
    assert ours.tolist() == [reference_hit(maps[b], parts[b], which[b], 48, 10) for b in range(20)]


def test_invisible_or_other_parts_never_hit():
    maps = torch.zeros(1, 2, 2)
    maps[0, 0, 0] = 1                                          # peak at (8, 8) for a 32 px image
    parts = torch.tensor([[[8.0, 8.0, 0.0], [8.0, 8.0, 1.0]]])
    assert not peak_on_part(maps, parts, torch.tensor([[True, False]]), 32, 1).item()
    assert peak_on_part(maps, parts, torch.tensor([[False, True]]), 32, 1).item()


def test_chance_is_the_share_of_cells_near_the_part():
    parts = torch.tensor([[[8.0, 8.0, 1.0]]])
    # 4 x 4 grid on 32 px: centres at 4, 12, 20, 28; within 6 px of (8, 8): the 4 centres (4|12, 4|12)
    assert chance_on_part((4, 4), parts, torch.tensor([[True]]), 32, 6).item() == 4 / 16


def test_parts_hit_and_distinct_parts():
    from fglib.models.attention import distinct_parts, parts_hit

    parts = torch.tensor([[[4.0, 4.0, 1.0], [28.0, 28.0, 1.0], [4.0, 28.0, 0.0]]])   # third part invisible
    maps = torch.zeros(1, 4, 4, 4)
    maps[0, 0, 0, 0] = 1      # peak (4, 4): part 0
    maps[0, 1, 3, 3] = 1      # peak (28, 28): part 1
    maps[0, 2, 3, 0] = 1      # peak (4, 28): only the invisible part is there -> none
    maps[0, 3, 0, 0] = 1      # part 0 again
    hits = parts_hit(maps, parts, 32, radius=3)
    assert hits.tolist() == [[0, 1, -1, 0]]
    assert distinct_parts(hits).tolist() == [2]


def test_channel_parts_takes_the_most_frequent_part():
    from fglib.models.attention import channel_parts

    hits = torch.tensor([[0, 1, -1, 2], [0, 1, -1, -1], [1, 1, 2, -1]])   # 3 images, 4 channels
    assert channel_parts(hits, num_parts=3).tolist() == [0, 1, -1, -1]


def test_relation_mass_against_a_loop():
    from fglib.models.attention import relation_mass

    torch.manual_seed(0)
    w = torch.softmax(torch.randn(5, 5), 1)
    part_of = torch.tensor([0, 0, 1, -1, 1])
    same, cross = [], []
    for i in range(5):
        for j in range(5):
            if i == j or part_of[i] < 0 or part_of[j] < 0:
                continue
            (same if part_of[i] == part_of[j] else cross).append(float(w[i, j]))
    got = relation_mass(w, part_of)
    assert got["same part"] == pytest.approx(5 * sum(same) / len(same))
    assert got["different parts"] == pytest.approx(5 * sum(cross) / len(cross))
    uniform = relation_mass(torch.full((5, 5), 0.2), part_of)
    assert uniform == pytest.approx({"same part": 1.0, "different parts": 1.0})


def test_part_consistency_by_hand():
    from fglib.models.attention import part_consistency

    # class 0: parts 1, 1, 2, -1 -> 2 of 4 on its mode; class 1: 0, 0 -> 2 of 2;
    # class 2: no part at all -> 0 of 2
    hits = torch.tensor([1, 1, 2, -1, 0, 0, -1, -1])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    assert part_consistency(hits, labels) == pytest.approx(4 / 8)
