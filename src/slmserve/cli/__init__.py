"""The `slmserve` command, one file per group of verbs: serve and cluster (serve.py), generate and chat (chat.py),
models, requantize and finetune (models.py), bench, explore, monitor, compare and plot-bench (tools.py); the flags
generated from Settings in options.py."""

from __future__ import annotations

import typer

from slmserve.cli import chat, models, serve, tools
from slmserve.cli.options import settings_options

app = typer.Typer(help="slmserve: a fast, concurrent server for small language models.", no_args_is_help=True)

# --help lists the commands in this order.
app.command()(settings_options(serve.serve))
app.command()(settings_options(serve.cluster))
app.command()(chat.terminal_options(chat.generate))
app.command()(chat.terminal_options(chat.chat))
app.command()(tools.bench)
app.command()(models.finetune)
app.command()(models.models)
app.command()(models.requantize)
# explore takes the server's settings flags, for the server it starts.
app.command()(settings_options(tools.explore))
app.command()(tools.monitor)
app.command()(tools.compare)
app.command("plot-bench")(tools.plot_bench)
