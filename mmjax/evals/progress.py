"""Plain-text progress of a long evaluation: one log line per 10%, quiet when quick.

An ImageNet or COCO pass can take minutes; a line such as
`retrieval: texts [####------] 40% (100/250 batches, 31 s)` says it is alive, without a
progress-bar dependency and without noise from the evaluations that finish in seconds.
"""

import logging
import time


class Ticker:
    """Counts batches; logs at each new tenth once `quiet_s` seconds have passed."""

    def __init__(self, desc: str, total: int, quiet_s: float = 5.0):
        self.desc, self.total, self.quiet_s = desc, max(total, 1), quiet_s
        self.done = 0
        self._tenths = 0
        self._start = time.perf_counter()

    def tick(self) -> None:
        self.done += 1
        tenths = self.done * 10 // self.total
        elapsed = time.perf_counter() - self._start
        if tenths > self._tenths and elapsed >= self.quiet_s:
            self._tenths = tenths
            bar = "#" * tenths + "-" * (10 - tenths)
            logging.info(
                "%s [%s] %3d%% (%d/%d batches, %.0f s)",
                self.desc,
                bar,
                100 * self.done // self.total,
                self.done,
                self.total,
                elapsed,
            )
