"""Stage runners that tests configure by dotted path."""

from __future__ import annotations

from orchestration.core.runnables import runnable
from pipeline.runners import StageContext


@runnable
def boom(ctx: StageContext) -> dict:
    raise RuntimeError(f"renderer crashed in {ctx.stage}")


@runnable
def count_words(ctx: StageContext) -> dict:
    path = "custom.txt"
    if not ctx.has_artifact(path):
        (ctx.run_dir / path).write_text("real output from a configured runner\n")
        ctx.add_artifact(path, "text", {"word_count": 6})
    return {"custom": True}
