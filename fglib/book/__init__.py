"""The book's helpers: evidence for figures, plots, benchmarks, the paper-scale path, the toy model,
expected results, and each chapter's measurements (fglib.book.chapters)."""
