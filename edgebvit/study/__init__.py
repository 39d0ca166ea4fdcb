"""Studies: a named ladder of run configurations trained under one budget, exported and tabulated.

`ladders.py` names the ladders (the papers' ablation rows and the short-budget recipe options);
`runner.py` runs one as plain `edgebvit train` / `edgebvit export` subprocesses into normal run
directories under one study folder (resumable), then writes table.md, table.csv and plot.png.
"""
