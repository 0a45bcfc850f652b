"""FedAvg's arithmetic: fp16 deltas, the sample-weighted average, BatchNorm statistics and step counters."""

from __future__ import annotations

import pytest
import torch

from shared.training.fedavg import (
    apply_delta,
    average_deltas,
    delta_state,
    federated_average,
    load_update,
    sample_weights,
    serialize_update,
    update_layout,
)
from shared.wire.features import Reason, WireError


def toy(weight: list[float], running_mean: list[float], steps: int) -> dict[str, torch.Tensor]:
    """A state dict shaped like one conv + BatchNorm: float weights and statistics, an int64 counter."""
    return {
        "model.0.conv.weight": torch.tensor(weight, dtype=torch.float32).reshape(2, 1, 1, 1),
        "model.0.bn.running_mean": torch.tensor(running_mean, dtype=torch.float32),
        "model.0.bn.num_batches_tracked": torch.tensor(steps, dtype=torch.int64),
    }


GLOBAL = toy([1.0, 2.0], [0.5, -0.5], 10)


class TestWeightedAverage:
    """Weights are sample shares; the average of local models is exact where the numbers are representable."""

    def test_weights_are_sample_shares(self) -> None:
        assert sample_weights({"b": 3, "a": 1}) == {"a": 0.25, "b": 0.75}
        assert sample_weights({"a": 2, "b": 0}) == {"a": 1.0}
        with pytest.raises(ValueError, match="no edge"):
            sample_weights({"a": 0})

    def test_exact_on_toy_state_dicts(self) -> None:
        a = toy([2.0, 4.0], [1.0, 0.0], 13)
        b = toy([3.0, 0.0], [0.0, 1.0], 11)
        deltas = {"a": delta_state(a, GLOBAL), "b": delta_state(b, GLOBAL)}
        result = federated_average(GLOBAL, deltas, {"a": 1, "b": 3})
        assert torch.equal(result["model.0.conv.weight"].flatten(), torch.tensor([2.75, 1.0]))  # 0.25·a + 0.75·b
        assert torch.equal(result["model.0.bn.running_mean"], torch.tensor([0.25, 0.75]))  # statistics averaged too
        assert result["model.0.bn.num_batches_tracked"].item() == 13  # global 10 + max(3, 1) steps
        assert all(result[k].dtype == v.dtype for k, v in GLOBAL.items())

    def test_float32_accumulation(self) -> None:
        small = [{"w": torch.full((4,), 1e-4, dtype=torch.float16)} for _ in range(1000)]
        average = average_deltas(small, [1 / 1000] * 1000)
        assert average["w"].dtype == torch.float32
        assert torch.allclose(average["w"], torch.full((4,), 1e-4), rtol=1e-3)

    def test_refuses_mismatched_inputs(self) -> None:
        with pytest.raises(ValueError, match="sum to"):
            average_deltas([delta_state(GLOBAL, GLOBAL)], [0.5])
        with pytest.raises(ValueError, match="different entries"):
            apply_delta(GLOBAL, {"model.0.conv.weight": torch.zeros(2, 1, 1, 1)})


class TestUpdateFile:
    """An update is fp16 deltas (int64 counters) in safetensors; loading checks its layout and finiteness."""

    def test_layout_and_round_trip(self) -> None:
        layout = update_layout(GLOBAL)
        assert layout["model.0.conv.weight"] == ("F16", (2, 1, 1, 1))
        assert layout["model.0.bn.num_batches_tracked"] == ("I64", ())
        delta = delta_state(toy([1.5, 2.0], [0.5, -0.5], 12), GLOBAL)
        loaded = load_update(serialize_update(delta, {"k": "v"}), layout)
        assert loaded["model.0.conv.weight"].dtype == torch.float16
        assert loaded["model.0.conv.weight"].flatten().tolist() == [0.5, 0.0]
        assert loaded["model.0.bn.num_batches_tracked"].item() == 2

    @pytest.mark.parametrize(
        ("bend", "reason"),
        [
            (
                lambda d: d.update({"model.0.conv.weight": torch.zeros(3, 1, 1, 1, dtype=torch.float16)}),
                "model-mismatch",
            ),
            (lambda d: d.update({"model.9.extra": torch.zeros(1, dtype=torch.float16)}), "model-mismatch"),
            (lambda d: d.pop("model.0.bn.running_mean"), "model-mismatch"),
            (lambda d: d.update({"model.0.bn.running_mean": torch.zeros(2)}), "model-mismatch"),  # float32
            (lambda d: d["model.0.bn.running_mean"].fill_(float("nan")), "non-finite"),
            (lambda d: d["model.0.conv.weight"].fill_(float("inf")), "non-finite"),
        ],
        ids=["wrong-shape", "extra-key", "missing-key", "wrong-dtype", "nan", "inf"],
    )
    def test_refused(self, bend: object, reason: str) -> None:
        delta = delta_state(GLOBAL, GLOBAL)
        bend(delta)  # type: ignore[operator]
        with pytest.raises(WireError) as err:
            load_update(serialize_update(delta, {}), update_layout(GLOBAL))
        assert err.value.reason == Reason(reason)

    def test_truncated_file(self) -> None:
        blob = serialize_update(delta_state(GLOBAL, GLOBAL), {})
        with pytest.raises(WireError, match=r"size-mismatch|undecodable"):
            load_update(blob[:-2], update_layout(GLOBAL))
        with pytest.raises(WireError, match="oversize"):
            load_update((1 << 40).to_bytes(8, "little") + blob[8:], update_layout(GLOBAL))
