"""What a remediation changes in the cluster, read before it runs and again after a crash.

An approved remediation records `observe` (the facts it is about to change) with its started
mark, then makes its one call. If the execution job runs again with that mark set, the call
may or may not have reached Kubernetes: `verdict` compares the facts now with those before and
says whether the action happened. Nothing here ever runs the action again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from integrations.kubernetes import KubernetesClient

__all__ = ["RECONCILABLE", "observe", "verdict"]

Kind = Literal["Deployment", "Pod", "Node"]
_KINDS: dict[str, Kind] = {"k8s.rollout_restart": "Deployment", "k8s.rollout_undo": "Deployment",
                           "k8s.scale": "Deployment", "k8s.delete_pod": "Pod", "k8s.cordon": "Node",
                           "k8s.uncordon": "Node"}
RECONCILABLE = frozenset(_KINDS)


def _target(action: str, params: dict[str, Any]) -> tuple[Kind, str | None, str]:
    kind = _KINDS[action]
    if kind == "Node":
        return kind, None, str(params["node"])
    return kind, str(params["namespace"]), str(params["pod" if kind == "Pod" else "deployment"])


async def observe(kube: KubernetesClient, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """The facts `action` changes, now (a KubernetesError if the cluster cannot be read)."""
    kind, namespace, name = _target(action, params)
    return await asyncio.to_thread(kube.observe, kind, namespace, name)


def verdict(action: str, params: dict[str, Any], before: dict[str, Any],
            after: dict[str, Any]) -> tuple[bool, str]:
    """(happened, what is true), from the facts before the call and now."""
    kind, namespace, name = _target(action, params)
    where = f"{kind.lower()}/{name}" + (f" in {namespace}" if namespace else "")
    if not after.get("exists"):
        if kind == "Pod":
            return before.get("exists", True), f"{where} no longer exists"
        return False, f"{where} no longer exists"
    if action == "k8s.rollout_restart":
        stamp = after.get("restarted_at")
        if stamp and stamp != before.get("restarted_at"):
            return True, f"{where} has restartedAt {stamp} (was {before.get('restarted_at') or 'unset'})"
        return False, f"{where} still has restartedAt {stamp or 'unset'}"
    if action == "k8s.rollout_undo":
        # The generation moves with every change of the spec, a scale (an autoscaler's) too; the
        # revision moves only when the pod template does, once the controller has seen it. A new
        # generation with the same replicas is the template changing before the controller has.
        revised = after.get("revision") != before.get("revision")
        respecced = after.get("generation") != before.get("generation") and \
            after.get("replicas") == before.get("replicas")
        if revised or respecced:
            return True, (f"{where} template changed (generation {before.get('generation')} → "
                          f"{after.get('generation')}, revision {after.get('revision')})")
        return False, (f"{where} template unchanged (revision {after.get('revision')}, generation "
                       f"{after.get('generation')})")
    if action == "k8s.scale":
        wanted = int(params["replicas"])
        if after.get("replicas") == wanted:
            return True, f"{where} has {wanted} replicas (was {before.get('replicas')})"
        return False, f"{where} has {after.get('replicas')} replicas, not {wanted}"
    if action == "k8s.delete_pod":
        if after.get("uid") != before.get("uid") or (after.get("terminating") and not before.get("terminating")):
            return True, f"{where} was deleted (uid {before.get('uid')} → {after.get('uid')})"
        return False, f"{where} still exists with the same uid"
    wanted_flag = action == "k8s.cordon"
    if after.get("unschedulable") == wanted_flag:
        return True, f"{where} is {'' if wanted_flag else 'not '}unschedulable"
    return False, f"{where} is {'not ' if wanted_flag else ''}unschedulable"
