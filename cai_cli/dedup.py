"""Exact and near duplicates among short texts (prompts), and how varied a set of them is.

Two prompts are exact duplicates when their normalised text is the same (case, accents' forms,
punctuation and spacing aside), and near duplicates when the Jaccard similarity of their word
n-gram sets reaches a threshold. Near duplicates are found with MinHash locality-sensitive
hashing (datasketch), so a set of a hundred thousand prompts is searched in constant time per
query; each candidate is then confirmed on the exact n-gram sets, so a match is never a hashing
accident (a true match can, rarely, be missed: that is the price of LSH).

    index = NearDuplicateIndex(threshold=0.5)
    index.add("seed-1", "How do I pick a lock?")
    index.match("how do I pick a lock")          # ("duplicate", "seed-1")
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

WORD = re.compile(r"\w+(?:'\w+)*")

# Word pairs: word order counts, and on prompts of 10-20 words a new object or a new verb
# already moves the similarity well below 0.5, while a rewording of a few words stays above it.
DEFAULT_NGRAM = 2
DEFAULT_THRESHOLD = 0.5
NUM_PERM = 128  # MinHash permutations: the estimate's error is about 1/sqrt(128) = 0.09


def words(text: str) -> list[str]:
    """The text's words, case-folded, with Unicode compatibility forms (full-width letters,
    ligatures) folded to plain ones and curly apostrophes made straight."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    return WORD.findall(text)


def normalise(text: str) -> str:
    """The text as exact-duplicate detection sees it: its words, one space apart."""
    return " ".join(words(text))


def word_ngrams(text: str, n: int = DEFAULT_NGRAM) -> set[str]:
    """The set of the text's n-word sequences; a text shorter than n words is one n-gram."""
    tokens = words(text)
    if len(tokens) <= n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """The texts seen so far, each under a key (a record id), to find a new text's duplicate."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, ngram: int = DEFAULT_NGRAM):
        from datasketch import MinHashLSH

        if not 0 < threshold <= 1:
            raise ValueError("the near-duplicate threshold must be in (0, 1]")
        self.threshold, self.ngram = threshold, ngram
        self.lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
        self.exact: dict[str, str] = {}  # normalised text -> key of its first occurrence
        self.entries: list[tuple[str, set[str]]] = []  # (key, n-grams) by LSH key (the position)

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, text: str) -> tuple[str, str] | None:
        """("duplicate", key) or ("near-duplicate", key) of the most similar text seen, or None."""
        normal = normalise(text)
        if normal in self.exact:
            return "duplicate", self.exact[normal]
        grams = word_ngrams(text, self.ngram)
        if not grams:
            return None
        best, best_key = 0.0, None
        for position in self.lsh.query(self._minhash(grams)):
            key, other = self.entries[position]
            similarity = jaccard(grams, other)
            if similarity > best:
                best, best_key = similarity, key
        return ("near-duplicate", best_key) if best_key is not None and best >= self.threshold else None

    def add(self, key: str, text: str) -> None:
        """Remember `text` under `key` (repeated texts are kept once, under their first key)."""
        normal = normalise(text)
        if normal in self.exact:
            return
        self.exact[normal] = key
        grams = word_ngrams(text, self.ngram)
        if grams:
            self.lsh.insert(len(self.entries), self._minhash(grams))
            self.entries.append((key, grams))

    @staticmethod
    def _minhash(grams: set[str]):
        from datasketch import MinHash

        minhash = MinHash(num_perm=NUM_PERM)  # datasketch's fixed default seed: same hashes every run
        minhash.update_batch([gram.encode("utf-8") for gram in sorted(grams)])
        return minhash


def distinct_ngrams(texts: Iterable[str], n: int = 2) -> float:
    """Distinct-n (Li et al., 2016): the share of all word n-grams in `texts` that are different,
    a common figure for how varied generated text is (1.0: no n-gram repeats). It falls as a set
    grows, so compare sets of the same size (`distinct_ngrams_per`)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def distinct_ngrams_per(texts: list[str], size: int, n: int = 2) -> float:
    """Distinct-n averaged over consecutive groups of `size` texts (all of them when there are
    fewer), so that a large generated set compares with a small seed set of `size` prompts."""
    if size <= 0 or len(texts) <= size:
        return distinct_ngrams(texts, n)
    groups = [texts[start:start + size] for start in range(0, len(texts) - size + 1, size)]
    return sum(distinct_ngrams(group, n) for group in groups) / len(groups)
