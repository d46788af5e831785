"""Admin for the control loop, the job queue and the ledger."""

from __future__ import annotations

from django.contrib import admin

from orchestration.models import Action, Campaign, ChannelWindow, Job, Lane, LedgerEntry, LoopState, Rule

# Full admin classes follow in this module; capabilities living in this app register
# theirs from their own packages (imported at the end of this file).
for model in (Action, Campaign, ChannelWindow, Job, Lane, LedgerEntry, LoopState, Rule):
    admin.site.register(model)
