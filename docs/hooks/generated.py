"""MkDocs hook: the reference pages that are generated, not written, so they cannot drift.

A page holds a marker line where the generated Markdown goes:

- `<!-- generated: settings -->`: every setting of `conf/`, one table per file, with its
  default and the comment above it in the YAML (the comments are the settings' documentation);
- `<!-- generated: commands -->`: every `fed-uml` command, from the one table the console
  script dispatches with (`experiments.commands.COMMANDS`), with its `python -m` module and
  its module's description.

`python docs/hooks/generated.py settings|commands` prints the same Markdown (tests read it).
When the settings get one typed schema, `settings_markdown` reads that schema instead of the
YAML files; the marker and the page stay as they are.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.M)
# Hydra's own sections and the group list are not settings of fed-uml
SKIPPED = ("defaults", "hydra")


def yaml_settings(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(the file's leading comment, [(dotted key, default as written, comment above it)]).

    The comment block a file starts with describes the file; any other comment describes the
    key on the line after it (a mapping's comment, its first key). Values are the YAML
    text as written, so interpolations (`${seed}`) show as such.
    """
    lines = text.splitlines()
    head = []
    while lines and lines[0].startswith("#"):
        head.append(lines.pop(0).lstrip("# ").rstrip())
    rows, comment, parents = [], [], []  # parents: (indent, key)
    for line in lines:
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("# ").rstrip())
            continue
        match = re.match(r"^(\s*)([\w-]+):(?:\s+(.*))?$", line)
        if not match:
            continue  # a list item of a block list
        indent, key, value = len(match.group(1)), match.group(2), (match.group(3) or "").strip()
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = [k for _, k in parents] + [key]
        if value.split(" #")[0] == "":  # a mapping (or block list) starts
            parents.append((indent, key))
            continue
        if path[0] in SKIPPED:
            comment = []
            continue
        value, _, inline = value.partition(" #")
        text_ = " ".join(comment + ([inline.strip()] if inline.strip() else []))
        rows.append((".".join(path), value.strip(), text_))
        comment = []
    return " ".join(head), rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_markdown(conf: Path = CONF) -> str:
    out = []
    files = [conf / "config.yaml"] + sorted(p for p in conf.glob("*/*.yaml"))
    for path in files:
        rel = path.relative_to(conf)
        group = rel.parent.as_posix() if rel.parent != Path(".") else ""
        about, rows = yaml_settings(path.read_text(encoding="utf-8"))
        if group:
            title = f"`{group}={rel.stem}`" if group in ("dataset", "model", "method") else f"`{group}`"
            prefix = f"{group}."
        else:
            title, prefix = "Top level", ""
        out += [f"### {title}", "", f"`conf/{rel.as_posix()}`" + (f": {about}" if about else ""), ""]
        out += ["| setting | default | what it does |", "|---|---|---|"]
        out += [f"| `{prefix}{key}` | `{_cell(value)}` | {_cell(text)} |" for key, value, text in rows]
        out.append("")
    return "\n".join(out)


def commands_markdown() -> str:
    sys.path.insert(0, str(ROOT))
    from experiments.commands import COMMANDS, description, group_members, is_group

    out = ["| command | the same as | what it does |", "|---|---|---|"]
    for name, module in COMMANDS.items():
        if is_group(module):
            for member, sub in group_members(module).items():
                out.append(f"| `fed-uml {name} {member}` | `python -m {sub}` | {_cell(description(sub))} |")
        else:
            out.append(f"| `fed-uml {name}` | `python -m {module}` | {_cell(description(module))} |")
    return "\n".join(out) + "\n"


GENERATORS = {"settings": settings_markdown, "commands": commands_markdown}


def on_page_markdown(markdown: str, **_) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


if __name__ == "__main__":
    print(GENERATORS[sys.argv[1]]())
