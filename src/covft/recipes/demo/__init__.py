"""The CPU demo: the whole CoVFT comparison end to end on the synthetic conflict world.

- :mod:`~covft.recipes.demo.settings`: every knob of the demo and of its starting point;
- :mod:`~covft.recipes.demo.presets`: the ``tiny`` and ``smol`` model presets;
- :mod:`~covft.recipes.demo.stage0`: contrastive pretraining of the demo's vision tower;
- :mod:`~covft.recipes.demo.pretrain`: the method-agnostic starting point (tower, LM, stage 1),
  shipped in ``pretrained/``;
- :mod:`~covft.recipes.demo.pipeline`: stage 2 for every strategy and seed, the suite, the mechanisms;
- :mod:`~covft.recipes.demo.report`: ``report.md``, ``results.json`` and plots.

``covft demo`` (:mod:`covft.cli.demo`) runs it; docs/demo.md says what it shows.
"""
