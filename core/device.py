"""Device and precision policy: which device trains (--device), in which precision
(--precision auto), how the backends are set for a sweep's fixed shapes, and what counts
as running out of memory there."""
import ctypes
import gc
import os

import torch

from core import logs


def resolve_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def not_a_training_device(name: str, device: torch.device) -> str | None:
    """One sentence where --device name gives a device that holds no real tensors (meta) or
    that this repository does not train on; None for cpu, cuda, mps (and xpu where torch has it)."""
    if device.type in ("cpu", "cuda", "mps") + (("xpu",) if hasattr(torch, "xpu") else ()):
        return None
    return f"{name!r} is not a training device; use auto, cpu, cuda, cuda:N or mps"


def unavailable_device(name: str, err: Exception) -> str:
    """One short sentence for a --device that torch cannot use here: torch's own message for
    MPS on a machine without it lists every dispatcher key, over a thousand characters."""
    kind = str(name).split(":")[0]
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        why = "this machine has no MPS (Apple GPU) device"
    elif kind == "cuda" and not torch.cuda.is_available():
        why = "torch finds no CUDA GPU on this machine"
    else:
        text = str(err).strip()
        why = logs.shorten(text.splitlines()[0], 120) if text else type(err).__name__
    return f"{name!r} is not available here ({why})"


def usable_device(name: str, touch: bool = True) -> torch.device:
    """The device --device name gives, checked to train and to hold a tensor; ValueError with
    one sentence otherwise. touch=False checks a GPU without a tensor on it, which would hold
    hundreds of MB there for as long as the process lives (gpu_check.py leaves its GPU whole
    to the steps it starts)."""
    try:
        device = resolve_device(name)
    except RuntimeError as err:  # not a device name torch knows
        raise ValueError(f"{name!r} is not a device ({logs.shorten(str(err).splitlines()[0], 120)})") from None
    problem = not_a_training_device(name, device)
    if problem:
        raise ValueError(problem)
    try:
        if touch or device.type not in ("cuda", "mps"):
            torch.empty(1, device=device)
        elif device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("MPS is not available")
        elif device.type == "cuda" and not (torch.cuda.is_available()
                                            and (device.index or 0) < torch.cuda.device_count()):
            raise RuntimeError(f"there is no CUDA device {device.index or 0}: this machine has "
                               f"{torch.cuda.device_count()}")
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ValueError(unavailable_device(name, err)) from None
    return device


def training_device(name: str, world: int) -> torch.device:
    """The device a sweep trains on; under torchrun on CUDA, this process's own GPU.
    ValueError with one sentence where --device name is not a training device, or is not
    available here."""
    try:
        device = resolve_device(name)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ValueError(unavailable_device(name, err)) from None
    problem = not_a_training_device(name, device)
    if problem:
        raise ValueError(problem)
    try:
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ValueError(unavailable_device(name, err)) from None
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX, where bf16 autocast roughly doubles AlexNet's speed on CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_for(device_type: str, capability: tuple | None = None, native_bf16_cpu: bool = False) -> str:
    """--precision auto, from the device's properties alone: bf16 where the device has bf16
    units (CUDA capability 8.0 and above: A100, H100, RTX 30xx/40xx; CPUs with AVX512-BF16
    or AMX), fp16 with gradient scaling on CUDA 7.x (V100, T4, RTX 20xx: fp16 tensor cores,
    bf16 only emulated), fp32 elsewhere (older GPUs, other CPUs, MPS)."""
    if device_type == "cuda" and capability is not None:
        return "bf16" if tuple(capability) >= (8, 0) else "fp16" if tuple(capability) >= (7, 0) else "fp32"
    if device_type == "cpu" and native_bf16_cpu:
        return "bf16"
    return "fp32"


def resolve_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return precision_for(device.type, capability, device.type == "cpu" and cpu_has_native_bf16())


def resolved(config: dict, device: torch.device, world: int) -> dict:
    """config with its device and precision as this process trains them, not "auto": the
    same on every rank and for any number of processes (the device's type under torchrun)."""
    name = (device.type if world > 1 else str(device)) if config["device"] == "auto" else config["device"]
    return {**config, "device": name, "precision": resolve_precision(config["precision"], device)}


def tune_backends(device: torch.device) -> None:
    """For the fixed shapes of a sweep: cuDNN picks the fastest convolution algorithms once;
    on the CPU, freed memory stays in the process for the next step (keep_freed_memory)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu":
        keep_freed_memory()


def keep_freed_memory() -> bool:
    """Each training step frees and allocates again the same large tensors (weights' gradients,
    optimizer temporaries, activations). By default glibc hands every block over 32 MB back to
    the system and takes it again zeroed, page by page, a large share of a step on a small CPU
    (docs/speed.md). Keep freed memory in the process instead (no mmap for large blocks, no
    trimming of the heap's top below 2 GB), so the process keeps its peak memory. Returns
    whether the C library took the settings (glibc does; elsewhere nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: macOS, Windows
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


# ---------------------------------------------------------------------------
# Out of memory

# What a failed allocation says where it is not torch's own OutOfMemoryError: CUDA's and the CPU
# allocator's words, and cuBLAS's and cuDNN's when their workspace does not fit. cuDNN's
# CUDNN_STATUS_INTERNAL_ERROR, sometimes seen under memory pressure, is left out: it also
# reports real faults, which splitting the group would only repeat.
OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED",
                       "CUDNN_STATUS_ALLOC_FAILED")


def out_of_memory(err: BaseException) -> bool:
    """Whether err is a device (or host) running out of memory."""
    kind = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(err)
    return isinstance(err, kind) or (isinstance(err, RuntimeError) and any(w in text for w in OUT_OF_MEMORY_WORDS))


def release_memory() -> None:
    """Give what an abandoned group held back to the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fits(run, *args) -> tuple:
    """(run(*args), True), or (None, False) where it ran out of memory, what it held then given
    back to the device; any other error is raised."""
    try:
        return run(*args), True
    except Exception as err:  # noqa: BLE001 (only out of memory is expected here)
        if not out_of_memory(err):
            raise
    # out of the except block: the error's traceback held the failed frames' tensors
    release_memory()
    return None, False


def out_of_memory_message(message: str, config: dict, device) -> str:
    """A failed run's error where one run alone ran out of memory: what to change."""
    return (f"out of memory ({logs.shorten(message.splitlines()[0], 160)}): one run at batch "
            f"{config.get('batch_size')} and {config.get('image_size')} px does not fit on {device}; lower "
            f"--batch-size or --image-size, or train on a device with more memory")
