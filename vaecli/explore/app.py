"""The running explorer as the HTTP side sees it: the model's facts at once, its session and map once loaded.

The model loads on a thread of its own after the page is being served (importing torch alone takes longer than
the page may), then the test set's map is computed; requests that need the model wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from vaecli.errors import VaeError, first_line
from vaecli.explore.inputs import BadRequest

if TYPE_CHECKING:
    from vaecli.data.datasets import ImageSet
    from vaecli.explore.facts import ModelFacts
    from vaecli.explore.state import Session

SESSION_WAIT_S = 120.0  # a request that needs the model waits this long for it to load


class Explorer:
    """One model's facts, its session once loaded, and where the map stands; shared by every request thread."""

    def __init__(self, facts: ModelFacts, load_session: Callable[[], Session],
                 load_test_set: Callable[[Session], ImageSet], kl_images: int):
        self.facts = facts
        self._load_session = load_session
        self._load_test_set = load_test_set
        self._kl_images = kl_images
        self._session: Session | None = None
        self._loaded = threading.Event()
        self.failure: Exception | None = None  # why the model could not be loaded
        self.map_state = "waiting for the model"
        self.map_error: str | None = None

    def start(self, on_failure: Callable[[Exception], None]) -> threading.Thread:
        """Load the model, then the map, on a daemon thread; `on_failure` hears of a model that cannot load."""
        thread = threading.Thread(target=self._run, args=(on_failure,), name="vae-explore-load", daemon=True)
        thread.start()
        return thread

    def _run(self, on_failure: Callable[[Exception], None]) -> None:
        try:
            session = self._load_session()
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which reports it in one line
            self.failure = exc
            self._loaded.set()
            on_failure(exc)
            return
        self._session = session
        self._loaded.set()
        self._build_map(session)

    def _build_map(self, session: Session) -> None:
        """The test set's map and KL; a failure is shown on the page, and the rest of the page works on."""
        try:
            self.map_state = "reading the test images"
            data = self._load_test_set(session)
            self.map_state = f"encoding {len(data):,} test images"
            session.build_atlas(data, self._kl_images)
            self.map_state = "ready"
        except VaeError as exc:
            self.map_error = exc.message
        except Exception as exc:  # noqa: BLE001 - the page says what went wrong; the server goes on
            self.map_error = f"unexpected {type(exc).__name__}: {first_line(exc)}"
        if self.map_error is not None:
            self.map_state = "failed"

    def session(self, timeout: float = SESSION_WAIT_S) -> Session:
        """The loaded model, waiting for it if it is still loading (503 when it does not come)."""
        if not self._loaded.wait(timeout) or self._session is None:
            why = "could not be loaded" if self.failure is not None else "is still loading; try again"
            raise BadRequest(f"the model {why}", status=503)
        return self._session

    def status(self) -> dict:
        """Where loading stands, for the page: the model's state, and the map's."""
        model = "failed" if self.failure is not None else "ready" if self._session is not None else "loading"
        return {"model": model, "map": self.map_state, "map_error": self.map_error}
