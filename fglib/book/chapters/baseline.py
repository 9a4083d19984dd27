"""The baseline chapter's measurements: where GAP + FC looks, and what it confuses."""
from __future__ import annotations

import torch

from fglib.models.attention import chance_on_part, peak_on_part
from fglib.book.chapters.common import shown_test_images
from fglib.book.evidence import BATCH, evaluating, normalised_images
from fglib.experiments.measured import FLOAT64, measurement
from fglib.experiments.runner import load_model
from fglib.engine.train import load_data


def cams_and_predictions(model, x, labels, batch: int = BATCH):
    """One float64 pass of the backbone over x: the class activation map of each image's
    true class, (B, h, w), as model.cam computes it, and the predicted class, (B,), as
    the test-time network predicts it (its head on the same features)."""
    cams, preds = [], []
    with evaluating(model), torch.no_grad():
        for i in range(0, len(x), batch):
            f = model.features(x[i : i + batch])
            cams.append(model.head.cam(f, labels[i : i + batch]))
            preds.append(model.forward_head(f).argmax(1))
    return torch.cat(cams), torch.cat(preds)


@measurement(tol=1e-6, why=FLOAT64 + "; the means over images are float64")
def cam_evidence(runs, radius: float = 8.0) -> dict[str, dict]:
    """Over all test images, for each run's GAP model (label -> evidence): the share (%)
    of images whose true class's CAM peaks within `radius` pixels of a visible
    discriminative part of their class, of any visible part, and of a peak placed at
    random on the map's grid (chance); and the confusion counts (true, predicted)."""
    out = {}
    for label, cfg in runs.items():
        train_set, test_set = load_data(cfg)
        x = normalised_images(train_set, test_set)               # float64
        model, _ = load_model(cfg)
        cam, pred = cams_and_predictions(model, x, test_set.labels)
        size, parts = cfg.data.image_size, test_set.parts
        disc = test_set.discriminative_parts()
        rates = {
            "peak on discriminative part": peak_on_part(cam, parts, disc, size, radius),
            "peak on any bird part": peak_on_part(cam, parts, torch.ones_like(disc),
                                                  size, radius),
            "chance (random peak)": chance_on_part(cam.shape[1:], parts, disc, size,
                                                   radius)}
        k = train_set.num_classes
        confusion = torch.zeros(k, k, dtype=torch.int64)
        confusion.index_put_((test_set.labels, pred), torch.ones_like(pred),
                             accumulate=True)
        out[label] = {"rates (%)": {m: 100 * v.double().mean().item()
                                    for m, v in rates.items()},
                      "confusion": confusion}
    return out


@measurement(tol=1e-6, why=FLOAT64)
def cams_shown(runs, images: list[int]) -> dict[str, torch.Tensor]:
    """For the test images `images`, each run's CAM of the true class: label ->
    (len(images), h, w). What the figure draws over the images."""
    out = {}
    for label, cfg in runs.items():
        x, labels, _ = shown_test_images(cfg, images)           # float64
        out[label] = cams_and_predictions(load_model(cfg)[0], x, labels)[0]
    return out
