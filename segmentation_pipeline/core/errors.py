"""The exception hierarchy of the segmentation engine.

Every error the engine raises on purpose is a SegmentationEngineError, so a
caller can tell "the data or the settings are wrong" from a bug.
"""

from __future__ import annotations


class SegmentationEngineError(Exception):
    """Root of every error the engine raises on purpose."""


class DataValidationError(SegmentationEngineError):
    """Input data does not match its contract (file, column, expected value)."""


class DataIntegrityError(DataValidationError):
    """A stored file is damaged: a page fails its checksum, or rows break a rule every stored row of
    its table keeps. The message names the file and what is wrong with it."""


class CustomerMergeError(SegmentationEngineError):
    """The customer-ID merge history cannot be resolved."""


class CircularMergeError(CustomerMergeError):
    """Merge records form a cycle (A -> B -> A); raised in strict mode only."""


class MergeChainTooDeepError(CustomerMergeError):
    """A merge chain is deeper than the configured limit; raised in strict mode only."""


class ProfileBuildError(SegmentationEngineError):
    """Customer profiles could not be built."""


class InsufficientDataError(SegmentationEngineError):
    """There is too little data for the requested computation."""


class ClusteringError(SegmentationEngineError):
    """Customers could not be clustered into segments."""


class SensitivityTestError(SegmentationEngineError):
    """A segment robustness test could not be run."""


class SegmentRejectedError(SegmentationEngineError):
    """A segment failed its viability criteria where approval was required."""


class LLMIntegrationError(SegmentationEngineError):
    """The language-model provider could not be used."""


class LLMError(LLMIntegrationError):
    """The language model returned an unusable answer."""


class ReportGenerationError(SegmentationEngineError):
    """The report could not be produced."""


class DeliveryError(SegmentationEngineError):
    """Changes could not be delivered to a downstream receiver (a webhook). The message names the
    receiver, the campaign and batch, what it answered and what to do."""


class PipelineError(SegmentationEngineError):
    """The asset graph was asked to do something it cannot do."""


class ErasureIncompleteError(SegmentationEngineError):
    """Rows of erased customers are still in a file of the data folder once the erasure has ended."""
