"""The default model's training text: clean English prose from Debian packages (apt-get install
python3.11-doc postgresql-doc-15 perl-doc debian-handbook debian-reference-en dict-gcide
wordnet-base fortunes). Paragraphs of running text only: code, tables, navigation and markup are
dropped. Writes OUT.txt (one paragraph a line) and OUT.json (per source: package, version,
licence, paragraphs, bytes).

Usage: corpus.py OUT   (OUT.txt and OUT.json are written)"""
import glob
import gzip
import html.parser
import json
import os
import re
import subprocess
import sys

out = sys.argv[1]

SOURCES = {
    # name: (Debian package, licence as its copyright file states it)
    "python-docs": ("python3.11-doc", "PSF-2.0"),
    "postgresql-docs": ("postgresql-doc-15", "PostgreSQL"),
    "debian-handbook": ("debian-handbook", "GPL-2+ or CC-BY-SA-3.0"),
    "debian-reference": ("debian-reference-en", "GPL-2+"),
    "perl-docs": ("perl-doc", "GPL-1+ or Artistic"),
    "linux-docs": ("linux-doc-6.1", "GPL-2"),
    "gcide": ("dict-gcide", "GPL-3+"),
    "wordnet": ("wordnet-base", "WordNet (permissive)"),
    "fortunes": ("fortunes", "BSD-3-clause and others (public domain quotations)"),
}


CODE_WORD = re.compile(r"[_{}<>|\\=@$#*]|::|\w\(|\w\.\w|/\w")


def prose(text: str) -> str | None:
    """Whitespace collapsed; None unless it reads as English prose (a sentence or more, at most one
    word in fifteen that looks like code)."""
    text = " ".join(text.split())
    if len(text) < 60 or len(text) > 4000:
        return None
    letters = sum(c.isalpha() or c == " " for c in text)
    if letters / len(text) < 0.85 or not text[0].isupper() or text[-1] not in ".!?\"'":
        return None
    words = text.split()
    if sum(bool(CODE_WORD.search(w)) for w in words) * 15 > len(words):
        return None
    return text


class Paragraphs(html.parser.HTMLParser):
    """Text of <p>, <li>, <dd>, <blockquote> and DocBook's <div class="para"> elements; <pre>,
    <table>, <script>, <style> and <nav> inside them make the paragraph go (prose() drops it)."""

    KEEP = {"p", "li", "dd", "blockquote"}
    SKIP = {"pre", "table", "script", "style", "nav"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.buffer, self.depth, self.skip = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag == "div" and ("class", "para") in attrs:
            tag = "p"
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.KEEP:
            if self.depth == 0:
                self.buffer = []
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "div" and self.depth > 0:
            tag = "p"  # DocBook's para divs hold no other divs
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.KEEP and self.depth > 0:
            self.depth -= 1
            if self.depth == 0:
                self.out.append("".join(self.buffer))

    def handle_data(self, data):
        if self.depth > 0:
            # Inline code becomes a placeholder that prose() rejects, so the paragraph goes.
            self.buffer.append("{}" if self.skip else data)


def html_files(pattern: str) -> list[str]:
    found = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            parser = Paragraphs()
            parser.feed(f.read())
            found.extend(parser.out)
    return found


def pod() -> list[str]:
    found = []
    for path in sorted(glob.glob("/usr/share/perl/5.*/pod/*.pod")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for block in f.read().split("\n\n"):
                if block.startswith((" ", "\t", "=")):
                    continue
                found.append(re.sub(r"[A-Z]<+\s*([^<>]*?)\s*>+", r"\1", block))
    return found


def rst(pattern: str) -> list[str]:
    """Paragraphs of reStructuredText: unindented blocks that are not directives, titles or lists."""
    found = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") if path.endswith(".gz") else open(path, encoding="utf-8", errors="replace") as f:
            for block in f.read().split("\n\n"):
                if block.startswith((" ", "\t", "..", "-", "*", "=", ":")) or re.search(r"^[=\-~^*#]{4,}$", block, re.M):
                    continue
                found.append(re.sub(r"``?|:\w+:", "", block))
    return found


def gcide() -> list[str]:
    """Senses, notes and quotations of the 1913 Webster (GCIDE), without pronunciations, etymologies,
    sources or markup; headword blocks (with their pronunciation) fail prose()."""
    text = gzip.open("/usr/share/dictd/gcide.dict.dz").read().decode("utf-8", "replace")
    found = []
    for block in text.split("\n\n"):
        block = re.sub(r"^\s*(\d+\.|Note:|Syn\.|--)\s*", "", block)
        block = re.sub(r"\\[^\\]*\\|\[[^\]]*\]|\{|\}|\((?:[A-Z][a-z]*\.\s*)+\)", "", block)
        found.append(re.sub(r"\s--\s?[A-Z][\w. ]*$", "", block.strip()))
    return found


def wordnet() -> list[str]:
    found = []
    for part in ("noun", "verb", "adj", "adv"):
        with open(f"/usr/share/wordnet/data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" ") or "|" not in line:
                    continue
                words = line.split()[4 : 4 + 2 * int(line.split()[3], 16) : 2]
                gloss = line.split("|", 1)[1].strip()
                definition, *examples = [g.strip().strip('"') for g in gloss.split(";")]
                head = words[0].replace("_", " ") if words else ""
                found.append(f"{head[:1].upper()}{head[1:]} means {definition}.")
                found.extend(e[:1].upper() + e[1:] + ("" if e.endswith((".", "!", "?")) else ".") for e in examples if len(e.split()) > 4)
    return found


def fortunes() -> list[str]:
    found = []
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if "." in os.path.basename(path) or os.path.isdir(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            found.extend(f.read().split("\n%\n"))
    return found


EXTRACT = {
    "python-docs": lambda: html_files("/usr/share/doc/python3.11/html/**/*.html"),
    "postgresql-docs": lambda: html_files("/usr/share/doc/postgresql-doc-15/html/*.html"),
    "debian-handbook": lambda: html_files("/usr/share/doc/debian-handbook/html/en-US/*.html"),
    "debian-reference": lambda: html_files("/usr/share/doc/debian-reference-en/docs/*.en.html*") + html_files("/usr/share/debian-reference/*.en.html*"),
    "perl-docs": pod,
    "linux-docs": lambda: rst("/usr/share/doc/linux-doc-6.1/Documentation/**/*.rst*"),
    "gcide": gcide,
    "wordnet": wordnet,
    "fortunes": fortunes,
}

table, seen = {}, set()
with open(out + ".txt", "w") as f:
    for name, extract in EXTRACT.items():
        package, licence = SOURCES[name]
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout.strip()
        kept = 0
        size = 0
        for paragraph in extract():
            text = prose(paragraph)
            if text is None or text in seen:
                continue
            seen.add(text)
            f.write(text + "\n")
            kept += 1
            size += len(text.encode()) + 1
        table[name] = {"package": package, "version": version, "licence": licence, "paragraphs": kept, "bytes": size}
        print(f"{name:18} {package} {version}: {kept} paragraphs, {size / 1e6:.1f} MB", file=sys.stderr)
with open(out + ".json", "w") as f:
    json.dump(table, f, indent=1)
