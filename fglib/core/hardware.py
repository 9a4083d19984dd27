"""The hardware a run ran on: what decides whether training is bit-reproducible, and what precision
`train.amp` means on it.

- `cpu_kind()`: the CPU model, its vector instruction sets, the instruction sets torch and oneDNN were
  allowed to use, and the torch version.
- `resolve_precision(amp, device)`: what `train.amp` means on this machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from pathlib import Path

import torch

_ISA_PREFIXES = ("sse", "ssse3", "avx", "amx", "fma", "f16c", "vnni")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    """(CPU model, vector ISA flags) from /proc/cpuinfo (x86: model name + flags; ARM: part + Features)."""
    model, flags, arm = platform.processor() or platform.machine(), (), {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model in ("", platform.machine(), platform.processor()):
            model = value.strip()
        elif key == "flags" and not flags:
            flags = tuple(sorted(f for f in value.split() if f.startswith(_ISA_PREFIXES)))
        elif key in ("CPU implementer", "CPU part", "CPU variant") and key not in arm:
            arm[key] = value.strip()
        elif key == "Features" and not flags:                   # ARM: sve, bf16, asimd...
            flags = tuple(sorted(value.split()))
    if arm and model in ("", platform.machine(), platform.processor()):
        model = f"{platform.machine()} " + " ".join(f"{k.split()[-1]}={v}" for k, v in sorted(arm.items()))
    return model, flags


def _onednn_max_isa() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has BF16 instructions and neither torch nor oneDNN was told not to use them."""
    _, flags = _cpuinfo()
    has = bool({"avx512_bf16", "amx_bf16"} & set(flags))
    capability = torch.backends.cpu.get_cpu_capability().upper()
    isa = _onednn_max_isa()
    onednn_ok = isa in ("", "ALL", "DEFAULT") or any(w in isa for w in ("BF16", "AMX", "AVX10"))
    return has and capability.startswith("AVX512") and onednn_ok


AUTO_PRECISION_ENV = "FGLIB_AUTO_PRECISION"


def resolve_precision(amp: bool | str, device_type: str) -> str:
    """'float16', 'bfloat16' or 'float32': what `train.amp` means on this device.

    FGLIB_AUTO_PRECISION=float32|bfloat16 fixes what "auto" means on a CPU: the store's verification
    re-trains a run in the precision it was recorded in, so that another CPU changes only the
    summation order, not the arithmetic."""
    if amp is False:
        return "float32"
    if device_type == "cuda":
        return "float16"
    if amp is True:
        return "bfloat16"
    forced = os.environ.get(AUTO_PRECISION_ENV, "")
    if forced:
        if forced not in ("float32", "bfloat16"):
            raise ValueError(f"{AUTO_PRECISION_ENV} must be float32 or bfloat16, got {forced!r}")
        return forced
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def cpu_kind() -> dict[str, object]:
    """What a bit-exact re-run needs to share with the recording machine (and a short id of it)."""
    model, flags = _cpuinfo()
    kind = {"cpu": model, "isa_flags": " ".join(flags),
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": _onednn_max_isa() or "default",
            "torch": torch.__version__.split("+")[0]}
    kind["id"] = hashlib.sha256(json.dumps(kind, sort_keys=True).encode()).hexdigest()[:10]
    return kind
