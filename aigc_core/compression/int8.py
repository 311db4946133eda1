"""Dynamic int8 quantization: int8 weights for `nn.Linear` and `nn.LSTM`, activations quantized
on the fly.

References:
- Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
  Only Inference" (2017), arXiv:1712.05877: affine int8 quantization.
- PyTorch's dynamic quantization (`torch.ao.nn.quantized.dynamic`, fbgemm/x86 kernels): weights
  stored in int8, each activation batch quantized with its own range as it arrives, so no
  calibration data is needed. It is what language models gain from on the CPU: their matmuls
  are small and run once per generated character.

Stored format (`weights.safetensors`, safetensors metadata {"quantization": "dynamic-int8"}):
each quantized weight `<name>` is int8 (out, in), symmetric per output channel (q in
[-127, 127], no zero point), beside `<name>_scale` float32 (out,): w ~ q * scale[:, None]; every
other tensor as the float model stores it. The format is ours, not torch's packed objects (which
safetensors cannot hold, and torch may change): `load_int8` rebuilds the float module with the
dequantized weights (its keys checked as for any model), then, on the CPU, swaps each quantized
layer for torch's dynamic int8 module holding exactly the stored integers and scales. Elsewhere
than on the CPU (no such kernels) the model runs in float with the dequantized weights.

Chosen by measurement (benchmarks/compress.py; transformer cpu preset, 16 x 64 tokens, on the
project's 2-core AVX-512 BF16 CPU): torch's dynamic int8 kernels ran the forward 1.2x faster than
fp32; torchao 0.18's `Int8DynamicActivationInt8WeightConfig` and `Int8WeightOnlyConfig`, its
maintained successors, 2.8x and 1.7x slower than fp32 without torch.compile (they are built for
it), and they would add a dependency to every served model. What int8 buys depends on the
shape of the work: the files are 3.5-3.8x smaller and held-out bits per character 0.04%
(charlstm) and 0.14% (transformer) worse, but since generation decodes incrementally (one token
of each row per call) the per-call cost of quantizing activations dominates, and int8
generation measured slower than fp32 on that CPU (0.1-0.4x, a busy machine) and about even to
1.5x faster under AVX2 kernels; a whole-context forward (scoring, a prompt) gains.

Torch 2.13 warns that its quantized tensor types are deprecated (pytorch/pytorch#184982) each
time one is made; those warnings are silenced where this module makes them, as they tell a user
nothing they can act on. Should torch drop the kernels, the stored format stays and only
`_quantized_linear` / `_quantized_lstm` change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from aigc_core.compression import CompressInputs, Compression
from aigc_core.models.io import CONFIG, QUANTIZATION, WEIGHTS, read_config, save_state

log = logging.getLogger(__name__)

METHOD = "dynamic-int8"
SCALE = "_scale"  # `<weight name>_scale`: its per-output-channel scales
QMAX = 127  # symmetric: -128 is never used, so negating a weight is exact


def dynamic_int8(load_generator: Callable, tolerance: float) -> Compression:
    """A family's `Compression` by dynamic int8 quantization; `load_generator` is the family's
    (its generator's `.module` is the float model to quantize)."""
    return Compression(METHOD, tolerance, functools.partial(apply_dynamic_int8, load_generator))


def apply_dynamic_int8(load_generator: Callable, inputs: CompressInputs) -> None:
    """Write the parent's model with int8 weights into `inputs.out_dir` (no calibration: the
    snapshot is not read)."""
    parent = Path(inputs.parent_dir)
    config = read_config(parent / CONFIG)
    module = load_generator(parent / WEIGHTS, parent / CONFIG, "cpu").module
    state = int8_state(module)
    layers = sorted({k.removesuffix(SCALE) for k in state if k.endswith(SCALE)})
    if not layers:
        raise ValueError(
            f"the {config.get('family')} model in {parent} has no nn.Linear or nn.LSTM weights "
            "to quantize"
        )
    block = {"method": METHOD, "weights": "int8, symmetric per output channel", "layers": layers}
    save_state(inputs.out_dir, state, {**config, "compression": block}, {QUANTIZATION: METHOD})
    log.info("quantized %d weight matrices of %s to int8", len(layers), config.get("family"))


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weights -> int8 (out, in) and float32 scales (out,), symmetric per
    output channel: round(w / scale) with scale = max |w| of the row / 127."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1)  # (out,)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))  # an all-zero row: any
    q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]  # (out, in)


def _quantized_names(module: nn.Module) -> Iterator[tuple[str, nn.Module, list[str]]]:
    """(prefix, layer, its weight names) of each layer dynamic quantization supports."""
    for prefix, m in module.named_modules():
        if type(m) is nn.Linear:  # not subclasses: their forward may differ
            yield prefix, m, ["weight"]
        elif type(m) is nn.LSTM:
            names = [n for n, _ in m.named_parameters() if n.startswith(("weight_ih", "weight_hh"))]
            yield prefix, m, names


def int8_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict with the weights of its `nn.Linear` and `nn.LSTM` layers as int8
    plus `<name>_scale`; every other tensor as it is."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for prefix, layer, names in _quantized_names(module):
        _check_supported(prefix, layer)
        for n in names:
            key = f"{prefix}.{n}" if prefix else n
            state[key], state[key + SCALE] = quantize_weight(state[key])
    return state


def _check_supported(prefix: str, layer: nn.Module) -> None:
    if isinstance(layer, nn.LSTM) and (not layer.bias or layer.proj_size):
        raise ValueError(
            f"layer {prefix!r}: dynamic int8 needs an nn.LSTM with biases and no projection"
        )


def dequantized_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A quantized state dict as the float model's: each int8 weight times its scales."""
    out = {}
    for key, v in state.items():
        if key.endswith(SCALE):
            continue
        if v.dtype == torch.int8:
            if key + SCALE not in state:
                raise ValueError(f"int8 weight {key!r} has no {key + SCALE!r}: a damaged file?")
            v = dequantize(v, state[key + SCALE])
        out[key] = v
    return out


def load_int8(
    module: nn.Module, state: dict[str, torch.Tensor], device: str | torch.device = "cpu"
) -> nn.Module:
    """Fill a freshly built float `module` from a dynamic-int8 state dict; on the CPU its
    quantized layers become torch's dynamic int8 modules with the stored integers and scales.
    Returns the module on `device`, in eval mode."""
    module.load_state_dict(dequantized_state(state))  # strict: the float model's own keys
    device = torch.device(device)
    if device.type != "cpu":
        log.info(
            "dynamic int8 kernels run on the CPU only: the model runs dequantized on %s", device
        )
        return module.to(device).eval()
    swapped = set()
    for prefix, layer, names in list(_quantized_names(module)):
        keys = [f"{prefix}.{n}" if prefix else n for n in names]
        if not all(state[k].dtype == torch.int8 for k in keys):
            continue
        ints = {n: (state[k], state[k + SCALE]) for n, k in zip(names, keys, strict=True)}
        if isinstance(layer, nn.LSTM):
            new = _quantized_lstm(layer, ints)
        else:
            new = _quantized_linear(layer, *ints["weight"])
        _replace(module, prefix, new)
        swapped.update(keys)
    left = sorted(k for k, v in state.items() if v.dtype == torch.int8 and k not in swapped)
    if left:
        raise ValueError(
            f"int8 weights {left} belong to layers that dynamic int8 does not run (only "
            "nn.Linear and nn.LSTM): the file does not match this model"
        )
    return module.eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch 2.13's deprecation warnings of quantized tensors (see the module's
    docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        yield


def _qweight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """A torch qint8 per-channel tensor holding exactly the integers q with `scale`: q * scale
    divided by the same scale rounds back to q (|q| <= 127, far from a tie)."""
    zero = torch.zeros(scale.shape[0], dtype=torch.long)
    return torch.quantize_per_channel(dequantize(q, scale), scale.double(), zero, 0, torch.qint8)


def _quantized_linear(layer: nn.Linear, q: torch.Tensor, scale: torch.Tensor) -> nn.Module:
    from torch.ao.nn.quantized.dynamic import Linear

    with _quiet():
        new = Linear(layer.in_features, layer.out_features, layer.bias is not None, torch.qint8)
        bias = None if layer.bias is None else layer.bias.detach().float()
        new.set_weight_bias(_qweight(q, scale), bias)
    return new


def _quantized_lstm(layer: nn.LSTM, ints: dict) -> nn.Module:
    """torch's dynamic int8 LSTM with the given weights: what its `from_float` builds, from our
    integers instead of its own observers."""
    from torch.ao.nn.quantized.dynamic import LSTM
    from torch.ao.nn.quantized.dynamic.modules.rnn import PackedParameter

    with _quiet():
        new = LSTM(
            layer.input_size,
            layer.hidden_size,
            layer.num_layers,
            layer.bias,
            layer.batch_first,
            layer.dropout,
            layer.bidirectional,
            torch.qint8,
        )
        cells = []
        for i in range(layer.num_layers):
            for suffix in ("", "_reverse")[: 1 + layer.bidirectional]:
                packed, biases = [], []
                for part in ("ih", "hh"):
                    bias = getattr(layer, f"bias_{part}_l{i}{suffix}").detach().float()
                    qw = _qweight(*ints[f"weight_{part}_l{i}{suffix}"])
                    packed.append(torch.ops.quantized.linear_prepack(qw, bias))
                    biases.append(bias)
                cell = torch.ops.quantized.make_quantized_cell_params_dynamic(
                    *packed, *biases, True
                )
                cells.append(PackedParameter(cell))
        new._all_weight_values = nn.ModuleList(cells)
    return new


def _replace(root: nn.Module, prefix: str, new: nn.Module) -> None:
    parent, _, name = prefix.rpartition(".")
    if not name:
        raise ValueError("the model itself is a single layer: wrap it in a module to quantize it")
    setattr(root.get_submodule(parent) if parent else root, name, new)
