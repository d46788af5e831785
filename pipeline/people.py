"""Django users as the plain ``gates.Person`` the gate rules decide over, and the users
a gate waits for."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db.models import Q

from pipeline import gates
from pipeline.models import PipelineJob

APPROVE_PERMISSION = "pipeline.approve_gate"
MAX_RECIPIENTS = 50


def person_of(user) -> gates.Person:
    if user is None or not getattr(user, "is_authenticated", False):
        return gates.Person("anonymous", active=False)
    return gates.Person(
        user.get_username(),
        frozenset(user.groups.values_list("name", flat=True)),
        can_approve=bool(user.is_staff or user.has_perm(APPROVE_PERMISSION)),
        active=bool(user.is_active),
    )


def user_named(username: str):
    return get_user_model().objects.filter(username=username).first()


def candidates(names: tuple[str, ...]):
    """Active users a gate names (usernames and group:<name>), or, when it names nobody,
    everyone who may decide gates (staff or pipeline.approve_gate)."""
    users = get_user_model().objects.filter(is_active=True)
    if names:
        usernames = [n for n in names if not n.startswith(gates.GROUP_PREFIX)]
        groups = [n[len(gates.GROUP_PREFIX) :] for n in names if n.startswith(gates.GROUP_PREFIX)]
        return users.filter(Q(username__in=usernames) | Q(groups__name__in=groups)).distinct()
    perm = Permission.objects.filter(codename="approve_gate", content_type__app_label="pipeline")
    return users.filter(
        Q(is_staff=True) | Q(is_superuser=True) | Q(user_permissions__in=perm) | Q(groups__permissions__in=perm)
    ).distinct()


def waiting_for(job: PipelineJob) -> list:
    """The users the job's current gate waits for (may decide, have not yet)."""
    policy = job.policy()
    votes = job.round_votes()
    names = policy.assignees_at(job.escalation_tier)
    return [
        user
        for user in candidates(names).order_by("username")[:MAX_RECIPIENTS]
        if gates.waits_for(policy, person_of(user), votes, starter=job.created_by, tier=job.escalation_tier)
    ]


def inbox(user) -> list[PipelineJob]:
    """Jobs waiting at a gate for this user, oldest wait first."""
    person = person_of(user)
    if not person.can_approve or not person.active:
        return []
    waiting = (
        PipelineJob.objects.filter(status="needs_approval")
        .select_related("definition")
        .prefetch_related("decisions")
        .order_by("waiting_since", "id")
    )
    return [
        job
        for job in waiting
        if gates.waits_for(job.policy(), person, job.round_votes(), starter=job.created_by, tier=job.escalation_tier)
    ]
