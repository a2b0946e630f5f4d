"""trainctl's command line: Typer commands with Rich output. Read-only views import no
torch/transformers."""
