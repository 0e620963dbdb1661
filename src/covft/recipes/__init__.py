"""Recipes: the drivers that wire covft's components into runs.

Components (``nn``, ``data``, ``models``, ``strategies``, ``train``, ``eval``, ``analysis``,
``profile``, ``export``) know nothing of the recipes; a recipe only connects them:

- :mod:`covft.recipes.world`: the synthetic conflict world (training mix, stage-1 captions and its
  held-out 12-benchmark suite);
- :mod:`covft.recipes.demo`: the CPU demo (its presets, stage-0 tower and LM pretraining, the shipped
  starting point, stage 2 for every strategy, the suite, the report);
- :mod:`covft.recipes.downstream`: the downstream specialization/forgetting (E/F/O) study's
  configuration; :mod:`covft.recipes.downstream_study` runs it, :mod:`covft.recipes.downstream_report`
  writes its outputs;
- :mod:`covft.recipes.analyses`: the paper's analyses as runs (``covft analyze``).

The command line (:mod:`covft.cli`) calls them; see docs/architecture.md.
"""
