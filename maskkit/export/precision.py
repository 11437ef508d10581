"""Inference precision: what the CPU computes natively, and which precision and runtime a model
file runs in (``--precision fp32|bf16|int8|auto``).

- ``fp32``: the faithful default (evaluation reports AP at float32).
- ``bf16``: bfloat16 matrix arithmetic where the CPU has it natively (AMX-BF16 or AVX512-BF16):
  OpenVINO's bf16 inference hint for an exported file, PyTorch bf16 autocast on the fused
  inference modules for a model file. On a CPU without it, asking for bf16 is one clear error,
  never a silent slow emulation.
- ``int8``: a file quantized at export (``maskkit export --quantize int8``): int8 convolutions
  (VNNI / AMX-INT8 where present) under OpenVINO (or ONNX Runtime), the rest in float32.
- ``auto``: the fastest of those the file and the CPU support natively, and why.

Plain Python (no torch): the torch-free runner of exported files uses it too.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from maskkit.errors import MaskkitError

__all__ = [
    "PRECISIONS",
    "CpuFeatures",
    "cpu_features",
    "Choice",
    "choose_precision",
]

PRECISIONS = ("fp32", "bf16", "int8", "auto")
# CPU flags that matter here, as Linux /proc/cpuinfo names them (x86 and Arm)
_FLAGS = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "bf16", "i8mm")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's low-precision arithmetic, as found (``source`` says how)."""

    flags: frozenset[str]
    model: str = ""
    source: str = ""

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags or "amx_bf16" in self.flags

    @property
    def bf16(self) -> bool:
        """Native bfloat16 dot products (AMX-BF16, AVX512-BF16, or Arm's BF16)."""
        return bool(self.flags & {"amx_bf16", "avx512_bf16", "bf16"})

    @property
    def int8(self) -> bool:
        """Native int8 dot products (AMX-INT8, AVX512-VNNI / AVX-VNNI, or Arm's I8MM)."""
        return bool(self.flags & {"amx_int8", "avx512_vnni", "avx_vnni", "i8mm"})

    def describe(self) -> str:
        """One line: the CPU and its AMX / VNNI / AVX512-BF16 (how they were found)."""

        def yes(*names: str) -> str:
            return "yes" if self.flags & set(names) else "no"

        return (
            f"{self.model or platform.machine() or 'CPU'}: AMX {yes('amx_tile', 'amx_bf16')}, "
            f"AVX512-BF16 {yes('avx512_bf16')}, VNNI {yes('avx512_vnni', 'avx_vnni')}"
            + (
                f", Arm BF16 {yes('bf16')}, I8MM {yes('i8mm')}"
                if platform.machine().startswith(("arm", "aarch"))
                else ""
            )
            + f" ({self.source})"
        )


def _from_cpuinfo() -> tuple[frozenset[str], str] | None:
    try:
        text = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:
        return None
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags |= set(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return frozenset(flags & set(_FLAGS)), model


def cpu_features() -> CpuFeatures:
    """What this CPU computes natively. ``MASKKIT_CPU_FEATURES`` (comma-separated flags, e.g.
    ``avx512_vnni`` or empty for none) overrides the probe: for tests and for checking what a
    deployment CPU would get. Else Linux's /proc/cpuinfo; elsewhere OpenVINO's capabilities."""
    forced = os.environ.get("MASKKIT_CPU_FEATURES")
    if forced is not None:
        flags = frozenset(f.strip().lower() for f in forced.split(",") if f.strip())
        return CpuFeatures(flags, "", "MASKKIT_CPU_FEATURES")
    found = _from_cpuinfo()
    if found is not None:
        return CpuFeatures(found[0], found[1], "/proc/cpuinfo")
    try:  # macOS, Windows: OpenVINO knows what its CPU plugin can run natively
        import openvino as ov

        caps = set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        flags = {"avx512_bf16"} if "BF16" in caps else set()
        return CpuFeatures(frozenset(flags | ({"avx512_vnni"} if "INT8" in caps else set())), "", "OpenVINO")
    except Exception:  # noqa: BLE001 - no OpenVINO, or it cannot tell: nothing known natively
        return CpuFeatures(frozenset(), "", "unknown")


@dataclass(frozen=True)
class Choice:
    """A precision decision: what runs, on which runtime, and why (one line for the user)."""

    precision: str  # fp32 | bf16 | int8
    runtime: str  # eager | onnxruntime | openvino
    reason: str


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_precision(
    requested: str | None,
    file_precision: str,
    kind: str,
    what: str = "the model",
    features: CpuFeatures | None = None,
    runtime: str | None = None,
) -> Choice:
    """The precision and runtime ``what`` runs in.

    ``requested``: fp32 | bf16 | int8 | auto, or None for the file's own precision;
    ``file_precision``: "fp32" (float weights) or "int8" (quantized at export); ``kind``:
    "onnx" (an exported file) or "eager" (a model file run by PyTorch); ``runtime``: an
    exported file's runtime when the user named one. Raises one-line :class:`MaskkitError`s."""
    if requested not in (None, *PRECISIONS):
        raise MaskkitError(f"--precision {requested}: choose one of {', '.join(PRECISIONS)}")
    features = features or cpu_features()
    if file_precision == "int8":
        if requested in ("fp32", "bf16"):
            raise MaskkitError(
                f"{what} is an INT8 file: it runs in int8 (--precision int8 or auto); export the model "
                "file again without --quantize for float"
            )
        rt = runtime or ("openvino" if _has_openvino() else "onnxruntime")
        how = "native" if features.int8 else "not native on this CPU (no VNNI / AMX-INT8): slower"
        return Choice("int8", rt, f"int8 ({what} is quantized; int8 arithmetic {how})")
    if requested == "int8":
        raise MaskkitError(
            f"{what} holds float weights: make an INT8 file with "
            "`maskkit export --weights FILE --quantize int8 --calibration DATA`"
        )
    default_rt = "eager" if kind == "eager" else (runtime or "onnxruntime")
    if requested == "auto":
        if features.bf16 and (kind == "eager" or _has_openvino()) and runtime in (None, "openvino", "eager"):
            return Choice("bf16", "eager" if kind == "eager" else "openvino", f"bf16 (auto: {features.describe()})")
        why = "no native bf16" if not features.bf16 else "bf16 needs OpenVINO for an exported file"
        return Choice("fp32", default_rt, f"fp32 (auto: {why}; {features.describe()})")
    if requested == "bf16":
        if not features.bf16:
            raise MaskkitError(
                f"--precision bf16: this CPU has no native bfloat16 arithmetic (AMX-BF16 or AVX512-BF16; "
                f"{features.describe()}); bf16 would be emulated and slower than fp32: use fp32 or int8"
            )
        if kind == "onnx":
            if runtime not in (None, "openvino"):
                raise MaskkitError(f"--precision bf16 runs exported files on OpenVINO, not {runtime}")
            if not _has_openvino():
                raise MaskkitError("--precision bf16 for an exported file needs OpenVINO (pip install openvino)")
            return Choice("bf16", "openvino", "bf16 (OpenVINO's bf16 inference hint)")
        return Choice("bf16", "eager", "bf16 (PyTorch autocast on the fused inference modules)")
    return Choice("fp32", default_rt, "fp32")
