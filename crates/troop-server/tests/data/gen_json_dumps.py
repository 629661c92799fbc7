#!/usr/bin/env python3
"""Generate json_dumps.jsonl: Python's real `json.dumps(s)` output for many strings.

Read by tests/json_python.rs, which checks that troop_server::json::write_str matches it
byte for byte. Standard library only, seeded, so re-running it gives the same file:

    python3 crates/troop-server/tests/data/gen_json_dumps.py

Each line is {"cp": [code points as ints], "py": <json.dumps(s) as a JSON string>}.
The input is given as integers so reading it does not depend on the JSON string decoder
under test. Lone surrogates are never generated (a Rust string cannot hold them).
"""

import json
import os
import random

SEED = 0x7F00_7F00
RANDOM_CASES = 3000
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "json_dumps.jsonl")


def fixed_cases():
    yield ""
    for c in range(0x00, 0x21):
        yield chr(c)
    yield "\x7f"
    yield "\x80"
    yield "\u2028"
    yield "\U0001F600"  # 😀
    yield "a<b>c"


def pick_char(rng):
    """One code point, weighted towards the characters that are easy to get wrong."""
    r = rng.random()
    if r < 0.15:
        return rng.randrange(0x00, 0x20)  # C0 controls (incl. \b \t \n \f \r)
    if r < 0.22:
        return 0x7F  # DEL
    if r < 0.30:
        return rng.randrange(0x80, 0xA0)  # C1 controls
    if r < 0.40:
        return ord(rng.choice('<>"\\/~ '))  # specials and printable ASCII edges
    if r < 0.55:
        c = rng.randrange(0xA0, 0x10000)  # BMP non-ASCII, skipping surrogates
        return c if not 0xD800 <= c <= 0xDFFF else 0xFFFD
    if r < 0.60:
        return rng.choice([0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF, 0xD7FF, 0xE000])
    if r < 0.70:
        return rng.choice(
            [
                rng.randrange(0x1F300, 0x1FAFF),  # emoji
                rng.randrange(0x10000, 0x110000),  # any astral
                0x10000,
                0x10FFFF,
            ]
        )
    return rng.randrange(0x20, 0x7F)  # printable ASCII


def random_cases(rng):
    for _ in range(RANDOM_CASES):
        n = rng.choice([1, 1, 2, 3, 5, 8, 13, rng.randrange(0, 64)])
        yield "".join(chr(pick_char(rng)) for _ in range(n))


def main():
    rng = random.Random(SEED)
    count = 0
    with open(OUT, "w", encoding="ascii", newline="\n") as f:
        for s in list(fixed_cases()) + list(random_cases(rng)):
            cps = [ord(c) for c in s]
            assert not any(0xD800 <= c <= 0xDFFF for c in cps), "lone surrogate"
            line = json.dumps({"cp": cps, "py": json.dumps(s)})
            f.write(line + "\n")
            count += 1
    print(f"wrote {count} cases to {OUT}")


if __name__ == "__main__":
    main()
