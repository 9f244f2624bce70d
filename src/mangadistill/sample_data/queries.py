"""Seeded generator of MangaAssist shopping queries over the catalog, BM25 candidates, and graded judgments.

A query is composed from facets of one catalog record (its "seed"), so at least one item meets it fully:

- genre ("horror manga"), theme ("manga about pirates"), mood ("something wholesome": a set of genres and
  themes, see MOODS), audience ("romance manga with an adult cast": a set of demographics, see AUDIENCES),
  format/length ("short", "long-running", "completed", "still coming out": volume count and status, FORMATS),
  author ("anything by Naoko Takeuchi");
- "like X" and "like X but Y": X is a catalog title; Y is a facet X lacks ("like Berserk but shorter").

Each facet is one constraint, a test on catalog facts only (genres, themes, demographic, status, volumes,
authors). "Similar to X" is two constraints: shares at least min(2, |genres of X|) genres with X, and has X's
demographic. Seeded noise from `messages.apply_noise` (typos, text-speak, lowercase, dropped punctuation)
is applied to about half the queries; judgments never depend on the wording.

Grading rule for a query with n constraints, of which an item meets m:

    3  m == n            (meets every constraint of the query)
    2  2 <= m < n        (meets most: more than one, not all)
    1  m == 1 < n        (meets one)
    0  m == 0, or the item is excluded ("like X" and "like X but Y" exclude X itself)

Candidates: the top `k` (default 50) BM25 results per query (`retrieval.CatalogIndex`), each with the text a
cross-encoder reads, `retrieval.catalog_document(record, description=False)`. On the labelled splits
(train, eval) the items graded >= 2 that BM25 missed are appended too (highest grade first, then BM25 score,
at most `k` of them, `retrieval_rank` null), so that NDCG, whose ideal ranking is taken over the candidate
set, is computed against complete judgments of the strongly relevant items instead of rewarding a reranker
for BM25's misses. Production candidates are the BM25 top-k only (what serving would rerank); their
judgments go to a separate truth table no model reads.

Splits: train (labelled: teacher bootstrap), production (unlabelled: what the teacher scores), eval (held-out,
labelled). Each split has its own seed, and a query text is never repeated across splits.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from mangadistill.core import storage
from mangadistill.core.retrieval import CatalogIndex, catalog_document
from mangadistill.reranker.contracts import RERANK_CANDIDATES, RERANK_QUERIES
from mangadistill.sample_data.messages import NoiseConfig, apply_noise

SPLITS: tuple[str, ...] = ("train", "production", "eval")
DEFAULT_K = 50
SHORT_MAX_VOLUMES = 10
VERY_SHORT_MAX_VOLUMES = 3
LONG_MIN_VOLUMES = 30
NOISY_QUERY_PROB = 0.5
QUERY_NOISE = NoiseConfig(textspeak_prob=0.1, typo_prob=0.5, lowercase_prob=0.7, strip_punct_prob=0.4,
                          caps_prob=0.0, escalation_caps_prob=0.0, emoji_prob=0.04)
"""Noise of a noisy query (`messages.apply_noise`); NOISY_QUERY_PROB of the queries get it."""
KIND_WEIGHTS: dict[str, float] = {"facets": 0.62, "author": 0.08, "like": 0.12, "like_but": 0.18}
FACET_COUNT_WEIGHTS: dict[int, float] = {1: 0.3, 2: 0.5, 3: 0.2}
MAX_DRAWS_PER_QUERY = 50

Phrase = tuple[str, str]
"""(position, text): position "pre" goes before the noun ("dark"), "post" after it ("about pirates")."""

MOODS: dict[str, tuple[tuple[str, ...], frozenset[str], frozenset[str], str]] = {
    # name: (adjectives, genres, themes, "but ..." comparative)
    "dark": (("dark", "grim", "bleak"), frozenset({"horror", "psychological", "thriller", "dark fantasy"}),
             frozenset({"revenge", "violence", "survival", "post-apocalyptic", "apocalypse"}), "darker"),
    "wholesome": (("wholesome", "cozy", "feel-good", "heartwarming"), frozenset({"slice of life"}),
                  frozenset({"family", "friendship", "cooking"}), "more wholesome"),
    "funny": (("funny", "hilarious", "lighthearted"), frozenset({"comedy"}), frozenset({"gag", "parody"}),
              "funnier"),
    "sad": (("sad", "emotional", "heartbreaking"), frozenset({"drama"}),
            frozenset({"unrequited love", "memories", "redemption"}), "sadder"),
    "scary": (("scary", "creepy", "terrifying"), frozenset({"horror"}),
              frozenset({"monsters", "ghosts", "curses", "yokai"}), "scarier"),
    "mind-bending": (("mind-bending", "cerebral", "twisty"), frozenset({"psychological", "mystery", "sci-fi"}),
                     frozenset({"time travel"}), "more mind-bending"),
    "romantic": (("romantic", "swoony", "sweet"), frozenset({"romance"}),
                 frozenset({"first love", "love triangle"}), "with more romance"),
    "action-packed": (("action-packed", "hype", "intense"), frozenset({"action", "sports"}),
                      frozenset({"tournaments", "martial arts"}), "with more action"),
    "epic": (("epic", "adventurous", "sprawling"), frozenset({"adventure", "fantasy"}), frozenset({"quests"}),
             "more epic"),
}
AUDIENCES: dict[str, tuple[tuple[Phrase, ...], frozenset[str], str]] = {
    # name: (phrases, demographics, "but ..." phrase)
    "adults": ((("pre", "mature"), ("post", "for adults"), ("post", "with an adult cast"),
                ("post", "for grown-ups")), frozenset({"seinen", "josei"}), "for adults"),
    "adult women": ((("pre", "josei"), ("post", "for adult women"), ("post", "for women in their 30s")),
                    frozenset({"josei"}), "aimed at adult women"),
    "adult men": ((("pre", "seinen"), ("post", "for adult men"), ("post", "for guys in their 20s")),
                  frozenset({"seinen"}), "for grown men"),
    "teen girls": ((("pre", "shojo"), ("post", "for teen girls"), ("post", "for my teenage daughter")),
                   frozenset({"shojo"}), "for teen girls"),
    "teen boys": ((("pre", "shonen"), ("post", "for teen boys"), ("post", "for my 14 year old son")),
                  frozenset({"shonen"}), "for teenage boys"),
    "kids": ((("post", "for kids"), ("post", "for children"), ("post", "for my 8 year old")),
             frozenset({"kodomo"}), "for little kids"),
}
FORMATS: dict[str, tuple[tuple[Phrase, ...], Callable[[dict], bool], str, float]] = {
    # name: (phrases, test, "but ..." phrase, draw weight)
    "short": ((("pre", "short"), ("post", f"under {SHORT_MAX_VOLUMES + 1} volumes"),
               ("post", "I can finish in a weekend"), ("post", "that's not too long")),
              lambda r: r["volumes"] <= SHORT_MAX_VOLUMES, "shorter", 1.0),
    "very short": ((("pre", "very short"), ("post", f"in {VERY_SHORT_MAX_VOLUMES} volumes or fewer"),
                    ("post", "that's just a volume or two")),
                   lambda r: r["volumes"] <= VERY_SHORT_MAX_VOLUMES, "way shorter", 0.5),
    "long": ((("pre", "long-running"), ("pre", "long"), ("post", "with lots of volumes"),
              ("post", "that goes on for ages")), lambda r: r["volumes"] >= LONG_MIN_VOLUMES, "longer", 1.0),
    "completed": ((("pre", "completed"), ("pre", "finished"), ("post", "that's already finished"),
                   ("post", "that has ended")), lambda r: r["status"] == "completed", "already finished", 0.4),
    "ongoing": ((("pre", "ongoing"), ("post", "that's still coming out"), ("post", "still being published")),
                lambda r: r["status"] in ("ongoing", "hiatus"), "still ongoing", 1.0),
}
FACET_WEIGHTS: dict[str, float] = {"genre": 1.0, "theme": 0.8, "mood": 0.7, "audience": 0.7, "format": 0.6}
NOUNS: tuple[str, ...] = ("manga", "manga", "series", "manga series", "books")
OPENERS: tuple[str, ...] = ("", "", "", "looking for ", "any ", "recommend ", "need ", "best ", "good ",
                            "can you suggest ", "i want ", "searching for ")
CLOSERS: tuple[str, ...] = ("", "", "", "?", " pls", " please", "? thanks")
LIKE_TEMPLATES: tuple[str, ...] = ("manga like {x}", "something similar to {x}", "what to read after {x}",
                                   "if you liked {x}", "more like {x}", "recs like {x}")
LIKE_BUT_TEMPLATES: tuple[str, ...] = ("like {x} but {y}", "something like {x} but {y}",
                                       "similar to {x} but {y}", "i loved {x}, want something {y}",
                                       "{x} vibes but {y}")


@dataclass(frozen=True)
class Constraint:
    """One catalog-fact test of a query; `description` is what the queries table records."""

    description: str
    test: Callable[[dict], bool]


@dataclass(frozen=True)
class ShoppingQuery:
    """A query, the constraints its grades come from, and the skus it excludes ("like X" excludes X)."""

    query_id: str
    text: str
    kind: str
    constraints: tuple[Constraint, ...]
    excluded: frozenset[str] = field(default_factory=frozenset)

    def grade(self, record: dict) -> int:
        """Relevance 0-3 of a catalog record (the rule in the module docstring)."""
        if record["sku"] in self.excluded:
            return 0
        met = sum(constraint.test(record) for constraint in self.constraints)
        if met == len(self.constraints):
            return 3
        return 2 if met >= 2 else met


@dataclass(frozen=True)
class _Facet:
    constraint: Constraint
    phrases: tuple[Phrase, ...]
    but_phrase: str

    def phrase(self, rng: random.Random) -> Phrase:
        return rng.choice(self.phrases)


def _genre_facet(genre: str) -> _Facet:
    return _Facet(Constraint(f"genre: {genre}", lambda r: genre in r["genres"]), (("genre", genre),),
                  f"with more {genre}")


def _theme_facet(theme: str) -> _Facet:
    phrases = (("post", f"about {theme}"), ("post", f"with {theme}"), ("post", f"featuring {theme}"))
    return _Facet(Constraint(f"theme: {theme}", lambda r: theme in r["themes"]), phrases, f"with {theme}")


def _mood_facet(name: str) -> _Facet:
    adjectives, genres, themes, comparative = MOODS[name]
    constraint = Constraint(f"mood: {name} (genre in {sorted(genres)} or theme in {sorted(themes)})",
                            lambda r: bool(genres & set(r["genres"]) or themes & set(r["themes"])))
    return _Facet(constraint, tuple(("pre", adjective) for adjective in adjectives), comparative)


def _audience_facet(name: str) -> _Facet:
    phrases, demographics, but_phrase = AUDIENCES[name]
    constraint = Constraint(f"audience: {name} (demographic in {sorted(demographics)})",
                            lambda r: r["demographic"] in demographics)
    return _Facet(constraint, phrases, but_phrase)


def _format_facet(name: str) -> _Facet:
    phrases, test, but_phrase, _ = FORMATS[name]
    return _Facet(Constraint(f"format: {name}", test), phrases, but_phrase)


def _author_facet(author: str) -> _Facet:
    phrases = (("post", f"by {author}"), ("post", f"from {author}"))
    return _Facet(Constraint(f"author: {author}", lambda r: author in r["authors"]), phrases, f"by {author}")


def _facets_of(record: dict, kind: str) -> list[_Facet]:
    """Every facet of `kind` that `record` meets."""
    if kind == "genre":
        return [_genre_facet(genre) for genre in record["genres"]]
    if kind == "theme":
        return [_theme_facet(theme) for theme in record["themes"]]
    if kind == "mood":
        return [_mood_facet(name) for name in MOODS if _mood_facet(name).constraint.test(record)]
    if kind == "audience":
        return [_audience_facet(name) for name in AUDIENCES if record["demographic"] in AUDIENCES[name][1]]
    if kind == "format":
        return [_format_facet(name) for name in FORMATS if FORMATS[name][1](record)]
    raise ValueError(f"unknown facet kind {kind!r}")


def _similar_constraints(x: dict) -> tuple[Constraint, ...]:
    genres, need = set(x["genres"]), min(2, len(x["genres"]))
    return (
        Constraint(f"similar to {x['title']}: shares >= {need} of genres {sorted(genres)}",
                   lambda r: len(genres & set(r["genres"])) >= need),
        Constraint(f"similar to {x['title']}: demographic {x['demographic']}",
                   lambda r: r["demographic"] == x["demographic"]),
    )


def _compose(facets: Sequence[_Facet], rng: random.Random) -> str:
    """[opener] [pre phrases] [genre] noun [post phrases] [closer]."""
    pre, post, genres = [], [], []
    for facet in facets:
        position, text = facet.phrase(rng)
        {"pre": pre, "post": post, "genre": genres}[position].append(text)
    rng.shuffle(post)
    core = " ".join([*pre, *genres, rng.choice(NOUNS)])
    if not pre and not genres and rng.random() < 0.5:
        core = rng.choice(("something", "anything", "a manga"))
    return f"{rng.choice(OPENERS)}{' '.join([core, *post])}{rng.choice(CLOSERS)}"


def _short_title(title: str, rng: random.Random) -> str:
    head = title.split(":")[0].strip()
    return head if head and rng.random() < 0.5 else title


class _QueryComposer:
    def __init__(self, records: Sequence[dict]) -> None:
        self.records = list(records)

    def _draw_facets(self, record: dict, count: int, rng: random.Random) -> list[_Facet]:
        kinds = [kind for kind in FACET_WEIGHTS if _facets_of(record, kind)]
        chosen: list[str] = []
        while kinds and len(chosen) < count:
            kind = rng.choices(kinds, weights=[FACET_WEIGHTS[k] for k in kinds])[0]
            chosen.append(kind)
            kinds.remove(kind)
        facets = []
        for kind in chosen:
            options = _facets_of(record, kind)
            if kind == "format":
                weights = [FORMATS[f.constraint.description.removeprefix("format: ")][3] for f in options]
                facets.append(rng.choices(options, weights=weights)[0])
            else:
                facets.append(rng.choice(options))
        return facets

    def draw(self, kind: str, rng: random.Random) -> tuple[str, tuple[Constraint, ...], frozenset[str]] | None:
        """(text, constraints, excluded skus) of one query of `kind`, or None when the draw does not work out."""
        record = rng.choice(self.records)
        if kind == "facets":
            count = rng.choices(list(FACET_COUNT_WEIGHTS), weights=list(FACET_COUNT_WEIGHTS.values()))[0]
            facets = self._draw_facets(record, count, rng)
            return _compose(facets, rng), tuple(f.constraint for f in facets), frozenset()
        if kind == "author":
            author = _author_facet(rng.choice(record["authors"]))
            if rng.random() < 0.4:
                facets = [author, *self._draw_facets(record, 1, rng)]
                return _compose(facets, rng), tuple(f.constraint for f in facets), frozenset()
            text = rng.choice(("anything by {a}", "{a} manga", "books by {a}", "other series from {a}",
                               "what has {a} written")).format(a=author.constraint.description.split(": ", 1)[1])
            return text, (author.constraint,), frozenset()
        similar = _similar_constraints(record)
        excluded = frozenset({record["sku"]})
        title = _short_title(record["title"], rng)
        if kind == "like":
            return rng.choice(LIKE_TEMPLATES).format(x=title), similar, excluded
        # like_but: Y is a facet X lacks that some other similar item has
        others = [r for r in self.records if r["sku"] != record["sku"] and all(c.test(r) for c in similar)]
        rng.shuffle(others)
        for other in others:
            lacking = [facet for kind_name in FACET_WEIGHTS for facet in _facets_of(other, kind_name)
                       if not facet.constraint.test(record)]
            if lacking:
                but = rng.choice(lacking)
                text = rng.choice(LIKE_BUT_TEMPLATES).format(x=title, y=but.but_phrase)
                return text, (*similar, but.constraint), excluded
        return None


def generate_queries(n: int, seed: int, records: Sequence[dict], split: str,
                     avoid: set[str] | None = None) -> list[ShoppingQuery]:
    """n queries for `split`, deterministic for (n, seed, records, split, avoid); ids "{split}-q{i:05d}".

    `avoid` holds normalised query texts already used (by other splits); it is updated in place.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not records:
        raise ValueError("records: need at least one catalog record")
    used = avoid if avoid is not None else set()
    composer = _QueryComposer(records)
    rng = random.Random(f"rerank-queries:{seed}:{split}")
    queries: list[ShoppingQuery] = []
    while len(queries) < n:
        i = len(queries)
        for attempt in range(MAX_DRAWS_PER_QUERY):
            query_rng = random.Random(f"rerank-query:{seed}:{split}:{i}:{attempt}")
            kind = query_rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
            drawn = composer.draw(kind, query_rng)
            if drawn is None:
                continue
            text, constraints, excluded = drawn
            if query_rng.random() < NOISY_QUERY_PROB:
                text = apply_noise(text, "recommendation", query_rng, QUERY_NOISE)
            key = _normalised(text)
            if key in used:
                continue
            used.add(key)
            queries.append(ShoppingQuery(f"{split}-q{i:05d}", text, kind, constraints, excluded))
            break
        else:
            raise RuntimeError(f"could not draw a new query {i} for split {split!r} in {MAX_DRAWS_PER_QUERY} tries")
    rng.shuffle(queries)
    return queries


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def judged_candidates(query: ShoppingQuery, records: Sequence[dict], index: CatalogIndex, k: int = DEFAULT_K,
                      add_missed: bool = True) -> list[dict]:
    """RERANK_CANDIDATES rows for one query: BM25 top k, then (add_missed) the items graded >= 2 that BM25
    missed, highest grade then BM25 score first, at most k of them; every row carries its grade."""
    by_sku = {record["sku"]: record for record in records}
    scores = dict(zip(index.skus, index.scores(query.text).tolist(), strict=True))
    hits = index.search(query.text, k)
    rows = [(sku, rank) for rank, (sku, _) in enumerate(hits, start=1)]
    if add_missed:
        retrieved = {sku for sku, _ in hits}
        missed = [(query.grade(r), scores[r["sku"]], -i, r["sku"]) for i, r in enumerate(records)
                  if r["sku"] not in retrieved and query.grade(r) >= 2]
        rows += [(sku, None) for *_, sku in sorted(missed, reverse=True)[:k]]
    return [
        {"query_id": query.query_id, "query": query.text, "sku": sku, "candidate": by_sku[sku]["title"],
         "candidate_text": catalog_document(by_sku[sku], description=False), "retrieval_rank": rank,
         "bm25_score": scores[sku], "relevance": query.grade(by_sku[sku])}
        for sku, rank in rows
    ]


def queries_table(queries: Sequence[ShoppingQuery], split: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"query_id": q.query_id, "query": q.text, "split": split, "kind": q.kind,
          "constraints": [c.description for c in q.constraints]
          + [f"excludes {sku}" for sku in sorted(q.excluded)]} for q in queries],
        schema=RERANK_QUERIES,
    )


def _split_seed(seed: int, split: str) -> int:
    return random.Random(f"rerank-split:{seed}:{split}").getrandbits(62)


def build_reranker_splits(seed: int = 7, n_train: int = 200, n_production: int = 400, n_eval: int = 60,
                          k: int = DEFAULT_K, records: Sequence[dict] | None = None) -> dict[str, pa.Table]:
    """The reranker's sample tables: {train,production,eval}_queries (RERANK_QUERIES),
    {train,eval}_candidates (RERANK_CANDIDATES with relevance, judged misses added),
    production_candidates (BM25 top-k, relevance null) and production_truth (the same rows, graded)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if records is None:
        from mangadistill.sample_data.catalog import catalog_records

        records = catalog_records()
    index = CatalogIndex.from_records(records)
    used: set[str] = set()
    sizes = {"train": n_train, "production": n_production, "eval": n_eval}
    tables: dict[str, pa.Table] = {}
    for split in SPLITS:
        queries = generate_queries(sizes[split], _split_seed(seed, split), records, split, used)
        tables[f"{split}_queries"] = queries_table(queries, split)
        add_missed = split != "production"
        rows = [row for q in queries for row in judged_candidates(q, records, index, k, add_missed)]
        candidates = pa.Table.from_pylist(rows, schema=RERANK_CANDIDATES)
        if split == "production":
            tables["production_truth"] = candidates
            candidates = candidates.set_column(
                candidates.schema.get_field_index("relevance"), RERANK_CANDIDATES.field("relevance"),
                pa.nulls(candidates.num_rows, pa.int8()))
        tables[f"{split}_candidates"] = candidates
    return tables


def generate_reranker_data(out_dir: str, seed: int = 7, n_train: int = 200, n_production: int = 400,
                           n_eval: int = 60, k: int = DEFAULT_K) -> dict[str, str]:
    """Write `build_reranker_splits` as parquet under `out_dir` (local or gs://); returns {table name: uri}."""
    tables = build_reranker_splits(seed, n_train, n_production, n_eval, k)
    paths = {}
    for name, table in tables.items():
        uri = f"{str(out_dir).rstrip('/')}/{name}.parquet"
        storage.write_table(table, uri)
        paths[name] = uri
    return paths
