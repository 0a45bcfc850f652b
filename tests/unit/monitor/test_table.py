"""The monitor's pure view: events fold into per-job state and render as tables or one line each."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from consumers.monitor.main import CLEAR_SCREEN, Display
from consumers.monitor.table import MonitorState, render_event_line, render_state
from tests.events_factory import edge_done, job_completed, round_completed


def _dict(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(model.to_json())
    return data


class TestMonitorState:
    """Rounds, edges and completion of each job are tracked separately; odd events do not crash it."""

    def test_rounds_edges_and_completion(self) -> None:
        state = MonitorState()
        for event in (round_completed("demo", 1), edge_done("demo", "edge-a"), round_completed("demo", 2)):
            state.apply(_dict(event))
        job = state.jobs["demo"]
        assert sorted(job.rounds) == [1, 2]
        row = job.rounds[2]
        assert row.losses == (0.025, 0.04, 0.02)
        assert row.map50 == pytest.approx(0.2)
        assert row.samples_per_edge == {"edge-a": 64, "edge-b": 56}
        assert row.images_per_s == 120 * 2 / 8.0
        assert job.edges["edge-a"].status == "done" and job.edges["edge-a"].images_released == 64
        assert job.edges["edge-b"].status == "seen" and job.edges["edge-b"].samples_last_round == 56
        assert not job.completed
        state.apply(_dict(job_completed("demo")))
        assert state.jobs["demo"].completed and state.jobs["demo"].rounds_planned == 3

    def test_jobs_are_separate_and_bad_events_ignored(self) -> None:
        state = MonitorState()
        state.apply(_dict(round_completed("a", 1)))
        state.apply(_dict(round_completed("b", 4)))
        state.apply({"type": "round.completed", "job": "a", "round": "x"})
        state.apply({"type": "edge.status", "job": "a", "edge": "edge-c", "status": "sending", "batches": 3})
        state.apply({"type": "something.new", "job": "a"})
        state.apply({"type": "round.completed"})
        assert sorted(state.jobs) == ["a", "b"]
        assert sorted(state.jobs["a"].rounds) == [1] and sorted(state.jobs["b"].rounds) == [4]
        assert state.jobs["a"].edges["edge-c"].status == "sending"
        assert state.jobs["a"].edges["edge-c"].batches == 3


class TestRendering:
    """The table names the job, privacy, every round with losses and mAP, and every edge with its status."""

    def test_table(self) -> None:
        state = MonitorState()
        for event in (round_completed("demo", 1), round_completed("demo", 2), edge_done("demo", "edge-a")):
            state.apply(_dict(event))
        lines = render_state(state)
        text = "\n".join(lines)
        assert lines[0].startswith("job demo · mistnet · round 2/3 · running · rr-sym ε=100 (ε_bit 50")
        assert "mAP50-95" in lines[1]
        round_lines = [line for line in lines if line.strip().startswith(("1 ", "2 "))]
        assert len(round_lines) == 2 and "0.0500" in round_lines[0] and "0.200" in round_lines[1]
        assert "edge-a:64 edge-b:56" in round_lines[0] and "30.0" in round_lines[0]
        assert "edge-a" in text and "done" in text
        assert "0.0500" not in "\n".join(render_state(state, max_rounds=1))

    def test_waiting_and_event_lines(self) -> None:
        assert render_state(MonitorState()) == ["waiting for events…"]
        line = render_event_line(_dict(round_completed("demo", 2)))
        assert "demo round.completed 2/3" in line and "mAP50 0.200" in line and "ε=100" in line
        assert "edge-a done images 64" in render_event_line(_dict(edge_done("demo", "edge-a")))
        assert "final mAP50 0.300" in render_event_line(_dict(job_completed("demo")))
        assert render_event_line({"type": "x.y", "job": "j"}).endswith("j x.y")


class TestDisplay:
    """JSON mode prints each event on one line; table mode redraws the screen in place."""

    def test_json_and_table(self) -> None:
        out = io.StringIO()
        display = Display(out, "json", rounds_shown=10)
        event = _dict(round_completed("demo", 1))
        display.show(event)
        assert [json.loads(line) for line in out.getvalue().splitlines()] == [event]
        out = io.StringIO()
        display = Display(out, "table", rounds_shown=10)
        display.start()
        display.show(event)
        assert out.getvalue().count(CLEAR_SCREEN) == 2 and "job demo" in out.getvalue()
