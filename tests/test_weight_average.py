"""The moving average of weights kept by training, against values computed by hand."""
from __future__ import annotations

import pytest
import torch

from deepcl_core.training.weight_average import WeightAverage


def shifted(network: torch.nn.Module, by: float) -> None:
    with torch.no_grad():
        for value in network.state_dict().values():
            value.add_(by if value.is_floating_point() else 1)


def test_average_follows_the_warm_up_of_its_decay_then_the_decay():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in network.state_dict().items()}
    average = WeightAverage(network, decay=0.3)
    shifted(network, 1.0)
    average.update(network)  # decay min(0.3, 2/11): the average moves 9/11 of the way
    weights = average.network.state_dict()
    assert torch.allclose(weights["0.weight"], start["0.weight"] + 9 / 11)
    assert torch.allclose(weights["1.running_var"], start["1.running_var"] + 9 / 11)
    assert weights["1.num_batches_tracked"] == start["1.num_batches_tracked"] + 1  # copied, not averaged
    shifted(network, 1.0)
    for _ in range(3):  # decays 3/12, then the cap 0.3 (4/13 is above it): each keeps that share of the gap
        average.update(network)
    expected = start["0.bias"] + 2 - (2 - 9 / 11) * (3 / 12) * 0.3 * 0.3
    assert torch.allclose(average.network.state_dict()["0.bias"], expected)


def test_the_average_is_a_copy_that_needs_no_gradient_and_resumes():
    network = torch.nn.Linear(3, 1)
    average = WeightAverage(network, decay=0.9)
    assert all(not p.requires_grad for p in average.network.parameters())
    shifted(network, 2.0)
    average.update(network)
    again = WeightAverage(torch.nn.Linear(3, 1), decay=0.9)
    again.load_state_dict(average.state_dict())
    assert again.updates == 1
    assert torch.equal(again.network.weight, average.network.weight)
    assert not torch.equal(average.network.weight, network.weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_a_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(1, 1), decay)
