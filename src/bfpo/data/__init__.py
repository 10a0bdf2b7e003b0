"""Data: the canonical pair record, adapters from real dataset schemas, validation, batching."""

from bfpo.data.adapters import LoadReport, load_pairs, load_pairs_with_report
from bfpo.data.modes import MODES, TrainingSet, build_training_set, sft_examples
from bfpo.data.records import DataValidationError, PairRecord, validate_record
from bfpo.data.sampler import BufferedSampler
from bfpo.data.tokenize import format_prompt, tokenize_pair, tokenize_pairs

__all__ = [
    "DataValidationError",
    "PairRecord",
    "validate_record",
    "LoadReport",
    "load_pairs",
    "load_pairs_with_report",
    "MODES",
    "TrainingSet",
    "build_training_set",
    "sft_examples",
    "BufferedSampler",
    "format_prompt",
    "tokenize_pair",
    "tokenize_pairs",
]
