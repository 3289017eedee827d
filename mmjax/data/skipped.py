"""`Skipped`: the marker a bad record leaves in the pipeline in place of an example."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Stands for a record that was skipped, and says why.

    `reason` is one of the pipeline's reasons (`modalities.skip_reasons`): per modality
    `missing_<m>`, `bad_<m>` (and e.g. `empty_<m>` for text), or `bad_record`,
    `unreadable_shard`.
    """

    reason: str
    key: str = ""
    detail: str = ""
