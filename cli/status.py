"""`trainctl status`: one screen on the daemon, the queue and the current training job. Reads files
only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from cli.common import Commands, HomeOpt, JsonOpt, console
from cli.formatting import bar, dash, duration, sparkline
from daemon.atomic import read_json
from daemon.home import Home
from daemon.jobs import JobQueue, pid_alive
from daemon.runs.training_status import TrainingStatus, read_training_status
from daemon.service import instance_lock

commands = Commands()

STALE_AFTER_BEATS = 5


def daemon_view(home: Home) -> dict[str, Any]:
    doc = read_json(home.daemon_status) or {}
    if not doc:
        return {"status": "never started"}
    age = time.time() - float(doc.get("heartbeat_at", 0))
    limit = STALE_AFTER_BEATS * float(doc.get("heartbeat_seconds", 2.0))
    if doc.get("state") == "stopped":
        status = "stopped"
    elif not pid_alive(doc.get("pid")) or not instance_lock.held(home.status_dir):
        # killed without a chance to say so (its pid may live on in another process)
        status = "dead"
    elif age > limit:
        status = "stale"
    else:
        status = "alive"
    return {
        "status": status,
        "pid": doc.get("pid"),
        "state": doc.get("state"),
        "heartbeat_age_s": round(age, 1),
        "current_job": doc.get("current_job"),
        "running_jobs": doc.get("running_jobs") or {},
    }


def queue_view(home: Home) -> dict[str, Any]:
    if not home.jobs_db.exists():
        return {"counts": {}, "current": None}
    with JobQueue(home.jobs_db, readonly=True) as q:
        counts = {k: v for k, v in q.counts().items() if v}
        active = [j for j in q.newest(limit=200) if j.state.value in ("curating", "training")]
        return {
            "counts": counts,
            "current": active[0].to_dict() if active else None,
            "running": [j.to_dict() for j in reversed(active)],
        }


def loss_history(run_dir: str | None, points: int = 40) -> list[float]:
    """The last smoothed-loss values from the run's metrics.jsonl (read from its tail only)."""
    if not run_dir:
        return []
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 64 * 1024))
            lines = fh.read().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines[-points:]:
        try:
            v = json.loads(line).get("streaming_ce")
        except ValueError:
            continue
        if isinstance(v, (int, float)):
            out.append(float(v))
    return out


def undelivered_notices(home: Home) -> int:
    """Notices every retry failed to deliver, kept in data/notify/failed/
    (daemon/service/notify.py)."""
    try:
        return sum(1 for path in home.notify_failed.iterdir() if path.suffix == ".json")
    except FileNotFoundError:
        return 0


def gather(home: Home) -> dict[str, Any]:
    training = read_training_status(home.training_status)
    return {
        "daemon": daemon_view(home),
        "queue": queue_view(home),
        "training": training,
        "notices_undelivered": undelivered_notices(home),
        "loss_history": loss_history(training.get("run_dir")),
    }


def _spark(values: list[float] | None) -> str:
    return f"   {sparkline(values)}" if values and len(values) > 1 else ""


def _num(v: Any, fmt: str) -> str:
    return dash(v, fmt) if isinstance(v, (int, float)) else dash(v)


def render(s: dict[str, Any]) -> Group:
    d, q = s["daemon"], s["queue"]
    t: TrainingStatus = s["training"]
    colour = {"alive": "green", "stale": "yellow", "dead": "red", "stopped": "dim"}.get(
        d["status"], "dim"
    )
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "daemon",
        f"[{colour}]{d['status']}[/{colour}]"
        + (
            f"  pid {d.get('pid')}  heartbeat {d.get('heartbeat_age_s')}s ago  ({d.get('state')})"
            if d.get("pid")
            else ""
        ),
    )
    counts = q.get("counts") or {}
    head.add_row("queue", "  ".join(f"{k} {v}" for k, v in counts.items()) or "empty")
    if s.get("notices_undelivered"):
        head.add_row(
            "notices",
            f"[yellow]{s['notices_undelivered']} not delivered[/yellow] "
            "(every retry failed; kept in data/notify/failed/)",
        )
    running = q.get("running") or ([q["current"]] if q.get("current") else [])
    where = d.get("running_jobs") or {}
    head.add_row(
        "current job" if len(running) < 2 else "running jobs",
        "\n".join(
            f"{j['id']} {j['file_name']} ({j['state']})"
            + (f"  on {where[str(j['id'])]}" if str(j["id"]) in where else "")
            for j in running
        )
        or "none",
    )
    parts: list[Any] = [head]
    if t:
        step, total = t.get("current_step") or 0, t.get("total_steps") or 0
        g = Table.grid(padding=(0, 2))
        g.add_row("job", f"{t.get('job_id')}  {t.get('dataset', '')}  [{t.get('state', '?')}]")
        if t.get("rendering"):
            g.add_row("rendering", str(t["rendering"]))
        if t.get("max_length"):
            g.add_row("max length", str(t["max_length"]))
        g.add_row(
            "step", f"{step}/{total}  {bar(step, total)}  epoch {_num(t.get('epoch'), '{:.2f}')}"
        )
        loss = _num(t.get("loss"), "{:.4f}")
        if t.get("streaming_ce") is not None:
            loss += (
                f"   smoothed {_num(t.get('streaming_ce'), '{:.4f}')} ({t.get('loss_trend', '?')})"
            )
        g.add_row("loss", loss)
        g.add_row(
            "",
            f"variance {_num(t.get('loss_variance'), '{:.2e}')}   token entropy "
            f"{_num(t.get('token_entropy'), '{:.3f}')} nats" + _spark(s.get("loss_history")),
        )
        g.add_row("learning rate", _num(t.get("learning_rate"), "{:.2e}"))
        tps = (
            f"{_num(t.get('tokens_per_sec'), '{:.0f}')} now, "
            f"{_num(t.get('tokens_per_sec_avg'), '{:.0f}')} avg ({t.get('throughput_trend', '?')})"
        )
        if t.get("mfu") is not None:
            tps += f"   MFU {t['mfu']:.1%}"
        g.add_row("tokens/s", tps)
        g.add_row(
            "ETA",
            (duration(t.get("eta_seconds")) + " (incl. evaluations)")
            if t.get("state") == "training"
            else "—",
        )
        if t.get("fixed_eval_em") is not None:
            g.add_row(
                f"fixed eval ({t.get('fixed_eval_examples') or '?'} val)",
                f"EM {t['fixed_eval_em']:.0%}  CE {_num(t.get('fixed_eval_ce'), '{:.3f}')} "
                f" ECE {_num(t.get('fixed_eval_ece'), '{:.3f}')}  "
                f"({t.get('fixed_eval_trend')}, step {t.get('fixed_eval_step')})  accuracy "
                f"last 20 {_num(t.get('accuracy_last_20'), '{:.0%}')}, last 50 "
                f"{_num(t.get('accuracy_last_50'), '{:.0%}')}",
            )
        if t.get("diagnostics_share") is not None:
            left = t.get("diagnostics_skipped") or {}
            thinned = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in left.items())
            g.add_row(
                "diagnostics",
                f"evaluations + snapshots {t['diagnostics_share']:.1%} of the "
                f"time (budget {_num(t.get('diagnostics_budget'), '{:.0%}')})"
                + (f"; left out {thinned}" if thinned else "")
                + (
                    f"; {t['diagnostics_scored_only']} scored only"
                    if t.get("diagnostics_scored_only")
                    else ""
                )
                + (
                    f"; per-example dynamics {t['dynamics_passes']} passes"
                    if t.get("dynamics_passes")
                    else ""
                ),
            )
        ls = t.get("lora_summary")
        if ls:
            flags = [
                f"[red]{k} {', '.join(ls[k][:3])}[/red]"
                for k in ("dead", "vanishing", "exploding")
                if ls.get(k)
            ]
            if ls.get("imbalanced"):
                flags.append(f"[yellow]imbalance {ls.get('imbalance')}x[/yellow]")
            g.add_row(
                "LoRA",
                f"{ls.get('layers')} layers  grad norm "
                f"{_num(ls.get('grad_norm_min'), '{:.2e}')}.."
                f"{_num(ls.get('grad_norm_max'), '{:.2e}')}  "
                f"update/weight {_num(ls.get('update_ratio'), '{:.1e}')}  "
                + ("  ".join(flags) or "[green]ok[/green]"),
            )
        if t.get("flagged_count") is not None:
            g.add_row(
                "flagged",
                f"{t['flagged_count']} open flags: the model's current "
                f"mistakes ({t.get('flagged_this_run', 0)} raised this "
                f"run, {t.get('flags_resolved_this_run', 0)} resolved) "
                f"— `trainctl flags --job {t.get('job_id')}`",
            )
        if t.get("best_step") is not None:
            best = t.get("best") or {}
            value = t.get("best_value")
            shown = (
                f"{value:.0%}" if t.get("best_metric") == "exact_match" else _num(value, "{:.4f}")
            )
            where = best.get("adapter_dir") or t.get("best_checkpoint")
            g.add_row(
                "best checkpoint",
                f"step {t['best_step']} ({t.get('best_metric')} {shown}), "
                f"{t.get('evaluations_since_best', 0)} evaluations since — {where}",
            )
        if t.get("message"):
            g.add_row("note", str(t["message"]))
        if t.get("train_exact_match") is not None:
            g.add_row(
                "exact match (train)",
                f"{t['train_exact_match']:.0%} of "
                f"{t.get('train_eval_examples') or '?'} training examples",
            )
        if t.get("test_exact_match") is not None:
            base = _num(t.get("base_test_exact_match"), "{:.0%}")
            g.add_row(
                "exact match (held-out test)",
                f"[bold]{t['test_exact_match']:.0%}[/bold] tuned vs {base} base "
                f"model, on {t.get('test_examples') or '?'} test examples — `trainctl "
                f"bench run --job {t.get('job_id')}` (and `--base`) for every answer",
            )
        g.add_row("updated", dash(t.get("updated_at")))
        parts.append(Panel(g, title="training", expand=False))
        alerts = t.get("active_alerts") or []
        if alerts:
            a = Table(title="active alerts", show_header=True)
            for col in ("severity", "alert", "since step", "what to do"):
                a.add_column(col, overflow="fold")
            sev_colour = {"critical": "red", "warning": "yellow", "info": "cyan"}
            for al in alerts:
                c = sev_colour.get(str(al.get("severity")), "white")
                a.add_row(
                    f"[{c}]{al.get('severity')}[/{c}]",
                    f"{al.get('id')}: {al.get('message')}",
                    str(al.get("since_step")),
                    al.get("recommendation", ""),
                )
            parts.append(a)
        elif t.get("alert_summary") is not None:
            fired = t["alert_summary"].get("fired_total", 0)
            parts.append(
                f"alerts: none active ({fired} fired and resolved during the run)"
                if fired
                else "alerts: none"
            )
    return Group(*parts)


@commands.command("status")
def status(
    home: HomeOpt = None,
    json_out: JsonOpt = False,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh every second until Ctrl-C."),
    interval: float = typer.Option(1.0, help="Seconds between refreshes with --watch."),
) -> None:
    """The dashboard: daemon alive?, queue, current job, step/total, loss, lr, tokens/s, ETA."""
    h = Home.open(home, create=False)
    if json_out:
        console.print_json(json.dumps(gather(h), default=str))
        return
    if not watch:
        console.print(render(gather(h)))
        return
    from rich.live import Live

    try:
        with Live(render(gather(h)), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(render(gather(h)))
    except KeyboardInterrupt:
        pass
