"""Wiring the core services from ports: called by each composition root."""

from __future__ import annotations

import random
from dataclasses import dataclass

from streamer.app import Streamer
from streamer.auth import TokenVerifier
from streamer.connections import ConnectionService
from streamer.delivery import Delivery
from streamer.keys import JWKS_MIN_REFETCH_S, JwksFetcher, KeyRing
from streamer.ports import Clock, ConnectionStore, Notifier, RequestStore, SubscriptionStore
from streamer.processor import Processor
from streamer.push import Pusher
from streamer.ratelimit import RateLimiter
from streamer.router import Router
from streamer.settings import Settings
from streamer.sweeper import Sweeper

__all__ = ["Services", "build_services", "build_verifier"]


@dataclass(frozen=True, slots=True)
class Services:
    """The core services of one runtime, sharing one set of ports."""

    connections: ConnectionService
    router: Router
    processor: Processor
    sweeper: Sweeper
    delivery: Delivery
    push: Pusher
    """Server push to a connection, a user or a tenant (also `req.push` in actions)."""


def build_verifier(
    settings: Settings,
    *,
    clock: Clock,
    fetcher: JwksFetcher | None,
    jwks_min_refetch_s: float = JWKS_MIN_REFETCH_S,
) -> TokenVerifier:
    """The token verifier the settings describe: the PEMs of `JWT_PUBLIC_KEY`, the
    JWKS at `JWT_JWKS_URL` (fetched lazily through `fetcher`), `JWT_ISSUER`,
    `JWT_AUDIENCE`. With neither key setting, every token is refused.

    Raises:
        ValueError: `JWT_JWKS_URL` is set and no fetcher is given, or a key is malformed.
    """
    from streamer.pem import load_public_keys

    keys = KeyRing(
        load_public_keys(settings.jwt_public_key or ""),
        jwks_url=settings.jwt_jwks_url,
        fetcher=fetcher if settings.jwt_jwks_url else None,
        clock=clock,
        min_refetch_s=jwks_min_refetch_s,
    )
    return TokenVerifier(
        clock=clock, issuer=settings.jwt_issuer, audience=settings.jwt_audience, keys=keys
    )


def build_services(
    *,
    app: Streamer,
    settings: Settings,
    connections: ConnectionStore,
    requests: RequestStore,
    subscriptions: SubscriptionStore,
    notifier: Notifier,
    clock: Clock,
    verifier: TokenVerifier,
    rng: random.Random | None = None,
) -> Services:
    """Build every service from the ports a runtime chose.

    `rng` is the processor's source of backoff jitter (default: a fresh one);
    tests seed it so a run is repeatable.
    """
    delivery = Delivery(
        notifier=notifier,
        connections=connections,
        subscriptions=subscriptions,
        clock=clock,
        subscriber_cache_s=settings.progress_persist_interval_s,
    )
    pusher = Pusher(connections=connections, delivery=delivery, clock=clock)
    limiter = RateLimiter(per_minute=settings.rate_limit_per_minute, clock=clock)
    return Services(
        connections=ConnectionService(
            connections=connections,
            requests=requests,
            subscriptions=subscriptions,
            verifier=verifier,
            clock=clock,
            settings=settings,
            delivery=delivery,
            limiter=limiter,
        ),
        router=Router(
            app=app,
            requests=requests,
            subscriptions=subscriptions,
            delivery=delivery,
            limiter=limiter,
            clock=clock,
            settings=settings,
            pusher=pusher,
        ),
        processor=Processor(
            app=app,
            requests=requests,
            delivery=delivery,
            clock=clock,
            settings=settings,
            rng=rng,
            pusher=pusher,
        ),
        sweeper=Sweeper(requests=requests, delivery=delivery, clock=clock, settings=settings),
        delivery=delivery,
        push=pusher,
    )
