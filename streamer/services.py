"""Wiring the core services from ports: called by each composition root."""

from __future__ import annotations

import random
from dataclasses import dataclass

from streamer.app import Streamer
from streamer.auth import TokenVerifier
from streamer.connections import ConnectionService
from streamer.delivery import Delivery
from streamer.ports import Clock, ConnectionStore, Notifier, RequestStore, SubscriptionStore
from streamer.processor import Processor
from streamer.ratelimit import RateLimiter
from streamer.router import Router
from streamer.settings import Settings
from streamer.sweeper import Sweeper

__all__ = ["Services", "build_services"]


@dataclass(frozen=True, slots=True)
class Services:
    """The core services of one runtime, sharing one set of ports."""

    connections: ConnectionService
    router: Router
    processor: Processor
    sweeper: Sweeper
    delivery: Delivery


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
        ),
        processor=Processor(
            app=app, requests=requests, delivery=delivery, clock=clock, settings=settings, rng=rng
        ),
        sweeper=Sweeper(requests=requests, delivery=delivery, clock=clock, settings=settings),
        delivery=delivery,
    )
