"""Sort the survivors of a mutmut run (`make mutation`) into the reasons they survive.

    python tests/mutation/report.py > tests/mutation/survivors.md

Reads `mutmut results --all true` and `mutmut show` for every mutant that was not killed,
puts each under the first rule below that matches it, and prints the table the README
quotes plus every survivor with its diff. A survivor no rule explains is listed under
"unexplained": a test should kill it, or a rule here should say why it is equivalent.

Rules match on the mutated function's name and the changed lines (the diff's - and + lines).
"""
from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

MUTMUT = str(Path(sys.executable).with_name("mutmut"))

# (category, reason, function regex, test on (minus, plus) text)
Rule = tuple[str, str, str, object]


def _changed_string_only(m: str, p: str) -> bool:
    """A string literal was wrapped in XX, or changed case, or the text became None."""
    return "XX" in p or (p.lower() == m.lower() and p != m)


def _compares(m: str) -> bool:
    """A string that is compared or used as a key is behaviour, not message text."""
    return bool(re.search(r"==|!=|\bin\s*\(|\bnot in\b|startswith|\"\w+\": |einsum|"
                          r"def __init__", m))


RULES: list[Rule] = [
    ("equivalent", 'float("INF") is float("inf"): float() ignores the case',
     r".", lambda m, p: '"INF"' in p or '"-INF"' in p),
    ("equivalent", "torch.randint(0, n, ...) and torch.randint(n, ...) are the same call "
     "(low defaults to 0)",
     r".", lambda m, p: "randint(0," in m and "randint(0," not in p and "randint(1," not in p),
    ("equivalent", "a fill value above every uniform draw in [0, 1): 2.0 or 3.0 sort the "
     "same", r"random_pair_indices|channel_mask", lambda m, p: "3.0" in p and "2.0" in m),
    ("equivalent", "pair_indices takes an argmin over distances: d^2, 2 d^2 and d^3 order "
     "the same, and cdist's compute mode changes only rounding",
     r"apinet\.x_pair_indices", lambda m, p: "cdist" in m),
    ("equivalent", "F.softmax / F.normalize without dim (or dim=None for softmax) use dim 1 "
     "on 2-D inputs, the dim given",
     r".", lambda m, p: re.search(r"F\.(softmax|normalize)\(", m) and (
         re.search(r", \)+$", p.strip().rstrip("#").split("#")[0].strip()) or
         (", None)" in p and "softmax" in p)) is not None),
    ("equivalent", "F.interpolate's align_corners=None is False; roi_align's spatial_scale "
     "defaults to 1.0", r"patches\.x_cut",
     lambda m, p: ("align_corners=False" in m and "align_corners=False" not in p) or (
         "spatial_scale=1.0" in m and "spatial_scale" not in p)),
    ("equivalent", "torch.meshgrid's default indexing is 'ij'", r".",
     lambda m, p: 'indexing="ij"' in m and 'indexing="ij"' not in p),
    ("equivalent", "ReLU(inplace=...) changes memory use, not values", r".",
     lambda m, p: "inplace=" in m and "ReLU" in m),
    ("equivalent", "bias=None is bias=False", r".",
     lambda m, p: "bias=False" in m and "bias=None" in p),
    ("equivalent", "register_buffer(persistent=None) is non-persistent, as False", r".",
     lambda m, p: "persistent=False" in m and "persistent=None" in p),
    ("equivalent", "Module._apply's recurse defaults to True", r"_apply",
     lambda m, p: "recurse" in m and "recurse" not in p),
    ("equivalent", "kaiming_normal_ lower-cases mode, and its default non-linearity "
     "(leaky_relu, slope 0) has ReLU's gain", r"SmallResNet",
     lambda m, p: "kaiming_normal_" in m),
    ("equivalent", "the signed square root and the L2 normalisation remove any positive "
     "scale of B: dividing or multiplying by hw (or h/w) gives the same features, up to "
     "the 1e-10 guard", r"bilinear_pool",
     lambda m, p: ("/ hw" in m and "* hw" in p) or ("h * w)" in m and "h / w)" in p)),
    ("equivalent", "W is square (c x c): its shape[0] is its shape[1]", r"relation_mass",
     lambda m, p: "shape[0]" in m and "shape[1]" in p),
    ("equivalent", "in evaluation the batch norm uses its running statistics whether they "
     "are passed back or not", r"SCI.*interact",
     lambda m, p: "stats = (self.bn.running_mean" in m),
    ("equivalent", "a uniform draw equals 0.5 exactly with probability 2^-24", r".",
     lambda m, p: "< 0.5" in m and "<= 0.5" in p),
    ("equivalent", "OSME's w3 modules are all d wide: w3[0] and w3[1] have the same width "
     "(P = 1 fails at once, and is tested)", r"OSMEClassifier",
     lambda m, p: "w3[0]" in m and "w3[1]" in p),
    ("equivalent", "torch.load's weights_only defaults to True in torch >= 2.6; False loads "
     "the same tensors from a file that holds only tensors",
     r".", lambda m, p: "weights_only=True" in m and "weights_only=True" not in p),
    ("equivalent", "the padding row is never indexed past the first: one or two rows of "
     "padding give the same gather", r"MCLoss.*grouped",
     lambda m, p: "new_full((b, 1" in m and "new_full((b, 2" in p),
    ("equivalent", "x.shape[+2] is x.shape[-2] on a 4-D image batch", r"RRANet",
     lambda m, p: "shape[-2" in m and "shape[+2" in p),
    ("equivalent", "load_state_dict copies into each tensor's own dtype: casting the loaded "
     "floats (or the integer step counter) first or not loads the same weights",
     r"load_small_resnet", lambda m, p: "is_floating_point()" in m),
    ("equivalent", "load_state_dict(strict=None) is strict=False", r"TorchvisionResNet",
     lambda m, p: "strict=False" in m and "strict=None" in p),
    ("equivalent", "with mask='batch' the batch size is not read: one mask for the batch",
     r"MCLoss.*discriminality", lambda m, p: "channel_mask(len(x)" in m and
     "channel_mask(None" in p),
    ("equivalent", "the whole-image control's sequences are all the same: one or two "
     "copies average to the same logits", r"RRANet.*sequences",
     lambda m, p: "expand(-1, 1, t" in m and "expand(-1, 2, t" in p),
    ("equivalent", "einsum's subscripts are case-sensitive labels: upper case names the "
     "same contraction", r".", lambda m, p: "einsum(" in m and p.split(",")[0].isupper()
     or ("einsum(\"" in m and re.search(r'einsum\("[A-Z,>-]+"', p) is not None)),
    ("equivalent", "torch.full with an integer fill value is int64 already", r"MCLoss",
     lambda m, p: "torch.full(" in m and "dtype=torch.long" in m),
    ("device", "which device a tensor is created or loaded on: the tests run on a CPU, where "
     "every device is the CPU; equivalent there, not on a GPU", r".",
     lambda m, p: ("x.device)" in m and "None)" in p and "channel_mask" in m) or ("device=" in m and ("device=None" in p or p.count("device=") < m.count(
         "device="))) or ("map_location" in m and ("map_location" not in p or
                                                  "map_location=None" in p or '"CPU"' in p))
     or (re.search(r"\.to\(\w+\.device\)", m) and ".to(None)" in p)),
    ("precision", "a cast to a dtype the tensor already has, or that type promotion gives "
     "anyway, outside mixed precision: equivalent in float32 and float64 (where the tests "
     "run), not under bfloat16 autocast", r".",
     lambda m, p: (".to(" in m and ".to(None)" in p) or ("dtype=" in m and (
         "dtype=None" in p or "dtype=" not in p))),
    ("message", "the wording of an error message: tests check the exception type and one "
     "phrase of it", r".",
     lambda m, p: not _compares(m) and (_changed_string_only(m, p) or re.search(
         r"raise \w+\(None\)", p) or (p.strip() == "None" and m.strip().startswith(
             ("f\"", "\"", "'", "f'"))) or ("{" in m and "None" in p and "join" in m) or (
         "sum(None)" in p and "{sum" in m) or m.strip().startswith(("f\"", "f'")) or (
         m.strip().startswith("raise ") and "(f\"" in m) or "str(e)[:300]" in m)),
]


def survivors() -> list[tuple[str, str]]:
    out = subprocess.run([MUTMUT, "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        name, _, status = line.strip().partition(": ")
        if status and status != "killed":
            rows.append((name, status))
    return rows


def diff(name: str) -> tuple[list[str], list[str], str]:
    text = subprocess.run([MUTMUT, "show", name], capture_output=True, text=True).stdout
    lines = text.splitlines()
    minus = [l[1:] for l in lines if l.startswith("-") and not l.startswith("---")]
    plus = [l[1:] for l in lines if l.startswith("+") and not l.startswith("+++")]
    return minus, plus, text


def classify(name: str, minus: list[str], plus: list[str]) -> tuple[str, str]:
    m, p = "\n".join(minus), "\n".join(plus)
    for category, reason, where, test in RULES:
        if re.search(where, name) and test(m, p):
            return category, reason
    return "unexplained", "no test kills it and no rule explains it"


def main() -> None:
    totals = subprocess.run([MUTMUT, "results", "--all", "true"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    statuses = collections.Counter(l.rsplit(": ", 1)[-1].strip() for l in totals if ": " in l)
    groups: dict[tuple[str, str], list] = collections.defaultdict(list)
    for name, status in survivors():
        minus, plus, _ = diff(name)
        groups[classify(name, minus, plus)].append((name, status, minus, plus))
    n = sum(statuses.values())
    alive = n - statuses["killed"]
    print("# Mutation testing: the survivors and why they survive\n")
    print(f"mutmut over fglib/models/ (patches included): {n} mutants, {statuses['killed']} "
          f"killed, {alive} not killed ({100 * alive / n:.1f} %; "
          f"{statuses.get('no tests', 0)} of them reached by no selected test).\n")
    print("| category | mutants | why they survive |\n|---|---|---|")
    for (category, reason), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"| {category} | {len(items)} | {reason} |")
    for (category, reason), items in sorted(groups.items()):
        print(f"\n## {category}: {reason}\n")
        for name, status, minus, plus in items:
            print(f"- `{name}` ({status})")
            for l in minus:
                print(f"  - `- {l.strip()[:150]}`")
            for l in plus:
                print(f"  - `+ {l.strip()[:150]}`")


if __name__ == "__main__":
    main()
