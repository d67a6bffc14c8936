"""The ``people.csv`` sample of BigDL PPML's simple query: name, age, job."""

from __future__ import annotations

import csv
import io
import random

JOBS = ("Developer", "Engineer", "Researcher")


def people_csv(rows: int, *, seed: int = 0) -> tuple[bytes, int]:
    """CSV bytes with a ``name,age,job`` header, and how many rows are Developers aged 20 to 40.

    Names are 3-7 random lowercase letters, ages uniform in 18-60, as in the reference generator.
    """
    rng = random.Random(seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "age", "job"])
    developers = 0
    for _ in range(rows):
        name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7)))
        age, job = rng.randint(18, 60), rng.choice(JOBS)
        developers += job == "Developer" and 20 <= age <= 40
        writer.writerow([name, age, job])
    return buffer.getvalue().encode("utf-8"), developers
