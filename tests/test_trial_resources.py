"""``raytrade tune --env-runners K``: what a trial asks Ray for, and when it is refused, without Ray.

A trial of an online spec with K env runners is a placement group of 1 + K bundles (the learner's,
then one per runner) with strategy SPREAD, as RLlib's ``default_resource_request`` computes it from
the search's param space (search domains included); K is refused for the offline specs, below 0,
and when no placement of the bundles onto the cluster's nodes exists. Where the bundles landed is
checked on a two-node cluster in ``tests/test_local_cluster.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from raytrade.cluster.tune import (
    TuneOptions,
    check_bundles_fit,
    check_env_runners,
    trial_bundles,
    tune_command,
    with_trial_resources,
)
from raytrade.replay.errors import InputError
from raytrade.tune_specs import get_spec

SYNTHETIC_ENV = {"data": {"kind": "synthetic", "n_assets": 3, "n_steps": 50}}


@pytest.mark.parametrize("name", ["ppo", "distrl", "gnn", "gating", "tqc"])
def test_a_trial_asks_for_one_learner_bundle_and_one_per_env_runner_spread(name: str, tmp_path: Path) -> None:
    spec = get_spec(name)
    opts = TuneOptions(spec=name, replay=str(tmp_path), env_runners=2, trial_resources={"trial_slot": 1.0})
    config = with_trial_resources(opts, spec.algo_config(SYNTHETIC_ENV, spec.smoke))  # search domains in
    request = trial_bundles(config)
    assert request.bundles == [{"CPU": 1.0, "trial_slot": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert request.strategy == "SPREAD"


def test_without_env_runners_a_trial_is_one_bundle(tmp_path: Path) -> None:
    spec = get_spec("ppo")
    config = with_trial_resources(
        TuneOptions(spec="ppo", replay=str(tmp_path)), spec.algo_config(SYNTHETIC_ENV, spec.smoke)
    )
    assert trial_bundles(config).bundles == [{"CPU": 1.0}]


def test_the_reproducing_command_keeps_the_env_runners(tmp_path: Path) -> None:
    assert (
        "--seed 0 --env-runners 3 " in TuneOptions(spec="ppo", replay=str(tmp_path), env_runners=3).command()
    )
    assert "--env-runners" not in TuneOptions(spec="ppo", replay=str(tmp_path)).command()


def test_env_runners_are_refused_for_an_offline_spec_in_one_line(tmp_path: Path) -> None:
    args = ["--spec", "cql", "--replay", str(tmp_path / "missing"), "--env-runners", "1", "--no-wandb"]
    done = CliRunner().invoke(tune_command, args)
    assert done.exit_code == 2
    assert done.output.splitlines() == [
        "error: --env-runners 1: spec 'cql' is offline (learns from the experience table, samples no "
        "environment); env runners apply to the online specs (distrl, gating, gnn, ppo, tqc)"
    ]
    check_env_runners(TuneOptions(spec="cql", replay=str(tmp_path)), get_spec("cql"))  # 0 is today's run


def test_env_runners_are_refused_on_resume_which_keeps_the_started_ones(
    synthetic_store: Path, tmp_path: Path
) -> None:
    args = ["--spec", "ppo", "--replay", str(synthetic_store), "--storage", str(tmp_path), "--no-wandb"]
    done = CliRunner().invoke(tune_command, [*args, "--resume", "--env-runners", "2"])
    assert done.exit_code == 2
    assert done.output.splitlines() == [
        "error: --env-runners 2 with --resume: a resumed search keeps the env runners it started with; "
        "drop the flag"
    ]


def test_a_negative_number_of_env_runners_is_refused_naming_the_flag(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        tune_command, ["--spec", "ppo", "--replay", str(tmp_path), "--env-runners", "-1"]
    )
    assert done.exit_code == 2
    assert "Invalid value for '--env-runners': -1 is not in the range x>=0." in done.output


def test_bundles_that_no_node_set_can_hold_are_refused_naming_the_need_and_the_nodes() -> None:
    nodes = [{"CPU": 1.0, "memory": 1e9}, {"CPU": 1.0, "memory": 1e9}]
    assert check_bundles_fit([{"CPU": 1.0}, {"CPU": 1.0}], nodes, env_runners=1)  # one bundle a node
    with pytest.raises(InputError) as refused:
        check_bundles_fit([{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}], nodes, env_runners=2)
    assert str(refused.value) == (
        "--env-runners 2: a trial needs 3 bundles (1 learner + 2 env runners: [{'CPU': 1.0}, {'CPU': 1.0}, "
        "{'CPU': 1.0}], 3 CPUs in all) but the cluster's 2 node(s) cannot hold them (CPUs per node: 1 + 1); "
        "lower --env-runners or add nodes"
    )


def test_enough_cpus_in_all_is_not_enough_when_no_node_holds_a_bundle() -> None:
    # 3 CPUs in all, but the 1-CPU node cannot take a 1.5-CPU bundle and the 2-CPU node holds one
    with pytest.raises(InputError, match=r"cannot hold them \(CPUs per node: 2 \+ 1\)"):
        check_bundles_fit([{"CPU": 1.5}, {"CPU": 1.5}], [{"CPU": 2.0}, {"CPU": 1.0}], env_runners=1)


def test_the_learner_bundle_takes_the_only_node_with_its_custom_resource() -> None:
    # the env runner must not take the slot node's CPU first: the search places the learner there
    nodes = [{"CPU": 1.0, "trial_slot": 1.0}, {"CPU": 1.0}]
    assert check_bundles_fit([{"CPU": 1.0}, {"CPU": 1.0, "trial_slot": 1.0}], nodes, env_runners=1)
    with pytest.raises(InputError):
        check_bundles_fit([{"CPU": 1.0, "trial_slot": 1.0}] * 2, nodes, env_runners=1)


def test_a_placement_search_too_large_to_finish_gives_up_undecided_quickly() -> None:
    # 24 nodes of different sizes hold at most 52 bundles of 0.6 CPU, though their 37.8 CPUs would
    # take 63: the exact search would run for ever; it stops undecided after FIT_SEARCH_STEPS
    nodes = [{"CPU": 1.0 + 0.05 * i} for i in range(24)]
    started = time.perf_counter()
    assert check_bundles_fit([{"CPU": 0.6}] * 55, nodes, env_runners=54) is False
    assert time.perf_counter() - started < 5.0
    assert check_bundles_fit([{"CPU": 0.6}] * 50, nodes, env_runners=49) is True
