"""The experiment contract: the arm a user falls in, and what an experiment may say."""

import pytest
from pydantic import ValidationError

from schemas.errors import AnnrecError
from schemas.experiments import Arm, Experiment
from schemas.layout import model_root

V1 = "20261201T000000.000000Z-aaaaaa"
V2 = "20261201T000001.000000Z-bbbbbb"


def _split(candidate_share: float, name: str = "ranker-test") -> Experiment:
    return Experiment(
        name=name,
        model="default",
        arms=[
            Arm(name="control", share=1 - candidate_share),
            Arm(name="candidate", version=V1, share=candidate_share),
        ],
    )


def test_a_ten_percent_split_of_100000_users_lands_within_half_a_point_and_is_sticky():
    experiment = _split(0.10)
    users = [f"u{i}" for i in range(100_000)]
    arms = [experiment.arm_for(u).name for u in users]
    share = arms.count("candidate") / len(users)
    assert abs(share - 0.10) <= 0.005, share
    # Another worker, or this one after a restart, reads the experiment from storage: the same
    # arm for every user (no user sees both arms).
    reread = Experiment.model_validate_json(experiment.model_dump_json())
    assert [reread.arm_for(u).name for u in users] == arms


def test_a_new_experiment_draws_a_new_split_and_growing_a_share_only_moves_control_users():
    users = [f"u{i}" for i in range(20_000)]
    first = [_split(0.10, "a").arm_for(u).name for u in users]
    other = [_split(0.10, "b").arm_for(u).name for u in users]
    assert first != other  # salted by the experiment's name
    grown = [_split(0.20, "a").arm_for(u).name for u in users]
    # Arms are laid out control first: raising the candidate's share moves users into it from
    # control, never out of it.
    assert all(g == "candidate" for f, g in zip(first, grown, strict=True) if f == "candidate")


@pytest.mark.parametrize(
    ("arms", "reason"),
    [
        ([Arm(name="control", share=0.5), Arm(name="candidate", version=V1, share=0.4)], "sum"),
        ([Arm(name="a", share=0.5), Arm(name="b", share=0.5)], "exactly one arm"),
        (
            [Arm(name="control", share=0.5), Arm(name="control", version=V1, share=0.5)],
            "names must differ",
        ),
        (
            [
                Arm(name="control", share=0.5),
                Arm(name="x", version=V2, share=0.25),
                Arm(name="y", version=V2, share=0.25),
            ],
            "same version",
        ),
    ],
)
def test_inconsistent_experiments_are_refused_with_the_reason(arms, reason):
    with pytest.raises(ValidationError, match=reason):
        Experiment(name="e", model="default", arms=arms)


@pytest.mark.parametrize("name", ["../etc", "..", "a/b", "", "Upper", "-x", "x" * 64])
def test_model_names_cannot_escape_the_storage_root(tmp_path, name):
    with pytest.raises(AnnrecError, match="not a model name"):
        model_root(tmp_path, name)


def test_the_default_model_is_the_storage_root_and_others_live_under_models(tmp_path):
    assert model_root(tmp_path, "default") == tmp_path
    assert model_root(tmp_path, "similar-eu") == tmp_path / "models" / "similar-eu"
