"""Admission: how many calls each client may have in flight at once, so that no caller starves the others.

    gate = Admission(AdmissionLimits.from_env())     # or AdmissionLimits(per_client=8, ...)
    client = Client.of(peer="ipv4:10.0.0.7:51234", trusted=True)
    refused = gate.enter(client)                      # None: admitted; else the RESOURCE_EXHAUSTED message
    ...                                               # the call runs
    gate.leave(client)                                # exactly once for every admitted call

Two pools that never share capacity:
- callers: presented the server's token (or the server runs without auth). One client = the token's identity and
  the peer host: the lab shares one token, so the token alone cannot tell one careless tool from the rest.
- anonymous: no valid token, i.e. health probes and reflection (everything else is refused UNAUTHENTICATED anyway).
  A small budget of its own, per peer host and in all, so 300 tokenless `Health/Watch` streams cost the callers
  nothing: the offender gets RESOURCE_EXHAUSTED, nobody else does.

A limit counts calls in flight (a stream counts until it ends). The server base installs this through
`smf.common.interceptors.AdmissionInterceptor`; it runs on the server's event loop, so plain counters suffice.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields

from smf.common.errors import InvalidArgument

__all__ = ["ENV", "Admission", "AdmissionLimits", "Client", "peer_host"]

# the environment variable behind each limit (flags of `smf serve` default to these)
ENV = {
    "total": "SMF_MAX_CONCURRENT",
    "per_client": "SMF_MAX_CONCURRENT_PER_CLIENT",
    "anonymous_total": "SMF_MAX_ANONYMOUS",
    "anonymous_per_peer": "SMF_MAX_ANONYMOUS_PER_PEER",
}


@dataclass(frozen=True)
class AdmissionLimits:
    """Concurrent calls allowed: callers with the token in all and per client; anonymous ones in all and per host."""

    total: int = 256  # what grpc's maximum_concurrent_rpcs allowed everyone together before
    per_client: int = 128  # half: one runaway tool leaves the other half to the rest of the lab
    anonymous_total: int = 32  # health and reflection need few: a probe is one short call every few seconds
    anonymous_per_peer: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise InvalidArgument(f.name, f"must be an integer >= 1 (env {ENV[f.name]}), got {value!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: int | None) -> AdmissionLimits:
        """Limits from $SMF_MAX_CONCURRENT & co, then `overrides` that are not None (flags win over env)."""
        values: dict[str, int] = {}
        for name, var in ENV.items():
            raw = env.get(var)
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise InvalidArgument(var, f"must be an integer, got {raw!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string: 'ipv4:10.0.0.7:51234' -> '10.0.0.7', 'ipv6:[::1]:5' -> '::1'.

    Ports are dropped on purpose: one machine opening many connections is still one client."""
    scheme, _, rest = peer.partition(":")
    if scheme == "ipv4":
        return rest.rpartition(":")[0] or rest
    if scheme == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return host.strip("[]")
    return peer  # unix sockets and the like: the whole string


@dataclass(frozen=True)
class Client:
    """Who a call is counted against: its pool ('caller' or 'anonymous') and its key inside the pool."""

    pool: str
    key: str

    @classmethod
    def of(cls, *, peer: str, trusted: bool, identity: str = "token") -> Client:
        host = peer_host(peer or "unknown")
        return cls("caller", f"{identity}@{host}") if trusted else cls("anonymous", host)


class Admission:
    """Counts calls in flight per pool and per client and refuses the ones over a limit."""

    def __init__(self, limits: AdmissionLimits):
        self.limits = limits
        self._pools: Counter[str] = Counter()
        self._clients: Counter[Client] = Counter()

    def in_flight(self, pool: str) -> int:
        return self._pools[pool]

    def enter(self, client: Client) -> str | None:
        """Count the call and return None, or return why it is refused (then nothing is counted)."""
        lim = self.limits
        if client.pool == "caller":
            pool_max, client_max = lim.total, lim.per_client
            what, knob, client_knob = "calls", ENV["total"], ENV["per_client"]
        else:
            pool_max, client_max = lim.anonymous_total, lim.anonymous_per_peer
            what, knob, client_knob = (
                "calls without a token (health, reflection)",
                ENV["anonymous_total"],
                ENV["anonymous_per_peer"],
            )
        if self._clients[client] >= client_max:
            return (
                f"too many concurrent {what} from {client.key}: {client_max} at once is the limit "
                f"({client_knob}); wait for your running calls to finish, or make fewer at a time"
            )
        if self._pools[client.pool] >= pool_max:
            return f"server busy: {pool_max} concurrent {what} are running, the limit ({knob}); retry with backoff"
        self._clients[client] += 1
        self._pools[client.pool] += 1
        return None

    def leave(self, client: Client) -> None:
        self._pools[client.pool] -= 1
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]  # bounded: only clients with calls in flight are kept
