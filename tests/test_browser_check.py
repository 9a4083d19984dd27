"""The browser check of the rendered book (tests/browser/check_book.py), run on small synthetic pages.

Each bad page carries one kind of fault and must be reported for it; the good site carries look-alikes
that must not be (dollars in prose, TeX inside code, math that MathJax typesets, a redirect page,
pages the check skips). Needs Chromium and the `playwright` package (the `browser` extra): skipped
without them, except under CI, where .ci/run installs both and a skip would hide a broken check.
"""
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "browser" / "check_book.py"

_spec = importlib.util.spec_from_file_location("fgvc_check_book", SCRIPT)
check_book = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(check_book)


def _missing_browser() -> str | None:
    if check_book.find_chromium() is None:
        return "no Chromium executable found (apt-get install chromium, or set $CHROMIUM)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing (pip install -e '.[browser]')"
    return None


MISSING = _missing_browser()
needs_browser = pytest.mark.skipif(MISSING is not None and not os.environ.get("CI"),
                                   reason=f"browser check not run: {MISSING}")


def _mathjax_dir() -> Path | None:
    """MathJax 3 as shipped by sphinx-mathjax-offline (a dependency of the book), if installed."""
    try:
        dist = importlib.metadata.distribution("sphinx-mathjax-offline")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    return path if (path / "tex-chtml.js").is_file() else None


STYLE = """<style>
  body { margin: 0; font-family: sans-serif; }
  main { width: 600px; margin: 20px; }
  pre { overflow: auto; font-family: monospace; font-size: 14px; }
  div.math { overflow-x: auto; }   /* as the book's theme: a wide formula scrolls in its box */
</style>"""


def page(body: str, *, mathjax: bool = False, title: str = "page") -> str:
    """A page shaped like Jupyter Book's: MathJax told to typeset .math only, and the chapter in a
    section that myst-nb marks tex2jax_ignore (as it does for every notebook)."""
    script = ('<script>window.MathJax = {"options": {"processHtmlClass": "tex2jax_process|mathjax_process|math"}}'
              '</script><script defer src="_static/mathjax/tex-chtml.js"></script>') if mathjax else ""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"{STYLE}{script}</head>\n<body><main><section class='tex2jax_ignore mathjax_ignore'>\n{body}\n"
            "</section></main></body></html>\n")


def code_cell(lines: list[str], output_html: str = "") -> str:
    """A code cell as Jupyter Book renders it: source in div.cell_input, output in div.cell_output."""
    source = "\n".join(lines)
    out = f'<div class="cell_output"><div class="output text_html">{output_html}</div></div>' if output_html else ""
    return (f'<div class="cell"><div class="cell_input"><div class="highlight"><pre>{source}\n</pre></div></div>'
            f"{out}</div>")


PNG_1PX = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
           "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def write_good_site(root: Path, mathjax: Path | None) -> None:
    (root / "_static").mkdir(parents=True)
    if mathjax:
        (root / "_static" / "mathjax").symlink_to(mathjax, target_is_directory=True)
    math = r'<p>The energy <span class="math">\(E = mc^2\)</span> and</p><div class="math">\[\sum_i x_i\]</div>'
    cell = code_cell([r"\begin{equation} x = 1 \end{equation}", "y = 2  # short line"],
                     "<table><tr><td>accuracy</td><td>0.9</td></tr></table>")
    (root / "ok.html").write_text(page(f"""
<section id="intro"><h1>A clean page</h1>
<p>Tickets cost $5 and $10; the variable <code>$x$</code> is shell, not TeX.</p>
{math if mathjax else ""}
<p><a href="#intro">here</a>, <a href="other.html#part-2">there</a>, <a href="other.html">other</a>,
<a href="https://example.org/">out</a>, <a href="mailto:a@b.c">mail</a>, <a href="#">top</a></p>
<img src="{PNG_1PX}" alt="dot"> <img src="dot.svg" alt="svg">
{cell}
</section>""", mathjax=mathjax is not None))
    (root / "dot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 2 2">'
                                  '<circle cx="1" cy="1" r="1"/></svg>')
    (root / "other.html").write_text(page('<section id="part-2"><h2>Part 2</h2><p>Fine.</p></section>'))
    (root / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=ok.html" />\n')
    # the check skips these: errors in them must not count
    (root / "genindex.html").write_text(page("<script>nope();</script>"))
    (root / "_static" / "junk.html").write_text(page("<p>$x$</p>"))


def write_bad_site(root: Path, mathjax: Path | None) -> None:
    (root / "_static").mkdir(parents=True)
    if mathjax:
        (root / "_static" / "mathjax").symlink_to(mathjax, target_is_directory=True)
    (root / "tex.html").write_text(page(
        '<p>Typeset: <span class="math">\\(x^2\\)</span>.</p>'
        + code_cell(["table()"], "<table><tr><th>weight</th><td>$x$</td></tr></table>"),
        mathjax=mathjax is not None))
    (root / "nomath.html").write_text(page(r"<p>The loss \(L_{ce}\) was never typeset.</p>"))
    long_line = "result = compute(" + ", ".join(f"arg{i:02d}" for i in range(14)) + ")"
    long_line += " " * (120 - len(long_line) - 4) + "# ok"
    assert len(long_line) == 120
    (root / "wide.html").write_text(page(code_cell(["import fglib", long_line, "print(result)"])))
    (root / "links.html").write_text(page("""
<section id="here"><p><a href="missing.html">gone</a> <a href="target.html#nowhere">no anchor</a>
<a href="target.html#there">fine</a> <a href="#here">self</a> <a href="#absent">self, absent</a></p>
<img src="missing.png" alt="lost figure"></section>"""))
    (root / "target.html").write_text(page('<h2 id="there">There</h2>'))
    (root / "js.html").write_text(page("<script>console.error('boom from the page');</script>"
                                       "<script>undefinedFunction();</script>"
                                       '<script src="https://cdn.example.org/lib.js"></script>'))
    if mathjax:
        (root / "texerror.html").write_text(page(r'<p><span class="math">\(x^2^3\)</span></p>', mathjax=True))
        terms = " + ".join(f"a_{{{i}}} b_{{{i}}}" for i in range(40))
        (root / "widemath.html").write_text(page(
            f'<section id="loss"><p>Too wide:</p><div class="math">\\[L = {terms}\\]</div>'
            r'<p>Fits:</p><div class="math">\[L = a_1 b_1 + a_2 b_2\]</div></section>', mathjax=True))
    (root / "broken.html").symlink_to(root / "does-not-exist.html")


def run_check(root: Path, shots: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), str(root), "--screenshots", str(shots)],
                          capture_output=True, text=True, timeout=240)
    return proc.returncode, proc.stdout + proc.stderr


def problems_by_page(output: str) -> dict[str, list[str]]:
    """The 'page:' sections of the report, each with its '  - problem' lines."""
    found, current = {}, None
    for line in output.splitlines():
        if re.fullmatch(r"\S+\.html:", line):
            current = found.setdefault(line[:-1], [])
        elif line.startswith("  - ") and current is not None:
            current.append(line[4:])
        else:
            current = None if not line.startswith("  ") else current
    return found


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    if MISSING:
        pytest.fail(f"CI must run the browser check, but {MISSING}: .ci/run installs Chromium and playwright")
    mathjax = _mathjax_dir()
    base = tmp_path_factory.mktemp("browser")
    write_good_site(base / "good", mathjax)
    write_bad_site(base / "bad", mathjax)
    good = run_check(base / "good", base / "good-shots")
    bad = run_check(base / "bad", base / "bad-shots")
    return {"good": good, "bad": bad, "problems": problems_by_page(bad[1]), "base": base, "mathjax": mathjax}


def _one(problems: list[str], pattern: str) -> str:
    hits = [p for p in problems if re.search(pattern, p)]
    assert hits, f"no problem matching {pattern!r} in {problems}"
    return hits[0]


def test_missing_book_is_a_usage_error(tmp_path):
    rc, out = run_check(tmp_path / "nothing", tmp_path / "shots")
    assert rc == 2 and "run `make book` first" in out


@needs_browser
def test_a_clean_site_passes_with_screenshots(reports):
    rc, out = reports["good"]
    assert rc == 0, out
    assert re.search(r"^ok +ok\.html .*links, 2 images", out, re.M), out
    assert re.search(r"^ok +index\.html .*redirects to ok\.html", out, re.M), out
    if reports["mathjax"]:
        assert re.search(r"^ok +ok\.html .*, 2 formulas", out, re.M), out
    assert "genindex" not in out and "junk" not in out, "skipped pages were checked"
    shot = reports["base"] / "good-shots" / "ok.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (reports["base"] / "good-shots" / "index.png").exists()


@needs_browser
def test_every_bad_page_fails(reports):
    rc, out = reports["bad"]
    assert rc == 1, out
    bad = {"tex.html", "nomath.html", "wide.html", "links.html", "js.html", "broken.html"}
    bad |= {"texerror.html", "widemath.html"} if reports["mathjax"] else set()
    assert set(reports["problems"]) == bad, out
    assert re.search(r"^ok +target\.html", out, re.M), out
    assert re.search(rf"\d+ problems on {len(bad)} pages", out), out


@needs_browser
def test_raw_tex_left_after_mathjax(reports):
    tex = reports["problems"]["tex.html"]
    # with MathJax, \(x^2\) is typeset and only the output's $x$ is left; without it, both are raw
    assert len(tex) == (1 if reports["mathjax"] else 2), tex
    hit = _one(tex, r"raw TeX \(\$\.\.\.\$\) in the text of a cell output \(cell 1\): \$x\$ ")
    assert hit.endswith('in "$x$"'), hit
    hit = _one(reports["problems"]["nomath.html"], r"raw TeX \(\\\( or \\\)\) in the text of a <p>: ")
    assert r'in "The loss \(L_{ce}\) was never typeset."' in hit, hit


@needs_browser
def test_tex_errors_reported_by_mathjax(reports):
    if not reports["mathjax"]:
        pytest.skip("sphinx-mathjax-offline is not installed: no MathJax to run")
    assert reports["problems"]["texerror.html"] == ["MathJax TeX error: Double exponent: use braces to clarify"]


@needs_browser
def test_code_line_wider_than_the_column(reports):
    wide = reports["problems"]["wide.html"]
    assert len(wide) == 1, wide
    hit = _one(wide, r"code cell wider than its column \(cell 1\): line 2 is 120 characters long")
    assert "px): result = compute(arg00, arg01, arg02" in hit


@needs_browser
def test_broken_links_anchors_and_images(reports):
    links = reports["problems"]["links.html"]
    _one(links, r"broken link: missing\.html .*no file missing\.html")
    _one(links, r"broken link: target\.html#nowhere .*no anchor #nowhere in target\.html")
    _one(links, r"broken link: #absent .*no anchor #absent in links\.html")
    _one(links, r"broken image: missing\.png \(no such file\) alt='lost figure'")
    _one(links, r"missing resource: missing\.png \(HTTP 404\)")
    assert not [p for p in links if "#there" in p or "#here" in p], links


@needs_browser
def test_javascript_errors_and_pages_that_do_not_load(reports):
    js = reports["problems"]["js.html"]
    _one(js, r"JavaScript error: ReferenceError: undefinedFunction is not defined")
    _one(js, r"console error: boom from the page")
    _one(js, r"external resource requested \(the book must work offline\): https://cdn\.example\.org/lib\.js")
    assert reports["problems"]["broken.html"] == ["page does not load: HTTP 404"]


@needs_browser
def test_display_equation_wider_than_the_column(reports):
    if not reports["mathjax"]:
        pytest.skip("sphinx-mathjax-offline is not installed: no MathJax to run")
    wide = reports["problems"]["widemath.html"]
    assert len(wide) == 1, wide                                       # the short one fits
    hit = _one(wide, r"display equation wider than its column \(section #loss\): \d+ px in a 600 px "
                     r"column; break it over lines \(aligned\): L = a_\{0\} b_\{0\}")
    assert int(re.search(r"column \(section #loss\): (\d+) px", hit).group(1)) > 600
