"""The one registry of the real fine-grained datasets: `DATASETS[name] -> DatasetInfo`.

An entry says everything fglib knows about a dataset: which class loads it, how many classes and
images a complete download has, the folder it lives in under a data root, the official files that
`fglib.data.download.prepare` fetches, and what to do by hand where there is no automatic
download. Loaders are named as "module:Class" strings and imported on first use, so this module
imports nothing heavy and nothing from fglib.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any


@dataclass(frozen=True)
class Remote:
    """One official file: where it is, where its content goes and how to check it."""

    url: str | None  # None: no official source online any more
    into: str = ""  # destination inside the dataset folder
    strip: str = ""  # archive path prefix to drop, e.g. "CUB_200_2011/"
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return PurePosixPath(self.url or "").name

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".tar", ".tgz", ".tar.gz"))


def _named(filename: str, **kw: Any) -> Remote:
    """A Remote with no official URL, known only by its file name (fetched from a mirror)."""
    return Remote(url=f"manual:///{filename}", **kw)


@dataclass(frozen=True)
class DatasetInfo:
    """Everything about one dataset."""

    loader: str  # the dataset class as "module:Class", imported by load_class()
    folder: str  # the dataset folder under the data root
    num_classes: int
    n_train: int  # the "train" split of a complete download
    n_test: int
    extra_sizes: dict[str, int] = field(default_factory=dict, hash=False)  # other splits, e.g. "val"
    files: tuple[Remote, ...] = ()  # the official files, fetched by fglib.data.download.prepare
    manual: str = ""  # set when there is no automatic official download ({base}: the folder)

    def load_class(self) -> type:
        """The dataset class (importing its module on first use)."""
        module, attr = self.loader.split(":")
        return getattr(importlib.import_module(module), attr)

    def expected_size(self, split: str) -> int | None:
        """Number of images of `split` in a complete download (None if unknown)."""
        sizes = {"train": self.n_train, "test": self.n_test, "all": self.n_train + self.n_test}
        return {**sizes, **self.extra_sizes}.get(split)


_VGG = "https://www.robots.ox.ac.uk/~vgg/data"
_DOGS = "http://vision.stanford.edu/aditya86/ImageNetDogs"

DATASETS: dict[str, DatasetInfo] = {
    "cub": DatasetInfo(
        loader="fglib.data.cub:CUBDataset", folder="CUB_200_2011",
        num_classes=200, n_train=5994, n_test=5794,
        files=(Remote("https://data.caltech.edu/records/65de6-vzc59/files/CUB_200_2011.tgz",
                      strip="CUB_200_2011/", md5="97eceeb196236b17998738112f37df78"),)),
    "cars": DatasetInfo(
        loader="fglib.data.real:CarsDataset", folder="stanford_cars",
        num_classes=196, n_train=8144, n_test=8041,
        files=(_named("cars_train.tgz"), _named("cars_test.tgz"), _named("car_devkit.tgz"),
               _named("cars_test_annos_withlabels.mat")),
        manual=("Stanford Cars is no longer distributed at its official address "
                "(https://ai.stanford.edu/~jkrause/cars/car_dataset.html is offline). Obtain "
                "cars_train.tgz, cars_test.tgz, car_devkit.tgz and "
                "cars_test_annos_withlabels.mat from a copy you trust, then either serve them "
                "and pass --mirror URL (or set FGLIB_MIRROR), or unpack them so that "
                "{base}/devkit/cars_meta.mat, {base}/devkit/cars_train_annos.mat, "
                "{base}/cars_train/, {base}/cars_test/ and "
                "{base}/cars_test_annos_withlabels.mat exist, and run this command again.")),
    "aircraft": DatasetInfo(
        loader="fglib.data.real:AircraftDataset", folder="fgvc-aircraft-2013b",
        num_classes=100, n_train=6667, n_test=3333,
        extra_sizes={"train_noval": 3334, "val": 3333},
        files=(Remote(f"{_VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                      strip="fgvc-aircraft-2013b/"),)),
    "dogs": DatasetInfo(
        loader="fglib.data.real:DogsDataset", folder="stanford_dogs",
        num_classes=120, n_train=12000, n_test=8580,
        files=(Remote(f"{_DOGS}/images.tar"),
               Remote(f"{_DOGS}/lists.tar", into="lists"),
               Remote(f"{_DOGS}/annotation.tar"))),
    "flowers": DatasetInfo(
        loader="fglib.data.real:FlowersDataset", folder="flowers-102",
        num_classes=102, n_train=2040, n_test=6149,
        extra_sizes={"train_noval": 1020, "val": 1020},
        # md5s as in torchvision.datasets.Flowers102
        files=(Remote(f"{_VGG}/flowers/102/102flowers.tgz", md5="52808999861908f626f3c1f4e79d11fa"),
               Remote(f"{_VGG}/flowers/102/imagelabels.mat", md5="e0620be6f572b9609742df49c70aed4d"),
               Remote(f"{_VGG}/flowers/102/setid.mat", md5="a5357ecc9cb78c4bef273ce3793fc85c"))),
    "nabirds": DatasetInfo(
        loader="fglib.data.cub:NABirdsDataset", folder="nabirds",
        num_classes=555, n_train=23929, n_test=24633,
        files=(_named("nabirds.tar.gz", strip="nabirds/"),),
        manual=("NABirds is distributed only after accepting the Cornell Lab of Ornithology's "
                "terms of use at https://dl.allaboutbirds.org/nabirds. Download nabirds.tar.gz "
                "there, then either serve it and pass --mirror URL (or set FGLIB_MIRROR), or "
                "extract it so that {base}/images.txt exists, and run this command again.")),
}


# Generated datasets other than the benchmark ("synth", built in fglib.data.synth): name ->
# "module:function", function(image_size, overrides) -> the root of a CUB-format folder. Their
# modules are part of the code fingerprint of the runs that use them (fglib.experiments.provenance).
GENERATED: dict[str, str] = {
    "pretrain": "fglib.data.pretrainset:pretraining_set",
    "folder": "fglib.data.folder:folder_dataset",     # your own images (ImageFolder layout)
}


def generate(name: str, image_size: int, overrides: dict[str, Any]) -> "Path":
    """The folder of the generated dataset `name`, made (once, into the cache) if needed."""
    module, attr = GENERATED[name].split(":")
    return getattr(importlib.import_module(module), attr)(image_size, overrides)
