"""A `Router` over simulated providers, with its own in-process limits and budgets."""

from __future__ import annotations

from collections.abc import Mapping

from trunkline.config import Settings, SimulatedUpstream
from trunkline.errors import ConfigError
from trunkline.loadtest.limits import ObservedLimiter
from trunkline.loadtest.profile import Profile
from trunkline.loadtest.simulated import SimulatedProvider
from trunkline.loadtest.workflow_tasks import WorkflowTask
from trunkline.providers.base import Provider
from trunkline.resilience.budget import MemoryBudgetLedger
from trunkline.resilience.limiter import MemoryRateLimiter
from trunkline.routing.router import Router


def reachable_deployments(
    settings: Settings, profile: Profile, workflows: Mapping[int, WorkflowTask] | None = None
) -> list[str]:
    """Return every deployment a call of the profile may reach: its routes', fallbacks and downgrades.

    `workflows` gives the loaded workflow tasks by position, whose model
    steps' routes count too.

    Raises:
        ConfigError: a task or a workflow step names a route that is not configured.
    """
    routes: dict[str, None] = {}
    for position, task in enumerate(profile.tasks):
        if task.route is not None:
            routes[task.route] = None
        elif workflows and position in workflows:
            routes.update(dict.fromkeys(workflows[position].routes(settings.default_route)))
    names: dict[str, None] = {}
    for route_name in routes:
        route = settings.route(route_name)
        for name in (*route.deployments, *route.downgrade_to, *route.content_filter_fallbacks):
            names[name] = None
    return list(names)


def upstream_of(settings: Settings, profile: Profile, deployment: str) -> SimulatedUpstream:
    """Return the simulated provider of `deployment`: the profile's, then trunkline.toml's."""
    if deployment in profile.upstreams:
        return profile.upstreams[deployment]
    if deployment in settings.loadtest.upstreams:
        return settings.loadtest.upstreams[deployment]
    return profile.default_upstream or settings.loadtest.default_upstream


def simulated_router(
    settings: Settings,
    profile: Profile,
    providers: Mapping[str, Provider] | None = None,
    workflows: Mapping[int, WorkflowTask] | None = None,
) -> tuple[Router, dict[str, SimulatedProvider], ObservedLimiter]:
    """Build a router whose deployments are simulated, and return it with its simulated providers.

    `providers` replaces the simulated provider of the deployments it
    names, such as an adapter pointed at a `SimulatedHttpUpstream`.

    The limiter and the budget ledger are fresh and in-process even where
    ``TRUNKLINE_REDIS_URL`` is set, so that a load test never spends the
    shared limits or budgets of real traffic.

    Raises:
        ConfigError: the profile names an upstream for a deployment that no
            task can reach, which is most likely a misspelt name.
    """
    deployments = reachable_deployments(settings, profile, workflows)
    for name in profile.upstreams:
        if name not in deployments:
            raise ConfigError(
                f"the profile's upstreams.{name} matches no deployment its tasks can reach; "
                f"reachable deployments: {', '.join(deployments)}"
            )
    replaced = dict(providers or {})
    simulated = {
        name: SimulatedProvider(
            settings.deployments[name].model,
            upstream_of(settings, profile, name),
            seed=f"{profile.seed}:{name}",
        )
        for name in deployments
        if name not in replaced
    }
    limiter = ObservedLimiter(MemoryRateLimiter())
    router = Router(
        settings,
        providers={**simulated, **replaced},
        limiter=limiter,
        ledger=MemoryBudgetLedger(),
    )
    return router, simulated, limiter
