#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium and report what a reader would trip over.

    python tests/browser/check_book.py [_build/html] [--screenshots DIR] [--chromium PATH]

(`make check-book` runs it on _build/html.) Each HTML page of the book (all of _build/html/**/*.html
but _static/, _sources/, _images/, genindex.html and search.html) is served from a local HTTP server
and loaded at a desktop viewport (1280x900 by default). A page fails when

  * it does not load (or a redirect page does not reach its target);
  * it links to a local file or anchor that does not exist, or shows an image that did not load;
  * it requests a resource that is missing, or one from outside the book (the book must work offline);
  * raw TeX is left in its visible text once MathJax has run (`$...$`, `\\(`, `\\[`, `\\begin{`, ...;
    code blocks and typeset math are not searched), or MathJax reports a TeX error;
  * it raises a JavaScript error or logs an error to the console;
  * a code block, or a cell's output, is wider than its column (a horizontal scrollbar appears),
    or the page as a whole scrolls sideways;
  * a display equation, once typeset, is wider than the column it sits in (the theme scrolls it
    in its own box, so the reader sees it cut at the right edge).

A full-page PNG screenshot of every page goes to _build/browser-screenshots/ (the `html` folder's
sibling) or to --screenshots DIR. One summary line is printed per page, then every problem, page by
page; the exit status is 1 when there is a problem, 2 when the check itself cannot run.

Chromium is Debian's (`apt-get install chromium`), driven through the `playwright` Python package
(the `browser` extra of pyproject.toml: `pip install -e '.[browser]'`). Playwright's own browser
download (`playwright install`) is not needed: the executable is given with --chromium, $CHROMIUM,
or found on the usual paths.

This file is a script, not a test module: tests/test_browser_check.py runs it on synthetic pages.
"""
from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import os
import re
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

SKIPPED_DIRS = {"_static", "_sources", "_images", "_downloads"}
SKIPPED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser",
                       "google-chrome", "google-chrome-stable")
PAGE_TIMEOUT_MS = 30_000
MATHJAX_TIMEOUT_MS = 20_000


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium executable to drive: --chromium, then $CHROMIUM, then Debian's and the usual names."""
    for candidate in (explicit, os.environ.get("CHROMIUM"), *CHROMIUM_CANDIDATES):
        if not candidate:
            continue
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def book_pages(root: Path) -> list[Path]:
    """The book's pages, relative to root, in a stable order."""
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root)
        if SKIPPED_DIRS.intersection(rel.parts[:-1]) or rel.name in SKIPPED_PAGES:
            continue
        pages.append(rel)
    return pages


class _IdCollector(html.parser.HTMLParser):
    """Anchors of a page that was not opened in the browser: every id=, and name= of <a>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value and (key == "id" or (key == "name" and tag == "a")):
                self.ids.add(value)


def static_anchors(path: Path) -> set[str]:
    parser = _IdCollector()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser.ids


def redirect_target(path: Path) -> str | None:
    """The URL of a bare `<meta http-equiv="refresh">` page (Jupyter Book's index.html), else None."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None                         # unreadable: the browser reports it as not loading
    if len(text) > 2000:
        return None
    m = re.search(r"""<meta\s+http-equiv=["']?refresh["']?\s+content=["']\s*\d+\s*;\s*url=([^"']+)["']""",
                  text, re.I)
    return m.group(1).strip() if m else None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # the browser closing a connection early (e.g. after a 404) is not a problem of the book
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve root on a free local port; returns the server and its base URL (ending in /)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


# --- what runs in the page ----------------------------------------------------------------------

# Resolves when MathJax (if the page loads it) has typeset the page; returns how many formulas it
# rendered and the TeX errors it reported, or null when the page has no MathJax.
JS_MATHJAX = """
async (timeoutMs) => {
  const scripted = !!document.querySelector('script[src*="mathjax" i]');
  if (!scripted && !(window.MathJax && window.MathJax.startup)) return null;
  const t0 = Date.now();
  while (!(window.MathJax && window.MathJax.startup && window.MathJax.startup.promise)) {
    if (Date.now() - t0 > timeoutMs) return {started: false};
    await new Promise(r => setTimeout(r, 50));
  }
  let failure = null;
  await Promise.race([
    window.MathJax.startup.promise.catch(e => { failure = String(e && e.message || e); }),
    new Promise(r => setTimeout(() => { failure = failure || 'timed out'; r(); }, timeoutMs)),
  ]);
  const errors = [...document.querySelectorAll('mjx-merror')].map(
    e => (e.getAttribute('data-mjx-error') || e.textContent || '').trim());
  return {started: true, failure, rendered: document.querySelectorAll('mjx-container').length, errors};
}
"""

# Waits for every image (lazy ones too) to load or fail; returns those that did not load.
JS_BROKEN_IMAGES = """
async () => {
  const imgs = [...document.images];
  for (const img of imgs) if (img.loading === 'lazy') img.loading = 'eager';
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done, {once: true});
    img.addEventListener('error', done, {once: true});
    setTimeout(done, 10000);
  })));
  const broken = [];
  for (const img of imgs) {
    if (img.naturalWidth > 0) continue;
    // an SVG without intrinsic size has naturalWidth 0 yet decodes: only a failed decode is broken
    const decodes = await img.decode().then(() => true, () => false);
    if (!decodes) broken.push({src: img.getAttribute('src') || '(no src)', url: img.currentSrc || img.src,
                               alt: img.getAttribute('alt') || ''});
  }
  return {count: imgs.length, broken};
}
"""

# Every link of the page (absolute URLs) and every anchor it defines.
JS_LINKS_AND_ANCHORS = """
() => ({
  links: [...document.querySelectorAll('a[href], area[href]')].map(a => ({
    href: a.getAttribute('href'), url: a.href, text: (a.textContent || '').trim().slice(0, 40)})),
  anchors: [...document.querySelectorAll('[id]')].map(e => e.id).concat(
    [...document.querySelectorAll('a[name]')].map(a => a.getAttribute('name'))),
})
"""

# Code blocks and cell outputs wider than their box (scrollWidth > clientWidth: a horizontal
# scrollbar), innermost first; for a code block, the first line that does not fit.
JS_WIDE_BLOCKS = """
() => {
  const tolerance = 1;
  const cells = [...document.querySelectorAll('div.cell')];
  const candidates = [...document.querySelectorAll('pre, div.highlight, div.cell_output, div.output')];
  const wide = candidates.filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + tolerance
                                      && e.checkVisibility());
  const innermost = wide.filter(e => !wide.some(o => o !== e && e.contains(o)));
  return innermost.map(e => {
    const cell = e.closest('div.cell');
    const where = e.closest('.cell_input') ? 'code cell' : e.closest('.cell_output') ? 'cell output' : 'code block';
    const section = e.closest('section[id]');
    const item = {where, cell: cell ? cells.indexOf(cell) + 1 : null, section: section ? section.id : null,
                  scrollWidth: e.scrollWidth, clientWidth: e.clientWidth, line: null};
    const pre = e.matches('pre') ? e : e.querySelector('pre');
    if (pre) {
      const style = getComputedStyle(pre);
      const probe = document.createElement('span');
      probe.textContent = 'M'.repeat(100);
      pre.appendChild(probe);
      const charWidth = probe.getBoundingClientRect().width / 100;
      probe.remove();
      const inner = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      const fits = charWidth > 0 ? Math.floor(inner / charWidth) : null;
      const tab = parseInt(style.tabSize) || 8;
      const lines = pre.textContent.replace(/\\n$/, '').split('\\n').map(l => {
        let out = '';
        for (const ch of l) out += ch === '\\t' ? ' '.repeat(tab - out.length % tab) : ch;
        return out;
      });
      let index = fits === null ? -1 : lines.findIndex(l => l.length > fits);
      if (index < 0) index = lines.reduce((best, l, i) => l.length > lines[best].length ? i : best, 0);
      item.line = {number: index + 1, length: lines[index].length, fits, text: lines[index].slice(0, 60)};
    }
    return item;
  });
}
"""

# Display equations (MathJax 3's mjx-container[display]) wider than the column they sit in: the
# typeset width of the formula against the inner width of its block (div.math, else the parent),
# with the TeX source from MathJax's own record of the item.
JS_WIDE_MATH = """
() => {
  const tolerance = 1;
  const cells = [...document.querySelectorAll('div.cell')];
  const items = (window.MathJax && MathJax.startup && MathJax.startup.document)
    ? [...MathJax.startup.document.math] : [];
  const texOf = e => {
    const item = items.find(i => i.typesetRoot === e);
    return item ? String(item.math).replace(/\\s+/g, ' ').trim().slice(0, 60) : '';
  };
  const found = [];
  for (const e of document.querySelectorAll('mjx-container[display="true"]')) {
    if (!e.checkVisibility()) continue;
    const math = e.querySelector('mjx-math') || e;
    const width = Math.round(math.getBoundingClientRect().width);
    const col = e.closest('div.math') || e.parentElement;
    const style = getComputedStyle(col);
    const inner = Math.round(col.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight));
    if (inner > 0 && width > inner + tolerance) {
      const section = e.closest('section[id]'), cell = e.closest('div.cell');
      found.push({width, inner, tex: texOf(e), cell: cell ? cells.indexOf(cell) + 1 : null,
                  section: section ? section.id : null});
    }
  }
  return found;
}
"""

# Sideways scrolling of the whole page.
JS_PAGE_WIDTH = """
() => ({scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth})
"""

# Raw TeX in the visible text outside code and typeset math. Text is joined per block element, so
# `$x_1$` split by an <em> is still found.
JS_RAW_TEX = r"""
() => {
  // not .tex2jax_ignore: myst-nb puts it on a notebook's whole <section> (its math is in .math spans)
  const skip = 'pre, code, kbd, samp, script, style, noscript, textarea, template, svg, math, ' +
               'mjx-container, .highlight';
  const patterns = [
    ['$$...$$', /\$\$[^$]+?\$\$/],
    ['$...$', /(?<![\\$\w])\$(?=[^\s$])[^$\n]{1,200}?(?<=[^\s$\\])\$(?![\d$\w])/],
    ['\\( or \\)', /\\[()]/],
    ['\\[ or \\]', /\\[\[\]]/],
    ['\\begin{...} or \\end{...}', /\\(?:begin|end)\{/],
    ['a TeX command', /\\(?:frac|dfrac|sqrt|sum|prod|int|mathbf|mathrm|mathcal|mathbb|boldsymbol|operatorname|text|left|right|cdot|times|alpha|beta|gamma|delta|epsilon|varepsilon|lambda|mu|sigma|theta|tau|log|exp|hat|bar|tilde|label|eqref|top|le|ge|leq|geq|in|infty|partial|nabla)(?![A-Za-z])/],
  ];
  const cells = [...document.querySelectorAll('div.cell')];
  const blockOf = new Map();
  const isBlock = el => !['inline', 'contents'].includes(getComputedStyle(el).display);
  const block = el => {
    let e = el;
    while (e !== document.body && !isBlock(e)) e = e.parentElement;
    return e;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      const parent = node.parentElement;
      if (!parent || !node.nodeValue.trim()) return NodeFilter.FILTER_REJECT;
      if (parent.closest(skip)) return NodeFilter.FILTER_REJECT;
      if (!parent.checkVisibility({visibilityProperty: true})) return NodeFilter.FILTER_REJECT;
      return NodeFilter.FILTER_ACCEPT;
    }});
  for (let node; (node = walker.nextNode()); ) {
    const b = block(node.parentElement);
    blockOf.set(b, (blockOf.get(b) || '') + node.nodeValue);
  }
  const found = [];
  for (const [el, raw] of blockOf) {
    const text = raw.replace(/\s+/g, ' ');
    for (const [name, re] of patterns) {
      const m = re.exec(text);
      if (!m) continue;
      const start = Math.max(0, m.index - 30), end = Math.min(text.length, m.index + m[0].length + 30);
      const context = (start > 0 ? '...' : '') + text.slice(start, end).trim() + (end < text.length ? '...' : '');
      const section = el.closest('section[id]'), cell = el.closest('div.cell');
      found.push({kind: name, match: m[0].slice(0, 60), context,
                  where: el.closest('.cell_output') ? 'cell output' : '<' + el.tagName.toLowerCase() + '>',
                  cell: cell ? cells.indexOf(cell) + 1 : null, section: section ? section.id : null});
      break;
    }
  }
  return found;
}
"""


# --- the check ----------------------------------------------------------------------------------

@dataclass
class PageReport:
    rel: str
    problems: list[str] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    anchors: set[str] | None = None     # from the live DOM once the page was opened
    note: str = ""
    seconds: float = 0.0


def _where(item: dict) -> str:
    parts = []
    if item.get("cell"):
        parts.append(f"cell {item['cell']}")
    if item.get("section"):
        parts.append(f"section #{item['section']}")
    return f" ({', '.join(parts)})" if parts else ""


def inspect_page(browser, viewport: dict, base: str, root: Path, rel: Path, shots: Path) -> PageReport:
    """Load one page, run every in-page check and take its screenshot.

    Each page gets a fresh browser context (empty cache and localStorage), so that it is checked as a
    reader who opens it first sees it, whatever page was checked before it.
    """
    report = PageReport(rel.as_posix())
    url = urljoin(base, rel.as_posix())
    context = browser.new_context(viewport=viewport)
    # nothing outside the book is fetched: the book must render offline, and CI has no network
    context.route(lambda u: not u.startswith(base) and not u.startswith(("data:", "blob:")),
                  lambda route: route.abort("blockedbyclient"))
    page = context.new_page()
    origin = base.rstrip("/")
    left = []                               # set once a redirect page has gone to its target

    def on_navigated(frame):
        if frame == page.main_frame and frame.url.split("#")[0] != url:
            left.append(frame.url)

    def on_console(msg):
        if left or msg.type != "error":
            return
        if msg.text.startswith("Failed to load resource"):
            return                          # reported once, with its URL, by on_response/on_failed
        loc = msg.location or {}
        at = (f" at {loc['url'].replace(origin + '/', '')}:{loc.get('lineNumber', -1) + 1}"
              if loc.get("url") else "")
        report.problems.append(f"console error: {msg.text}{at}")

    def on_pageerror(err):
        if left:
            return
        frame = next((ln.strip() for ln in (err.stack or "").splitlines()[1:2]), "").replace(origin + "/", "")
        report.problems.append(f"JavaScript error: {err.name or 'Error'}: {err.message}"
                               + (f" ({frame})" if frame else ""))

    def on_response(resp):
        if left:
            return
        if resp.request.is_navigation_request() and resp.frame == page.main_frame:
            return                          # the page itself: see "page does not load"
        if resp.status >= 400 and resp.url.startswith(origin):
            report.problems.append(f"missing resource: {resp.url.replace(origin + '/', '')} (HTTP {resp.status})")

    def on_failed(req):
        if left:
            return
        if req.url.startswith(origin):
            report.problems.append(f"resource failed to load: {req.url.replace(origin + '/', '')} ({req.failure})")
        elif not req.url.startswith(("data:", "blob:", "about:")):
            report.problems.append(f"external resource requested (the book must work offline): {req.url}")

    page.on("framenavigated", on_navigated)
    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    t0 = time.monotonic()
    try:
        target = redirect_target(root / rel)
        try:
            response = page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        except Exception as exc:            # playwright's TimeoutError / Error: the page did not load
            report.problems.append(f"page does not load: {str(exc).splitlines()[0]}")
            return report
        if response is None or response.status >= 400:
            report.problems.append(f"page does not load: HTTP {response.status if response else '?'}")
            return report
        if target is not None:
            # index.html of a Jupyter Book: a meta refresh; the target page is checked on its own
            expected = urljoin(url, target).split("#")[0]
            try:
                page.wait_for_url(lambda u: u.split("#")[0] == expected, timeout=10_000)
                report.note = f"redirects to {target}"
            except Exception:
                report.problems.append(f"page does not load: the redirect to {target} did not happen "
                                       f"(still at {page.url})")
            report.links.append({"href": target, "url": urljoin(url, target), "text": "meta refresh"})
            return report

        page.evaluate("() => document.fonts.ready.then(() => true)")
        math = page.evaluate(JS_MATHJAX, MATHJAX_TIMEOUT_MS)
        if math is not None:
            if not math["started"]:
                report.problems.append("MathJax is loaded by the page but never started")
            elif math["failure"]:
                report.problems.append(f"MathJax did not finish typesetting: {math['failure']}")
            for err in math.get("errors") or []:
                report.problems.append(f"MathJax TeX error: {err}")
        images = page.evaluate(JS_BROKEN_IMAGES)
        for img in images["broken"]:
            exists = _local_file(base, root, img["url"])
            why = "" if exists is None else (" (file exists)" if exists.exists() else " (no such file)")
            report.problems.append(f"broken image: {img['src']}{why}" + (f" alt={img['alt']!r}" if img["alt"] else ""))
        try:
            page.wait_for_load_state("networkidle", timeout=5_000)
        except Exception:
            pass

        for item in page.evaluate(JS_WIDE_BLOCKS):
            what = f"{item['where']} wider than its column{_where(item)}: "
            line = item["line"]
            if line:
                fits = f", about {line['fits']} fit" if line["fits"] else ""
                what += (f"line {line['number']} is {line['length']} characters long{fits} "
                         f"({item['scrollWidth']} px of content in {item['clientWidth']} px): {line['text']}")
            else:
                what += f"{item['scrollWidth']} px of content in a {item['clientWidth']} px box"
            report.problems.append(what)
        for eq in page.evaluate(JS_WIDE_MATH):
            report.problems.append(f"display equation wider than its column{_where(eq)}: {eq['width']} px "
                                   f"in a {eq['inner']} px column; break it over lines (aligned): {eq['tex']}")
        width = page.evaluate(JS_PAGE_WIDTH)
        if width["scrollWidth"] > width["clientWidth"] + 1:
            report.problems.append(f"the page scrolls sideways: {width['scrollWidth']} px wide "
                                   f"in a {width['clientWidth']} px viewport")
        for tex in page.evaluate(JS_RAW_TEX):
            report.problems.append(f"raw TeX ({tex['kind']}) in the text of a {tex['where']}{_where(tex)}: "
                                   f"{tex['match']}   in \"{tex['context']}\"")

        found = page.evaluate(JS_LINKS_AND_ANCHORS)
        report.links = found["links"]
        report.anchors = set(found["anchors"])
        shot = shots / (rel.with_suffix("").as_posix().replace("/", "__") + ".png")
        page.screenshot(path=str(shot), full_page=True)
        report.note = f"{len(report.links)} links, {images['count']} images" + (
            f", {math['rendered']} formulas" if math and math.get("started") else "")
        return report
    finally:
        report.seconds = time.monotonic() - t0
        context.close()


def _local_file(base: str, root: Path, url: str) -> Path | None:
    """The file under root that a same-origin URL points to (a folder means its index.html), else None."""
    if not url.startswith(base):
        return None
    path = root / unquote(urlsplit(url).path).lstrip("/")
    return path / "index.html" if path.is_dir() else path


def check_links(reports: list[PageReport], base: str, root: Path) -> None:
    """Every link to a local file must find the file, and every #anchor its target in that page."""
    live = {r.rel: r.anchors for r in reports if r.anchors is not None}
    static: dict[Path, set[str]] = {}
    for report in reports:
        seen = set()
        for link in report.links:
            url = link["url"]
            scheme = urlsplit(url).scheme
            if scheme == "file":
                report.problems.append(f"link to a file on the build machine: {link['href']}")
                continue
            target = _local_file(base, root, url)
            if target is None or (link["href"], url) in seen:
                continue                    # external (not followed: no network), mailto:, ...
            seen.add((link["href"], url))
            label = f"{link['href']}" + (f" ({link['text']!r})" if link["text"] else "")
            if not target.is_file():
                report.problems.append(f"broken link: {label}: no file {target.relative_to(root).as_posix()}")
                continue
            fragment = unquote(urlsplit(url).fragment)
            if not fragment or fragment == "top" or target.suffix != ".html":
                continue
            rel = target.relative_to(root).as_posix()
            anchors = live.get(rel)
            if anchors is None:
                anchors = static.setdefault(target, static_anchors(target))
            if fragment not in anchors:
                report.problems.append(f"broken link: {label}: no anchor #{fragment} in {rel}")


def run(root: Path, shots: Path, chromium: str, width: int, height: int) -> int:
    from playwright.sync_api import sync_playwright

    pages = book_pages(root)
    if not pages:
        print(f"check_book: no HTML page under {root}", file=sys.stderr)
        return 2
    shots.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    server, base = serve(root)
    reports = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            print(f"check_book: {len(pages)} pages of {root} in {Path(chromium).name} "
                  f"{browser.version} at {width}x{height}", flush=True)
            viewport = {"width": width, "height": height}
            for rel in pages:
                try:
                    reports.append(inspect_page(browser, viewport, base, root, rel, shots))
                except Exception as exc:    # a bug of this script, or a page that crashed the tab
                    report = PageReport(rel.as_posix())
                    report.problems.append(f"the check could not finish on this page: "
                                           f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                    reports.append(report)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    check_links(reports, base, root)

    for r in reports:
        status = "ok  " if not r.problems else "FAIL"
        detail = f"{len(r.problems)} problem{'s' if len(r.problems) != 1 else ''}" if r.problems else r.note
        print(f"{status} {r.rel:<32} {r.seconds:5.1f} s  {detail}")
    failed = [r for r in reports if r.problems]
    for r in failed:
        print(f"\n{r.rel}:")
        for problem in r.problems:
            print(f"  - {problem}")
    total = sum(len(r.problems) for r in failed)
    print(f"\ncheck_book: {len(reports)} pages in {time.monotonic() - t0:.1f} s, "
          + (f"{total} problems on {len(failed)} pages" if failed else "no problem")
          + f"; screenshots in {shots}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", nargs="?", default="_build/html", help="the built book (default: _build/html)")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="where the full-page PNGs go (default: browser-screenshots/ next to HTML)")
    parser.add_argument("--chromium", metavar="PATH", help="Chromium executable (default: $CHROMIUM, "
                        "then /usr/lib/chromium/chromium, chromium, ... on PATH)")
    parser.add_argument("--viewport", default="1280x900", help="WIDTHxHEIGHT (default: 1280x900)")
    args = parser.parse_args(argv)

    root = Path(args.html).resolve()
    if not root.is_dir() or not book_pages(root):
        print(f"check_book: no built book at {args.html}: run `make book` first", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_book: no Chromium executable found: install Debian's (`apt-get install chromium`) "
              "or pass --chromium PATH / set $CHROMIUM", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("check_book: the playwright package is missing: pip install -e '.[browser]'", file=sys.stderr)
        return 2
    width, height = (int(v) for v in args.viewport.lower().split("x"))
    shots = Path(args.screenshots) if args.screenshots else root.parent / "browser-screenshots"
    return run(root, shots.resolve(), chromium, width, height)


if __name__ == "__main__":
    sys.exit(main())
