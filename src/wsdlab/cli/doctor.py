"""`wsdlab doctor`: the facts that decide whether training can use this machine's GPUs; `--gpu` runs the smoke test."""

from __future__ import annotations

import platform

import typer

import wsdlab


def facts() -> list[tuple[str, str]]:
    """(name, value) rows: versions, CUDA, each GPU (memory, compute capability, bf16), distributed backends."""
    import torch
    import torch.distributed as dist

    rows = [("wsdlab", wsdlab.__version__), ("python", platform.python_version()), ("torch", torch.__version__),
            ("cuda available", str(torch.cuda.is_available())), ("torch built with CUDA", str(torch.version.cuda))]
    if torch.cuda.is_available():
        rows.append(("cuDNN", str(torch.backends.cudnn.version())))
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"gpu {i}", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute {p.major}.{p.minor}, "
                                     f"bf16 {torch.cuda.is_bf16_supported()}"))
    rows.append(("distributed", str(dist.is_available())))
    if dist.is_available():
        rows.append(("backends", ", ".join(b for b, ok in (("gloo", dist.is_gloo_available()),
                                                          ("nccl", dist.is_nccl_available())) if ok) or "none"))
    return rows


def doctor_command(
    gpu: bool = typer.Option(False, "--gpu", help="Also run the GPU smoke test (each GPU path once, a few minutes; "
                             "without CUDA it lists what it would run)."),
) -> None:
    """Print torch / CUDA / GPU facts; with --gpu run the GPU smoke test and exit 1 if a check failed."""
    width = max(len(name) for name, _ in facts())
    for name, value in facts():
        typer.echo(f"{name:<{width}}  {value}")
    if gpu:
        from wsdlab.cli.gpu_smoke import run_smoke

        code = run_smoke(typer.echo)
        if code:
            raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
