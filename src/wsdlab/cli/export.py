"""`wsdlab export CHECKPOINT OUT`: a checkpoint as a Hugging Face model directory (for `lm_eval`)."""

from __future__ import annotations

from pathlib import Path

import typer

from wsdlab.cli.options import path_option


def export_command(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", parser=path_option,
                                      help="A checkpoint directory, RUN/checkpoints/<step> (not the run folder)."),
    out: Path = typer.Argument(..., metavar="OUT", parser=path_option, help="The model directory to write (must not exist)."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", parser=path_option,
                                          help="A tokenizer.json to ship instead of the run's (must fit the model's vocabulary)."),
) -> None:
    """Write config.json + model.safetensors + tokenizer (LlamaForCausalLM), e.g. for
    `lm_eval --model hf --model_args pretrained=OUT` (install with `pip install 'wsdlab[eval]'`).
    bos/eos/pad are the data's document separator; an SFT checkpoint ships its prompt format as the chat template."""
    from wsdlab.train.export import export_hf

    path = export_hf(checkpoint, out, tokenizer=tokenizer)
    print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
