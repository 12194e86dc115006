"""Device and precision: where a model runs, and in which floating-point type.

float32 on the CPU by default. ``device`` is ``cpu``, ``cuda`` or ``cuda:N``; ``dtype`` is
``float32``, ``bfloat16`` or ``float16``. Low precision is opt-in, because it changes the
numbers: the model's weights and activations are in that type, but every metric and statistic
is computed in float64 from the logits (:func:`scrub._metrics.per_example_metric` casts them
before the log-softmax), and what is verified at load (the architecture's facts, the fast
engine's kernels) is verified in float32: before the cast, or on a float32 copy of the cast
weights (exact, since every bfloat16 and float16 value is a float32 value).

Pitfalls: float16 has a small range (largest value 65504): a model whose activations exceed it
(the compiled tracr models do) produces infinities, so a float16 model is refused when a probe
pass on random tokens is not finite (:func:`non_finite_error`); bfloat16 has float32's range
but 8 bits of mantissa. The measured error against float32 on the shipped models is in
``benchmarks/README.md``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPES",
    "PrecisionError",
    "check_precision",
    "dtype_name",
    "non_finite_error",
    "parse_device",
    "parse_dtype",
    "probe_precision",
    "unsupported_error",
]

DTYPES = ("float32", "bfloat16", "float16")
"""The floating-point types a model can be loaded in (``--dtype``), the default first."""

_CUDA_HINT = (
    "install a CUDA build of torch (see https://pytorch.org/get-started/locally/) on a machine "
    "with an NVIDIA GPU and its driver, or use --device cpu (device='cpu')"
)


class PrecisionError(ValueError):
    """A device or dtype that cannot be used here (the message says what to use instead).

    Attributes:
        problem: what is wrong.
        hint: how to fix it.
    """

    def __init__(self, problem: str, *, hint: str) -> None:
        self.problem, self.hint = problem, hint
        super().__init__(f"{problem}\n  hint: {hint}")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The torch dtype named ``dtype`` (one of :data:`DTYPES`, or a torch dtype among them).

    Raises:
        PrecisionError: any other name or type.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        if dtype_name(dtype) in DTYPES:
            return dtype
        name = str(dtype)
    else:
        name = str(dtype)
        if name in DTYPES:
            return getattr(torch, name)
    raise PrecisionError(
        f"unknown dtype {name!r}", hint=f"dtypes: {', '.join(DTYPES)} (float32 is the default)"
    )


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"`` (as results record it)."""
    return str(dtype).removeprefix("torch.")


def parse_device(device: str | torch.device) -> torch.device:
    """The torch device named ``device``: ``cpu``, ``cuda`` or ``cuda:N``, checked to exist.

    Raises:
        PrecisionError: another kind of device, CUDA asked for where this torch has none, or
            a GPU index past the last GPU.
    """
    import torch

    text = str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise PrecisionError(
            f"unknown device {text!r}", hint="devices: cpu (the default), cuda, cuda:N"
        )
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = torch.__version__
        why = (
            f"this torch ({build}) is a CPU-only build"
            if torch.version.cuda is None
            else f"this torch ({build}, CUDA {torch.version.cuda}) finds no GPU"
        )
        raise PrecisionError(
            f"device {text!r} asked for, but CUDA is not available: {why}", hint=_CUDA_HINT
        )
    parsed = torch.device(text)
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise PrecisionError(
            f"device {text!r} asked for, but this machine has {count} GPU(s)",
            hint=f"use cuda:0 .. cuda:{count - 1}",
        )
    return parsed


def non_finite_error(source: str, dtype: torch.dtype) -> PrecisionError:
    """The error for a model whose probe pass in ``dtype`` is not finite (float16 overflow)."""
    name = dtype_name(dtype)
    return PrecisionError(
        f"model {source!r} does not run in {name}: a probe pass on random tokens produced "
        f"non-finite values (its activations exceed {name}'s range)",
        hint="use --dtype bfloat16 (float32's range) or float32 (the default)",
    )


def unsupported_error(source: str, dtype: torch.dtype, device: torch.device, exc: Exception):
    """The error for a model whose probe pass in ``dtype`` raised (an op without that type)."""
    name = dtype_name(dtype)
    return PrecisionError(
        f"model {source!r} cannot run in {name} on {device}: "
        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
        hint="use --dtype float32 (the default)"
        + (" or run on a GPU (--device cuda)" if device.type == "cpu" else ""),
    )


def check_precision(
    model: Any, *, device: str | torch.device | None, dtype: str | torch.dtype | None
) -> None:
    """Check that a loaded model runs on ``device`` in ``dtype`` (``None``: whatever it does).

    Raises:
        PrecisionError: it does not (a loaded model is not moved or cast behind its owner's back).
    """
    if device is None and dtype is None:
        return
    wrong: dict[str, str] = {}
    if device is not None:
        asked = parse_device(device)
        has = model.device
        if asked.type != has.type or asked.index not in (None, has.index):
            wrong["device"] = str(asked)
    if dtype is not None and parse_dtype(dtype) != model.dtype:
        wrong["dtype"] = dtype_name(parse_dtype(dtype))
    has_now = model.precision
    if wrong:
        what = ", ".join(f"{k} {v!r}" for k, v in wrong.items())
        runs = ", ".join(f"{k} {has_now[k]!r}" for k in wrong)
        raise PrecisionError(
            f"{what} asked for, but model {model.source!r} was loaded with {runs}",
            hint="load it with scrub.load_model(source, device=..., dtype=...), or pass the "
            "model's source instead of the loaded model",
        )


def probe_precision(model: Any) -> None:
    """One pass of a :class:`~scrub.ScrubModel` on random tokens in its low precision: refuse
    the model if that fails.

    Raises:
        PrecisionError: an op without this dtype on this device, or non-finite logits.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(
        0, model.shape.d_vocab, (2, min(8, model.shape.n_ctx)), generator=generator
    )
    try:
        with torch.inference_mode():
            logits = model.run(tokens)[0]
    except (RuntimeError, NotImplementedError) as exc:
        raise unsupported_error(model.source, model.dtype, model.device, exc) from None
    if not bool(torch.isfinite(logits).all()):
        raise non_finite_error(model.source, model.dtype)


PrecisionError.__module__ = "scrub"
