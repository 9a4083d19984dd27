"""One verdict function for the whole book: paired seeds, an interval, a p-value,
Holm's correction over a named family, an equivalence test and the smallest effect the
seeds could detect.

A method and its baseline trained with the same seed share the data order and the
initial (or pretrained) weights, so their difference is read per seed:
d_s = b_s - a_s. For n paired seeds

    mean  d-bar = (1/n) sum_s d_s,   se = sd(d) / sqrt(n),
    95 % interval  d-bar +- t_{0.975, n-1} se                    (Student's t),
    p     the exact two-sided sign-flip permutation p-value for n <= EXACT_UP_TO (all
          2^n sign patterns of d; under "no effect" each d_s is as likely to be -d_s),
          else the paired t,
    TOST  two one-sided tests of |mean| < margin, the same test shifted by -+margin;
          "no effect" is said only when both reject (Schuirmann 1987),
    MDE   (t_{1 - alpha_f/2, n-1} + t_{power, n-1}) sd / sqrt(n): the smallest true
          difference the seeds find with the stated power at the family's Bonferroni
          level alpha_f = alpha / K (Holm is at least as powerful), from the observed
          sd;
          infinite when the exact test cannot reach alpha_f at all (2 / 2^n >= alpha_f:
          five seeds or fewer at 5 %).

A family of K verdicts (a chapter's table, or the closing chapter's method x cell
verdicts) is corrected with Holm's step-down method (Holm 1979), separately for the
difference tests and for the equivalence tests. The word: "a gain" / "a loss" when
the corrected p is below alpha; "no effect (within +-margin)" when the corrected
equivalence p is; else "inconclusive".
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from fglib.core.stats import signed  # noqa: F401  (re-exported: chapters import it here)

ALPHA = 0.05          # family-wise error rate of each family of verdicts
MARGIN = 1.0          # top-1 points: "no effect" means equivalent within +-1 point
POWER = 0.8
EXACT_UP_TO = 16      # seeds: exact sign flips up to 2^16 = 65,536 patterns, then t
WORDS = ("a gain", "a loss", "no effect", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """One paired comparison b - a over n seeds (top-1 points)."""

    n: int
    mean: float
    low: float             # 95 % interval of the mean difference (Student's t)
    high: float
    p: float               # two-sided, unadjusted
    p_equivalence: float   # TOST: the larger of the two one-sided p-values, unadjusted
    mde: float             # minimum detectable effect (see the module's docstring)
    test: str              # "exact sign flips" or "paired t"
    margin: float
    p_holm: float = math.nan
    p_equivalence_holm: float = math.nan
    word: str = "inconclusive"


def _sign_flip_means(d: np.ndarray) -> np.ndarray:
    """The mean of d under every one of its 2^n sign patterns."""
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return signs @ d / len(d)


def sign_flip_p(d: Iterable[float], alternative: str = "two-sided") -> float:
    """Exact sign-flip permutation p-value of mean(d) = 0 (d symmetric about 0 under the
    null): the share of the 2^n sign patterns whose mean is at least as extreme as the
    observed one."""
    d = np.asarray(list(d), dtype=np.float64)
    if len(d) > EXACT_UP_TO:
        raise ValueError(f"{len(d)} differences: exact sign flips enumerate 2^{len(d)} "
                         f"patterns; use the paired t beyond {EXACT_UP_TO}")
    means, observed = _sign_flip_means(d), d.mean()
    tol = 1e-12 * max(1.0, float(np.abs(d).max(initial=0.0)))   # ties of equal means
    if alternative == "two-sided":
        return float(np.mean(np.abs(means) >= abs(observed) - tol))
    if alternative == "greater":
        return float(np.mean(means >= observed - tol))
    if alternative == "less":
        return float(np.mean(means <= observed + tol))
    raise ValueError("alternative must be 'two-sided', 'greater' or 'less', "
                     f"got {alternative!r}")


def _p(d: np.ndarray, alternative: str) -> float:
    if len(d) <= EXACT_UP_TO:
        return sign_flip_p(d, alternative)
    return float(stats.ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def holm(p: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order (NaN stays NaN)."""
    p = np.asarray(list(p), dtype=np.float64)
    ok = ~np.isnan(p)
    q = p[ok]
    order = np.argsort(q, kind="stable")
    k = len(q)
    adjusted = np.empty(k)
    running = 0.0
    for rank, i in enumerate(order):            # (k - rank) x p_(rank), kept monotone
        running = max(running, min(1.0, (k - rank) * q[i]))
        adjusted[i] = running
    out = np.full(len(p), np.nan)
    out[ok] = adjusted
    return out


def smallest_p(n: int) -> float:
    """The smallest two-sided p-value n paired seeds can give: 2 / 2^n by exact sign
    flips (all differences of one sign), 0 for the paired t beyond EXACT_UP_TO. Five
    seeds cannot go below 0.0625, so no difference on five seeds is called at 5 %."""
    return 2.0 / 2 ** n if n <= EXACT_UP_TO else 0.0


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference detected with `power` by a two-sided test at level
    `alpha`, for n paired seeds of standard deviation sd (the t approximation)."""
    if n < 2:
        return math.inf
    t = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(t * sd / math.sqrt(n))


def paired(a: Iterable[float], b: Iterable[float], margin: float = MARGIN,
           alpha_family: float = ALPHA) -> Verdict:
    """The verdict on b - a for paired seeds (a[i] and b[i] trained with the same seed),
    before the family's correction; alpha_family (alpha / K) sets the MDE's level."""
    a = np.asarray(list(a), dtype=np.float64)
    b = np.asarray(list(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired seeds: {len(a)} baseline values against {len(b)}; "
                         "pass the same seeds in the same order")
    if len(a) < 2:
        raise ValueError(f"{len(a)} paired seed(s): a verdict needs two or more")
    d = b - a                                              # per-seed differences
    n, mean = len(d), float(d.mean())
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    p_low = _p(d + margin, "greater")                      # H0: mean <= -margin
    p_high = _p(d - margin, "less")                        # H0: mean >= +margin
    floor = smallest_p(n)                                  # sign flips: >= 2 / 2^n
    return Verdict(n=n, mean=mean, low=mean - half, high=mean + half,
                   p=_p(d, "two-sided"), p_equivalence=max(p_low, p_high),
                   mde=math.inf if floor >= alpha_family else mde(sd, n, alpha_family),
                   test="exact sign flips" if n <= EXACT_UP_TO else "paired t",
                   margin=margin)


def word(v: Verdict, alpha: float = ALPHA) -> str:
    """The verdict's word from its corrected p-values."""
    if v.p_holm < alpha:
        return "a gain" if v.mean > 0 else "a loss"
    if v.p_equivalence_holm < alpha:
        return "no effect"
    return "inconclusive"


def family(pairs: Mapping[str, tuple[Iterable[float], Iterable[float]]],
           margin: float = MARGIN, alpha: float = ALPHA) -> dict[str, Verdict]:
    """Verdicts on a named family {name: (baseline values, method values)},
    Holm-corrected together (difference and equivalence tests each over the K)."""
    k = len(pairs)
    raw = {name: paired(a, b, margin, alpha / k) for name, (a, b) in pairs.items()}
    p = holm([v.p for v in raw.values()])
    pe = holm([v.p_equivalence for v in raw.values()])
    out = {}
    for (name, v), ph, peh in zip(raw.items(), p, pe):
        v = replace(v, p_holm=float(ph), p_equivalence_holm=float(peh))
        out[name] = replace(v, word=word(v, alpha))
    return out


def against_claim(v: Verdict, claim: float) -> str:
    """A paper's claimed gain against our interval: "reproduced" (our gain holds and the
    claim is inside the interval), "smaller than claimed" (our gain holds, the claim
    above the interval), "claim excluded" (no gain and the claim above the interval),
    else "inconclusive"."""
    if v.word == "a gain":
        return "reproduced" if claim <= v.high else "smaller than claimed"
    if v.high < claim:
        return "claim excluded"
    return "inconclusive"


def aligned(a: Mapping[int, float], b: Mapping[int, float],
            what: str = "the comparison") -> tuple[list[float], list[float]]:
    """Two {seed: value} mappings (e.g. Series indexed by seed) as paired lists, in seed
    order; an error naming the seeds found on one side only."""
    a, b = dict(a), dict(b)
    alone = sorted(set(a) ^ set(b))
    if alone:
        raise ValueError(f"{what}: seeds {alone} are on one side only; a paired "
                         "verdict needs the same seeds on both sides (train the missing "
                         "runs, or select the common seeds)")
    seeds = sorted(a)
    return [float(a[s]) for s in seeds], [float(b[s]) for s in seeds]


def interval(v: Verdict) -> str:
    """'+0.6 [+0.3, +0.9]': the mean difference and its 95 % interval."""
    return f"{signed(v.mean)} [{signed(v.low)}, {signed(v.high)}]"


def p_text(p: float) -> str:
    """A p-value as the chapters print it: three decimals, "< 0.001" below."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def reading(v: Verdict) -> str:
    """The verdict's word with what it rests on, e.g. 'a gain (Holm p = 0.004)',
    'no effect (equivalent within ±1 point, Holm p = 0.010)', 'inconclusive (...)'."""
    if v.word in ("a gain", "a loss"):
        return f"{v.word} (Holm p {p_text(v.p_holm)})"
    if v.word == "no effect":
        return (f"no effect (equivalent within ±{v.margin:g} point, Holm p "
                f"{p_text(v.p_equivalence_holm)})")
    if math.isinf(v.mde):
        return (f"inconclusive ({v.n} seeds: sign flips cannot reach the family's "
                f"level, p ≥ {smallest_p(v.n):.3f})")
    return (f"inconclusive (neither a difference nor equivalence within "
            f"±{v.margin:g} point; the seeds detect {v.mde:.1f} points)")


def sentence(v: Verdict, what: str, against: str,
             family_size: int | None = None) -> str:
    """One Markdown sentence from a verdict: "X changes top-1 by **+0.6 points** (95 %
    interval [+0.3, +0.9]) over Y (10 paired seeds): a gain (Holm p = 0.004).";
    family_size: the number of verdicts its Holm correction ran over, said when > 1."""
    fam = (f", one of {family_size} verdicts corrected together"
           if family_size and family_size > 1 else "")
    return (f"{what} changes top-1 by **{signed(v.mean)} points** (95 % interval "
            f"[{signed(v.low)}, {signed(v.high)}]) over {against} ({v.n} paired "
            f"seeds{fam}): {reading(v)}.")


def compare_sentence(a: Mapping[int, float], b: Mapping[int, float], what: str,
                     against: str, margin: float = MARGIN) -> str:
    """`sentence` for one comparison on its own (a family of one): b against a, each
    {seed: top-1}."""
    v = family({what: aligned(a, b, what)}, margin)[what]
    return sentence(v, what, against)


def table(verdicts: Mapping[str, Verdict]) -> pd.DataFrame:
    """The family as the chapters print it."""
    return pd.DataFrame({name: {
        "n": v.n, "Δ": v.mean, "95 % interval": f"[{v.low:+.1f}, {v.high:+.1f}]",
        "p": v.p, "p (Holm)": v.p_holm, "equivalence p (Holm)": v.p_equivalence_holm,
        "MDE": v.mde, "verdict": v.word} for name, v in verdicts.items()}).T


def bootstrap_rank_correlation(first: Mapping[str, Iterable[float]],
                               second: Mapping[str, Iterable[float]], reps: int = 2000,
                               seed: int = 0, level: float = 0.95
                               ) -> tuple[float, float, float]:
    """Spearman's rho between the methods' mean differences on two benchmarks, with a
    percentile bootstrap interval over seeds: each replicate redraws every method's
    seeds with replacement on each benchmark (paired differences, {method: per-seed
    differences}) and ranks the redrawn means. Returns (rho of the means, low, high)."""
    names = list(first)
    if set(names) != set(second) or len(names) < 3:
        raise ValueError(f"the two benchmarks need the same three or more methods, got "
                         f"{sorted(first)} and {sorted(second)}")
    a = [np.asarray(list(first[m]), dtype=np.float64) for m in names]
    b = [np.asarray(list(second[m]), dtype=np.float64) for m in names]
    rho = float(stats.spearmanr([x.mean() for x in a], [y.mean() for y in b]).statistic)
    rng = np.random.default_rng(seed)
    draws = np.empty(reps)
    for r in range(reps):
        ma = [x[rng.integers(0, len(x), len(x))].mean() for x in a]
        mb = [y[rng.integers(0, len(y), len(y))].mean() for y in b]
        draws[r] = stats.spearmanr(ma, mb).statistic
    draws = draws[~np.isnan(draws)]                 # all-tied replicates have no rho
    tail = (1 - level) / 2
    return rho, float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))
