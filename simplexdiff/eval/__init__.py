"""Evaluation floor: likelihood bounds of trained models (``likelihood``), torchmetrics classes
for per-token likelihoods (``BitsPerToken``, ``Perplexity``) and sample-quality metrics on decoded
text (``sample_metrics`` and its parts), conditional evaluation (``complete``, ``exact_match``,
``score_choices``, ``response_likelihood``)."""

from simplexdiff.eval.conditional import (
    complete,
    exact_match,
    response_likelihood,
    score_choices,
)
from simplexdiff.eval.likelihood import likelihood
from simplexdiff.eval.metrics import BitsPerToken, Perplexity
from simplexdiff.eval.samples import (
    TrainReference,
    WordValidity,
    ngram_counts,
    ngram_kl,
    reference_bpc,
    sample_metrics,
    sample_words,
    train_reference,
    unigram_entropy,
    word_set,
    word_validity,
)

__all__ = [
    "BitsPerToken",
    "Perplexity",
    "TrainReference",
    "WordValidity",
    "complete",
    "exact_match",
    "likelihood",
    "ngram_counts",
    "ngram_kl",
    "reference_bpc",
    "response_likelihood",
    "sample_metrics",
    "sample_words",
    "score_choices",
    "train_reference",
    "unigram_entropy",
    "word_set",
    "word_validity",
]
