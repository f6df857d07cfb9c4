"""Change question answering data: the answer rules (`rules`), the question parser (`parse`), the
paraphrase templates (`templates`), question derivation and the CDVQA writer (`derive`), the closed
answer set (`answers`), the question vocabulary (`vocab`) and `data qa` / `data check` for the QA
formats (`cli`, `check`). SPEC §8; the shared words live in `changeagent.data.lexicon`."""

QA_FORMATS = ("cdvqa", "qag360k")  # registered QA datasets: `data check` reports their questions
