"""A streaming voice-activity model shaped like Silero-VAD, and a client that streams to it.

``TinyVad`` takes a chunk of audio ``input`` [N, 64], a recurrent ``state`` [2, N, 8] (batch on
axis 1) and a scalar sample rate ``sr`` (int64, shape []), and returns a probability ``prob``
[N, 1] and the next state ``stateN`` [2, N, 8]. ``stream_over_grpc`` plays several audio streams
in turns through tritonclient, carrying each one's state as a client of a stateless server does:
``stateN`` of one call is the ``state`` of that stream's next call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NAME = "tiny-vad"
CHUNK, HIDDEN = 64, 8
INPUTS = ["input:Nx64:float32", "state:2xNx8:float32", "sr::int64"]
OUTPUTS = ["prob", "stateN"]
STATES = ["stateN=state"]


class TinyVad(torch.nn.Module):
    """Two stacked tanh cells over a chunk; the sample rate scales the chunk's projection."""

    def __init__(self) -> None:
        super().__init__()
        self.project = torch.nn.Linear(CHUNK, HIDDEN)
        self.recur = torch.nn.Linear(HIDDEN, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, 1)

    def forward(
        self, input: torch.Tensor, state: torch.Tensor, sr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.project(input) * (sr.to(torch.float32) / 16000.0)
        first = torch.tanh(x + self.recur(state[0]))
        second = torch.tanh(first + self.recur(state[1]))
        return torch.sigmoid(self.head(second)), torch.stack([first, second])


def chunks(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` chunks of unit-variance audio [count, 64] and random states [2, count, 8]."""
    rng = np.random.default_rng(seed)
    chunk = rng.standard_normal((count, CHUNK)).astype(np.float32)
    state = (0.5 * rng.standard_normal((2, count, HIDDEN))).astype(np.float32)  # samples on axis 1
    return chunk, state


def torch_step(model: TinyVad, chunk: np.ndarray, state: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    """What the original model answers for one call."""
    with torch.no_grad():
        prob, new = model(
            torch.from_numpy(np.array(chunk)),  # copies: tritonclient's arrays are read-only
            torch.from_numpy(np.array(state)),
            torch.tensor(sr, dtype=torch.int64),
        )
    return {"prob": prob.numpy(), "stateN": new.numpy()}


@dataclass(frozen=True)
class Streamed:
    """What a run of ``stream_over_grpc`` sent: its calls, and the last state of every stream."""

    requests: int
    last_states: list[np.ndarray]


def stream_over_grpc(
    url: str,
    *,
    streams: int,
    steps: int,
    sr: int,
    gain: float = 1.0,
    seed: int = 0,
    check: Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], None] | None = None,
) -> Streamed:
    """``steps`` chunks (``gain`` times unit-variance audio) of each of ``streams`` streams, in turns.

    One call per chunk: the bundle is built for one sample (its manifest serves ``[1, 64]``), so
    the streams take turns, each with its own state. ``check(chunk, state, outputs)`` sees each
    call's inputs and outputs before its stream's state moves on.
    """
    import tritonclient.grpc as triton

    rng = np.random.default_rng(seed)
    states = [np.zeros((2, 1, HIDDEN), np.float32) for _ in range(streams)]
    with triton.InferenceServerClient(url) as client:
        for _ in range(steps):
            for index, state in enumerate(states):
                chunk = (gain * rng.standard_normal((1, CHUNK))).astype(np.float32)
                outputs = _infer(client, triton, chunk, state, sr)
                if check is not None:
                    check(chunk, state, outputs)
                states[index] = outputs["stateN"]
    return Streamed(requests=steps * streams, last_states=states)


def _infer(client: Any, triton: Any, chunk: np.ndarray, state: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    tensors = [
        triton.InferInput("input", list(chunk.shape), "FP32"),
        triton.InferInput("state", list(state.shape), "FP32"),
        triton.InferInput("sr", [], "INT64"),  # a scalar: shape []
    ]
    tensors[0].set_data_from_numpy(chunk)
    tensors[1].set_data_from_numpy(state)
    tensors[2].set_data_from_numpy(np.array(sr, np.int64))
    result = client.infer(NAME, tensors)
    outputs = {name: result.as_numpy(name) for name in OUTPUTS}
    assert all(value is not None for value in outputs.values()), outputs
    return {name: np.asarray(value) for name, value in outputs.items()}
