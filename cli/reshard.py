"""`sdl reshard-ckpt CKPT…`: show the loader state inside checkpoints, check it against a dataset, merge per-rank
states, and rewrite the checkpoint for a new world size or batch size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from sdl.cli.options import given, refuse_ignored
from sdl.loader.errors import CheckpointError, ConfigError

FORCED = ("--force: the state is rebound to this dataset; its sample order changes, so the rest of epoch {epoch} "
          "may repeat or skip samples already seen; the stream is exactly-once again from epoch {next}")
GLOBAL_BATCH_CHANGE = ("the global batch changes from {old:,} (saved) to {new:,}: the rest of epoch {epoch} is cut into global "
                       "steps of {new:,} counted from its start, as make_loader(..., global_batch_size={new}) resumes it; "
                       "a rewritten state records {new:,}")
MAX_WORLD_SIZE = 1 << 20  # ranks; the plan lists each (JSON), so a typo of 10^20 would run for ever
MAX_ROWS = 8  # per-rank rows shown in a table; a world of 1,000 ranks would otherwise print 1,000 lines


def check_targets(world_size: Optional[int], batch_size: Optional[int], global_batch_size: Optional[int] = None) -> None:
    from sdl.loader.sampling.state import LIMIT  # what a state may hold, so what the rewritten one may record

    if world_size is not None and world_size > MAX_WORLD_SIZE:
        raise ConfigError(f"--world-size is {world_size:,}, expected at most {MAX_WORLD_SIZE:,} ranks")
    for flag, value in (("--world-size", world_size), ("--batch-size", batch_size), ("--global-batch-size", global_batch_size)):
        if value is not None and not 0 < value < LIMIT:
            raise ConfigError(f"{flag} is {value}, expected a positive integer below 2**62")


def parse_shift(shift: Optional[str]) -> Any:
    if shift is None or shift == "random":
        return shift
    try:
        return int(shift)
    except ValueError:
        raise ConfigError(f"--shift is {shift!r}, expected a positive integer or 'random'") from None


def checked_states(merged: dict, dataset: Optional[str], settings: dict, force: bool) -> tuple[dict, dict]:
    """Check every stream against `dataset`; refuse a mismatch unless `force`, which rebinds the state to the dataset."""
    from sdl.loader.checkpoint import check_dataset, format_key, rebind_state

    if dataset is None:
        return merged, {}
    checks = {key: check_dataset(state, dataset, **settings) for key, state in merged.items()}
    for key, check in checks.items():
        if not check.matches and not force:
            raise CheckpointError(f"the loader state at {format_key(key)} does not match {dataset}: "
                                  f"{'; '.join(check.problems)}; pass --force to rebind it knowingly")
    rebound = {key: rebind_state(s, checks[key]) if not checks[key].matches else s for key, s in merged.items()}
    return rebound, checks


def rank_plan(state: Any, world_size: int, batch_size: int, global_batch_size: Optional[int] = None) -> dict[str, Any]:
    """What each new rank gets from the rest of the epoch: micro-steps, real samples, padded samples."""
    from sdl.loader.sampling.merge import plan_for
    from sdl.loader.sampling.slicing import rank_real_samples

    plan = plan_for(state, world_size, batch_size, global_batch_size=global_batch_size)
    accumulate = 1 if global_batch_size is None else global_batch_size // (world_size * batch_size)
    ranks = []
    for rank in range(world_size):
        real = rank_real_samples(plan.samples, plan.steps, rank, world_size, batch_size)
        ranks.append({"rank": rank, "steps": plan.steps, "samples": real, "padded": plan.steps * batch_size - real})
    return {"world_size": world_size, "batch_size": batch_size, "global_batch_size": world_size * batch_size * accumulate,
            "accumulation_steps": accumulate, "optimizer_steps": -(-plan.steps // accumulate),  # the first may finish a started one
            **plan.to_dict(), "ranks": ranks}


def target_global_batch(state: Any, world_size: int, batch_size: int, global_batch_size: Optional[int]) -> Optional[int]:
    """The plan's G: --global-batch-size, else the one the state records (its run accumulated gradients and resumes
    with the same make_loader(global_batch_size=G)), which the new world size × batch size must divide."""
    recorded = state.global_batch_size
    if global_batch_size is not None or recorded is None or recorded % (world_size * batch_size) == 0:
        return global_batch_size or recorded
    raise ConfigError(f"the loader state records global_batch_size={recorded:,} (its run's global batch, with gradient "
                      f"accumulation), which {world_size:,} rank(s) × batch size {batch_size:,} = {world_size * batch_size:,} does "
                      f"not divide into whole micro-steps; choose a --world-size and --batch-size whose product divides "
                      f"{recorded:,}, or pass --global-batch-size with a multiple of {world_size * batch_size:,} to change it")


def stop_kind(even: bool, states: list) -> str:
    """How the ranks stopped; a per-rank set with ranks missing is said, since a missing rank may have run further."""
    kind = "even" if even else "uneven (merged exactly)"
    ranks = sorted({s.rank for s in states if s.rank is not None})
    world_size = states[0].world_size
    if len(states) > 1 and len(ranks) < world_size:
        kind += (f"; only ranks {', '.join(map(str, ranks))} of {world_size} given: pass every rank's file if the others "
                 "may have stopped at another step")
    return kind


def stream_summary(key: tuple, state: Any, checkpoints: list, target: tuple, checks: dict, force: bool) -> dict[str, Any]:
    """What the state holds, who saved it, the plan for the target topology (world size, batch size, global batch)."""
    from sdl.loader.checkpoint import format_key

    saved = [(c.path, c.states[key]) for c in checkpoints if key in c.states]
    tokens_per_sample = (state.dataset or {}).get("tokens_per_sample")
    even = len({(s.epoch, s.cursor, s.consumed) for _, s in saved}) == 1
    summary = {
        "key": format_key(key), "fingerprint": state.fingerprint, "num_samples": state.num_samples, "seed": state.seed,
        "shuffle": state.shuffle, "epoch": state.epoch, "cursor": state.cursor, "consumed_ranges": [list(r) for r in state.consumed],
        "progress_pct": round(100 * state.num_consumed / state.num_samples, 2) if state.num_samples else 100.0,
        "samples_consumed": state.num_consumed, "samples_remaining": state.remaining,
        "tokens_consumed": state.num_consumed * tokens_per_sample if tokens_per_sample else None,
        "saved_world_size": saved[0][1].world_size, "saved_batch_size": saved[0][1].batch_size,
        "saved_global_batch_size": state.global_batch_size, "drop_last": state.drop_last,
        "stop": stop_kind(even, [s for _, s in saved]), "dataset": state.dataset,
        "ranks": [{"file": str(p), "rank": s.rank, "epoch": s.epoch, "cursor": s.cursor, "samples_consumed": s.num_consumed}
                  for p, s in saved],
    }
    world_size, batch_size, global_batch_size = target
    if world_size is not None or batch_size is not None or global_batch_size is not None:
        world_size, batch_size = world_size or state.world_size, batch_size or state.batch_size
        accumulated = target_global_batch(state, world_size, batch_size, global_batch_size)
        summary["plan"] = rank_plan(state, world_size, batch_size, accumulated)
        if state.global_batch_size not in (None, accumulated):
            summary["global_batch_change"] = GLOBAL_BATCH_CHANGE.format(old=state.global_batch_size, new=accumulated,
                                                                         epoch=state.epoch)
    if key in checks:
        summary["check"] = checks[key].to_dict()
        if force and not checks[key].matches:
            summary["forced"] = FORCED.format(epoch=state.epoch, next=state.epoch + 1)
    return summary


def drop_warning(summary: dict[str, Any]) -> Optional[str]:
    """One line when the new topology gets no step at all, so every remaining sample of the epoch is dropped."""
    plan = summary.get("plan")
    if plan is None or plan["steps"] > 0 or plan["dropped"] == 0:
        return None
    micro = f" × {plan['accumulation_steps']} micro-steps" if plan["accumulation_steps"] > 1 else ""
    return (f"warning: {summary['key']}: the {plan['dropped']:,} samples left in epoch {summary['epoch']} are fewer than one "
            f"global batch of {plan['global_batch_size']:,} ({plan['world_size']:,} ranks × batch {plan['batch_size']:,}{micro}), "
            f"so every rank gets 0 steps and all {plan['dropped']:,} are dropped (drop_last); expected at an epoch's end, "
            "otherwise use a smaller --world-size or --batch-size")


def render_stream(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"loader state at {summary['key']}", show_header=False)
    skip = {"key", "ranks", "plan", "check", "forced", "consumed_ranges", "dataset", "global_batch_change"}
    for name, value in summary.items():
        if name in skip or value is None:
            continue
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        table.add_row(name.replace("_", " "), text + (" %" if name == "progress_pct" else ""))
    if summary["consumed_ranges"]:
        table.add_row("consumed beyond cursor", ", ".join(f"[{a:,}, {b:,})" for a, b in summary["consumed_ranges"]))
    if summary["dataset"]:
        table.add_row("dataset", ", ".join(f"{k}={v}" for k, v in summary["dataset"].items()))
    console.print(table)
    render_rows(console, "saved by", summary["ranks"])
    if "plan" in summary:
        plan = summary["plan"]
        accumulated = f", {plan['accumulation_steps']} micro-steps per global batch of {plan['global_batch_size']:,}, " \
            f"{plan['optimizer_steps']:,} optimizer steps left" if plan["accumulation_steps"] > 1 else ""
        render_rows(console, f"new world: {plan['world_size']} ranks × batch {plan['batch_size']}{accumulated} — "
                             f"dropped tail {plan['dropped']:,}, padded {plan['padded']:,}", plan["ranks"])
    if "global_batch_change" in summary:
        console.print(f"[yellow]{summary['global_batch_change']}[/]")
    if "check" in summary:
        check = summary["check"]
        verdict = "[green]matches[/]" if check["matches"] else "[red]does not match[/]: " + "; ".join(check["problems"])
        console.print(f"dataset {check['path']}: {verdict}")
    if "forced" in summary:
        console.print(f"[yellow]{summary['forced']}[/]")


def render_rows(console: Any, title: str, rows: list[dict[str, Any]]) -> None:
    """A table of per-rank rows, the first MAX_ROWS of them (--json lists every rank)."""
    from rich.table import Table

    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column.replace("_", " "))
    for row in rows[:MAX_ROWS]:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console.print(table)
    if len(rows) > MAX_ROWS:
        console.print(f"… {len(rows) - MAX_ROWS:,} more ranks (--json lists them all)")


def check_applicable(dataset: Optional[str], dataset_options: dict[str, Any], writes: bool, overwrite: bool) -> None:
    """Refuse options that would be ignored: the --dataset settings without --dataset, --overwrite without an output."""
    if dataset is None:
        refuse_ignored(given({f"--{name.replace('_', '-')}": value for name, value in dataset_options.items()}), ("only applies", "only apply"),
                       "with --dataset (the dataset the state is checked against)", "add --dataset PATH or drop {them}")
    if not writes:
        refuse_ignored(given({"--overwrite": overwrite}), ("only applies", "only apply"), "when writing (--out, --in-place or --per-rank)",
                       "add --out FILE or drop --overwrite")


def command(
    ckpt: list[str] = typer.Argument(..., help="Checkpoint files (.pt, .pth, .json), a folder, or a glob such as 'rank_*.pt'."),
    world_size: Optional[int] = typer.Option(None, "--world-size", help="Target number of ranks."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Target per-rank batch size (default: as saved)."),
    global_batch_size: Optional[int] = typer.Option(
        None, "--global-batch-size", help="The run's global batch with gradient accumulation (make_loader's global_batch_size): "
                                          "the plan counts micro-steps in whole global steps (default: as the state records)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the rewritten checkpoint here (a folder with --per-rank)."),
    per_rank: bool = typer.Option(False, "--per-rank", help="Write one file per new rank: OUT/rank_<r>.pt."),
    in_place: bool = typer.Option(False, "--in-place", help="Rewrite the (single) input file itself."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Check the state against this token dataset (folder or s3://bucket/prefix)."),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="Window length for --dataset (default: as saved)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Window stride for --dataset (default: as saved)."),
    shift: Optional[str] = typer.Option(None, "--shift", help="Label shift for --dataset (default: as saved)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split for --dataset (default: as saved)."),
    split_rate: Optional[float] = typer.Option(None, "--split-rate", help="Split rate for --dataset (default: as saved)."),
    force: bool = typer.Option(False, "--force", help="Accept a state that does not match --dataset (rebinds it)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show, check, merge and rewrite the loader state inside checkpoints — never unpickling code."""
    from rich.console import Console
    from sdl.loader.checkpoint import (
        merge_streams,
        read_checkpoints,
        rewrite_checkpoint,
    )

    check_targets(world_size, batch_size, global_batch_size)
    check_applicable(dataset, dict(seq_len=seq_len, stride=stride, shift=shift, split=split, split_rate=split_rate, force=force),
                     out is not None or in_place or per_rank, overwrite)
    checkpoints = read_checkpoints(ckpt)
    settings = dict(seq_len=seq_len, stride=stride, shift=parse_shift(shift), split=split, split_rate=split_rate)
    merged, checks = checked_states(merge_streams(checkpoints), dataset, settings, force)
    # Step: everything that can refuse the input (summaries, plans) before anything is written.
    streams = [stream_summary(key, state, checkpoints, (world_size, batch_size, global_batch_size), checks, force) for key, state in merged.items()]
    written: list[str] = []
    if out is not None or in_place or per_rank:
        result = rewrite_checkpoint(checkpoints, world_size=world_size, batch_size=batch_size, out=out, per_rank=per_rank,
                                    in_place=in_place, overwrite=overwrite, states=merged, global_batch_size=global_batch_size)
        written = [str(path) for path in result.written]
        if result.stale:  # a resume reading the whole folder would take them for ranks of this world
            typer.echo(f"warning: {out} also holds {len(result.stale)} rank file(s) of a larger world, not rewritten "
                       f"({result.stale[0].name} … {result.stale[-1].name}); delete them before resuming from {out}", err=True)
    for warning in filter(None, map(drop_warning, streams)):
        typer.echo(warning, err=True)
    if json_out:
        typer.echo(json.dumps({"files": [str(c.path) for c in checkpoints], "streams": streams, "written": written}, indent=2))
        return
    console = Console()
    for summary in streams:
        render_stream(console, summary)
    for path in written:
        console.print(f"wrote {path}")
