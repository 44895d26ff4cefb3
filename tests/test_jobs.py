"""Jobs: long operations are recorded as they run, end with a status, and a crash reads as interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update

from fleet import Fleet
from fleet.core.jobs import JobTracker
from fleet.errors import NotFound
from inventory.models import Job, utcnow


def test_a_job_shows_its_progress_while_it_runs_and_its_result_after(fleet: Fleet) -> None:
    with JobTracker(fleet.ctx, "sweep", "rack=R1", total=10, min_write_s=0) as job:
        job.progress(advance=3)
        seen = fleet.job(job.id)
        assert (seen.status, seen.done, seen.total, seen.fraction) == ("running", 3, 10, 0.3)
        job.progress(advance=6, failed=1, opened=2)
    row = fleet.job(job.id)
    assert (row.status, row.done, row.failed, row.result["opened"]) == ("partial", 9, 1, 2)
    assert row.finished_at is not None and row.actor == "tester"
    assert [j.id for j in fleet.jobs(kind="sweep")] == [job.id]


def test_an_exception_fails_the_job_and_propagates(fleet: Fleet) -> None:
    with pytest.raises(RuntimeError), JobTracker(fleet.ctx, "image", "rack=R1") as job:
        raise RuntimeError("tftp root missing")
    row = fleet.job(job.id)
    assert row.status == "failed" and row.result["error"] == "tftp root missing"
    with pytest.raises(NotFound):
        fleet.job(job.id + 100)


def test_progress_writes_are_throttled_but_the_end_is_always_written(fleet: Fleet) -> None:
    with JobTracker(fleet.ctx, "power", "rack=R1", total=1000, min_write_s=60) as job:
        for _ in range(1000):
            job.progress(advance=1)
        assert fleet.job(job.id).done == 0  # nothing written within the minute
    assert fleet.job(job.id).done == 1000 and fleet.job(job.id).status == "done"


def test_a_job_whose_process_was_killed_reads_as_interrupted(tmp_path: pytest.TempPathFactory) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    Fleet.init(url, key_path=tmp_path / "k").close()
    code = ("import sys, time\nfrom fleet import Fleet\nfrom fleet.core.jobs import JobTracker\n"
            f"f = Fleet.open({url!r})\n"
            "with JobTracker(f.ctx, 'image', 'rack=R1', total=4) as job:\n"
            "    print(job.id, flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "FLEET_SECRET_KEY_FILE": str(tmp_path / "k")})
    try:
        job_id = int(proc.stdout.readline())
        fleet = Fleet.open(url)
        assert fleet.job(job_id).status == "running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert fleet.job(job_id).status == "interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_silent_job_of_another_host_reads_as_interrupted_after_its_heartbeat_goes_stale(fleet: Fleet) -> None:
    with JobTracker(fleet.ctx, "sweep", "") as job:
        with fleet.ctx.write() as s:
            s.execute(update(Job).where(Job.id == job.id).values(owner="elsewhere:1"))
        assert fleet.job(job.id).status == "running"  # fresh heartbeat: trusted
        with fleet.ctx.write() as s:
            s.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        assert fleet.job(job.id).status == "interrupted"
        job.status = "interrupted"
    assert fleet.job(job.id).status == "interrupted"


def test_an_interrupted_jobs_finish_time_is_its_last_heartbeat_not_when_it_was_noticed(fleet: Fleet) -> None:
    beat = utcnow() - timedelta(hours=2)
    with JobTracker(fleet.ctx, "sweep", "") as job:
        with fleet.ctx.write() as s:
            s.execute(update(Job).where(Job.id == job.id).values(owner="elsewhere:1", heartbeat_at=beat))
        row = fleet.job(job.id)
        assert row.status == "interrupted"
        assert abs((row.finished_at - beat).total_seconds()) < 1, "it ended when it was last heard of"
        job.status = "interrupted"


def test_throttled_progress_is_written_when_its_interval_is_up_even_without_a_further_call(fleet: Fleet) -> None:
    import asyncio

    async def run() -> tuple[int, int, str]:
        with JobTracker(fleet.ctx, "sweep", "", total=0, min_write_s=0.3) as job:
            job.progress(0, total=3, force=True)
            job.progress(advance=3)  # within the interval: throttled
            throttled = fleet.job(job.id).done
            await asyncio.sleep(0.6)  # the sweep is busy elsewhere (UPS polls, its write)
            later = fleet.job(job.id).done
            job.phase("writing")
            return throttled, later, fleet.job(job.id).result["phase"]

    assert asyncio.run(run()) == (0, 3, "writing")



def test_job_steps_move_pending_sent_final_never_back_and_sent_marks_are_group_committed(fleet: Fleet) -> None:
    import asyncio

    from fleet.core.jobsteps import SendGate, SendStopped, StepLog

    with JobTracker(fleet.ctx, "power", "") as job:
        log = StepLog(fleet.ctx.write, job.id)
        assert log.open([f"h{i}" for i in range(100)]) == 100 and log.open(["h0", "h100"]) == 1
        committed: list[int] = []

        async def run() -> None:
            gate = SendGate(log, also=lambda s, moved: committed.append(len(moved)))
            await asyncio.gather(*(gate.sent(f"h{i}") for i in range(100)))
            assert gate.commits == len(committed) < 100  # a batch per commit, not a commit per target
            with pytest.raises(SendStopped):  # already sent in this job: never twice
                await gate.sent("h0")
            stop = asyncio.Event()
            stop.set()
            with pytest.raises(SendStopped):
                await SendGate(log, stop=stop).sent("h100")

        asyncio.run(run())
        assert sum(committed) == 100
        log.finish({"h0": ("confirmed", {"outcome": "done"}), "h1": ("failed", {"error": "timeout"})})
        log.finish({"h0": ("failed", {})})  # final stays final
        states = log.states()
        assert (states["h0"], states["h1"], states["h2"], states["h100"]) == ("confirmed", "failed", "sent", "pending")
        assert fleet.job(job.id).steps[0].to_json()["outcome"] == "done"
