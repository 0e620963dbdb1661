"""Cost measurement: step time, first-token latency, peak memory and FLOPs of strategies (`covft profile`).

- :mod:`.settings`: what to measure (:class:`ProfileSettings`); :mod:`.build`: the models and batches;
- :mod:`.runner`: the timed and counted operations; :mod:`.memory`: static bytes and CPU peak memory;
- :mod:`.cost`: the measurement runs (:func:`profile`, :func:`count_only`); :mod:`.report`: the tables;
- :mod:`.flops`: FLOPs counted with ``FlopCounterMode``; :mod:`.analytic`: the same, written out
  per matrix product, over a :class:`FlopGeometry` (:mod:`.geometry`).
"""

from covft.profile.analytic import ANALYTIC_METHODS, analytic_flops
from covft.profile.build import build_for_profile, synthetic_batch
from covft.profile.cost import count_only, machine_description, profile
from covft.profile.flops import count_flops
from covft.profile.geometry import FlopGeometry, geometry_of, llava_15_7b_geometry
from covft.profile.memory import static_training_bytes
from covft.profile.report import format_flops_markdown, format_markdown
from covft.profile.runner import count_host_syncs
from covft.profile.settings import GEOMETRIES, ProfileSettings

__all__ = [
    "ANALYTIC_METHODS",
    "GEOMETRIES",
    "FlopGeometry",
    "ProfileSettings",
    "analytic_flops",
    "build_for_profile",
    "count_flops",
    "count_host_syncs",
    "count_only",
    "format_flops_markdown",
    "format_markdown",
    "geometry_of",
    "llava_15_7b_geometry",
    "machine_description",
    "profile",
    "static_training_bytes",
    "synthetic_batch",
]
