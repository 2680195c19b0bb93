"""The anomaly detectors over a seeded, labelled fleet (tests/_anomaly_fleet.py), on every backend:
every injected anomaly is found with its kind and session (recall 100 %), at most 1 in 100 normal
sessions is flagged; stored once per (kind, session); bad settings are clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import tokentrail as tt
from tests._anomaly_fleet import Fleet, build
from tokentrail.analytics.anomalies import AnomalyConfig, StoreBaselines, replay, save
from tokentrail.analytics.detectors import Anomaly, Detectors
from tokentrail.events import to_row
from tokentrail.store import anomalies as sql


def _record(ledger: tt.Ledger, fleet: Fleet) -> None:
    for e in fleet.events:
        ledger.record(e)
    ledger.flush()


def score(fleet: Fleet, found: list[Anomaly]) -> tuple[float, list[str], set[str]]:
    """(recall, the labels missed, the normal sessions flagged)."""
    missed = []
    for label in fleet.labels:
        if label.session_id is not None:
            hit = any(a.kind == label.kind and a.session_id == label.session_id for a in found)
        else:
            hit = any(a.kind == label.kind and a.agent == label.agent and a.dedup_key.startswith("a:") for a in found)
        if not hit:
            missed.append(f"{label.kind} {label.session_id or label.agent}")
    flagged = {a.session_id for a in found if a.session_id in fleet.normal}
    return 1 - len(missed) / len(fleet.labels), missed, flagged  # type: ignore[return-value]


def test_the_labelled_fleet_batch(any_ledger: tt.Ledger) -> None:
    fleet = build(seed=7)
    _record(any_ledger, fleet)
    found = replay(any_ledger.store, fleet.start - timedelta(days=1))
    recall, missed, flagged = score(fleet, found)
    assert missed == [] and recall == 1.0
    assert len(flagged) <= len(fleet.normal) / 100, sorted(flagged)
    kinds = {a.kind for a in found}
    assert kinds == set(AnomalyConfig().kinds)
    # stored once per (kind, session or agent window): a second rescan adds nothing
    new = save(any_ledger.store, found)
    assert len(new) == len({(a.kind, a.dedup_key) for a in found})
    assert save(any_ledger.store, replay(any_ledger.store, fleet.start - timedelta(days=1))) == []
    rows = sql.select(any_ledger.store)
    assert len(rows) == len(new)
    retry = next(r for r in rows if r["kind"] == "retry_loop" and r["session_id"].startswith("retry-run"))
    assert retry["agent"] == "ci-fixer" and retry["team"] == "platform" and len(retry["event_ids"]) == 3
    assert retry["message"].startswith("retry_loop: agent 'ci-fixer' ran tool run_tests with the same arguments 3")
    assert "the session has spent $" in retry["message"]


def test_the_detectors_are_pure_and_replay_the_same(any_ledger: tt.Ledger) -> None:
    """The same rows folded in memory (as the writer does online) and replayed from the store find
    the same anomalies."""
    fleet = build(seed=11)
    _record(any_ledger, fleet)
    config = AnomalyConfig()
    folded = Detectors(config, StoreBaselines(any_ledger.store, config)).fold(to_row(e) for e in fleet.events)
    replayed = replay(any_ledger.store, fleet.start - timedelta(days=1), config)
    assert {(a.kind, a.dedup_key) for a in folded} == {(a.kind, a.dedup_key) for a in replayed}
    recall, missed, flagged = score(fleet, folded)
    assert recall == 1.0, missed
    assert len(flagged) <= len(fleet.normal) / 100


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recall_and_precision_over_seeds(ledger: tt.Ledger, seed: int) -> None:
    fleet = build(seed=seed)
    _record(ledger, fleet)
    recall, missed, flagged = score(fleet, replay(ledger.store, fleet.start - timedelta(days=1)))
    assert recall == 1.0, missed
    assert len(flagged) <= len(fleet.normal) / 100, sorted(flagged)


def test_a_kind_turned_off_stays_silent(ledger: tt.Ledger) -> None:
    fleet = build(seed=5)
    _record(ledger, fleet)
    kinds = tuple(k for k in AnomalyConfig().kinds if k != "retry_loop")
    found = replay(ledger.store, fleet.start - timedelta(days=1), AnomalyConfig(kinds=kinds))
    assert found and "retry_loop" not in {a.kind for a in found}


def test_token_spike_needs_a_baseline(ledger: tt.Ledger) -> None:
    fleet = build(seed=5)
    _record(ledger, fleet)
    found = replay(ledger.store, fleet.start - timedelta(days=1), AnomalyConfig(spike_min_baseline=10_000))
    assert "token_spike" not in {a.kind for a in found}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kinds": ["retry_loop", "typo_kind"]}, "unknown kind 'typo_kind'"),
        ({"spike_factor": -1}, "spike_factor must not be negative"),
        ({"retry_repeats": -3}, "retry_repeats must not be negative"),
        ({"nonsense": 1}, "unknown setting 'nonsense'"),
        ({"policies": {"retry_loop": "explode"}}, "policy 'explode' for retry_loop"),
        ({"policies": {"nope": "suspend-session"}}, "policy for unknown kind 'nope'"),
        ({"saturation": 1.5}, "saturation and system_share are shares"),
        ({"retry_repeats": 2.5}, "retry_repeats must be a whole number"),
        ({"spike_factor": "10"}, "spike_factor must be a number"),
    ],
)
def test_bad_settings_are_clear_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnomalyConfig.from_mapping(settings)


def test_the_state_is_bounded() -> None:
    config = AnomalyConfig(max_sessions=50)

    class NoBaselines:
        def sessions(self, *a: object) -> object:
            from tokentrail.analytics.detectors import Stats

            return Stats(0, 0, 0)

        def ratio(self, *a: object) -> tuple[int, int, int]:
            return 0, 0, 0

        def cache(self, *a: object) -> tuple[int, int, int]:
            return 0, 0, 0

    d = Detectors(config, NoBaselines())  # type: ignore[arg-type]
    d.fold(to_row(tt.UsageEvent(session_id=f"s{i}", input_tokens=10)) for i in range(500))
    assert len(d.sessions) == 50


# -- the command ------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from tokentrail import cli

    if not any(c.name == "anomalies" for c in cli.app.registered_commands):
        cli._load()
    r = CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "200", "TOKENTRAIL_DB": None})
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_the_anomalies_command(db_url: str, tmp_path: Path) -> None:
    import json

    led = tt.Ledger(db_url)
    fleet = build(seed=4)
    _record(led, fleet)
    led.close()
    code, out, _ = _cli("anomalies", "--db", db_url, "--since", "20d", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {r["kind"] for r in rows} == set(AnomalyConfig().kinds)
    for r in rows:
        assert {"kind", "session_id", "agent", "team", "ts", "metric", "baseline", "threshold", "event_ids"} <= set(r)
    code, out, _ = _cli("anomalies", "--db", db_url, "--since", "20d", "--stored", "-f", "json")
    assert json.loads(out) == []  # a replay alone stores nothing
    code, _, err = _cli("anomalies", "--db", db_url, "--since", "20d", "--rescan", "-f", "json")
    assert code == 0 and f"stored {len(rows)} new anomalies" in err
    code, out, _ = _cli("anomalies", "--db", db_url, "--since", "20d", "--stored", "--kind", "retry_loop", "-f", "json")
    stored_rows = json.loads(out)
    assert len(stored_rows) == 3 and {r["kind"] for r in stored_rows} == {"retry_loop"}
    code, out, _ = _cli("anomalies", "--db", db_url, "--since", "20d", "--agent", "ci-fixer", "-f", "csv")
    assert code == 0 and out.startswith("kind,severity,ts,session_id,agent") and "support-bot" not in out
    code, out, _ = _cli("anomalies", "--db", db_url, "--since", "20d")
    assert code == 0 and "retry_loop" in out
    code, _, err = _cli("anomalies", "--db", db_url, "--kind", "nope")
    assert code == 2 and "unknown kind 'nope'" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"spike_factor": -2}')
    code, _, err = _cli("anomalies", "--db", db_url, "--config", str(bad))
    assert code == 2 and "spike_factor must not be negative" in err
