"""The channel's bookkeeping as a plain object (on a cluster it is a Ray actor): what each
running trial is told the rest of the study used, and what an ended trial leaves behind."""

from __future__ import annotations

from frugalml.executors._ray_channel import Channel
from frugalml.records import TrialRecord, TrialStatus


def test_a_trial_is_told_what_the_finished_and_the_other_running_trials_used():
    channel = Channel()
    channel.publish({"cpu_s": 10.0, "energy_j": 100.0}, {})
    channel.exchange("a", {"cpu_s": 2.0, "energy_j": 20.0, "steps": 4}, -1)
    used, _, _ = channel.exchange("b", {"cpu_s": 1.0, "energy_j": 10.0, "steps": 2}, -1)
    assert used == {"cpu_s": 12.0, "energy_j": 120.0}  # a's figures, not b's own
    assert channel.running_used("cpu_s") == 3.0


def test_peers_are_sent_only_to_a_trial_that_lacks_the_latest():
    peer = TrialRecord(trial_id="w/c/r0", number=0, workload="w", config_id="c", repeat=0, params={},
                       status=TrialStatus.COMPLETED)
    channel = Channel()
    channel.publish({"cpu_s": 0.0}, {"w": [peer]})
    _, version, peers = channel.exchange("a", {}, -1)
    assert peers == {"w": [peer]}
    assert channel.exchange("a", {}, version)[2] is None
    channel.publish({"cpu_s": 1.0}, {})  # figures only: the peers' version stays
    assert channel.exchange("a", {}, version)[1] == version


def test_an_ended_trial_says_how_far_it_got_and_a_late_message_does_not_revive_it():
    channel = Channel()
    channel.started("a", {"ip": "10.0.0.2", "id": "n2"})
    channel.exchange("a", {"cpu_s": 3.0, "steps": 7}, -1)
    assert channel.forget("a") == {"node": {"ip": "10.0.0.2", "id": "n2"}, "cpu_s": 3.0, "steps": 7}
    channel.exchange("a", {"cpu_s": 4.0, "steps": 8}, -1)
    channel.started("a", {"ip": "10.0.0.2", "id": "n2"})
    assert channel.running_used("cpu_s") == 0.0
    assert channel.forget("a") == {}
