#!/usr/bin/env python3
"""Self cost per function from a callgrind dump, per request.

    callgrind_top.py DUMP REQUESTS [LINES]

callgrind_annotate folds everything of an LTO build into a few callers; this
reads the dump itself: a function's own cost is the cost lines under its
`fn=`, less the inclusive costs of the calls it makes (`calls=` lines).
"""

import collections
import re
import sys


def main():
    path, requests = sys.argv[1], int(sys.argv[2])
    lines = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    names = {}

    def name(token):
        # Compressed names: "(12) full name" the first time, "(12)" after.
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if not m:
            return token
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    own = collections.Counter()
    current = None
    after_call = False
    with open(path, errors="replace") as dump:
        for line in dump:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                current = name(line[3:])
            elif line.startswith(("cfn=", "cfi=", "cfl=")):
                if line.startswith("cfn="):
                    name(line[4:])
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False  # the call's inclusive cost: not our own
                    continue
                fields = line.split()
                if len(fields) >= 2 and current is not None:
                    own[current] += int(fields[1])
    total = sum(own.values())
    print(f"{'share':>7} {'per req':>8}  function")
    for fn, cost in own.most_common(lines):
        print(f"{100 * cost / total:6.2f}% {cost / requests:8.0f}  {fn[:150]}")


if __name__ == "__main__":
    main()
