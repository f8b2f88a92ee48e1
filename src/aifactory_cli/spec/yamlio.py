"""YAML loading that remembers where each key was, and pydantic errors turned into messages
that name the file, the line, the key path and a likely fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from aifactory_cli.errors import AifactoryError, BadInput, did_you_mean

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

KeyPath = tuple[str | int, ...]


class YamlDoc:
    """Parsed YAML data plus the line (1-based) of every key path."""

    def __init__(self, data: Any, lines: dict[KeyPath, int], source: str) -> None:
        self.data = data
        self.lines = lines
        self.source = source

    def line_of(self, path: KeyPath) -> int | None:
        # the deepest prefix that has a known line
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


# libyaml's C loader when PyYAML was built with it (about 10x faster), else the pure-Python one;
# both keep node marks, so lines can be reported.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_RETYPED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}


class _Loader(_Base):
    """Plain scalars are text unless they are a decimal integer, true/false or null. YAML 1.1
    (PyYAML's default) reads `time: 1:00:00` as the sexagesimal integer 3600, `0755` as octal 493,
    `yes`/`on` as true, `0.10` as 0.1 and a date-time as a datetime: a job would silently get
    60 hours, another file mode, another value. The models still turn "yes", "0.5" or
    "2026-11-22" into a bool, a float or a date where a field wants one; env/matrix values keep
    the text as written."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in _RETYPED]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))

MAX_NODES = 200_000  # after aliases are expanded: a "billion laughs" file is refused, not validated for minutes


class _StructureError(Exception):
    """A structural problem found while walking the node tree (message, line, hint)."""

    def __init__(self, message: str, line: int, hint: str) -> None:
        super().__init__(message)
        self.line = line
        self.hint = hint


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], active: set[int], sizes: dict[int, int]) -> int:
    """Record the line of every key path; refuse duplicate keys and recursive aliases. Returns the
    node count of this subtree with aliases expanded (aliased subtrees are walked once)."""
    lines.setdefault(path, node.start_mark.line + 1)
    nid = id(node)
    if nid in active:
        raise _StructureError(
            "an alias refers to a node that contains it (a recursive structure)",
            node.start_mark.line + 1,
            "write the values out instead of the *alias",
        )
    if nid in sizes:
        return sizes[nid]
    active.add(nid)
    size = 1
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key != "<<":
                if key in first:
                    raise _StructureError(
                        f"duplicate key '{key}' (first at line {first[key]})",
                        line,
                        "keep one of them: YAML would silently use the last",
                    )
                first[key] = line
            child = (*path, key)
            lines[child] = line
            size += _walk(value_node, child, lines, active, sizes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            lines[child] = item.start_mark.line + 1
            size += _walk(item, child, lines, active, sizes)
    active.discard(nid)
    sizes[nid] = size
    if size > MAX_NODES:
        raise _StructureError(
            f"the document expands to more than {MAX_NODES} values through aliases",
            node.start_mark.line + 1,
            "a job file or profile needs far fewer values; check the &anchors and *aliases",
        )
    return size


def parse_yaml(text: str, source: str, error_cls: type[AifactoryError] = BadInput) -> YamlDoc:
    lines: dict[KeyPath, int] = {}
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            # walked before it is built: building flattens `<<:` merges into the mapping (merged keys
            # would look duplicated), and a recursive or exploding alias is refused before it is built
            if node is not None:
                _walk(node, (), lines, set(), {})
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = exc.problem or "invalid YAML"
        raise error_cls(
            f"malformed YAML: {problem}" + (f" ({exc.context})" if exc.context else ""),
            "check indentation and quoting near that line; values with ':' or '#' need quotes",
            where=where,
        ) from exc
    except yaml.YAMLError as exc:
        raise error_cls(f"malformed YAML: {exc}", where=source) from exc
    except _StructureError as exc:
        raise error_cls(str(exc), exc.hint, where=f"{source}:{exc.line}") from exc
    return YamlDoc(data, lines, source)


def load_yaml_file(path: Path, error_cls: type[AifactoryError] = BadInput, what: str = "file") -> YamlDoc:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error_cls(f"{what} not found: {path}", "check the path") from exc
    except IsADirectoryError as exc:
        raise error_cls(f"{what} is a directory, not a YAML file: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error_cls(f"cannot read {what} {path}: {exc}") from exc
    return parse_yaml(text, str(path), error_cls)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names (aliases) allowed at `loc` inside `model`, for "did you mean"."""
    from types import UnionType
    from typing import Union, get_args, get_origin

    from pydantic import BaseModel as _BM

    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, _BM):
            field = current.model_fields.get(str(part))
            if field is None:
                # part may be an alias
                field = next((f for f in current.model_fields.values() if f.alias == part), None)
            if field is None:
                return []
            current = field.annotation
        else:
            # dict[str, X] or list[X] or Optional[...]: step into the value type
            args = [a for a in get_args(current) if a is not type(None)]
            origin = get_origin(current)
            if origin is dict and len(args) == 2:
                current = args[1]
            elif args:
                current = args[-1]
            else:
                return []
        # unwrap Optional / Union with one model (not dict/list: their keys are the next loc part)
        if get_origin(current) in (Union, UnionType):
            args = [a for a in get_args(current) if isinstance(a, type) and issubclass(a, _BM)]
            if args:
                current = args[0]
    if isinstance(current, type) and issubclass(current, _BM):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def format_validation_error(
    exc: ValidationError,
    doc: YamlDoc | None,
    model: type[BaseModel],
    error_cls: type[AifactoryError] = BadInput,
    prefix: KeyPath = (),
) -> AifactoryError:
    """One error naming every problem with its file:line, key path and a fix."""
    problems: list[str] = []
    hints: list[str] = []
    first_line: int | None = None
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        keypath = ".".join(str(p) for p in (*prefix, *loc)) or "(top level)"
        line = doc.line_of((*prefix, *loc)) if doc else None
        if first_line is None:
            first_line = line
        at = f"line {line}, " if line else ""
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _fields_at(model, loc[:-1])
            guess = did_you_mean(key, allowed) if allowed else None
            msg = f"{at}{keypath}: unknown key '{key}'"
            if guess:
                msg += f" (did you mean '{guess}'?)"
                hints.append(f"rename '{key}' to '{guess}'")
            elif allowed:
                hints.append(f"allowed keys here: {', '.join(sorted(allowed))}")
            problems.append(msg)
        elif err["type"] == "missing":
            problems.append(f"{at}{keypath}: required key is missing")
        else:
            text = err["msg"]
            if text.startswith("Value error, "):
                text = text[len("Value error, ") :]
            problems.append(f"{at}{keypath}: {text}")
    source = doc.source if doc else None
    where = f"{source}:{first_line}" if source and first_line else source
    if len(problems) == 1 and first_line is not None:
        # the location is already in `where`
        problems[0] = problems[0].removeprefix(f"line {first_line}, ")
    message = problems[0] if len(problems) == 1 else "invalid:\n    " + "\n    ".join(problems)
    hint = "; ".join(dict.fromkeys(hints)) or None
    return error_cls(message, hint, where=where)
