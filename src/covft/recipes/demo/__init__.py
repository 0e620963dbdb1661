"""The CPU demo: the whole CoVFT comparison end to end on the synthetic conflict world.

- :mod:`~covft.recipes.demo.settings`: every knob of the demo and of its starting point;
- :mod:`~covft.recipes.demo.presets`: the ``tiny`` and ``smol`` model presets, built from
  :mod:`~covft.recipes.demo.vision` (the tower), :mod:`~covft.recipes.demo.tokenizer` (the tiny
  preset's tokenizer) and :mod:`~covft.recipes.demo.smollm2` (the smol preset's LM);
- :mod:`~covft.recipes.demo.stage0`: contrastive pretraining of the demo's vision tower (its model
  and loss: :mod:`~covft.recipes.demo.contrastive`);
- :mod:`~covft.recipes.demo.pretrain`: the method-agnostic starting point (tower, LM, stage 1),
  shipped in ``pretrained/``, verified or trained by :mod:`~covft.recipes.demo.starting_point`;
- :mod:`~covft.recipes.demo.pipeline`: the whole demo, from :mod:`~covft.recipes.demo.layout`
  (folders, settings record, stage log), :mod:`~covft.recipes.demo.stages` (worlds, training runs),
  :mod:`~covft.recipes.demo.context` (instruction vectors), :mod:`~covft.recipes.demo.stage2`
  (stage 2 and the suite per method and seed) and :mod:`~covft.recipes.demo.mechanisms`;
- :mod:`~covft.recipes.demo.report`: ``report.md``, ``results.json`` and plots, from
  :mod:`~covft.recipes.demo.scores`, :mod:`~covft.recipes.demo.sections` and
  :mod:`~covft.recipes.demo.figures`;
- :mod:`~covft.recipes.demo.cache`: where the demo caches what it builds once.

``covft demo`` (:mod:`covft.cli.demo`) runs it; docs/demo.md says what it shows.
"""
