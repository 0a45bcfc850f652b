"""FedAvg's arithmetic, pure: an edge's update as an fp16 delta, and the cloud's sample-weighted average.

An update is ``local - global`` for every state-dict entry: floating entries (weights, biases and
BatchNorm running statistics, all averaged) travel as float16; integer entries
(``num_batches_tracked``) as int64. The cloud averages float deltas with float32 accumulation and
takes the *maximum* of the integer deltas (the longest local run's step count: a sum would count
steps no single model took; YOLOv5's BatchNorm uses a fixed momentum, so the counter never scales
anything).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from shared.wire.features import Reason, WireError
from shared.wire.update import TensorSpec, check_update_file

State = dict[str, torch.Tensor]
_SAFETENSORS_DTYPE = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def update_layout(global_state: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """``name -> (safetensors dtype, shape)`` an update of ``global_state`` must have exactly."""
    layout = {}
    for name, tensor in sorted(global_state.items()):
        dtype = torch.float16 if tensor.is_floating_point() else torch.int64
        layout[name] = (_SAFETENSORS_DTYPE[dtype], tuple(tensor.shape))
    return layout


def delta_state(local: Mapping[str, torch.Tensor], global_state: Mapping[str, torch.Tensor]) -> State:
    """``local - global`` per entry on the CPU: float16 for floating entries, int64 for the others."""
    if set(local) != set(global_state):
        raise ValueError("local and global state dicts hold different entries")
    delta: State = {}
    for name, base in sorted(global_state.items()):
        value = local[name].detach().cpu()
        if base.is_floating_point():
            delta[name] = (value.float() - base.detach().cpu().float()).half().contiguous()
        else:
            delta[name] = (value.long() - base.detach().cpu().long()).contiguous()
    return delta


def serialize_update(delta: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors bytes of an update (deterministic for the same tensors and metadata)."""
    blob: bytes = save_tensors(dict(delta), metadata=dict(metadata))
    return blob


def load_update(blob: bytes, layout: dict[str, TensorSpec]) -> State:
    """Tensors of an update file after its header matched ``layout``; every float must be finite."""
    check_update_file(blob, layout)
    try:
        tensors = load_tensors(blob)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise WireError(Reason.UNDECODABLE, f"update file does not load ({type(exc).__name__}: {exc})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WireError(Reason.NON_FINITE, f"tensor {name} holds NaN or infinity")
    return tensors


def sample_weights(samples: Mapping[str, int]) -> dict[str, float]:
    """FedAvg weights: each edge's share of the training samples (edges with none are left out)."""
    total = sum(n for n in samples.values() if n > 0)
    if total <= 0:
        raise ValueError("no edge reported any training samples")
    return {edge: n / total for edge, n in sorted(samples.items()) if n > 0}


def average_deltas(deltas: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> State:
    """``Σ wᵢ·Δᵢ`` in float32 for floating entries, ``max Δᵢ`` for integer ones; weights must sum to 1."""
    if not deltas or len(deltas) != len(weights):
        raise ValueError(f"{len(deltas)} deltas for {len(weights)} weights")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"weights sum to {sum(weights)}, not 1")
    names = set(deltas[0])
    if any(set(d) != names for d in deltas[1:]):
        raise ValueError("updates hold different entries")
    average: State = {}
    for name in sorted(names):
        first = deltas[0][name]
        if first.is_floating_point():
            acc = torch.zeros(first.shape, dtype=torch.float32)
            for delta, weight in zip(deltas, weights, strict=True):
                acc.add_(delta[name].float(), alpha=weight)
            average[name] = acc
        else:
            average[name] = torch.stack([d[name].long() for d in deltas]).amax(dim=0)
    return average


def apply_delta(global_state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> State:
    """The new global state: ``global + delta`` in float32, each entry back in the global dtype."""
    if set(global_state) != set(delta):
        raise ValueError("the averaged update and the global model hold different entries")
    result: State = {}
    for name, base in global_state.items():
        if base.is_floating_point():
            result[name] = (base.float() + delta[name].float()).to(base.dtype)
        else:
            result[name] = base + delta[name].to(base.dtype)
    return result


def federated_average(
    global_state: Mapping[str, torch.Tensor],
    updates: Mapping[str, Mapping[str, torch.Tensor]],
    samples: Mapping[str, int],
) -> State:
    """One FedAvg step: ``global + Σ (nᵢ/n)·Δᵢ`` over the edges in ``updates``, weighted by ``samples``."""
    weights = sample_weights({edge: samples[edge] for edge in updates})
    edges = sorted(weights)
    return apply_delta(global_state, average_deltas([updates[e] for e in edges], [weights[e] for e in edges]))
