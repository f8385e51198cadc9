"""In-database digests (DESIGN 4.6): `plan` holds the canonical text and the bucket SQL of
both dialects (pure); each database computes its side in its own module
(`sources.mysql_digest`, `targets.pg_digest`)."""

from refsync.digest.plan import (
    AUTHORITATIVE,
    READ_ALL_SHARE,
    WHOLE,
    BucketDigest,
    DigestComparison,
    DigestPlan,
    DigestUnsupported,
    SourceColumn,
    choose_buckets,
    compare,
    differing,
    plan_digest,
    sized_for_change,
    source_bucket_predicate,
    source_bucket_predicates,
    target_bucket_predicate,
)
from refsync.digest.ranges import (
    SAMPLE_ROWS,
    KeyRanges,
    near_parts,
    range_parts,
    read_share,
    sampled_share,
    takes_ranges,
)

__all__ = [
    "AUTHORITATIVE",
    "READ_ALL_SHARE",
    "SAMPLE_ROWS",
    "WHOLE",
    "BucketDigest",
    "DigestComparison",
    "DigestPlan",
    "DigestUnsupported",
    "KeyRanges",
    "near_parts",
    "SourceColumn",
    "choose_buckets",
    "compare",
    "differing",
    "plan_digest",
    "range_parts",
    "read_share",
    "sampled_share",
    "sized_for_change",
    "takes_ranges",
    "source_bucket_predicate",
    "source_bucket_predicates",
    "target_bucket_predicate",
]
