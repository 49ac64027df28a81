#!/usr/bin/env python3
"""Reads a BitBake recipe the way BitBake does for the parts a simple recipe uses, so that
scripts/first-boot/rootfs can run the recipe's own install steps without a Yocto tree.

    bitbake-lite.py RECIPE [--set VAR=VALUE]... (--get VAR | --function NAME)...

--set gives a variable before the recipe is read (what bitbake.conf, the distro and
local.conf would); the recipe's `=`, `:=` and `+=` then apply, `?=` and `??=` only fill in
what is unset. --get prints a variable's expanded value, --function a shell function's
expanded body (e.g. do_install:append). Expansion follows BitBake: `${VAR}` (left as is
when VAR is unset, so shell variables pass through) and `${@python}` with
`d.getVar()` and `bb.utils.contains()`. Not handled, and refused: conditional overrides
other than the package name (`VAR:append`, `VAR:${PN}` are handled), `inherit`ed classes'
variables (give them with --set). `python () {}` blocks, `require`, `inherit`, flags
(`VAR[flag]`) and `addtask` are skipped.
"""
import re
import sys

VAR_RE = re.compile(r"\$\{[a-zA-Z0-9\-_+./~:]+?\}")
PY_RE = re.compile(r"\$\{@(?:\\\}|:(?!=)|[^}:])+?\}")
ASSIGN_RE = re.compile(
    r'^(?:export\s+)?([A-Za-z0-9_${}\-.:/~+]+?)\s*(\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)\s*"(.*)"\s*$',
    re.S,
)


class Data:
    def __init__(self):
        self.values = {}
        self.weak = {}

    def getVar(self, name, expand=True):  # noqa: N802 - BitBake's name
        if name in self.values:
            value = self.values[name]
        elif name in self.weak:
            value = self.weak[name]
        else:
            return None
        return self.expand(value) if expand else value

    def setVar(self, name, value):  # noqa: N802
        self.values[name] = value

    def expand(self, text):
        for _ in range(50):
            new = VAR_RE.sub(self._var, text)
            if new == text:
                new = PY_RE.sub(self._python, text)
            if new == text:
                return text
            text = new
        raise SystemExit("bitbake-lite: expansion does not terminate: " + text[:200])

    def _var(self, m):
        value = self.getVar(m.group(0)[2:-1])
        return m.group(0) if value is None else value

    def _python(self, m):
        code = m.group(0)[3:-1]
        return str(eval(code, {"d": self, "bb": Bb, "oe": Bb}) or "")


class Utils:
    @staticmethod
    def contains(variable, checkvalues, truevalue, falsevalue, d):
        have = set((d.getVar(variable) or "").split())
        want = set(checkvalues.split() if isinstance(checkvalues, str) else checkvalues)
        return truevalue if want.issubset(have) else falsevalue


class Bb:
    utils = Utils


def parse(path, d):
    functions = {}
    lines = open(path).read().split("\n")
    i = 0
    pending = ""
    while i < len(lines):
        line = lines[i]
        i += 1
        if pending:
            line = pending + line
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + "\n"
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if re.match(r"^(python\s*)?[A-Za-z0-9_:${}\-]*\s*\(\)\s*\{\s*$", stripped):
            name = re.sub(r"^python\s*", "", stripped).split("(")[0].strip()
            body = []
            while i < len(lines) and lines[i].rstrip() != "}":
                body.append(lines[i])
                i += 1
            i += 1
            if not stripped.startswith("python"):
                functions[d.expand(name)] = "\n".join(body)
            continue
        if re.match(r"^(inherit|require|include|addtask|deltask|EXPORT_FUNCTIONS)\b", stripped):
            continue
        if re.match(r"^[A-Za-z0-9_${}\-.:]+\[[^\]]+\]\s*[?:+.]*=", stripped):
            continue  # a flag
        m = ASSIGN_RE.match(stripped)
        if not m:
            raise SystemExit(f"bitbake-lite: {path}:{i}: cannot read: {stripped[:80]}")
        name, op, value = m.group(1), m.group(2), m.group(3)
        name = d.expand(name)
        if name.endswith(":append"):
            name, op = name[: -len(":append")], ".="
        elif name.endswith(":prepend"):
            name, op = name[: -len(":prepend")], "=."
        if op == "??=":
            d.weak.setdefault(name, value)
        elif op == "?=":
            if d.getVar(name, False) is None:
                d.values[name] = value
        elif op == ":=":
            d.values[name] = d.expand(value)
        else:
            old = d.getVar(name, False) or ""
            d.values[name] = {
                "=": value,
                "+=": (old + " " + value) if old else value,
                "=+": (value + " " + old) if old else value,
                ".=": old + value,
                "=.": value + old,
            }[op]
    return functions


def main(argv):
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    d = Data()
    recipe = argv[0]
    actions = []
    args = argv[1:]
    while args:
        opt = args.pop(0)
        if opt == "--set":
            name, _, value = args.pop(0).partition("=")
            d.values[name] = value
        elif opt in ("--get", "--function"):
            actions.append((opt, args.pop(0)))
        else:
            raise SystemExit(f"bitbake-lite: unknown option {opt}")
    functions = parse(recipe, d)
    for opt, name in actions:
        if opt == "--get":
            value = d.getVar(name)
            if value is None:
                raise SystemExit(f"bitbake-lite: {name} is not set")
            print(" ".join(value.split()) if "\n" in value else value)
        else:
            if name not in functions:
                raise SystemExit(f"bitbake-lite: no shell function {name} in {recipe}")
            print(d.expand(functions[name]))


main(sys.argv[1:])
