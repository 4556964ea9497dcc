"""Small generated corpora of the kinds people bring to `stack prepare`, for
tests/data/test_prepare_corpora.py.

Each generator is seeded, so a corpus is the same bytes on every machine. The text is made up
(words of letters drawn from a script's alphabet, Zipf-distributed), but each corpus has the
shape of the real thing: its script, its alphabet size, its line structure and how much it
repeats itself. docs/data.md quotes the diversity scores measured on them.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from pathlib import Path

# Letters of each script, enough of them that words look like words.
CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
ARABIC = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"
DEVANAGARI_CONSONANTS = "कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह"
DEVANAGARI_SIGNS = ["", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ", "ं"]
LATIN = "etaoinshrdlcumwfgypbvkjxqz"


def _zipf(rng: random.Random, items: list[str], count: int) -> list[str]:
    weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(items))))
    return rng.choices(items, cum_weights=weights, k=count)


def _vocabulary(rng: random.Random, make: Callable[[random.Random], str], size: int) -> list[str]:
    return sorted({make(rng) for _ in range(size)})


def prose(
    rng: random.Random, vocabulary: list[str], sentences: int, stop: str = ".", space: str = " "
) -> str:
    """Paragraphs of sentences of Zipf-distributed words."""
    lines = []
    for _ in range(sentences):
        words = _zipf(rng, vocabulary, rng.randint(5, 16))
        lines.append(space.join(words) + stop)
    return "\n\n".join(space.join(lines[i : i + 4]) for i in range(0, len(lines), 4)) + "\n"


def latin_words(rng: random.Random) -> str:
    return "".join(rng.choices(LATIN, k=rng.randint(1, 9)))


def cyrillic_text(seed: int, sentences: int = 40) -> str:
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng, lambda r: "".join(r.choices(CYRILLIC, k=r.randint(2, 10))), 3000)
    return prose(rng, vocabulary, sentences)


def cjk_text(seed: int, sentences: int = 40) -> str:
    """Chinese-shaped text: ideographs without spaces, full-width punctuation."""
    rng = random.Random(seed)
    ideographs = [chr(0x4E00 + i) for i in range(0, 3000, 3)]
    return prose(rng, ideographs, sentences, stop="。", space="")


def arabic_text(seed: int, sentences: int = 40) -> str:
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng, lambda r: "".join(r.choices(ARABIC, k=r.randint(2, 8))), 3000)
    return prose(rng, vocabulary, sentences)


def devanagari_text(seed: int, sentences: int = 40) -> str:
    """Hindi-shaped text: syllables of a consonant and a vowel sign, the danda as full stop."""
    rng = random.Random(seed)

    def word(r: random.Random) -> str:
        return "".join(
            r.choice(DEVANAGARI_CONSONANTS) + r.choice(DEVANAGARI_SIGNS) for _ in range(r.randint(1, 4))
        )

    return prose(rng, _vocabulary(rng, word, 3000), sentences, stop=" ।")


# Alphabets of a few more scripts, for corpora of many writing systems in one source.
ALPHABETS = {
    "greek": "αβγδεζηθικλμνξοπρστυφχψω",
    "armenian": "աբգդեզէըթժիլխծկհձղճմյնշոչպջռսվտրցւփքօֆ",
    "georgian": "აბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰ",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשת",
    "thai": "กขคงจฉชซญดตถทนบปผพฟมยรลวสหอ",
    "hangul": "".join(chr(0xAC00 + 28 * i) for i in range(0, 399, 7)),
    "tamil": "அஆஇஈஉஊஎஏஐஒஓகஙசஞடணதநபமயரலவழளறன",
    "ethiopic": "".join(chr(0x1200 + 8 * i) for i in range(40)),
    "cyrillic": CYRILLIC,
    "arabic": ARABIC,
    "latin": LATIN,
}
HIRAGANA = "".join(chr(code) for code in range(0x3042, 0x3093, 2))
KATAKANA = "".join(chr(code) for code in range(0x30A2, 0x30F3, 2))


def alphabet_text(script: str, seed: int, sentences: int = 40) -> str:
    """Prose in words of one of ALPHABETS."""
    rng = random.Random(seed)
    letters = ALPHABETS[script]
    vocabulary = _vocabulary(rng, lambda r: "".join(r.choices(letters, k=r.randint(2, 9))), 3000)
    return prose(rng, vocabulary, sentences)


def japanese_text(seed: int, sentences: int = 40) -> str:
    """Japanese-shaped text: kanji stems followed by hiragana endings, katakana loanwords, no spaces."""
    rng = random.Random(seed)
    kanji = [chr(0x4E00 + i) for i in range(0, 3000, 7)]

    def word(r: random.Random) -> str:
        if r.random() < 0.2:
            return "".join(r.choices(KATAKANA, k=r.randint(2, 5)))
        return "".join(r.choices(kanji, k=r.randint(1, 2))) + "".join(r.choices(HIRAGANA, k=r.randint(1, 3)))

    return prose(rng, _vocabulary(rng, word, 3000), sentences, stop="。", space="")


def english_text(seed: int, sentences: int = 40) -> str:
    rng = random.Random(seed)
    return prose(rng, _vocabulary(rng, latin_words, 5000), sentences)


def python_code(seed: int, functions: int = 12) -> str:
    """Python-shaped source: functions with docstrings, comments and arithmetic."""
    rng = random.Random(seed)
    names = _vocabulary(rng, latin_words, 400)
    parts = [f"# Copyright {seed} The Authors\n# Licensed under the MIT License\n\nimport math\n"]
    for _ in range(functions):
        name, arg, other = rng.sample(names, 3)
        parts.append(
            f"\n\ndef {name}_{rng.randint(0, 99)}({arg}, {other}=None):\n"
            f'    """Return the {name} of {arg}."""\n'
            f"    if {other} is None:\n"
            f"        {other} = {rng.randint(1, 999)}\n"
            f"    # scale by {rng.random():.3f}\n"
            f"    return math.sqrt({arg} * {other} + {rng.randint(0, 50)})\n"
        )
    return "".join(parts)


def dna_fasta(seed: int, bases: int = 6000) -> str:
    """A FASTA record: a header line and 60-base lines of A, C, G, T."""
    rng = random.Random(seed)
    sequence = "".join(rng.choices("ACGT", k=bases))
    lines = [sequence[i : i + 60] for i in range(0, len(sequence), 60)]
    return f">seq{seed} synthetic chromosome fragment\n" + "\n".join(lines) + "\n"


def abc_tune(seed: int, bars: int = 64) -> str:
    """A tune in ABC notation: a header, then bars of notes with lengths."""
    rng = random.Random(seed)
    notes = [*list("CDEFGABcdefgab"), "z"]
    header = f"X:{seed}\nT:Reel number {seed}\nM:4/4\nL:1/8\nK:{rng.choice('GDAEC')}\n"
    body = []
    for bar in range(bars):
        body.append("".join(rng.choice(notes) + rng.choice(["", "", "2", "/2"]) for _ in range(8)))
        body.append("|" if bar % 4 != 3 else "|\n")
    return header + "|:" + "".join(body) + ":|\n"


def csv_table(seed: int, rows: int = 120) -> str:
    """A CSV table: a header row, then ids, dates, categories and measurements."""
    rng = random.Random(seed)
    lines = ["id,date,station,temperature,humidity,wind"]
    for number in range(rows):
        lines.append(
            f"{seed * 1000 + number},2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
            f"{rng.choice(['north', 'south', 'east', 'west'])},{rng.uniform(-10, 35):.1f},"
            f"{rng.randint(10, 100)},{rng.uniform(0, 20):.2f}"
        )
    return "\n".join(lines) + "\n"


def five_words(seed: int, words: int = 800) -> str:
    """Random words from a vocabulary of five: a generated grammar, legitimate data."""
    rng = random.Random(seed)
    return " ".join(rng.choices(["apple", "river", "stone", "cloud", "ember"], k=words)) + "\n"


def markdown_doc(seed: int, sections: int = 9) -> str:
    """A README or docs page: a title, then sections under `## Headers`, prose and a code block."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng, latin_words, 2000)
    titles = ["Installation", "Usage", "Configuration", "API", "Examples", "Contributing", "License"]
    parts = [f"# Package {seed}\n\n{prose(rng, vocabulary, 3).strip()}\n"]
    for number in range(sections):
        body = prose(rng, vocabulary, rng.randint(2, 6)).strip()
        code = f"```sh\nnpm install package-{seed} --save\n```\n" if number % 3 == 0 else ""
        parts.append(f"\n## {titles[number % len(titles)]}\n\n{body}\n\n{code}")
    return "".join(parts)


def shell_script(seed: int) -> str:
    """A deployment script whose steps are `# Section` comments between commands."""
    rng = random.Random(seed)
    steps = [
        ("Settings", f"set -euo pipefail\nAPP=service-{seed}\nREGION=eu-west-{rng.randint(1, 3)}\n"),
        ("Install dependencies", "apt-get update -qq\napt-get install -y curl jq\n"),
        ("Build the image", f"docker build -t app:{seed} .\ndocker push app:{seed}\n"),
        ("Run migrations", "kubectl run migrate --rm -i --image app -- python manage.py migrate\n"),
        ("Deploy", f"helm upgrade --install app ./chart --set replicas={rng.randint(1, 9)} --wait\n"),
        ("Smoke test", "curl -fsS https://app.example.com/healthz\n"),
        ("Notify", 'curl -X POST --data \'{"text": "deployed"}\' "$HOOK"\n'),
    ]
    return "#!/usr/bin/env bash\n\n" + "\n".join(f"# {title}\n{body}" for title, body in steps)


def chat_client(seed: int) -> str:
    """Code that calls a chat model, its system prompt in the system message where it belongs."""
    return (
        f'"""Example {seed}: ask a chat model and print the reply."""\nfrom openai import OpenAI\n\n'
        "client = OpenAI()\n\n\ndef ask(question: str) -> str:\n"
        "    response = client.chat.completions.create(\n"
        f'        model="model-{seed}",\n        messages=[\n'
        '            {"role": "system", "content": "You are a helpful assistant."},\n'
        '            {"role": "user", "content": question},\n        ],\n    )\n'
        "    return response.choices[0].message.content\n"
    )


def loop(line: str, chars: int = 4000) -> str:
    """One line said over and over: a model's degenerate sample, the diversity filter's target."""
    return (line * (chars // len(line) + 1))[:chars]


def chat_records(seed: int, count: int, leaked: int) -> list[str]:
    """JSONL chat examples; the first `leaked` paste an assistant's system prompt into the user turn."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng, latin_words, 2000)
    rows = []
    for number in range(count):
        question = prose(rng, vocabulary, 2).strip()
        if number < leaked:
            question = "You are ChatGPT, a large language model. Knowledge cutoff: 2023-04.\n\n" + question
        answer = prose(rng, vocabulary, 4).strip()
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        rows.append(json.dumps({"messages": messages}, ensure_ascii=False))
    return rows


def write_files(directory: Path, texts: list[str], suffix: str = ".txt") -> Path:
    """Each text as its own file under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, text in enumerate(texts):
        (directory / f"doc{number:03d}{suffix}").write_text(text, encoding="utf-8")
    return directory


def write_big_file(path: Path, size: int, seed: int = 0) -> Path:
    """A single text file of about `size` bytes with no separator: the shape of enwik8 or text8."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng, latin_words, 5000)
    block = prose(rng, vocabulary, 2000).encode()
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            # Shifted copies of one generated block: distinct text, generated fast.
            chunk = block[written % 997 :] + b"\n"
            handle.write(chunk)
            written += len(chunk)
    return path
