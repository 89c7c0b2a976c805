"""`wsdlab export CHECKPOINT OUT`: a checkpoint as a Hugging Face model directory (for `lm_eval`)."""

from __future__ import annotations

from pathlib import Path

import typer


def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint directory, RUN/checkpoints/<step>."),
    out: Path = typer.Argument(..., help="The model directory to write (must not exist)."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="A tokenizer.json to ship instead of the run's."),
) -> None:
    """Write config.json + model.safetensors + tokenizer (LlamaForCausalLM), e.g. for
    `lm_eval --model hf --model_args pretrained=OUT`."""
    from wsdlab.train.export import export_hf

    path = export_hf(checkpoint, out, tokenizer=tokenizer)
    print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
