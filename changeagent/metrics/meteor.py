"""One reusable METEOR 1.5 Java process (pycocoevalcap's `Meteor`), closed deterministically.

pycocoevalcap's `Meteor()` starts `java -jar meteor-1.5.jar` in its constructor and only stops it in
`__del__`; almost all of METEOR's cost is that start-up (SPEC §2.2). `MeteorScorer` starts it once
and is meant to be reused for every subset of one evaluation:

    with MeteorScorer() as meteor:
        meteor.score(refs_all, hyps_all); meteor.score(refs_change, hyps_change)

Protocol (pycocoevalcap `compute_score`): for each item one `SCORE` line is written and its one-line
answer read before the next item, then one `EVAL` line and n + 1 answers; the reader is always
waiting for what the jar writes, so stdin/stdout cannot deadlock however many captions are scored.
The jar's stderr is a pipe nobody reads in pycocoevalcap; a thread drains it here so a chatty JVM
cannot fill the pipe and block, and its tail is kept for error messages.
"""

from __future__ import annotations

import shutil
import threading
import warnings
from collections import deque
from typing import IO

from pycocoevalcap.meteor.meteor import Meteor


class MeteorUnavailableWarning(UserWarning):
    """METEOR could not be computed (no `java`, or the Java process failed); METEOR is reported as None."""


class MeteorScorer:
    """Context manager around one METEOR Java process. `score` returns None when METEOR is unavailable."""

    def __init__(self) -> None:
        self._meteor: Meteor | None = None
        self._stderr_tail: deque[bytes] = deque(maxlen=20)
        self._drain: threading.Thread | None = None
        self._failed = False

    def __enter__(self) -> MeteorScorer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def available(self) -> bool:
        """True while the Java process is up (or can still be started)."""
        return not self._failed

    def start(self) -> bool:
        """Start Java if not running; False (with a MeteorUnavailableWarning) when it cannot be."""
        if self._meteor is not None or self._failed:
            return not self._failed
        if shutil.which("java") is None:
            # checked first: Meteor() would raise from Popen and then fail again in its own __del__
            return self._give_up("'java' was not found on PATH (METEOR 1.5 runs a Java jar; install a JRE, "
                                 "e.g. `apt-get install default-jre-headless`)")
        try:
            self._meteor = Meteor()
        except OSError as e:
            return self._give_up(f"could not start java: {e}")
        self._drain = threading.Thread(target=self._drain_stderr, args=(self._meteor.meteor_p.stderr,),
                                       name="meteor-stderr", daemon=True)
        self._drain.start()
        return True

    def score(self, refs: dict[str, list[str]], hyps: dict[str, list[str]]) -> float | None:
        """Corpus METEOR (a fraction) of tokenised captions: refs {id: [ref, ...]}, hyps {id: [hyp]}."""
        if not self.start() or not hyps:
            return None
        assert self._meteor is not None
        try:
            score, _ = self._meteor.compute_score(refs, hyps)
        except (OSError, ValueError) as e:
            # the jar died (BrokenPipe) or answered with something that is not a number
            if self._meteor.lock.locked():
                self._meteor.lock.release()
            self.close()
            tail = b"".join(self._stderr_tail).decode(errors="replace").strip()
            self._give_up(f"the METEOR Java process failed ({type(e).__name__}: {e})"
                          + (f"; java said: {tail[-500:]}" if tail else ""))
            return None
        return float(score)

    def close(self) -> None:
        """Stop the Java process (idempotent)."""
        meteor, self._meteor = self._meteor, None
        if meteor is None:
            return
        proc = meteor.meteor_p
        with meteor.lock:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._drain is not None:
            self._drain.join(timeout=5)
        # pycocoevalcap's __del__ repeats the shutdown; on a reaped process all of it is a no-op

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            self._stderr_tail.append(line)
        stream.close()

    def _give_up(self, why: str) -> bool:
        self._failed = True
        warnings.warn(f"METEOR not computed, reported as missing (None): {why}",
                      MeteorUnavailableWarning, stacklevel=3)
        return False

    def __del__(self) -> None:
        self.close()
