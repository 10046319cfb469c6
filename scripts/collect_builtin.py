"""Generate the queries of the builtin observation set (``tinypool-numeric``), deterministically.

Short questions with numeric answers that the tiny local models sometimes get right: arithmetic,
unit conversions, calendar facts and facts with known counts. All text is written here (no third-party
data), so it may be redistributed. Usage:

    python scripts/collect_builtin.py queries OUT.jsonl [--train 160] [--test 110] [--seed 20260]
    python scripts/collect_builtin.py package STORE OUT_DIR     # store -> observations.parquet + counts

The full pipeline is scripts/collect_builtin.sh.
"""

from __future__ import annotations

import json
import sys

import numpy as np

FACTS = [
    ("How many legs does a spider have?", 8), ("How many legs does an insect have?", 6),
    ("How many legs does a dog have?", 4), ("How many legs does a bird have?", 2),
    ("How many sides does a triangle have?", 3), ("How many sides does a square have?", 4),
    ("How many sides does a pentagon have?", 5), ("How many sides does a hexagon have?", 6),
    ("How many sides does an octagon have?", 8), ("How many days are in a week?", 7),
    ("How many months are in a year?", 12), ("How many hours are in a day?", 24),
    ("How many minutes are in an hour?", 60), ("How many seconds are in a minute?", 60),
    ("How many continents are there on Earth?", 7), ("How many planets are in the Solar System?", 8),
    ("How many wheels does a bicycle have?", 2), ("How many wheels does a tricycle have?", 3),
    ("How many wheels does a car have?", 4), ("How many fingers are on one hand?", 5),
    ("How many players are on a soccer team on the field?", 11), ("How many strings does a guitar have?", 6),
    ("How many days are in a leap year?", 366), ("How many days are in a normal year?", 365),
    ("How many cents are in a dollar?", 100), ("How many items are in a dozen?", 12),
    ("How many degrees are in a right angle?", 90), ("At how many degrees Celsius does water boil?", 100),
    ("At how many degrees Celsius does water freeze?", 0), ("How many years are in a century?", 100),
    ("How many years are in a decade?", 10), ("How many letters are in the English alphabet?", 26),
    ("How many colours are in a rainbow?", 7), ("How many eyes does a person have?", 2),
    ("How many hearts does a human have?", 1), ("How many weeks are in a year?", 52),
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
MONTH_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
CONVERSIONS = [
    ("How many minutes are in {n} hours?", 60), ("How many seconds are in {n} minutes?", 60),
    ("How many days are in {n} weeks?", 7), ("How many centimeters are in {n} meters?", 100),
    ("How many grams are in {n} kilograms?", 1000), ("How many months are in {n} years?", 12),
    ("How many hours are in {n} days?", 24), ("How many meters are in {n} kilometers?", 1000),
    ("How many eggs are in {n} dozen?", 12), ("How many millimeters are in {n} centimeters?", 10),
]


def arithmetic(rng) -> tuple[str, int, str]:
    op = rng.choice(["add", "add", "sub", "mul"])
    if op == "add":
        a, b = (int(x) for x in rng.integers(1, 30, size=2))
        return f"What is {a} + {b}?", a + b, "arithmetic"
    if op == "sub":
        a = int(rng.integers(5, 40))
        b = int(rng.integers(1, a))
        return f"What is {a} - {b}?", a - b, "arithmetic"
    a, b = (int(x) for x in rng.integers(2, 10, size=2))
    return f"What is {a} times {b}?", a * b, "arithmetic"


def conversion(rng) -> tuple[str, int, str]:
    tpl, factor = CONVERSIONS[int(rng.integers(len(CONVERSIONS)))]
    n = int(rng.integers(2, 10))
    return tpl.format(n=n), n * factor, "units"


def calendar(rng) -> tuple[str, int, str]:
    kind = int(rng.integers(4))
    if kind == 0:
        m = int(rng.integers(12))
        return f"How many days are in {MONTHS[m]}?", MONTH_DAYS[m], "dates"
    if kind == 1:
        m = int(rng.integers(12))
        return f"What is the month number of {MONTHS[m]}?", m + 1, "dates"
    if kind == 2:
        d, k = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        return f"Today is the {d}th of the month. What day of the month is it in {k} days?", d + k, "dates"
    y = int(rng.integers(1950, 2030))
    return f"What year comes right after {y}?", y + 1, "dates"


def make_queries(n_train: int = 160, n_test: int = 110, seed: int = 20260) -> list[dict]:
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict] = []
    facts = list(FACTS)
    rng.shuffle(facts)
    for q, a in facts:
        seen.add(q)
        out.append({"question": q, "answer": str(a), "topic": "facts"})
    gens = [arithmetic, arithmetic, conversion, calendar]
    while len(out) < n_train + n_test:
        q, a, topic = gens[int(rng.integers(len(gens)))](rng)
        if q in seen:
            continue
        seen.add(q)
        out.append({"question": q, "answer": str(a), "topic": topic})
    order = rng.permutation(len(out))
    rows = []
    for rank, i in enumerate(order):
        r = out[int(i)]
        rows.append({"query_id": f"tn-{rank:04d}", "split": "train" if rank < n_train else "test", **r})
    return rows


def package(store: str, out_dir: str) -> None:
    """Export the collected set from the store to compressed Parquet (+ side tables for the datasheet)."""
    from pathlib import Path

    from caproute.data.store import ObservationStore

    out = Path(out_dir)
    with ObservationStore(store, read_only=True) as s:
        obs = s.read()
        con = s.connection
        rewrites = con.execute("SELECT * FROM collect_rewrites ORDER BY dataset, query_id, variant_id").df()
        queries = con.execute("SELECT * FROM collect_queries ORDER BY dataset, query_id").df()
    obs.to_parquet(out / "observations.parquet", index=False, compression="zstd", compression_level=19)
    rewrites.to_parquet(out / "rewrites.parquet", index=False, compression="zstd", compression_level=19)
    queries.to_parquet(out / "queries.parquet", index=False, compression="zstd", compression_level=19)
    print(json.dumps({"observations": len(obs), "rewrites": len(rewrites), "queries": len(queries)}))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "queries":
        import argparse

        ap = argparse.ArgumentParser()
        ap.add_argument("cmd")
        ap.add_argument("out")
        ap.add_argument("--train", type=int, default=160)
        ap.add_argument("--test", type=int, default=110)
        ap.add_argument("--seed", type=int, default=20260)
        a = ap.parse_args()
        with open(a.out, "w") as f:
            for r in make_queries(a.train, a.test, a.seed):
                f.write(json.dumps(r) + "\n")
    elif cmd == "package":
        package(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
