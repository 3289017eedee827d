"""ArrayRecord files (e.g. from tools/wds_to_arrayrecord.py) as a random-access source.

Grain's `ArrayRecordDataSource` reads any record by its global index, so the pipeline
shuffles globally (a new permutation each epoch) and resumes exactly from the step alone.
Each record is one webdataset sample (records.py); a damaged record is skipped and counted.
"""

import grain
import ml_collections

from mmjax.data import records
from mmjax.data.paths import list_files
from mmjax.data.skipped import Skipped


class ArrayRecordSource:
    """Random-access source of raw records (webdataset samples: field -> bytes)."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self._records = grain.sources.ArrayRecordDataSource(paths)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict | Skipped:
        try:
            fields = records.decode(self._records[index])
        except ValueError as e:
            return Skipped("bad_record", f"record {index}", str(e))
        except Exception as e:  # a file gone or unreadable mid-run: skipped, not fatal
            return Skipped("bad_record", f"record {index}", f"{type(e).__name__}: {e}")
        return fields

    def __repr__(self) -> str:  # Grain compares reprs when restoring a DataLoader
        return f"ArrayRecordSource({len(self.paths)} files, first={self.paths[0]!r})"


def check(config: ml_collections.ConfigDict, num_processes: int | None = None) -> list[str]:
    """What is wrong with `config.path` before reading: no files, or a first file that
    does not open as ArrayRecord."""
    try:
        paths = list_files(config.path, ".array_record")
    except (FileNotFoundError, ValueError) as e:
        return [str(e)]
    try:
        len(grain.sources.ArrayRecordDataSource(paths[:1]))
    except Exception as e:
        return [f"{paths[0]} does not open as an ArrayRecord file: {type(e).__name__}: {e}"]
    return []


def build(config: ml_collections.ConfigDict) -> ArrayRecordSource:
    paths = list_files(config.path, ".array_record")
    return ArrayRecordSource(paths)
