"""Errors of the machine rather than of the input: a full disk. They stop a command with a message
(exit 1) that says what to free and that rerunning the same command loses nothing finished."""

from __future__ import annotations

import errno

from advisor.errors import ConfigError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, past the file-size limit


class DiskFull(ConfigError):
    """No space left where tunewise writes (records, study.db, a runner's checkpoint)."""


def disk_full(where: str, detail: str) -> DiskFull:
    return DiskFull(
        f"{where}: no space left to write ({detail}); free some space (or point sweep.dir / data.out_dir at "
        "another disk) and rerun the same command: finished cells are kept, unfinished ones resume"
    )
