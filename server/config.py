"""The server's configuration: flags, each with a ``CROSSGRAD_*`` environment variable.

A flag given on the command line wins over its variable, which wins over the default; so a
container sets variables and a developer types flags.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from crossgrad.engine.budget import Caps
from crossgrad.engine.graph import Limits

from .sessions import StoreConfig

_STORE = StoreConfig()  # the store's defaults are the flags' defaults


@dataclass(frozen=True)
class Config:
    address: str = "127.0.0.1:50051"
    store: str = "memory"
    max_message_bytes: int = 64 * 1024 * 1024
    max_nodes: int = 100_000
    max_elements: int = 1_000_000  # per tensor
    max_sessions: int = _STORE.max_sessions
    max_sessions_per_client: int = _STORE.max_sessions_per_client  # by client address
    max_leaves: int = 10_000  # per session
    max_steps: int = 10_000  # per Run
    max_session_bytes: int = _STORE.max_session_bytes  # leaf values, grads, remembered answers
    max_store_bytes: int = _STORE.max_store_bytes  # all sessions together
    max_remembered_bytes: int = _STORE.max_remembered_bytes  # answers kept for retries
    session_ttl: float = _STORE.default_idle_ttl  # seconds idle before a session expires
    symbolic_deadline: float = 10.0  # seconds per closed-form derivation
    symbolic_max_symbols: int = 50_000
    symbolic_max_elements: int = 200_000
    symbolic_workers: int = 2
    symbolic_max_memory: int = 1024  # MiB of address space per symbolic worker process
    threads: int = 16  # gRPC worker threads
    grace: float = 10.0  # seconds in-flight calls get to finish after SIGTERM
    reflection: bool = True

    @property
    def limits(self) -> Limits:
        return Limits(max_nodes=self.max_nodes, max_elements=self.max_elements)

    @property
    def store_config(self) -> StoreConfig:
        return StoreConfig(max_sessions=self.max_sessions,
                           max_sessions_per_client=self.max_sessions_per_client,
                           max_session_bytes=self.max_session_bytes,
                           max_store_bytes=self.max_store_bytes,
                           max_remembered_bytes=self.max_remembered_bytes,
                           default_idle_ttl=self.session_ttl,
                           max_idle_ttl=max(self.session_ttl, 86_400.0))

    @property
    def caps(self) -> Caps:
        return Caps(max_symbols=self.symbolic_max_symbols,
                    max_elements=self.symbolic_max_elements,
                    deadline=self.symbolic_deadline, workers=self.symbolic_workers,
                    max_memory=self.symbolic_max_memory)


_HELP = {
    "address": "host:port to listen on (port 0: a free one)",
    "store": "where sessions live: memory",
    "max_message_bytes": "largest request or response message",
    "max_nodes": "most nodes in a graph",
    "max_steps": "most steps in one Run",
    "max_elements": "most elements in one tensor",
    "max_sessions": "most live sessions",
    "max_sessions_per_client": "most live sessions created from one client address",
    "max_leaves": "most leaves in one session",
    "max_session_bytes": "most bytes one session holds (leaf values, grads, remembered answers)",
    "max_store_bytes": "most bytes all sessions hold together",
    "max_remembered_bytes": "most bytes of answers one session keeps for request_id retries",
    "session_ttl": "default idle TTL of a session, seconds",
    "symbolic_deadline": "seconds a closed-form derivation may take before it is stopped",
    "symbolic_max_symbols": "scalar symbols past which no closed form is derived",
    "symbolic_max_elements": "scalar expressions past which no closed form is derived",
    "symbolic_workers": "worker processes for closed-form derivations",
    "symbolic_max_memory": "MiB of address space each symbolic worker may use",
    "threads": "gRPC worker threads",
    "grace": "seconds in-flight calls get to finish on SIGTERM",
    "reflection": "serve gRPC server reflection",
}


def parse(argv: Sequence[str] | None = None,
          environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="crossgrad-server",
        description="crossgrad's gRPC service: gradients derived twice and cross-checked. "
                    "Each flag can also be set as CROSSGRAD_<FLAG> (e.g. CROSSGRAD_ADDRESS).")
    defaults = Config()
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        variable = "CROSSGRAD_" + f.name.upper()
        default = getattr(defaults, f.name)
        if variable in environ:
            default = _convert(type(default), environ[variable], variable)
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{_HELP[f.name]} (${variable})")
        else:
            parser.add_argument(flag, type=type(default), default=default,
                                help=f"{_HELP[f.name]} (${variable}; default {default})")
    arguments = parser.parse_args(argv)
    config = Config(**{f.name: getattr(arguments, f.name) for f in fields(Config)})
    if config.store != "memory":
        parser.error(f"--store {config.store!r}: only 'memory' is available")
    for f in fields(Config):
        value = getattr(config, f.name)
        if type(value) not in (int, float):
            continue
        zero_too = f.name in _MAY_BE_ZERO
        if not (math.isfinite(value) and (value >= 0 if zero_too else value > 0)):
            expected = "a non-negative" if zero_too else "a positive"
            parser.error(f"--{f.name.replace('_', '-')} {value}: expected {expected} number")
    return config


_MAY_BE_ZERO = {"grace"}  # the other numbers are sizes, counts and times that must be positive


def _convert(kind: type, text: str, variable: str) -> object:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise SystemExit(f"{variable}={text!r}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise SystemExit(f"{variable}={text!r}: expected {kind.__name__}") from None
