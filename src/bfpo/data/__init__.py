"""Data: the canonical pair record, adapters from real dataset schemas, validation, batching."""

from bfpo.data.records import DataValidationError, PairRecord, validate_record

__all__ = ["DataValidationError", "PairRecord", "validate_record"]
