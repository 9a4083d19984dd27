"""The chapters' measurements on trained models, one module per chapter.

Each function here is a `fglib.experiments.measured.measurement`: it reads trained runs' weights and returns
numbers, tables or the arrays a figure draws. A chapter never calls one directly; it asks
`fglib.experiments.measured.measure(fn, runs, **args)`, which reads the value from the results store
(data/runs/evidence/), so the chapter prints the same digits on every CPU and executes in seconds.
"""
