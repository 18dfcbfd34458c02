"""Report section 6: adapter sizes, serving many adapters on one base, the merged model, and the
command that reproduces the recommended cell."""

from __future__ import annotations

import re

from advisor.trials.matrix import format_value
from reports.context import Context
from reports.doc import Block, Code, Heading, Para, Table
from reports.fmt import DASH, scrub, shq, size_bytes, strip_password
from reports.records import num

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # --max-lora-rank values vLLM accepts
SERVE_ADAPTERS = (1, 8, 32)  # adapter counts shown in the serving-memory table


_HOME_PATH = re.compile(r"(?<![\w.])(?:/root|/(?:home|Users)/[^/\s'\"]+)(?=/|$)")


def shell_arg(arg: str) -> str:
    """One argument of a printed command: passwords removed, a home folder as "$HOME" (which the
    shell expands — `~` after `=` it does not), quoted only when needed."""
    text = strip_password(arg)
    if not _HOME_PATH.search(text):
        return shq(text)
    escaped = re.sub(r'(["\\$`])', r"\\\1", text)
    return '"' + _HOME_PATH.sub("$HOME", escaped) + '"'


def reproduce_command(ctx: Context) -> str | None:
    """`tunewise sweep matrix=single sweep.dir=… <the sweep's base config> <the cell's coordinates>`
    (its learning rate too when the sweep tuned it): the recommended cell as one run, as the sweep ran
    it. The base config comes from sweep.json's `reproduce` (every key where the sweep's composed
    config differs from `matrix=single`'s, e.g. the demo's training settings); sweeps older than it
    give their command-line overrides instead."""
    pick = ctx.rec.pick
    cell = next((c for c, r in ctx.pairs if r is pick), None)
    if cell is None or not cell.chosen_ids:
        return None
    cell_id = cell.chosen_ids[0]
    own = dict(ctx.sweep.by_id[cell_id].coords)
    own.pop("train.lr", None)
    if cell.lr_tuned and cell.lr is not None:
        own["train.lr"] = cell.lr
    recorded = ctx.sweep.meta.get("reproduce")
    given = recorded if isinstance(recorded, list) else ctx.sweep.meta.get("overrides") or []
    keep: dict[str, str] = {}  # the sweep's own overrides, the last value of each key
    for o in given:
        k = str(o).split("=", 1)[0].lstrip("+~")
        if k.split(".")[0] in ("matrix", "sweep", "budget") or k in own:  # a single run needs none of them
            continue
        keep.pop(k, None)
        keep[k] = str(o)
    return " ".join(
        [
            "tunewise sweep matrix=single",
            shell_arg(f"sweep.dir=outputs/sweeps/reproduce-{cell_id}"),
            *(shell_arg(o) for o in keep.values()),
            *(shell_arg(f"{k}={format_value(v)}") for k, v in own.items()),
        ]
    )


def deployment(ctx: Context) -> list[Block]:
    out: list[Block] = [Heading("Deployment")]
    rows = []
    by_id = ctx.sweep.by_id
    for c, r in ctx.pairs:
        ab = c.adapter_bytes
        tp = c.trainable_params or num((by_id[c.cell_ids[0]].estimate or {}).get("trainable_params"))
        if c.method != "full" and c.n and (ab or tp):
            rows.append([r.label, f"{tp:,.0f}" if tp else DASH, size_bytes(ab)])
    if rows:
        out.append(Table(["Cell", "Trainable params", "Adapter on disk"], rows))
    total = next(
        (
            num((t.estimate or {}).get("total_params"))
            for t in ctx.sweep.records
            if num((t.estimate or {}).get("total_params"))
        ),
        None,
    )
    pick = ctx.rec.pick
    model = ctx.sweep.config.get("model") or {}
    model_ref = scrub(str(model.get("path") or model.get("name") or "BASE_MODEL"))
    if total:
        out.append(
            Para(
                f"Merged model (base + adapter folded in) in bf16: {total:,.0f} params × 2 bytes = "
                f"{size_bytes(total * 2)}; a fully fine-tuned model is the same size, one copy per variant."
            )
        )
    pc = next((c for c, r in ctx.pairs if r is pick), None)
    ab = pc.adapter_bytes if pc is not None else None
    if pick is not None and pick.method != "full" and ab and total:
        rank = next((x for x in VLLM_RANKS if x >= (pick.r or 0)), pick.r)
        out.append(
            Para(
                f"Serving many adapters of the recommended size ({size_bytes(ab)} each, r={pick.r}) on one "
                "bf16 base: weights memory = base + N × adapter (KV cache comes on top)."
            )
        )
        out.append(
            Table(
                ["Adapters N", "Weights memory"],
                [[str(n), size_bytes(total * 2 + n * ab)] for n in SERVE_ADAPTERS],
            )
        )
        adapter = (
            f"cells/{pc.chosen_ids[0]}/adapter" if pc is not None and pc.chosen_ids else "PATH/TO/ADAPTER"
        )
        out.append(
            Para(
                f"vLLM (--max-lora-rank must be one of {', '.join(map(str, VLLM_RANKS))}) and TGI; "
                "adapter paths are relative to the sweep folder:"
            )
        )
        if pick.method == "qlora":
            out.append(
                Para(
                    "The adapter was trained against the 4-bit base; serving it on the bf16 base is the usual "
                    "practice, and evaluating it there once before deploying is advised."
                )
            )
        out.append(
            Code(
                f"vllm serve {shq(model_ref)} --enable-lora --max-loras 8 --max-lora-rank {rank} \\\n"
                f"    --lora-modules recommended={adapter} other-task=PATH/TO/ADAPTER\n\n"
                f"LORA_ADAPTERS=recommended={adapter},other-task=PATH/TO/ADAPTER \\\n"
                f"    text-generation-launcher --model-id {shq(model_ref)}",
                "sh",
            )
        )
    elif pick is not None and pick.method == "full":
        out.append(
            Para("The recommendation is full fine-tuning: serve the fine-tuned model itself; no adapters.")
        )
    cmd = reproduce_command(ctx)
    if cmd:
        out.append(Para("Reproduce the recommended cell as a single run:"))
        out.append(Code(cmd, "sh"))
    return out
