"""Generate src/headwater/protocol/messages/*.py from Apache Kafka's JSON message definitions.

Usage::

    python tools/gen_protocol_schemas.py [--json-dir DIR] [--check]

``--json-dir`` defaults to the copies inside the installed kafka-python wheel
(``kafka/protocol/schemas/resources``; Kafka 4.1/4.2 definitions). Only the APIs and
version ranges Headwater advertises are emitted (`APIS` below); fields that exist only
outside those ranges are dropped. ``--check`` exits 1 if the committed modules differ.

Kafka 4.0 removed a few old versions Headwater still needs for older clients (KIP-896).
For those, the Kafka 4 JSON still describes the old versions' fields (their ``versions``
ranges were left as they were; only ``validVersions`` moved up), so the generator widens
the valid range downward after checking that an entry in `OLDER_VERSIONS` vouches for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "src" / "headwater" / "protocol" / "messages"

# (api key, JSON base name, lowest version, highest version, family module)
APIS: tuple[tuple[int, str, int, int, str], ...] = (
    (18, "ApiVersions", 0, 4, "cluster"),
    (3, "Metadata", 0, 12, "cluster"),
    (10, "FindCoordinator", 0, 3, "cluster"),
    (60, "DescribeCluster", 0, 1, "cluster"),
    (0, "Produce", 3, 10, "produce"),
    (22, "InitProducerId", 0, 4, "transaction"),
    (24, "AddPartitionsToTxn", 0, 3, "transaction"),
    (25, "AddOffsetsToTxn", 0, 3, "transaction"),
    (26, "EndTxn", 0, 3, "transaction"),
    (28, "TxnOffsetCommit", 0, 3, "transaction"),
    (1, "Fetch", 4, 12, "fetch"),
    (2, "ListOffsets", 1, 7, "fetch"),
    (23, "OffsetForLeaderEpoch", 2, 4, "fetch"),
    (11, "JoinGroup", 0, 7, "group"),
    (14, "SyncGroup", 0, 5, "group"),
    (12, "Heartbeat", 0, 4, "group"),
    (13, "LeaveGroup", 0, 5, "group"),
    (15, "DescribeGroups", 0, 5, "group"),
    (16, "ListGroups", 0, 4, "group"),
    (42, "DeleteGroups", 0, 2, "group"),
    (8, "OffsetCommit", 2, 8, "offsets"),
    (9, "OffsetFetch", 1, 7, "offsets"),
    (19, "CreateTopics", 0, 7, "admin"),
    (20, "DeleteTopics", 0, 5, "admin"),
    (32, "DescribeConfigs", 0, 4, "admin"),
    (37, "CreatePartitions", 0, 3, "admin"),
    (21, "DeleteRecords", 0, 2, "admin"),
)

# Versions below the Kafka 4 baseline, and where their layout was confirmed.
_TRUNK_2024 = "apache/kafka 1eb76443 (trunk, 2024-10)"
OLDER_VERSIONS: dict[str, str] = {
    "CreateTopicsRequest": f"v0-1 as in {_TRUNK_2024}, valid 0-7",
    "CreateTopicsResponse": f"v0-1 as in {_TRUNK_2024}, valid 0-7",
    "DeleteTopicsRequest": f"v0 as in {_TRUNK_2024}, valid 0-6",
    "DeleteTopicsResponse": f"v0 as in {_TRUNK_2024}, valid 0-6",
    "DescribeConfigsRequest": f"v0 as in {_TRUNK_2024}, valid 0-4",
    "DescribeConfigsResponse": f"v0 as in {_TRUNK_2024}, valid 0-4",
}

FAMILY_DOCS = {
    "cluster": "Cluster discovery: ApiVersions, Metadata, FindCoordinator, DescribeCluster.",
    "produce": "Produce.",
    "transaction": "Idempotent and transactional producers: InitProducerId and the Txn APIs.",
    "fetch": "Reading: Fetch, ListOffsets, OffsetForLeaderEpoch.",
    "group": "Classic consumer groups: membership and group administration.",
    "offsets": "Committed group offsets: OffsetCommit and OffsetFetch.",
    "admin": "Topic and config administration.",
}

_PRIMITIVES = {
    "int8": "Int8",
    "int16": "Int16",
    "int32": "Int32",
    "int64": "Int64",
    "uint16": "UInt16",
    "uint32": "UInt32",
    "float64": "Float64",
    "bool": "Boolean",
    "uuid": "Uuid",
    "string": "String",
    "bytes": "Bytes",
    "records": "Records",
}

_COMMENT = re.compile(r"^\s*//.*$", re.MULTILINE)


def snake(name: str) -> str:
    """Turn a CamelCase field name into snake_case: ``ThrottleTimeMs`` -> ``throttle_time_ms``."""
    out: list[str] = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def parse_range(text: str) -> tuple[int, int]:
    """Parse a version range into (low, high); (1, 0) for "none"."""
    if text == "none":
        return (1, 0)
    if text.endswith("+"):
        return (int(text[:-1]), 1 << 15)
    low, _, high = text.partition("-")
    return (int(low), int(high or low))


def overlaps(text: str, low: int, high: int) -> bool:
    """Return whether a version range string meets [low, high]."""
    a, b = parse_range(text)
    return a <= high and b >= low and a <= b


def load(path: pathlib.Path) -> dict[str, Any]:
    """Read one JSON definition, comments stripped and common structs inlined."""
    data: dict[str, Any] = json.loads(_COMMENT.sub("", path.read_text()))
    common = {s["name"]: s["fields"] for s in data.get("commonStructs", [])}

    def inline(fields: list[dict[str, Any]]) -> None:
        for f in fields:
            inner = f["type"].removeprefix("[]")
            if "fields" not in f and inner in common:
                f["fields"] = common[inner]
            if "fields" in f:
                inline(f["fields"])

    inline(data["fields"])
    return data


def literal(kind: str, value: Any) -> str:
    """Render a JSON default as a Python literal for a field of type ``kind``."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    text = str(value)
    if text == "null":
        return "None"
    if kind == "bool":
        return repr(text == "true")
    if kind.startswith(("int", "uint")):
        return repr(int(text, 0))
    if kind == "float64":
        return repr(float(text))
    if kind == "string":
        return repr(text)
    msg = f"no rendering for default {value!r} of type {kind}"
    raise ValueError(msg)


def render_type(f: dict[str, Any], low: int, high: int, indent: str) -> str:
    """Render a field's type expression."""
    kind: str = f["type"]
    if kind.startswith("[]"):
        inner = kind[2:]
        if inner in _PRIMITIVES:
            return f"Array({_PRIMITIVES[inner]})"
        return "Array(\n" + render_fields(f["fields"], low, high, indent + "    ") + indent + ")"
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    return "Struct(\n" + render_fields(f["fields"], low, high, indent + "    ") + indent + ")"


def render_fields(fields: Iterable[dict[str, Any]], low: int, high: int, indent: str) -> str:
    """Render a sequence of fields, one ``Field(...)`` each, dropping out-of-range ones."""
    lines: list[str] = []
    for f in fields:
        if not overlaps(f["versions"], low, high):
            continue
        if "flexibleVersions" in f:
            msg = f"field-level flexibleVersions on {f['name']} is not supported"
            raise ValueError(msg)
        args = [repr(snake(f["name"])), render_type(f, low, high, indent)]
        if f["versions"] != "0+":
            args.append(f"versions={f['versions']!r}")
        nullable = f.get("nullableVersions", "none")
        if nullable != "none" and overlaps(nullable, low, high):
            args.append(f"nullable={nullable!r}")
        if "tag" in f:
            args.append(f"tag={f['tag']}")
            args.append(f"tagged={f['taggedVersions']!r}")
        if "default" in f:
            args.append(f"default={literal(f['type'], f['default'])}")
        lines.append(f"{indent}Field({', '.join(args)}),\n")
    return "".join(lines)


def constant(name: str) -> str:
    """``ProduceRequest`` -> ``PRODUCE_REQUEST``."""
    return snake(name).upper()


def render_message(
    api_key: int, data: dict[str, Any], low: int, high: int, source: str
) -> tuple[str, str]:
    """Render one message as a module-level constant; return (constant name, code)."""
    name = data["name"]
    json_low, json_high = parse_range(data["validVersions"])
    if high > json_high:
        msg = f"{name}: wanted up to v{high}, the JSON stops at v{json_high}"
        raise ValueError(msg)
    notes = [f"# {name}.json ({source}): valid {data['validVersions']}, kept {low}-{high}."]
    if low < json_low:
        if name not in OLDER_VERSIONS:
            msg = f"{name}: v{low} predates the JSON's v{json_low}; add an OLDER_VERSIONS entry"
            raise ValueError(msg)
        notes.append(f"# {OLDER_VERSIONS[name]}.")
    flexible = data.get("flexibleVersions", "none")
    valid = f"{low}-{high}" if low != high else str(low)
    code = (
        "\n".join(notes) + "\n"
        f"{constant(name)} = Message(\n"
        f"    api_key={api_key},\n"
        f"    name={name!r},\n"
        f"    valid={valid!r},\n"
        f"    flexible={flexible!r},\n"
        "    fields=(\n" + render_fields(data["fields"], low, high, "        ") + "    ),\n"
        ")\n"
    )
    return constant(name), code


def default_json_dir() -> pathlib.Path:
    """Locate the JSON definitions bundled in the installed kafka-python."""
    spec = importlib.util.find_spec("kafka")
    if spec is None or spec.origin is None:
        msg = "kafka-python is not installed; pass --json-dir"
        raise SystemExit(msg)
    return pathlib.Path(spec.origin).parent / "protocol" / "schemas" / "resources"


def generate(json_dir: pathlib.Path, source: str) -> dict[str, str]:
    """Return {file name: source text} for every family module and the package index."""
    families: dict[str, list[tuple[str, str]]] = {}
    for api_key, base, low, high, family in APIS:
        for kind in ("Request", "Response"):
            data = load(json_dir / f"{base}{kind}.json")
            if data["apiKey"] != api_key:
                msg = f"{base}{kind}.json has api key {data['apiKey']}, expected {api_key}"
                raise ValueError(msg)
            families.setdefault(family, []).append(render_message(api_key, data, low, high, source))
    files: dict[str, str] = {}
    header = (
        "# Generated by tools/gen_protocol_schemas.py from Apache Kafka's JSON message\n"
        "# definitions (Apache-2.0). Do not edit by hand: change the generator and rerun it.\n"
    )
    for family, messages in families.items():
        used = sorted(
            {
                token
                for _, code in messages
                for token in (*_PRIMITIVES.values(), "Array", "Struct")
                if re.search(rf"\b{token}\b(?!=)", code)
            }
        )
        imports = ", ".join(sorted([*used, "Field", "Message"]))
        files[f"{family}.py"] = (
            f'"""{FAMILY_DOCS[family]}"""\n\n'
            + header
            + "\nfrom __future__ import annotations\n\n"
            + f"from headwater.protocol.schema import {imports}\n\n"
            + f"__all__ = {sorted(name for name, _ in messages)!r}\n\n"
            + "\n\n".join(code for _, code in messages)
        )
    index_lines = [
        '"""Every message schema Headwater speaks, by API key."""\n\n',
        header,
        "\nfrom __future__ import annotations\n\n",
    ]
    for family, messages in families.items():
        names = ", ".join(name for name, _ in messages)
        index_lines.append(f"from headwater.protocol.messages.{family} import {names}\n")
    index_lines.append("from headwater.protocol.schema import Message\n\n")
    all_names = sorted(name for messages in families.values() for name, _ in messages)
    index_lines.append(f"__all__ = {[*all_names, 'REQUESTS', 'RESPONSES']!r}\n\n")
    index_lines.append("#: API key -> request schema.\nREQUESTS: dict[int, Message] = {\n")
    for api_key, base, *_ in APIS:
        index_lines.append(f"    {api_key}: {constant(base + 'Request')},\n")
    index_lines.append("}\n\n#: API key -> response schema.\nRESPONSES: dict[int, Message] = {\n")
    for api_key, base, *_ in APIS:
        index_lines.append(f"    {api_key}: {constant(base + 'Response')},\n")
    index_lines.append("}\n")
    files["__init__.py"] = "".join(index_lines)
    return files


def format_sources(files: dict[str, str]) -> dict[str, str]:
    """Run ruff's formatter over the generated text (so --check compares like with like)."""
    formatted: dict[str, str] = {}
    for name, text in files.items():
        target = str(OUT_DIR / name)
        for command in (["check", "--select", "I", "--fix", "--quiet"], ["format"]):
            text = subprocess.run(
                [sys.executable, "-m", "ruff", *command, "--stdin-filename", target, "-"],
                input=text,
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
        formatted[name] = text
    return formatted


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-dir", type=pathlib.Path, default=None)
    parser.add_argument(
        "--source",
        default="Kafka 4.x, kafka-python 3.0.12 copy",
        help="provenance note written above each message",
    )
    parser.add_argument("--out-dir", type=pathlib.Path, default=OUT_DIR)
    parser.add_argument("--check", action="store_true", help="fail if the output would change")
    args = parser.parse_args(argv)
    json_dir = args.json_dir or default_json_dir()
    files = format_sources(generate(json_dir, args.source))
    stale = [name for name, text in files.items() if _read(args.out_dir / name) != text]
    if args.check:
        for name in stale:
            print(f"{args.out_dir / name} is out of date")
        return 1 if stale else 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.out_dir / name).write_text(files[name])
        print(f"wrote {args.out_dir / name}")
    return 0


def _read(path: pathlib.Path) -> str | None:
    return path.read_text() if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
