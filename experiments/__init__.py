"""The study's entry points, each run as `python -m experiments.<name>` (bench/: the benchmarks).

And the little they share: `grid` (parallel, resumable centralized runs), `stats` (paired
differences) and `tabulation` (Tables 1 and 2). The Flower runtime helpers are in `localrun/`.
"""
