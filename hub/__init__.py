"""sw-hub: a single-window integration hub that validates, signs and translates trade documents.

The core knows no transport: adapters (``adapters/``) speak protocols and hand bytes to
``Pipeline.submit``; the dispatcher hands stored outbox rows back to adapters.
"""

from .config import Agency, Config, Route, load_config
from .envelope import Ack, Header, Party, Subject
from .errors import Code, ConfigError, HubError, Rejected, StoreError, TransitionError, TryAgain
from .pipeline import Pipeline
from .retry import RetryPolicy
from .store import State, Store, open_store

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # Runtime wires adapters to the core; importing it lazily lets ``adapters`` import ``hub``.
    if name == "Runtime":
        from .runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'hub' has no attribute {name!r}")

__all__ = [
    "Ack",
    "Agency",
    "Code",
    "Config",
    "ConfigError",
    "Header",
    "HubError",
    "Party",
    "Pipeline",
    "Rejected",
    "RetryPolicy",
    "Route",
    "Runtime",
    "State",
    "Store",
    "StoreError",
    "Subject",
    "TransitionError",
    "TryAgain",
    "load_config",
    "open_store",
]
