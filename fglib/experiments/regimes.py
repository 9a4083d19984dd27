"""The regime study: each method against its own baseline, one factor changed at a time.

The book's regime trains the small ResNet from scratch on 40-pixel images (5 x 5 final maps) with
60 training images per class. The papers differ from it in three ways, each a factor here:

- `pretrained`: the backbone starts from the book's pretraining run and is fine-tuned with the
  recipe `FINETUNE`, chosen on the baseline only, on a benchmark drawn for tuning (`TUNING`);
- `large maps`: 48-pixel images through the same network at output stride 4: 12 x 12 final maps
  (the papers' ResNets give 14 x 14 at 448 pixels);
- `few images`: 25 training images per class (CUB has about 30), the same 60 test images per class.

`paper` combines the factors of each paper's own setting. `SECOND` is a benchmark drawn with
another generator seed and class count, on which the decisive cells are repeated.
"""
from __future__ import annotations

from fglib.core.config import RunConfig, book_profile

TUNING = {"seed": 7}                                        # where the fine-tuning recipe is chosen
SECOND = {"seed": 1, "num_classes": 32, "families": 8}      # the replication benchmark
FEW = {"images_per_class": 85, "train_fraction": 25 / 85}   # 25 train + 60 test images per class
LARGE = {"data.image_size": 48, "model.output_stride": 4}   # 12 x 12 final maps

# The fine-tuning recipe, chosen by `recipe_search` on the tuning benchmark (the pretraining
# chapter re-derives it from the stored runs and checks that it is this one).
FINETUNE = {"train.epochs": 15, "train.lr": 0.1, "train.freeze_backbone_epochs": 0}
RECIPE_LRS = (0.01, 0.03, 0.1, 0.3)
RECIPE_EPOCHS = 15
SEEDS = (0, 1, 2)
APINET_BATCHES = {"train.sampler": "balanced", "train.classes_per_batch": 16, "train.images_per_class": 4}

FACTORS = {                       # regime name -> which of the three factors it changes
    "book": (),
    "pretrained": ("pretrained",),
    "large maps": ("large",),
    "few images": ("few",),
}
PAPER_REGIME = {                  # each paper's own setting, in the book's factors
    "mcloss": ("large", "few"),                  # ResNet-18 from scratch on CUB, 448 px
    "apinet": ("pretrained", "large", "few"),    # ImageNet ResNet fine-tuned on CUB, 448 px
    "cin": ("pretrained", "large", "few"),       # ImageNet ResNet-50 fine-tuned on CUB, 448 px
    "mamc": ("pretrained", "large", "few"),      # ImageNet ResNet-50/101 fine-tuned on CUB, 448 px
    "rra": ("pretrained", "large", "few"),       # ImageNet ResNet-50 fine-tuned on CUB, 448 px
}
PAIRED = ("apinet", "cin")        # methods that pair images: they and their baselines use 16 x 4 batches
# MAMC's N-pair terms need N classes x exactly 2 images: 16 x 2 = 32 images, half the book's batch, so
# the learning rate is halved too (the linear scaling rule); its baseline trains on the same batches.
MAMC_BATCHES = {"train.sampler": "balanced", "train.classes_per_batch": 16,
                "train.images_per_class": 2, "train.lr": 0.05}


def finetune_settings(recipe: dict | None = None) -> dict:
    """Settings of a fine-tuned run: the pretrained backbone and the recipe."""
    return {"model.pretrained": True, **(FINETUNE if recipe is None else recipe)}


def recipe_search() -> list[tuple[str, RunConfig]]:
    """The baseline on the tuning benchmark: from scratch, then fine-tuned at each learning rate, then
    with the backbone frozen for the first 3 epochs at the recipe's learning rate."""
    data = {"data.synth": dict(TUNING)}
    runs = [("from scratch", book_profile(**data))]
    for lr in RECIPE_LRS:
        runs.append((f"fine-tuned, lr {lr}", book_profile(**data, **finetune_settings(
            {"train.epochs": RECIPE_EPOCHS, "train.lr": lr}))))
    runs.append(("fine-tuned, frozen 3 epochs", book_profile(**data, **finetune_settings(
        {**FINETUNE, "train.freeze_backbone_epochs": 3}))))
    return runs


def channels_per_class(num_classes: int, channels: int = 128) -> float:
    """xi-bar = C / c, the mean number of channels per class of the book's MC-Loss (xi=None)."""
    return channels / num_classes


def mcloss_options(pretrained: bool, num_classes: int, channels: int = 128) -> dict:
    """Official MC-Loss weights in the paper's form L = CE + mu (L_dis - lambda L_div).

    From scratch, the official VGG-16 script: CE + alpha L_dis
    + beta (1 - L_div / xi) with alpha = 1.5, beta = 20, so mu = alpha and
    lambda = beta / (alpha xi). Fine-tuning, the official ResNet-50 script
    (PRIS-CV/Mutual-Channel-Loss, MC_ResNet50.py): CE + alpha (L_dis
    + beta (1 - L_div / xi)) with alpha = 5e-4, beta = 10, so mu = alpha and
    lambda = beta / xi (beta inside alpha). xi: the book's mean channels per class.
    """
    xi = channels_per_class(num_classes, channels)
    if pretrained:
        alpha, beta = 5e-4, 10.0
        return {"mu": alpha, "lam": beta / xi}
    alpha, beta = 1.5, 20.0
    return {"mu": alpha, "lam": beta / (alpha * xi)}


def regime_config(method: str, factors: tuple[str, ...], seed: int, synth: dict | None = None,
                  baseline: bool = False, options: dict | None = None) -> RunConfig:
    """One cell's run: `method` (or, with baseline=True, its own baseline) under `factors`;
    `options` are the method's model.options (MC-Loss takes the official weights instead)."""
    synth = dict(synth or {})
    num_classes = synth.get("num_classes", 24)
    s: dict = {"train.seed": seed}
    if "few" in factors:
        synth.update(FEW)
    if "large" in factors:
        s.update(LARGE)
    if "pretrained" in factors:
        s.update(finetune_settings())
    if method in PAIRED:                         # pair-based methods and their baselines: 16 x 4 batches
        s.update(APINET_BATCHES)
    if method == "mamc":                         # MAMC and its baseline: 16 x 2 batches at lr 0.05
        s.update(MAMC_BATCHES)
    if not baseline:
        s["model.method"] = method
        if method == "mcloss":
            s["model.options"] = mcloss_options("pretrained" in factors, num_classes)
        elif options:
            s["model.options"] = dict(options)
    if synth:
        s["data.synth"] = synth
    return book_profile(**s)


def regime_cells(second: bool = False) -> dict[tuple[str, str], dict[str, list[RunConfig]]]:
    """{(method, regime): {"baseline": [...], "method": [...]}}: SEEDS runs each."""
    regimes = dict(FACTORS)
    cells = {}
    for method in ("mcloss", "apinet"):
        for regime, factors in {**regimes, "paper": PAPER_REGIME[method]}.items():
            synth = SECOND if second else None
            cells[(method, regime)] = {
                kind: [regime_config(method, factors, s, synth, baseline=kind == "baseline") for s in SEEDS]
                for kind in ("baseline", "method")}
    return cells


# The CIN chapter's ablation: row -> model.options of method "cin" (None: the baseline).
CIN_ROWS = {
    "baseline": None,
    "+SE": {"block": "se", "contrastive": "none"},
    "+Non-local": {"block": "nonlocal", "contrastive": "none"},
    "+Pos-SCI": {"attention": "pos", "contrastive": "none"},
    "+SCI": {"contrastive": "none"},
    "+SCI + Cont": {"contrastive": "sci"},
    "+CIN (SCI + CCI)": {},
    "W = I (control)": {"attention": "identity", "contrastive": "none"},
}
CIN_REGIMES = {"paper": PAPER_REGIME["cin"], "from scratch": ()}


def ablation(method: str, factors: tuple[str, ...], rows: dict, seeds) -> list[tuple]:
    """(row, seed, config) for rows {name: model.options of `method`, or None for its
    baseline} under `factors`, each with every seed."""
    return [(row, s, regime_config(method, factors, s, baseline=opts is None,
                                   options=opts))
            for row, opts in rows.items() for s in seeds]


def cin_ablation(regime: str, seeds=SEEDS, rows: dict | None = None) -> list[tuple]:
    """(row, seed, config) of the CIN ablation in one of CIN_REGIMES; the baseline is
    API-Net's own (the same 16 x 4 batches), so the two chapters share its runs."""
    rows = CIN_ROWS if rows is None else rows
    return ablation("cin", CIN_REGIMES[regime], rows, seeds)


# One-seed sweeps of the CIN chapter, in the paper regime only (the CPU budget).
CIN_SWEEPS = {
    "temperature l (the port)": {"temperature": "l", "contrastive": "none"},
    "W uniform (control)": {"attention": "uniform", "contrastive": "none"},
    "CIN, alpha 0.5": {"alpha": 0.5},
    "CIN, alpha 8": {"alpha": 8.0},
    "CIN, beta 2": {"beta": 2.0},
}


# The MAMC chapter's ablation: row -> model.options of method "mamc" (None: the baseline).
# MAMC_MAIN is the form and weight chosen by `mamc_search` on the tuning benchmark (below); the
# chapter shows which of the searched weights, the paper's among them, break training here.
MAMC_MAIN = {"lam": 5e-4, "normalize": True}
MAMC_ROWS = {
    "baseline": None,
    "OSME P=2, softmax only": {"lam": 0.0},
    "+MAMC, sasc term only": {**MAMC_MAIN, "terms": "sasc"},
    "+MAMC": dict(MAMC_MAIN),
    "OSME P=3 + MAMC": {**MAMC_MAIN, "parts": 3},
}
MAMC_REGIMES = {"paper": PAPER_REGIME["mamc"], "from scratch": ()}
# One-seed variants in the paper regime: the pooling, the paper's raw f, the public self-positive.
MAMC_EXTRAS = {
    "GAP pooling + MAMC": {**MAMC_MAIN, "pooling": "gap"},
    "raw f, lambda 5e-05 + MAMC": {"lam": 5e-5},
    "self-positive + MAMC": {**MAMC_MAIN, "self_positive": True},
}


def mamc_ablation(regime: str, seeds=SEEDS, rows: dict | None = None) -> list[tuple]:
    """(row, seed, config) of the MAMC ablation in one of MAMC_REGIMES: 16 x 2 batches at lr
    0.05 for every row, the baseline included."""
    rows = MAMC_ROWS if rows is None else rows
    return ablation("mamc", MAMC_REGIMES[regime], rows, seeds)


# MAMC's weight lambda and the form of f (raw or L2-normalised), chosen like the fine-tuning recipe:
# on the tuning benchmark, in the paper regime, one seed each (the paper's lambda = 0.5 is for its
# own N and feature scale; the N-pair terms here sum 2(N - 1) = 30 sadc positives per anchor).
MAMC_SEARCH = {
    "softmax only (lambda 0)": {"lam": 0.0},
    **{f"normalised f, lambda {lam:g}": {"lam": lam, "normalize": True}
       for lam in (0.5, 0.05, 0.005, 0.0005)},
    **{f"raw f, lambda {lam:g}": {"lam": lam}                  # raw f at 0.5: the paper's form
       for lam in (0.5, 0.05, 0.005, 0.0005, 0.00005)},
}


def mamc_search(seed: int = 0) -> list[tuple[str, RunConfig]]:
    """(row, config) of the lambda search on the tuning benchmark, paper regime."""
    return [(row, regime_config("mamc", PAPER_REGIME["mamc"], seed, synth=TUNING,
                                options=opts)) for row, opts in MAMC_SEARCH.items()]


# The RRA chapter's ablation, paper regime. The weakly supervised patches come from a frozen
# baseline of the same seed (`cam_run`, its run key): the baseline row, trained first and
# stored with its weights. Row -> model.options of method "rra" (None: the baseline).
RRA_MAIN = {"source": "peaks", "steps": 4, "sequence": "repeat"}
RRA_ROWS = {
    "global only (baseline)": None,
    "local only": {**RRA_MAIN, "streams": "local"},
    "global + local, no LSTM": {**RRA_MAIN, "lstm": False},
    "T = 1": {**RRA_MAIN, "steps": 1},
    "T = 4": dict(RRA_MAIN),
    "T = 10": {**RRA_MAIN, "steps": 10},
    "T = 4, distinct patches": {**RRA_MAIN, "sequence": "distinct"},
    "T = 4, centre patch": {**RRA_MAIN, "source": "centre"},
    "whole image (control)": {**RRA_MAIN, "local_input": "image"},
}
# One-seed variant: the patches from the global stream's own map, no second network.
RRA_EXTRAS = {"T = 4, own map's peaks": {**RRA_MAIN, "own_map": True}}


def rra_baseline(seed: int, factors: tuple[str, ...] = PAPER_REGIME["rra"],
                 synth: dict | None = None) -> RunConfig:
    """The RRA chapter's baseline (the global stream alone) and proposal network."""
    return regime_config("rra", factors, seed, synth, baseline=True)


def rra_options(options: dict, seed: int, factors: tuple[str, ...] = PAPER_REGIME["rra"],
                synth: dict | None = None) -> dict:
    """model.options of an RRA row: peaks come from the same seed's frozen baseline (same
    factors, same benchmark), unless the row asks for the global stream's own map."""
    opts = {k: v for k, v in options.items() if k != "own_map"}
    if opts.get("source") == "peaks" and opts.get("local_input") != "image" \
            and not options.get("own_map"):
        opts["cam_run"] = rra_baseline(seed, factors, synth).key()
    return opts


def rra_ablation(seeds=SEEDS, rows: dict | None = None) -> list[tuple]:
    """(row, seed, config) of the RRA ablation, paper regime, every row with every seed."""
    rows = RRA_ROWS if rows is None else rows
    return [(row, s, rra_baseline(s) if opts is None else regime_config(
        "rra", PAPER_REGIME["rra"], s, options=rra_options(opts, s)))
        for row, opts in rows.items() for s in seeds]


# The closing chapter: every method at its chapter's main setting, one recipe, each against
# the baseline trained on the same batches (64 images; 16 x 4 for the pair-based methods;
# 16 x 2 at lr 0.05 for MAMC). MC-Loss takes the official weights of its regime.
COMPARED = {"mcloss": None, "apinet": {}, "cin": {}, "mamc": MAMC_MAIN, "rra": RRA_MAIN}
COMPARE_REGIMES = {"paper": ("pretrained", "large", "few"), "from scratch": ()}
COMPARE_SEEDS = (0, 1, 2, 3, 4)
HELD_OUT = SECOND                 # drawn with another seed, 32 classes in 8 families; nothing
HELD_OUT_SEEDS = (0, 1, 2, 3, 4)  # was chosen on it


def compare_config(method: str, regime: str, seed: int, synth: dict | None = None,
                   baseline: bool = False) -> RunConfig:
    """One run of the comparison: `method` at its main setting (or, baseline=True, its
    baseline) in one of COMPARE_REGIMES, on the main benchmark or `synth`."""
    factors = COMPARE_REGIMES[regime]
    opts = COMPARED[method]
    if method == "rra" and not baseline:
        opts = rra_options(opts, seed, factors, synth)
    return regime_config(method, factors, seed, synth, baseline=baseline,
                         options=opts or None)


def comparison(regime: str, seeds=COMPARE_SEEDS, synth: dict | None = None) -> list[tuple]:
    """(method, kind, seed, config) of the comparison: kind "method" or "baseline" (the
    method's own baseline; methods on the same batches share its runs)."""
    return [(m, kind, s, compare_config(m, regime, s, synth, kind == "baseline"))
            for m in COMPARED for kind in ("baseline", "method") for s in seeds]


# -- the tuning protocol --------------------------------------------------------------------------
# After Musgrave et al. (2020), "A Metric Learning Reality Check": every method at its main
# setting and every baseline gets the same search over the shared training settings, with the
# same budget, on the tuning benchmark only, in the closing comparison's paper regime (fine-tuned,
# large maps, few images). A full grid of 2 x 2 x 2 = 8 trials, one seed each; the trial with the
# best top-1 on the tuning benchmark is chosen (ties: the earlier trial, the default first).
# (The budget is what two cores train in an hour: 8 subjects x 8 trials = 64 runs.)
TUNING_LR_SCALES = (1.0, 0.5)          # x the configuration's own lr (0.1; 0.05 on MAMC's batches)
TUNING_WEIGHT_DECAYS = (5e-4, 5e-5)
TUNING_SMOOTHING = (0.0, 0.1)
TUNING_SEED = 0
TUNING_REGIME = "paper"
# The baselines the comparison uses, named by the batches they train on, and the methods'
# own: a method shares its baseline with the others on the same batches.
TUNED_BASELINES = {"baseline, random batches": "mcloss", "baseline, 16 x 4 batches": "apinet",
                   "baseline, 16 x 2 batches": "mamc"}


def tuning_trials() -> list[dict]:
    """The grid's settings, lr-major, the default first (the first 4 trials: the default lr)."""
    return [{"lr_scale": s, "train.weight_decay": wd, "train.label_smoothing": ls}
            for s in TUNING_LR_SCALES for wd in TUNING_WEIGHT_DECAYS for ls in TUNING_SMOOTHING]


def tuning_subjects() -> dict[str, RunConfig]:
    """Name -> the untuned configuration on the tuning benchmark: the three baselines and every
    compared method at its main setting."""
    subjects = {name: compare_config(m, TUNING_REGIME, TUNING_SEED, TUNING, baseline=True)
                for name, m in TUNED_BASELINES.items()}
    for m in COMPARED:
        subjects[m] = compare_config(m, TUNING_REGIME, TUNING_SEED, TUNING)
    return subjects


def with_trial(cfg: RunConfig, trial: dict) -> RunConfig:
    """cfg with one trial's settings: its own lr scaled, weight decay and label smoothing set."""
    return cfg.override(**{"train.lr": cfg.train.lr * trial["lr_scale"],
                           "train.weight_decay": trial["train.weight_decay"],
                           "train.label_smoothing": trial["train.label_smoothing"]})


def tuning_grid() -> list[tuple[str, int, RunConfig]]:
    """(subject, trial number, config) of the whole protocol, trial-major: a run cut
    short leaves every subject with the same trials."""
    subjects = tuning_subjects()
    return [(name, i, with_trial(cfg, trial)) for i, trial in enumerate(tuning_trials())
            for name, cfg in subjects.items()]


def tuning_jobs() -> list[tuple[str, int, RunConfig]]:
    """tuning_grid as collect() jobs: variant "subject | trial number", seed TUNING_SEED."""
    return [(f"{name} | {i}", TUNING_SEED, cfg) for name, i, cfg in tuning_grid()]


def chosen_trial(top1: dict[int, float]) -> int:
    """The protocol's rule over {trial number: top-1}: the best, the earlier trial on a tie."""
    best = max(top1.values())
    return min(t for t, v in top1.items() if v == best)


def baseline_subject(method: str) -> str:
    """The tuned baseline that trains on `method`'s batches (regime_config's batch rules: the
    PAIRED methods share 16 x 4 batches, MAMC has its own, the rest the book's batches)."""
    same = next(m for m in TUNED_BASELINES.values()
                if (m in PAIRED) == (method in PAIRED) and (m == "mamc") == (method == "mamc"))
    return next(name for name, m in TUNED_BASELINES.items() if m == same)


# The trial the protocol chose for each subject (tuning_table's "chosen trial", recorded here so
# that configs can be built without the runs; the closing chapter checks it is the rule's choice).
TUNED: dict[str, int] = {"baseline, random batches": 2, "baseline, 16 x 4 batches": 2,
                         "baseline, 16 x 2 batches": 0, "mcloss": 2, "apinet": 2, "cin": 2,
                         "mamc": 4, "rra": 2}


def tuned_config(method: str, seed: int, synth: dict | None = None,
                 baseline: bool = False) -> RunConfig:
    """compare_config in the paper regime at the trial the protocol chose for the method (or,
    baseline=True, for the baseline on its batches)."""
    subject = baseline_subject(method) if baseline else method
    if subject not in TUNED:
        raise KeyError(f"{subject!r} has no chosen trial in regimes.TUNED; run the tuning protocol "
                       "(tuning_grid) and record its choices")
    return with_trial(compare_config(method, TUNING_REGIME, seed, synth, baseline),
                      tuning_trials()[TUNED[subject]])


def tuned_comparison(seeds=COMPARE_SEEDS, synth: dict | None = None) -> list[tuple]:
    """comparison("paper") at the tuned settings: (method, kind, seed, config)."""
    return [(m, kind, s, tuned_config(m, s, synth, kind == "baseline"))
            for m in COMPARED for kind in ("baseline", "method") for s in seeds]


# -- the decisive controls ------------------------------------------------------------------------
# Each method against the run that isolates its idea (issue 29): the same method, batches and
# tuned trial, with the idea taken out. API-Net's control is its baseline on the same balanced
# 16 x 4 batches (the sampler is what its pairs need), so it has no control run of its own.
CONTROLS: dict[str, dict[str, dict]] = {
    "mcloss": {"L_dis alone": {"lam": 0.0}},                 # mu L_dis, no diversity term
    "apinet": {},
    "cin": {"W = I": CIN_ROWS["W = I (control)"]},           # the residual conv, no SCI or CCI
    "mamc": {"OSME alone": MAMC_ROWS["OSME P=2, softmax only"],
             "GAP head": MAMC_EXTRAS["GAP pooling + MAMC"]},
    "rra": {"whole image": RRA_ROWS["whole image (control)"]},
}


def control_config(method: str, control: str, regime: str, seed: int,
                   synth: dict | None = None) -> RunConfig:
    """The run of one of CONTROLS[method] in one of COMPARE_REGIMES: compare_config's run with
    the control's model.options (MC-Loss: its official weights with the control's changes), at
    the method's tuned trial in the paper regime on the main benchmark, untuned elsewhere."""
    opts = CONTROLS[method][control]
    cfg = compare_config(method, regime, seed, synth)
    if method == "mcloss":
        opts = {**cfg.model.options, **opts}
    elif method == "rra":
        opts = rra_options(opts, seed, COMPARE_REGIMES[regime], synth)
    cfg = cfg.override(**{"model.options": dict(opts)})
    if regime == TUNING_REGIME and synth is None:
        cfg = with_trial(cfg, tuning_trials()[TUNED[method]])
    return cfg


def controls(regime: str, seeds=COMPARE_SEEDS, synth: dict | None = None) -> list[tuple]:
    """(method, control, seed, config) of every control in one regime."""
    return [(m, c, s, control_config(m, c, regime, s, synth))
            for m in CONTROLS for c in CONTROLS[m] for s in seeds]


# -- the closing family (issue 29) ----------------------------------------------------------------
# The seeds of each cell of the closing chapter's verdicts: the tuned paper regime on the main
# benchmark, where the papers make their claims, 20 paired seeds per method, baseline and control;
# from scratch 5 (MC-Loss, whose paper claims this regime, 10, its control too); the held-out
# benchmark (paper regime, shared recipe) 5.
PAPER_SEEDS = tuple(range(20))
SCRATCH_SEEDS = COMPARE_SEEDS
MCLOSS_SCRATCH_SEEDS = tuple(range(10))
CELLS = ("paper", "from scratch", "held-out")


def cell_seeds(method: str, cell: str) -> tuple[int, ...]:
    """The paired seeds of one method in one cell of the closing family."""
    if cell == "paper":
        return PAPER_SEEDS
    if cell == "held-out":
        return HELD_OUT_SEEDS
    return MCLOSS_SCRATCH_SEEDS if method == "mcloss" else SCRATCH_SEEDS


def closing_jobs() -> list[tuple[str, int, RunConfig]]:
    """Every run of the closing family as collect() jobs, variant "cell | method | kind" (kind:
    "baseline", "method" or a control's name): the paper cell tuned (tuned_config) with every
    control; from scratch with MC-Loss's control; the held-out benchmark at the shared recipe."""
    jobs = []
    for cell in CELLS:
        for m in COMPARED:
            for s in cell_seeds(m, cell):
                if cell == "paper":
                    runs = {k: tuned_config(m, s, baseline=k == "baseline")
                            for k in ("baseline", "method")}
                    runs.update({c: control_config(m, c, "paper", s) for c in CONTROLS[m]})
                elif cell == "from scratch":
                    runs = {k: compare_config(m, cell, s, baseline=k == "baseline")
                            for k in ("baseline", "method")}
                    if m == "mcloss":
                        runs.update({c: control_config(m, c, cell, s) for c in CONTROLS[m]})
                else:
                    runs = {k: compare_config(m, "paper", s, HELD_OUT, baseline=k == "baseline")
                            for k in ("baseline", "method")}
                jobs += [(f"{cell} | {m} | {k}", s, cfg) for k, cfg in runs.items()]
    return jobs
