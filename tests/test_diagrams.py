"""fglib.book.diagrams: each method's diagram is drawn from its configuration's model, so the
shapes it prints follow the configuration, and a wrong request says what is wrong."""
import matplotlib
import matplotlib.pyplot as plt
import pytest

from fglib.book.diagrams import METHODS, architecture
from fglib.book.figures import figure_data
from fglib.experiments import regimes

matplotlib.use("Agg")


def words(fig):
    return " | ".join(figure_data(fig)["axes 0"]["words"])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_shapes_follow_the_configuration(method):
    cfg = regimes.compare_config(method, "paper", 0)
    book = words(architecture(method, cfg, 24))
    assert "128x12x12" in book or "128x144" in book, book     # c = 128, 12 x 12 maps
    small = cfg.override(**{"model.widths": (8, 16, 32, 48), "data.image_size": 40,
                            "model.output_stride": None})
    text = words(architecture(method, small, 10))
    assert "128" not in text and ("x5x5" in text or "48x25" in text), text  # c = 48, 5 x 5
    assert "10 classes" in text and ("→10" in text or ": 10" in text), text   # K = 10
    plt.close("all")


def test_the_batch_is_the_balanced_batch_when_there_is_one():
    assert "batch 32," in words(architecture("mamc", regimes.compare_config("mamc", "paper", 0),
                                             24))                           # 16 classes x 2
    assert "batch 64," in words(architecture("mcloss", regimes.compare_config(
        "mcloss", "paper", 0), 24))
    plt.close("all")


def test_a_wrong_request_says_what_is_wrong():
    with pytest.raises(ValueError, match="no diagram for 'bilinear'"):
        architecture("bilinear", regimes.compare_config("cin", "paper", 0), 24)
    with pytest.raises(ValueError, match="cfg trains 'cin', not 'rra'"):
        architecture("rra", regimes.compare_config("cin", "paper", 0), 24)
