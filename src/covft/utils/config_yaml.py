"""How :mod:`covft.utils.config` reads YAML: numbers remember how they were written, and a key given
twice in one mapping is an error.

YAML 1.1 reads ``010`` as the integer 8 and ``1.10`` as the float 1.1; a string field (an output
directory, a run name) wants the text as written. :class:`ConfigLoader` is PyYAML's ``SafeLoader``
with two changes: integers and floats come back as :class:`WrittenInt` / :class:`WrittenFloat`,
ordinary numbers that also carry their source text (``.text``), and a mapping that names a key
twice raises :class:`DuplicateKeyError` instead of keeping the last value silently. The config
loader turns the numbers back into plain ``int``/``float`` (:func:`plain`) for every field except
a string one, which takes the text.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.representer import SafeRepresenter

MERGE_TAG = "tag:yaml.org,2002:merge"


class _Written:
    """A number read from YAML that remembers its text; ``plain_type`` is the number type it is."""

    plain_type: type
    text: str

    def __new__(cls, value: Any, text: str) -> Any:
        number = super().__new__(cls, value)  # type: ignore[call-arg]
        number.text = text
        return number

    def __getnewargs__(self) -> tuple[Any, str]:  # copy and pickle pass the text
        return self.plain_type(self), self.text


class WrittenInt(_Written, int):
    """An ``int`` read from YAML that remembers its text (``010`` is 8, ``.text`` is ``'010'``)."""

    plain_type = int


class WrittenFloat(_Written, float):
    """A ``float`` read from YAML that remembers its text (``1.10`` is 1.1, ``.text`` is ``'1.10'``)."""

    plain_type = float


WRITTEN = (WrittenInt, WrittenFloat)


def plain(value: Any) -> Any:
    """``value`` with every :class:`WrittenInt` / :class:`WrittenFloat` in it (mapping keys and
    values, list items) turned back into a plain ``int`` / ``float``."""
    if isinstance(value, _Written):
        return value.plain_type(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class DuplicateKeyError(ConstructorError):
    """A mapping in a YAML document names the same key twice."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__("while constructing a mapping", first, f"found duplicate key {key!r}", again)
        self.key = key
        self.first_line = first.line + 1
        self.line = again.line + 1


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose numbers keep their text and whose mappings refuse a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue  # keys merged in with ``<<`` may be overridden on purpose
                key = plain(self.construct_object(key_node, deep=True))
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error names it
                if first is not key_node:
                    raise DuplicateKeyError(key, first.start_mark, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_written_int(self, node: yaml.ScalarNode) -> WrittenInt:
        return WrittenInt(self.construct_yaml_int(node), node.value)

    def construct_written_float(self, node: yaml.ScalarNode) -> WrittenFloat:
        return WrittenFloat(self.construct_yaml_float(node), node.value)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_written_int)
ConfigLoader.add_constructor("tag:yaml.org,2002:float", ConfigLoader.construct_written_float)
# A raw mapping from :func:`covft.utils.config.load_yaml` stays writable with ``yaml.safe_dump``.
yaml.SafeDumper.add_representer(WrittenInt, SafeRepresenter.represent_int)
yaml.SafeDumper.add_representer(WrittenFloat, SafeRepresenter.represent_float)


def load(text: str) -> Any:
    """The YAML document ``text`` read with :class:`ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader subclass: safe
