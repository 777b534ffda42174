"""One load test from start to end: plan the arrivals, send them, gather what came back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from trunkline.config import Settings
from trunkline.errors import ConfigError
from trunkline.ids import random_hex
from trunkline.loadtest.faults import UpstreamCounts
from trunkline.loadtest.limits import LimitPressure
from trunkline.loadtest.plan import plan_arrivals
from trunkline.loadtest.profile import Profile
from trunkline.loadtest.recorded import LOADTEST_PREFIX
from trunkline.loadtest.runner import RouterSender, RunOutcome, run_plan
from trunkline.loadtest.simulation import simulated_router
from trunkline.loadtest.target import GatewaySender
from trunkline.loadtest.workflow_tasks import WorkflowTask, load_workflow_tasks
from trunkline.providers.base import Provider
from trunkline.tracing import start_run


@dataclass(frozen=True)
class LoadTestOptions:
    """The rate multiplier, duration, bounds and destination of a load test.

    Attributes:
        scale: multiplier of the profile's arrival rate.
        duration_s: seconds during which requests arrive.
        drain_s: seconds to wait after the last arrival for open requests;
            those still open then are cancelled and counted as unfinished.
        max_requests: the plan may hold at most this many requests.
        max_in_flight: arrivals beyond this many open requests are skipped
            and counted, so that a stalled upstream cannot exhaust memory.
        target: base URL of a running gateway, or None for simulated providers.
        api_key: the gateway key sent as a bearer token.
        target_timeout_s: seconds one request to the gateway may take.
    """

    scale: float = 1.0
    duration_s: float = 60.0
    drain_s: float = 30.0
    max_requests: int = 100_000
    max_in_flight: int = 10_000
    target: str | None = None
    api_key: str | None = None
    target_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"--scale must be a positive number, got {self.scale}")
        for name in ("duration_s", "drain_s", "target_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive seconds, got {getattr(self, name)}")
        for name in ("max_requests", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be 1 or more, got {getattr(self, name)}")


@dataclass
class LoadResult:
    """Everything a load test saw, before it is summarised into a report."""

    profile: Profile
    options: LoadTestOptions
    run_id: str
    planned: int
    outcome: RunOutcome
    #: What each simulated provider received, by deployment; None against a gateway.
    upstreams: dict[str, UpstreamCounts] | None = None
    #: The router's rate limits that held requests back, by limit name.
    pressure: dict[str, LimitPressure] = field(default_factory=dict)
    #: Permits the router requested from its rate limiter, and the
    #: (seconds from the start, milliseconds waited) of those that waited.
    limiter_requests: int = 0
    limiter_waits: list[tuple[float, float]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "gateway" if self.options.target else "simulated"


async def run_loadtest(
    settings: Settings,
    profile: Profile,
    options: LoadTestOptions,
    *,
    providers: Mapping[str, Provider] | None = None,
) -> LoadResult:
    """Run one load test of `profile` at `options.scale`, against simulated providers or a gateway.

    Against simulated providers, the calls go through a real `Router` with
    the configuration's routes, retries, fallbacks, downgrades, rate limits
    and budgets, all in this process. Calls are recorded only where an
    exporter is registered, as inside `trunkline.recording.recording`; they
    all carry the run id ``loadtest_...`` and the tag ``loadtest=true``.
    `providers` replaces the simulated providers of the deployments it
    names, such as an OpenAI adapter pointed at a `SimulatedHttpUpstream`.
    `LoadResult.upstreams` then counts only the simulated ones.

    Raises:
        ConfigError: a task names an unknown route, or the plan is too large.
    """
    workflows: dict[int, WorkflowTask] = {}
    if options.target is not None:
        workflow_tasks = [task.label for task in profile.tasks if task.workflow is not None]
        if workflow_tasks:
            raise ConfigError(
                f"--target sends route tasks only, and the profile has workflow tasks "
                f"{', '.join(workflow_tasks)}; run them against simulated providers, or "
                "replace them with the routes their steps call"
            )
    else:
        workflows = load_workflow_tasks(profile)
    plan = plan_arrivals(
        profile,
        scale=options.scale,
        duration_s=options.duration_s,
        max_requests=options.max_requests,
        rows={position: len(workflow.rows) for position, workflow in workflows.items()},
    )
    for planned in plan:
        if planned.row is not None:
            planned.route = f"workflow:{workflows[planned.task].spec.name}"
    run_id = f"{LOADTEST_PREFIX}{random_hex()[:12]}"
    loop = asyncio.get_running_loop()
    if options.target is not None:
        clock_start = loop.time()
        sender = GatewaySender(
            options.target,
            options.api_key,
            clock_start=clock_start,
            timeout_s=options.target_timeout_s,
            max_in_flight=options.max_in_flight,
        )
        try:
            outcome = await run_plan(
                plan,
                sender,
                clock_start=clock_start,
                drain_s=options.drain_s,
                max_in_flight=options.max_in_flight,
            )
        finally:
            await sender.aclose()
        return LoadResult(profile, options, run_id, len(plan), outcome)

    router, simulated, limiter = simulated_router(settings, profile, providers, workflows)
    try:
        with start_run(
            "loadtest", run_id=run_id, budget_usd=profile.budget_usd, tags={"loadtest": "true"}
        ):
            limiter.start()
            clock_start = loop.time()
            outcome = await run_plan(
                plan,
                RouterSender(router, clock_start, workflows),
                clock_start=clock_start,
                drain_s=options.drain_s,
                max_in_flight=options.max_in_flight,
            )
    finally:
        await router.aclose()
    return LoadResult(
        profile,
        options,
        run_id,
        len(plan),
        outcome,
        upstreams={name: provider.counts for name, provider in simulated.items()},
        pressure=dict(limiter.pressure),
        limiter_requests=limiter.requested,
        limiter_waits=list(limiter.waits),
    )
