"""The ranks' configuration is frozen plain data; the test fault hook's format."""

import dataclasses
import pickle

import pytest
from helpers import make_config

from hvd_otto import InputError
from hvd_otto.common.rank_config import FAULT_ENV, FaultSpec, RankConfig


def test_config_is_frozen_and_replace_makes_a_new_one():
    config = make_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.resume = True
    resumed = dataclasses.replace(config, resume=True)
    assert resumed.resume and not config.resume


def test_config_crosses_to_ranks_as_pickled_data():
    config = make_config(fault=FaultSpec(rank=1, epoch=2))
    assert pickle.loads(pickle.dumps(config)) == config


def test_every_field_must_be_given():
    """No defaults here: they live in common.defaults, read by the Estimator."""
    with pytest.raises(TypeError):
        RankConfig(run_dir="x", train_url="y", val_url=None, n_features=1, n_classes=2,
                   model={})


@pytest.mark.parametrize("spec, expected", [
    (None, None),
    ("", None),
    ("rank=1,epoch=2", FaultSpec(1, 2, 1)),
    ("rank=0,epoch=3,batch=5", FaultSpec(0, 3, 5)),
    ("epoch=0,rank=1", FaultSpec(1, 0, 1)),
])
def test_fault_hook_parses(spec, expected):
    assert FaultSpec.parse(spec) == expected


@pytest.mark.parametrize("spec", ["rank=1", "rank=x,epoch=1", "rank=1,epoch=2,when=now",
                                  "garbage"])
def test_malformed_fault_hook_is_refused(spec):
    with pytest.raises(ValueError, match="expected rank=R,epoch=E"):
        FaultSpec.parse(spec)


def test_fault_hook_from_the_environment():
    assert FaultSpec.from_env({}) is None
    assert FaultSpec.from_env({FAULT_ENV: "rank=1,epoch=1"}) == FaultSpec(1, 1)
    with pytest.raises(InputError, match=FAULT_ENV):
        FaultSpec.from_env({FAULT_ENV: "rank=one"})
