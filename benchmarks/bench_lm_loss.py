"""The language-model loss alone at a 152K vocabulary (Qwen2.5's 151,936), forward + backward, fused against
unfused: peak memory above the inputs, time per call, and whether both give the same loss and gradients.

* `unfused`: `F.linear(hidden, lm_head.weight)` gives the `(tokens, vocabulary)` logits, then transformers'
  `ForCausalLMLoss` (what `CrocForConditionalGeneration` computes without `fused_lm_loss`, via `loss_function`).
* `fused`: `modeling_croc.losses.fused_language_model_loss(hidden, weight, labels)` (what `use_liger_kernel`
  trains with): the logits never exist in full. Its kernel is Liger's fused linear cross-entropy where Liger can
  run (CUDA with liger-kernel installed). Elsewhere the project has no fused kernel, so the benchmark plugs a
  chunked stand-in of its own into the same function (`chunked_linear_cross_entropy`, the same algorithm: the
  gradients are computed chunk by chunk during the forward) and says so in the JSON; only a Liger run counts for
  the GPU goal (`benchmarks.gpu_goals.read_fused_loss`).

Before anything is timed both variants run once and their loss and gradients (wrt the hidden states and the LM
head's weight) are compared: a difference beyond the dtype's tolerance is written to the JSON and then raised.
Peak memory: on CUDA `max_memory_allocated` above what was allocated before the call; on the CPU the peak RSS rise
of a forked child per variant (`benchmarks.memory_probe`). Time: median of interleaved calls
(`benchmarks.harness`).

    python -m benchmarks lm_loss [--device cpu|cuda] [--quick] [--hidden-size D] [--tokens N]
                                 [--dtype float32|bfloat16|float16] [--out benchmarks/results/lm_loss.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import median_ms, time_interleaved
from benchmarks.memory_probe import cpu_peak_rss_mb, cuda_peak_mb
from modeling_croc import losses

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lm_loss.json"
QWEN25_VOCAB = 151_936
IGNORE_INDEX = -100
# Per device: the CUDA shape is Qwen2.5-7B's hidden size with an 8K-token micro-batch in bf16; the CPU one runs in
# well under a minute on the shared 2-core machine, with logits (1024 x 151,936 x 4 B = 594 MiB) that still
# dwarf the LM head's weight (148 MiB), as they do at the CUDA shape.
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cuda": {"hidden_size": 3584, "tokens": 8192, "dtype": "bfloat16", "reps": 10, "warmup": 2},
    "cpu": {"hidden_size": 256, "tokens": 1024, "dtype": "float32", "reps": 3, "warmup": 0},
}
QUICK = {"hidden_size": 128, "tokens": 512, "reps": 2}
# The stand-in's chunk: 256 tokens' logits at a time (1/32 of the logits at the CUDA shape, 1/4 at the CPU one).
CHUNK_TOKENS = 256
# (rtol, atol) of `max |fused - unfused| <= atol + rtol * max |unfused|`, per dtype. The two paths sum the same
# terms in another order (chunks, kernels); in half precision the logits are also rounded once per path.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-4, 1e-7),
    torch.bfloat16: (2e-2, 1e-5),
    torch.float16: (5e-3, 1e-6),
}
# A summed-cross-entropy kernel as `fused_language_model_loss` calls it: (hidden (N, D), weight (V, D),
# targets (N,), ignore_index) -> sum over the supervised tokens.
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


class LossMismatchError(AssertionError):
    """The fused loss or its gradients differ from the unfused ones beyond the dtype's tolerance."""


# --------------------------------------------------------------------------------------------------------------
# The stand-in kernel (where Liger cannot run)
# --------------------------------------------------------------------------------------------------------------


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T`, its gradients computed chunk by chunk in the forward, so that
    only one chunk's logits exist at a time; the backward scales the stored gradients by the incoming one."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                chunk_tokens: int) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)
        # In the weight's dtype: a float32 accumulator would cost up to another weight's size in half precision.
        grad_weight = torch.zeros_like(weight)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_tokens):
            chunk = hidden[start:start + chunk_tokens]
            chunk_targets = targets[start:start + chunk_tokens]
            supervised = chunk_targets != ignore_index
            safe_targets = chunk_targets.masked_fill(~supervised, 0)
            # float32 logits as transformers' loss upcasts them; then turned into d(sum CE)/d(logits) in place.
            logits = (chunk @ weight.T).float()
            log_normaliser = torch.logsumexp(logits, dim=-1)
            target_logits = logits.gather(1, safe_targets[:, None]).squeeze(1)
            total += ((log_normaliser - target_logits) * supervised).sum()
            probabilities = logits.sub_(log_normaliser[:, None]).exp_()
            probabilities[torch.arange(len(chunk), device=hidden.device), safe_targets] -= 1.0
            grad_logits = probabilities.mul_(supervised[:, None]).to(hidden.dtype)
            grad_hidden[start:start + chunk_tokens] = grad_logits @ weight
            grad_weight.addmm_(grad_logits.T, chunk)
            del logits, probabilities, grad_logits
        ctx.grads = (grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.grads
        del ctx.grads
        # In place: each stored gradient is used once, and a scaled copy would cost another weight's size.
        scale = grad_total.to(grad_hidden.dtype)
        return grad_hidden.mul_(scale), grad_weight.mul_(scale.to(grad_weight.dtype)), None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 ignore_index: int, chunk_tokens: int = CHUNK_TOKENS) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` against `targets` without the full logits: the fused algorithm
    written in PyTorch, for a device where Liger's Triton kernel cannot run (the CPU)."""
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_tokens)


def liger_available(device: torch.device) -> bool:
    """Whether the project's own fused kernel can run: Liger is Triton code, CUDA only."""
    return device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None


@contextlib.contextmanager
def _kernel_of_fused_loss(kernel: Kernel | None) -> Iterator[None]:
    """`fused_language_model_loss` with `kernel` in place of Liger's meanwhile (None: Liger's), so that the labels'
    shift and the normalisation measured are the project's own whatever computes the summed cross-entropy."""
    if kernel is None:
        yield
        return
    original = losses._liger_fused_linear_cross_entropy
    losses._liger_fused_linear_cross_entropy = kernel
    try:
        yield
    finally:
        losses._liger_fused_linear_cross_entropy = original


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """One benchmark shape: `tokens` positions of one sequence, each with `hidden_size` features."""

    device: str
    hidden_size: int
    tokens: int
    dtype: str
    vocab_size: int = QWEN25_VOCAB
    reps: int = 3
    warmup: int = 0
    chunk_tokens: int = CHUNK_TOKENS
    threads: int | None = None
    seed: int = 0


def make_inputs(settings: Settings) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
    """Hidden states `(1, tokens, D)`, an LM head weight `(V, D)` (both leaves needing gradients) and labels with
    the first quarter ignored, as a prompt is in supervised fine-tuning."""
    device, dtype = torch.device(settings.device), getattr(torch, settings.dtype)
    # Drawn where they are used: 544M weights at the CUDA shape take seconds to draw on the host.
    generator = torch.Generator(device).manual_seed(settings.seed)
    hidden = torch.randn(1, settings.tokens, settings.hidden_size, generator=generator, device=device)
    # Scaled so the logits are about unit-variance: unscaled ones span +-100, whose float32 probabilities are
    # denormal and make the CPU's backward matmuls 30x slower (measured), which no trained model's logits do.
    weight = torch.randn(settings.vocab_size, settings.hidden_size, generator=generator, device=device)
    weight /= settings.hidden_size**0.5
    labels = torch.randint(0, settings.vocab_size, (1, settings.tokens), generator=generator, device=device)
    labels[:, : settings.tokens // 4] = IGNORE_INDEX
    return hidden.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_(), labels


def unfused_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
    """The LM loss through the logits, as a Croc model computes it without `fused_lm_loss`: the LM head, then
    transformers' causal-LM loss (shift, float32 upcast, cross-entropy averaged over the supervised tokens)."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = F.linear(hidden, weight)
    return ForCausalLMLoss(logits=logits, labels=labels, vocab_size=weight.shape[0], ignore_index=IGNORE_INDEX)


def fused_loss(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.LongTensor,
               kernel: Kernel | None = None) -> torch.Tensor:
    """The project's fused LM loss, its summed cross-entropy computed by `kernel` (None: Liger's)."""
    with _kernel_of_fused_loss(kernel):
        return losses.fused_language_model_loss(hidden, weight, labels, ignore_index=IGNORE_INDEX)


def loss_and_grads(loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.LongTensor], torch.Tensor],
                   hidden: torch.Tensor, weight: torch.Tensor,
                   labels: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward + backward: the loss and its gradients wrt the hidden states and the weight (returned, not
    accumulated into `.grad`, so that repeated calls stay identical)."""
    loss = loss_fn(hidden, weight, labels)
    grad_hidden, grad_weight = torch.autograd.grad(loss, (hidden, weight))
    return loss.detach(), grad_hidden, grad_weight


def _agreement(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor],
               dtype: torch.dtype) -> list[dict[str, Any]]:
    rtol, atol = TOLERANCES[dtype]
    rows = []
    for name, ref, got in zip(("loss", "grad wrt hidden states", "grad wrt lm_head weight"), reference, candidate,
                              strict=True):
        ref, got = ref.float(), got.float()
        difference = (got - ref).abs().max().item()
        tolerance = atol + rtol * ref.abs().max().item()
        rows.append({"quantity": name, "max |fused - unfused|": difference, "max |unfused|": ref.abs().max().item(),
                     "tolerance": tolerance, "within": difference <= tolerance})
    return rows


def _resolve_kernel(fused_kernel: Kernel | None, device: torch.device,
                    chunk_tokens: int) -> tuple[Kernel | None, str]:
    """The kernel the fused variant runs and its name in the JSON: the one given, else Liger's (None: the
    project's function as it is) where Liger runs, else the chunked stand-in."""
    if fused_kernel is not None:
        return fused_kernel, getattr(fused_kernel, "__name__", repr(fused_kernel))
    if liger_available(device):
        return None, "liger"
    return (functools.partial(chunked_linear_cross_entropy, chunk_tokens=chunk_tokens),
            f"chunked stand-in ({chunk_tokens} tokens per chunk)")


def _call(loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.LongTensor], torch.Tensor], hidden: torch.Tensor,
          weight: torch.Tensor, labels: torch.LongTensor) -> Callable[[], None]:
    def call() -> None:
        # Nothing returned: the timing loop would keep the gradients alive into the next variant's call.
        loss_and_grads(loss_fn, hidden, weight, labels)

    return call


def measure(settings: Settings, fused_kernel: Kernel | None = None) -> dict[str, Any]:
    """Both variants at `settings`: agreement first, then peak memory, then time; the JSON (see the module
    docstring). `fused_kernel` replaces the fused loss's kernel (default: Liger's where it runs, else the chunked
    stand-in). A disagreement is recorded (`"agree": false`), not raised: `check_agreement` raises it."""
    device, dtype = torch.device(settings.device), getattr(torch, settings.dtype)
    kernel, kernel_name = _resolve_kernel(fused_kernel, device, settings.chunk_tokens)
    hidden, weight, labels = make_inputs(settings)

    def fused(h: torch.Tensor, w: torch.Tensor, y: torch.LongTensor) -> torch.Tensor:
        return fused_loss(h, w, y, kernel)

    variants = {"unfused": unfused_loss, "fused": fused}
    # Also the first call of each (one-off costs: Triton compilation, allocator growth), before any timing.
    reference = loss_and_grads(unfused_loss, hidden, weight, labels)
    candidate = loss_and_grads(fused, hidden, weight, labels)
    agreement = _agreement(reference, candidate, dtype)
    losses_seen = {"unfused": reference[0].item(), "fused": candidate[0].item()}
    del reference, candidate

    calls = {name: _call(fn, hidden, weight, labels) for name, fn in variants.items()}
    if device.type == "cuda":
        peaks = {name: cuda_peak_mb(call, device) for name, call in calls.items()}
    else:
        peaks = cpu_peak_rss_mb(calls, jobs=len(calls))  # one forked child each, side by side
    times, _ = time_interleaved(calls, settings.reps, settings.warmup, device)

    logits_mib = settings.tokens * settings.vocab_size * dtype.itemsize / 2**20
    how = {"unfused": "F.linear -> logits -> transformers ForCausalLMLoss",
           "fused": f"modeling_croc.losses.fused_language_model_loss, kernel: {kernel_name}"}
    rows = [{"variant": name, "how": how[name], "peak above inputs (MiB)": peaks[name],
             "ms per call (fwd+bwd)": median_ms(times[name]), "loss": losses_seen[name]} for name in variants]
    saved = None if peaks["unfused"] is None or peaks["fused"] is None else peaks["unfused"] - peaks["fused"]
    rows[1]["peak saved (MiB)"] = saved
    cuda_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    memory_method = ("torch.cuda.max_memory_allocated above the memory allocated before the call"
                     if device.type == "cuda" else
                     "peak RSS rise of a forked one-thread child per variant (benchmarks.memory_probe)")
    return {
        "title": f"LM loss at a {settings.vocab_size:,}-token vocabulary, forward + backward: fused vs unfused",
        "goal": "The fused loss saves the logits: its peak is below the unfused one by at least the logits' size.",
        "rows": rows,
        "tables": [{"title": "Agreement of the fused loss and gradients with the unfused ones", "rows": agreement,
                    "notes": [f"tolerance = atol + rtol * max |unfused|, (rtol, atol) = {TOLERANCES[dtype]} for "
                              f"{settings.dtype}"]}],
        "notes": [
            f"device {device.type}" + (f" ({cuda_name})" if cuda_name else "") + f", torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), {settings.dtype}; {settings.tokens} tokens x hidden "
            f"{settings.hidden_size} x vocabulary {settings.vocab_size:,}; the first quarter of the labels ignored",
            f"logits the fused path never allocates: {settings.tokens} x {settings.vocab_size:,} x "
            f"{dtype.itemsize} B = {logits_mib:,.1f} MiB (the unfused path holds more than them: their log-softmax "
            "and gradient, and in half precision a float32 copy)",
            f"fused kernel: {kernel_name}" + ("" if kernel_name == "liger" else
                                             "; Liger cannot run here, the project's fused path needs it"),
            f"peak memory: {memory_method}; the inputs (hidden states, weight, labels) exist before and are not "
            "counted, the gradients are",
            f"time: median of {settings.reps} interleaved calls after the agreement pass (one call each) and "
            f"{settings.warmup} further warm-up call(s)",
        ],
        "device": device.type,
        "cuda_device": cuda_name,
        "fused_kernel": kernel_name,
        "logits_mib": logits_mib,
        "agree": all(row["within"] for row in agreement),
        "settings": asdict(settings),
    }


def check_agreement(result: dict[str, Any]) -> None:
    """Raise `LossMismatchError` when `measure` found the fused loss or a gradient off the unfused one."""
    if result.get("agree"):
        return
    rows = result["tables"][0]["rows"]
    raise LossMismatchError("fused LM loss disagrees with the unfused one: " + "; ".join(
        f"{row['quantity']}: max diff {row['max |fused - unfused|']:.3g} > {row['tolerance']:.3g}"
        for row in rows if not row["within"]))


def run(settings: Settings, out: Path, fused_kernel: Kernel | None = None) -> dict[str, Any]:
    """Measure, write the JSON to `out` (machine facts included), then fail loudly on a disagreement: the
    numbers of a wrong fused loss are kept to be read, never passed off as a result."""
    from benchmarks.__main__ import machine_info

    previous_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        result = measure(settings, fused_kernel)
        result["machine"] = machine_info()
    finally:
        torch.set_num_threads(previous_threads)  # the runner and the tests go on in this process
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    check_agreement(result)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_lm_loss", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help=f"smaller shape, fewer repetitions: {QUICK}")
    parser.add_argument("--hidden-size", type=int, default=None,
                        help="hidden size (default: 3584 on CUDA, Qwen2.5-7B's; 256 on CPU)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens (default: 8192 on CUDA, 1024 on CPU)")
    parser.add_argument("--vocab-size", type=int, default=QWEN25_VOCAB, help="vocabulary (default: Qwen2.5's)")
    parser.add_argument("--dtype", default=None, choices=[str(dtype).removeprefix("torch.") for dtype in TOLERANCES],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per variant (default: 10 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up calls per variant after the agreement pass (default: 2 CUDA, 0 CPU)")
    parser.add_argument("--chunk-tokens", type=int, default=CHUNK_TOKENS,
                        help="tokens per chunk of the stand-in kernel (used where Liger cannot run)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 on CPU: OpenMP barriers stall on the shared 2-core machine)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The shape and repetitions: the device's defaults, `--quick`'s, then what was given explicitly."""
    chosen = dict(DEVICE_DEFAULTS[args.device], **(QUICK if args.quick else {}))
    for key in ("hidden_size", "tokens", "dtype", "reps", "warmup"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    threads = args.threads if args.threads is not None else (1 if args.device == "cpu" else None)
    return Settings(device=args.device, vocab_size=args.vocab_size, chunk_tokens=args.chunk_tokens,
                    threads=threads, **chosen)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device visible", file=sys.stderr)
        return 1
    result = run(settings_from_args(args), args.out)
    from benchmarks.rendering import render_result

    print(render_result(result, "lm_loss"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
