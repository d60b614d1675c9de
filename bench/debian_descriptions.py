"""A 5-class "your own CSV" stand-in from real English text: Debian package descriptions by section.

No news corpus can be downloaded here; Debian's package index can (it is a package registry). Each
row is one package's long description, its label the archive section: games, graphics, net, science,
sound (440 per class where the section has them, 342 for graphics; 40+ words; near-duplicate
descriptions of sibling packages dropped by their first 150 characters). Seeded 80/20 train/test split,
column names ``article_body`` / ``desk`` (names the project has never seen).

Needs the English translation index: ``apt-get -o Acquire::Languages=en update`` once (root).

    python bench/debian_descriptions.py [--out data/generated/debian-descriptions]
"""

from __future__ import annotations

import argparse
import csv
import glob
import random
import re
import subprocess
from pathlib import Path

SECTIONS = ("games", "graphics", "net", "science", "sound")
PER_CLASS = 440


def read_translation() -> str:
    files = glob.glob("/var/lib/apt/lists/*_main_i18n_Translation-en*")
    if not files:
        raise SystemExit("no Translation-en index: run apt-get -o Acquire::Languages=en update (as root)")
    path = max(files, key=lambda f: Path(f).stat().st_size)
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True, text=True,
                          check=True).stdout


def sections() -> dict[str, str]:
    index = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    found = {}
    for block in index.split("\n\n"):
        section = re.search(r"^Section: (\S+)", block, re.M)
        package = re.search(r"^Package: (\S+)", block, re.M)
        if section and package and section.group(1) in SECTIONS:
            found[package.group(1)] = section.group(1)
    return found


def rows() -> list[tuple[str, str]]:
    section_of = sections()
    seen, out = set(), []
    for block in read_translation().split("\n\n"):
        package = re.search(r"^Package: (\S+)", block, re.M)
        description = re.search(r"^Description-en: (.*?)(?=^\S|\Z)", block, re.M | re.S)
        if not package or not description or package.group(1) not in section_of:
            continue
        lines = description.group(1).splitlines()
        body = " ".join("\n" if line.strip() == "." else line.strip() for line in lines[1:])
        text = f"{lines[0]}\n{body}"
        if len(text.split()) < 40 or body[:150] in seen:
            continue
        seen.add(body[:150])
        out.append((text, section_of[package.group(1)]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/generated/debian-descriptions")
    args = parser.parse_args()
    random.seed(0)
    found = rows()
    random.shuffle(found)
    chosen = [row for section in SECTIONS for row in [r for r in found if r[1] == section][:PER_CLASS]]
    random.shuffle(chosen)
    cut = int(len(chosen) * 0.8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", chosen[:cut]), ("test", chosen[cut:])):
        with (out / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["article_body", "desk"])
            writer.writerows(part)
    counts = {s: sum(1 for _, label in chosen if label == s) for s in SECTIONS}
    print(f"{len(chosen)} descriptions {counts}: {out}/train.csv ({cut}), {out}/test.csv ({len(chosen) - cut})")


if __name__ == "__main__":
    main()
