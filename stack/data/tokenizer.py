"""Tokenizers: `byte` (the UTF-8 bytes of the text) and `bpe` (byte-level BPE trained on the corpus).

A Hugging Face tokenizer from a local directory (`hf`, `PretrainedTokenizer`) is used as it is.
The stack's two are lossless: decode(encode(s)) == s for every Python string that UTF-8 can
encode, because both work on UTF-8 bytes and neither normalises. Each reserves its last id as the end-of-text
separator (EOT) that `stack prepare` writes after every document, and `vocab_size` counts it:
the byte tokenizer has 257 ids (256 bytes + EOT). The EOT id is never produced by `encode`, so
a text that happens to contain a string like "<|endoftext|>" cannot smuggle a separator in.

Each tokenizer has two digests: `sha256`, of the file it is kept in (an integrity check of that
file), and `identity`, of what it does (stack.data.tokenizer_identity), the same for the stack's
BPE, its Hugging Face export and its re-import. Whether two tokenizers are one is asked of the
identity (GATE-DATA-007), never of a file's bytes.

A document too long to encode at once is encoded in pieces cut where the tokenizer gives the
same ids as on the whole text (`cut_point`, `safe_pieces`); a tokenizer that cannot promise such
points has none, and its documents are encoded whole.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from contracts.errors import BadInput
from contracts.evidence import canonical_sha256
from stack.artifacts import TOKENIZER_JSON, older_tokenizer_files
from stack.data import hf_specials, tokenizer_identity
from stack.data.damage import Damaged
from stack.data.hf_specials import HfSettings

if TYPE_CHECKING:
    import tokenizers

    from stack.data.manifest import TokenizerEntry

TOKENIZER_FILE = TOKENIZER_JSON
TOKENIZER_CONFIG = hf_specials.TOKENIZER_CONFIG  # a Hugging Face tokenizer's settings: its eos_token
TOKENIZER_NAMES = ("byte", "bpe")
# 256 byte symbols, the EOT id, and at least one merge: anything smaller is not a BPE.
BPE_MIN_VOCAB = 258
# The longest run of characters without whitespace (or of whitespace) the BPE trainer is given
# whole. Byte-level pre-tokenization makes each such run one pre-token, and the trainer's cost
# grows much faster than a pre-token's length: a 300 KB line of random ACGT takes minutes, deaf to
# Ctrl-C inside the library, a 3 MB line of one letter 13 minutes; cut
# into runs of this many characters they take under a second. A pre-token of natural text is far
# shorter, so a corpus without such runs trains as it would uncut.
BPE_TRAIN_RUN = 256
LONG_RUN = re.compile(rf"\S{{{BPE_TRAIN_RUN},}}|\s{{{BPE_TRAIN_RUN},}}")
# Byte-level BPE cuts text into pre-tokens with GPT-2's pattern before it merges anything, and
# no pre-token spans a printable ASCII character followed by a space or a newline: no branch of
# the pattern carries a non-space character on into whitespace, and none looks behind, so the
# text after such a point is split exactly as it would be on its own. Cut there, a document
# encodes to the same ids in pieces as whole (tests/data/test_data_formats.py checks it).
BYTE_LEVEL_CUT = re.compile(rb"[\x21-\x7e](?=[ \n])")
CUT_SEARCH_BYTES = 4096


class Tokenizer(ABC):
    """What the rest of the stack may rely on: a name, a vocabulary size and a lossless round trip."""

    name: str
    # A model made elsewhere's own files naming its special tokens (stack.data.hf_specials); the
    # stack's own tokenizers have none.
    settings: HfSettings | None = None

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, the EOT separator included."""

    @property
    def eot_id(self) -> int:
        """The separator prepare writes after each document: always the last id."""
        return self.vocab_size - 1

    @property
    @abstractmethod
    def sha256(self) -> str:
        """The sha256 of the file the tokenizer is kept in (the definition, for byte): an integrity
        check of that file, which the manifest and the checkpoint record."""

    @cached_property
    def identity(self) -> str:
        """What the tokenizer does, as one digest: the same in every file format it is saved in
        (stack.data.tokenizer_identity). GATE-DATA-007 compares this, never `sha256`."""
        return tokenizer_identity.identity(self)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text → id: what a chat template may write to get the id itself.

        The stack's own tokenizers have one, the end-of-text separator, by its Hugging Face name.
        """
        return {tokenizer_identity.EOT_TOKEN: self.eot_id}

    def hf_json(self) -> str:
        """The tokenizer.json text of this tokenizer in the common language (stack.data.tokenizer_identity):
        what an export writes, and what the identity is computed from."""
        raise BadInput(f"no Hugging Face form for the {self.name!r} tokenizer")

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without any separator."""

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt a user gives (`--prompt`, `--patch`, `--target`, an eval item's
        prompt, `monitor.prompts`): the special tokens written in it are the specials, as transformers
        encodes a prompt and as prepared chat data holds a template's markers
        (stack.data.sft_template.encode_turn). Corpus text goes through `encode`, where a special's
        text is only text; a prompt without one encodes as `encode` encodes it. For the stack's own
        tokenizers the one special is the end-of-text separator, written `<|endoftext|>`."""
        ids: list[int] = []
        for part in self.split_specials(text):
            ids += [part] if isinstance(part, int) else self.encode(part)
        return ids

    def split_specials(self, text: str) -> list[str | int]:
        """`text` cut at the special tokens written in it (`special_tokens`, the longest first): the
        non-empty text between them, and each special's id in its place."""
        specials = self.special_tokens
        pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
        parts: list[str | int] = []
        start = 0
        for match in pattern.finditer(text) if specials else ():
            parts += [text[start : match.start()], specials[match.group()]]
            start = match.end()
        parts.append(text[start:])
        return [part for part in parts if part != ""]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; EOT separators are dropped, bytes that are not UTF-8 become U+FFFD."""

    def text_of(self, ids: Sequence[int]) -> str:
        """Text of ids a model produced (drew, ranked, completed): an id past this tokenizer, a
        padding row of a vocabulary padded for alignment (an imported Qwen2, a student given its
        teacher's vocabulary), is no text and is left out rather than refused."""
        return self.decode([i for i in ids if 0 <= i < self.vocab_size])

    @abstractmethod
    def encode_documents(self, documents: Sequence[bytes]) -> list[np.ndarray]:
        """Token ids of many UTF-8 documents at once, as arrays: prepare's fast path."""

    def cut_point(self, data: bytes | bytearray, start: int = 0) -> int:
        """The last point at or after `start` where UTF-8 `data` can be cut without changing its ids.

        Whatever text follows, encoding `data[:i]` and the rest apart gives the ids of the whole.
        0 when there is none, or when the tokenizer cannot promise one: then a document is
        encoded whole, however long.
        """
        return 0


class ByteTokenizer(Tokenizer):
    """Ids 0-255 are the UTF-8 bytes of the text; 256 is EOT."""

    name = "byte"

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def sha256(self) -> str:
        # Nothing is trained, so the identity is the definition itself.
        return canonical_sha256({"name": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id})

    def hf_json(self) -> str:
        backend = tokenizer_identity.byte_level_form()
        return tokenizer_identity.with_eot(backend, self.eot_id, self.name).to_str(pretty=True)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        array = np.asarray(ids)  # an array of ids stays in its own integer dtype: no int64 copy
        if array.dtype.kind not in "iu":
            array = array.astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > self.eot_id):
            raise ValueError(f"byte tokenizer ids are 0..{self.eot_id}; got {array.min()}..{array.max()}")
        return array[array != self.eot_id].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def encode_documents(self, documents: Sequence[bytes]) -> list[np.ndarray]:
        return [np.frombuffer(doc, dtype=np.uint8) for doc in documents]

    def cut_point(self, data: bytes | bytearray, start: int = 0) -> int:
        # A byte is a token: any point is safe, the last one included.
        return len(data) if len(data) > start else 0


def bpe_record_problem(text: str) -> str | None:
    """What makes a tokenizer.json text unfit for the library's BPE loader, or None.

    The library trusts the record's vocabulary: ids with a hole in them (an entry deleted by hand
    or by corruption) make its Rust code panic, which Python cannot catch as an Exception and
    which prints a Rust backtrace. So the vocabulary is checked first: ids 0..n-1, each once.
    """
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc})"
    model = record.get("model") if isinstance(record, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        return "its 'model' is not a BPE model"
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        return "its model.vocab is not a map from token to integer id"
    if sorted(vocab.values()) != list(range(len(vocab))):
        return f"its model.vocab ids are not 0..{len(vocab) - 1}, each once"
    return None


def library_backend(text: str, where: str, fix: str) -> tokenizers.Tokenizer:
    """The `tokenizers` library's tokenizer of a tokenizer.json text; one it cannot load is BadInput.

    The library raises a bare Exception with a multi-line message for anything it cannot parse,
    so a hand-edited or corrupted record would otherwise end in a traceback. `fix` ends the line.
    """
    from tokenizers import Tokenizer as Backend

    try:
        return Backend.from_str(text)
    except Exception as exc:  # the library raises nothing narrower
        detail = " ".join(str(exc).split())[:200]
        raise BadInput(
            f"{where} is not a tokenizer the tokenizers library can load ({detail}){fix}"
        ) from None


class LibraryTokenizer(Tokenizer):
    """A tokenizer the `tokenizers` library runs from a tokenizer.json text, which is its identity."""

    def __init__(self, backend: tokenizers.Tokenizer, json_text: str) -> None:
        self._backend = backend
        self._json = json_text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        """The tokenizer.json text this tokenizer is kept in: `sha256` is its digest; `identity` is
        what the tokenizer does, the same whatever file it is kept in."""
        return self._json

    def hf_json(self) -> str:
        return self._json  # a pretrained tokenizer's own text, unchanged

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode([int(i) for i in ids if i != self.eot_id], skip_special_tokens=False)

    def encode_documents(self, documents: Sequence[bytes]) -> list[np.ndarray]:
        # encode_batch runs on every core (the library's own thread pool); its _fast form gives
        # the same ids without working out each token's offsets, which prepare never reads.
        texts = [doc.decode("utf-8") for doc in documents]
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        encodings = encode(texts, add_special_tokens=False)
        return [np.asarray(enc.ids, dtype=np.uint32) for enc in encodings]


class BpeTokenizer(LibraryTokenizer):
    """Byte-level BPE from the `tokenizers` library; EOT is one id past the trained vocabulary."""

    name = "bpe"

    def __init__(self, backend: tokenizers.Tokenizer) -> None:
        super().__init__(backend, backend.to_str())
        self._byte_level = is_plain_byte_level(json.loads(self._json))

    @classmethod
    def from_json(cls, text: str, where: str, fix: str | None = None) -> BpeTokenizer:
        """The tokenizer a tokenizer.json text describes; a record that is not one is BadInput ending
        in `fix`, what the reader of `where` can do about it (None: the caller adds its own)."""
        ending = "" if fix is None else f"; {fix}"
        problem = bpe_record_problem(text)
        if problem is not None:
            raise BadInput(f"{where} is not a BPE tokenizer record: {problem}{ending}")
        return cls(library_backend(text, where, ending))

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size() + 1

    def hf_json(self) -> str:
        from tokenizers import Tokenizer as Backend

        backend = Backend.from_str(self.to_json())
        return tokenizer_identity.with_eot(backend, self.eot_id, self.name).to_str(pretty=True)

    def cut_point(self, data: bytes | bytearray, start: int = 0) -> int:
        return byte_level_cut(data, start) if self._byte_level else 0


def older_tokenizer_way(directory: Path) -> str | None:
    """Where a model directory without tokenizer.json holds an older tokenizer's files, how to have
    transformers write tokenizer.json from them, locally and once (the stack reads tokenizer.json
    alone, through the `tokenizers` library); None where it holds none."""
    found = older_tokenizer_files(directory)
    if found is None:
        return None
    return (
        f"it holds an older tokenizer's {' and '.join(found)}, which transformers converts, locally "
        f"and once: python -c \"from transformers import AutoTokenizer as T; T.from_pretrained('{directory}')"
        f".save_pretrained('{directory}')\" writes {TOKENIZER_JSON} beside them"
    )


class PretrainedTokenizer(LibraryTokenizer):
    """A Hugging Face tokenizer.json and the token that ends a document, used as it is.

    `stack prepare --tokenizer hf:DIR` and `stack import-hf DIR` read DIR/tokenizer.json (any model
    the `tokenizers` library loads: byte-level BPE as in Llama 3 and Qwen2, SentencePiece-style BPE
    with byte fallback as in Llama 2) and the files beside it that name its special tokens, kept as
    `settings` (stack.data.hf_specials); nothing is downloaded. Three differences from the stack's
    own tokenizers, each deliberate:
    - the separator prepare writes after every document is the model's own end-of-sequence token
      (`eos_token`, resolved as transformers resolves it), wherever its id is, so the data reads as
      the model was trained to read it;
    - special tokens in the *text* are encoded as text (`encode_special_tokens`): a document that
      happens to contain "</s>" or "<|endoftext|>" cannot smuggle a separator into the shards;
    - it may normalise text (Llama 2's prepends "▁", some lower-case): it is not guaranteed
      lossless. GATE-EVAL-003's round trip is what finds out, and bits per byte are always
      counted over the original bytes.
    """

    name = "hf"

    def __init__(
        self, json_text: str, eot_token: str, where: str, settings: HfSettings | None = None
    ) -> None:
        super().__init__(_backend(json_text, where), json_text)
        self.eot_token = eot_token
        self.settings = settings
        eot = self._backend.token_to_id(eot_token)
        if eot is None:
            raise BadInput(f"{where}: its end-of-sequence token {eot_token!r} is not in the vocabulary")
        self._eot = eot

    @classmethod
    def from_dir(cls, directory: Path) -> PretrainedTokenizer:
        """The tokenizer of a local model directory: tokenizer.json, the end-of-sequence token as
        transformers resolves it (stack.data.hf_specials), and the files that name its special tokens."""
        directory = Path(directory)
        file = directory / TOKENIZER_JSON
        if not file.is_file():
            way = older_tokenizer_way(directory) or (
                "give the directory of a Hugging Face model or tokenizer (it is read locally, nothing is "
                "downloaded)"
            )
            raise BadInput(f"{directory} has no {TOKENIZER_JSON}; {way}")
        text = _read_text(file)
        eos = hf_specials.eos_token(directory, _backend(text, str(file)).id_to_token)
        return cls(text, eos, str(file), HfSettings.read(directory))

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def eot_id(self) -> int:
        return self._eot

    @property
    def special_tokens(self) -> dict[str, int]:
        """The added tokens marked special (chat markers, bos, eos), and the end-of-sequence token."""
        added = self._backend.get_added_tokens_decoder()
        specials = {token.content: index for index, token in added.items() if token.special}
        return {**specials, self.eot_token: self._eot}

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as transformers encodes it with this tokenizer.json: the library's own split at
        the added tokens, special ones included, the end-of-sequence token registered as special as
        transformers registers it (each added token's strip and normalisation flags apply)."""
        return self._prompt_backend.encode(text, add_special_tokens=False).ids

    @cached_property
    def _prompt_backend(self) -> tokenizers.Tokenizer:
        """The backend with special tokens in text encoded as the specials (`encode_prompt`)."""
        from tokenizers import AddedToken

        backend = library_backend(self._json, "tokenizer.json", "")
        backend.add_special_tokens([AddedToken(self.eot_token, special=True, normalized=False)])
        return backend


def is_plain_byte_level(record: dict[str, object]) -> bool:
    """Whether a tokenizer.json is byte-level BPE as train_bpe makes it, which BYTE_LEVEL_CUT is proved for.

    A normaliser, a prefix space, added tokens (matched before pre-tokenizing) or dropout
    would each make a cut change the ids, so a record with any of them gets no cut points.
    """
    model = record.get("model")
    return (
        record.get("normalizer") is None
        and not record.get("added_tokens")
        and record.get("pre_tokenizer")
        == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        and isinstance(model, dict)
        and model.get("type") == "BPE"
        and model.get("dropout") is None
    )


def byte_level_cut(data: bytes | bytearray, start: int = 0) -> int:
    """The last BYTE_LEVEL_CUT point at or after `start`, or 0; searched from the end, in growing windows."""
    floor, window = max(start - 1, 0), CUT_SEARCH_BYTES
    while True:
        low = max(floor, len(data) - window)
        last = None
        for last in BYTE_LEVEL_CUT.finditer(data, low):  # noqa: B007 - the last match is the answer
            pass
        if last is not None:
            return last.end()
        if low == floor:
            return 0
        window *= 8


def safe_pieces(blocks: Iterable[bytes], cut: Callable[[bytearray, int], int], size: int) -> Iterator[bytes]:
    """One document's valid UTF-8 `blocks`, regrouped into pieces of at least `size` bytes cut by `cut`.

    Each piece ends at the last cut point of what has been read (so a piece is a little longer
    than `size`); when `cut` finds none, the piece grows until one comes, or the document ends.
    """
    held, searched = bytearray(), 0
    for block in blocks:
        held += block
        if len(held) < size:
            continue
        point = cut(held, searched)
        if point:
            yield bytes(held[:point])
            del held[:point]
        searched = len(held)
    if held:
        yield bytes(held)


def train_bpe(texts: Iterable[str], vocab_size: int) -> BpeTokenizer:
    """Train a byte-level BPE of at most `vocab_size` ids (EOT included) on `texts`.

    A small corpus may yield fewer merges than asked for; `vocab_size` of the result is the truth.
    """
    if vocab_size < BPE_MIN_VOCAB:
        raise BadInput(
            f"--vocab-size {vocab_size} is too small for bpe: it needs at least {BPE_MIN_VOCAB} "
            "(256 byte symbols, the separator and one merge)"
        )
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the last id is EOT, kept out of the library's reach
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(runs_cut(texts), trainer=trainer)
    return BpeTokenizer(backend)


def runs_cut(texts: Iterable[str]) -> Iterator[str]:
    """`texts` as the BPE trainer is given them: whole, but for each run of BPE_TRAIN_RUN or more
    characters without whitespace (or of whitespace), given in pieces of at most BPE_TRAIN_RUN
    characters, the text around it before and after it. The pieces hold every character once, in
    order; only merges across a cut are not counted."""
    for text in texts:
        start = 0
        for run in LONG_RUN.finditer(text):
            if run.start() > start:
                yield text[start : run.start()]
            yield from (
                text[i : min(i + BPE_TRAIN_RUN, run.end())]
                for i in range(run.start(), run.end(), BPE_TRAIN_RUN)
            )
            start = run.end()
        if start < len(text):
            yield text[start:]


def tokenizer_from_entry(data_dir: Path, entry: TokenizerEntry) -> Tokenizer:
    """The tokenizer a manifest describes, verified against its recorded sha256 and size."""
    if entry.name == "byte":
        tokenizer: Tokenizer = ByteTokenizer()
    else:
        assert entry.path is not None  # the manifest model requires a path for bpe and hf
        path = Path(data_dir) / entry.path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Damaged(data_dir, f"cannot read {path} ({exc})") from None
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != entry.sha256:
            raise Damaged(
                data_dir,
                f"{path} does not match the sha256 in the manifest: it was altered or copied from "
                "another DATA_DIR",
            )
        if entry.name == "hf":
            assert entry.eot_token is not None  # the manifest model requires it for hf
            settings = HfSettings.from_dict(entry.hf_settings)
            tokenizer = PretrainedTokenizer(text, entry.eot_token, str(path), settings)
        else:
            try:
                tokenizer = BpeTokenizer.from_json(text, str(path))
            except BadInput as exc:
                raise Damaged(data_dir, str(exc)) from None
    if tokenizer.sha256 != entry.sha256 or tokenizer.vocab_size != entry.vocab_size:
        raise Damaged(
            data_dir,
            f"the manifest's {entry.name} tokenizer (vocab {entry.vocab_size}, sha256 "
            f"{entry.sha256[:12]}) is not the one this code builds (vocab {tokenizer.vocab_size}, "
            f"sha256 {tokenizer.sha256[:12]})",
        )
    return tokenizer


def load_tokenizer(data_dir: Path | str) -> Tokenizer:
    """The tokenizer a prepared DATA_DIR was made with, checked against its manifest."""
    from stack.data.manifest import load_manifest

    return tokenizer_from_entry(Path(data_dir), load_manifest(data_dir).tokenizer)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {file} ({exc})") from None


def _backend(json_text: str, where: str) -> tokenizers.Tokenizer:
    """The library's tokenizer, special tokens in text encoded as text; a bad file is one line."""
    try:
        record = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where} is not valid JSON ({exc})") from None
    model = record.get("model") if isinstance(record, dict) else None
    if isinstance(model, dict) and model.get("type") == "BPE":
        problem = bpe_record_problem(json_text)  # a hole in the ids panics the library
        if problem is not None:
            raise BadInput(f"{where} is not a usable tokenizer: {problem}")
    backend = library_backend(json_text, where, "")
    backend.encode_special_tokens = True
    return backend
