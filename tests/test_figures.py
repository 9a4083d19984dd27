"""fglib.book.figures: a figure's data is read back from its artists and any visible change
(a moved curve, another pixel, a bar, a box, a renamed entry) turns the check red, while
float32 rounding does not."""
import json
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import seaborn as sns

from fglib.book import figures
from fglib.book.expected import ResultMismatch
from fglib.book.figures import check_figure, figure_data, sketch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "expected_dir", lambda: tmp_path)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("FGLIB_UPDATE_EXPECTED", raising=False)
    yield tmp_path
    plt.close("all")


def draw(curve=(1.0, 2.0, 4.0), pixel=0.5, bar=3.0, label="baseline", box=(2, 3, 10, 10),
         points=((0.0, 1.0), (2.0, 3.0))):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (48, 48))
    image[10, 20] = pixel
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    axes[0].plot([0, 1, 2], curve, label=label)
    axes[0].fill_between([0, 1, 2], np.asarray(curve) - 1, np.asarray(curve) + 1, alpha=0.2)
    axes[0].scatter(*np.asarray(points).T)
    axes[0].legend()
    axes[0].set_title("top-1 over steps")
    axes[1].imshow(image, extent=(0, 48, 48, 0))
    axes[1].add_patch(plt.Rectangle(box[:2], *box[2:], fill=False))
    axes[1].add_patch(plt.Circle((20, 10), 8, fill=False))
    axes[2].bar(["SCI", "CIN"], [2.0, bar])
    return fig


def test_an_unchanged_figure_passes_and_the_file_is_written_only_on_update(store):
    check_figure(draw(), "demo", chapter="ch", update=True)
    data = json.loads((store / "figures" / "ch.json").read_text())
    assert set(data) == {"demo"} and "axes 2" in data["demo"]
    check_figure(draw(), "demo", chapter="ch")


@pytest.mark.parametrize("change", [
    {"curve": (1.0, 2.0, 4.01)},            # one point of a curve
    {"pixel": 0.52},                         # one pixel of a 48 x 48 map, by 0.02
    {"bar": 3.1},                            # a bar's height
    {"label": "base line"},                  # a legend entry
    {"box": (3, 3, 10, 10)},                 # a rectangle one pixel to the right
    {"points": ((0.0, 1.0), (2.0, 3.05))},   # a scatter point
])
def test_a_visible_change_turns_the_check_red(change):
    check_figure(draw(), "demo", chapter="ch", update=True)
    with pytest.raises(ResultMismatch, match=r"figure 'demo' differs"):
        check_figure(draw(**change), "demo", chapter="ch")


def test_float32_rounding_passes():
    check_figure(draw(), "demo", chapter="ch", update=True)
    rounded = tuple(float(np.float32(v) * (1 + 3e-7)) for v in (1.0, 2.0, 4.0))
    check_figure(draw(curve=rounded, pixel=float(np.float32(0.5) * (1 + 1e-7))), "demo",
                 chapter="ch")


def test_another_number_of_panels_or_artists_is_named():
    check_figure(draw(), "demo", chapter="ch", update=True)
    fig = draw()
    fig.axes[2].bar(["more"], [1.0])
    with pytest.raises(ResultMismatch, match=r"axes 2.*draws"):
        check_figure(fig, "demo", chapter="ch")


def test_a_figure_never_recorded_and_an_update_under_ci_are_refused(monkeypatch):
    with pytest.raises(ResultMismatch, match="FGLIB_UPDATE_EXPECTED=1"):
        check_figure(draw(), "demo", chapter="ch")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="refused under CI"):
        check_figure(draw(), "demo", chapter="ch", update=True)


def test_seaborn_figures_are_read_too():
    runs = pd.DataFrame({"variant": ["A", "A", "B", "B"], "top1": [70.0, 72.0, 74.0, 75.0]})
    fig, ax = plt.subplots()
    sns.stripplot(runs, x="variant", y="top1", jitter=False, ax=ax)
    sns.barplot(runs, x="variant", y="top1", errorbar="sd", ax=ax)
    d = figure_data(fig)["axes 0"]
    assert d["words"] == ["variant", "top1", "A", "B"]
    heights = sorted(v["max"] for k, v in d.items() if k.startswith("patch"))
    assert heights == pytest.approx([71.0, 74.5])                    # the bars' tops: the means
    g = sns.relplot(runs.assign(step=[0, 1, 0, 1]), x="step", y="top1", col="variant",
                    kind="line")
    assert {"axes 0", "axes 1"} <= set(figure_data(g.figure))


def test_the_sketch_sees_one_element_and_ignores_missing_points():
    a = np.zeros(10_000)
    b = a.copy()
    b[1234] = 1e-3
    assert max(abs(x - y) for x, y in zip(sketch(a)["proj"], sketch(b)["proj"])) > 1e-4
    assert sketch([1.0, np.nan, 2.0])["sum"] == 3.0


def test_every_figure_of_the_book_is_checked_and_every_stored_figure_is_drawn():
    """Each chapter cell that draws (subplots, relplot, image_grid, architecture) calls
    check_figure with a name of its own, the stored file holds exactly those names, and the
    notebook shows no image that is not checked."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for md in sorted((root / "book").glob("*.md")):
        cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", md.read_text(), re.S)
        drawn = [c for c in cells
                 if re.search(r"plt\.subplots\(|sns\.relplot\(|image_grid\(|architecture\(",
                              c)]
        names = [n for c in drawn for n in re.findall(r'check_figure\([^,]+,\s*"([^"]+)"', c)]
        unchecked = [c.strip().split("\n")[0] for c in drawn if "check_figure(" not in c]
        assert not unchecked, f"{md.name}: cells draw a figure without check_figure: {unchecked}"
        assert len(names) == len(set(names)), f"{md.name}: a figure name is used twice"
        path = root / "data" / "expected" / "figures" / f"{md.stem}.json"
        stored = set(json.loads(path.read_text())) if path.exists() else set()
        assert stored == set(names), (f"{md.name}: figures drawn {sorted(names)}, stored "
                                      f"{sorted(stored)}")
        # and the notebook shows as many images as the chapter checks figures
        nb = json.loads(md.with_suffix(".ipynb").read_text())
        images = sum(any(k.startswith("image/") for k in o.get("data", {}))
                     for c in nb["cells"] for o in c.get("outputs", []))
        assert images == len(names), f"{md.name}: {images} images shown, {len(names)} checked"
