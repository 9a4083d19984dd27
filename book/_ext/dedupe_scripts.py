"""A Sphinx extension that drops scripts added twice to the same page.

With jupyter-book 1.0.4 and Sphinx 7.4, sphinx-thebe's and sphinx-togglebutton's inline scripts
end up twice in every page's <head>; the second `const THEBE_JS_URL = ...` is a SyntaxError in
the browser (tests/browser/check_book.py reports every JavaScript error). Keeping the first copy
of each identical script leaves the page as the extensions meant it.
"""
from __future__ import annotations


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # an inline script's filename is None from one extension and "" from another
    filename = getattr(script, "filename", script) or ""
    return str(filename), tuple(sorted(attributes.items()))


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
