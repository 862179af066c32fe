"""Every notebook runs top to bottom in a Jupyter kernel (nbclient), reproduces the
outputs stored in it, and those outputs are right (checked against an
independent reference, notebook by notebook).

Notebooks are committed executed, so readers see real results. After editing
one, store its outputs again with:

    python -m tests.test_notebooks notebooks/<name>.ipynb
"""

import re
import sys
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest

from tests.numerics import assert_close

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Printed numbers are rounded (3 decimals); a last-digit change between CPUs is allowed.
NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")
ATOL = 2e-3


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook, run in a fresh kernel from its own folder."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def cell_texts(nb: nbformat.NotebookNode) -> list[str]:
    """The text each code cell printed or returned, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                parts.append(o.text)
            elif o.output_type in ("execute_result", "display_data"):
                parts.append(o.get("data", {}).get("text/plain", ""))
            elif o.output_type == "error":
                parts.append(f"{o.ename}: {o.evalue}")
        out.append("".join(parts))
    return out


def assert_same_text(fresh: str, stored: str, where: str) -> None:
    """Equal text, with every decimal number equal within ATOL."""
    assert NUMBER.sub("#", fresh) == NUMBER.sub("#", stored), f"{where}:\n{fresh}\n!=\n{stored}"
    a = [float(x) for x in NUMBER.findall(fresh)]
    b = [float(x) for x in NUMBER.findall(stored)]
    assert_close(a, b, atol=ATOL, err_msg=where)


# ------------------------------------------------------- per-notebook checks


def check_inspect_pretrained(texts: list[str], minilm_dir: Path) -> None:
    """inspect_pretrained.ipynb's numbers against HF transformers on the same input."""
    import torch
    import transformers

    from bert_jax.data.tokenizer import BertTokenizer

    tok = BertTokenizer(str(minilm_dir / "vocab.txt"), do_lower_case=True)
    enc = tok.encode("The trophy didn't fit in the suitcase.", "It was too big.")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    hf = transformers.BertModel.from_pretrained(str(minilm_dir), attn_implementation="eager")
    with torch.no_grad():
        o = hf.eval()(
            **{k: torch.tensor([v]) for k, v in enc.items()},
            output_attentions=True,
            output_hidden_states=True,
        )
    n = len(tokens)
    assert texts[1] == (
        f"{len(o.hidden_states)} hidden states, {len(o.attentions)} attention maps\n"
        f"attention shape (batch, heads, query, key): (1, 12, {n}, {n})\n"
    )
    last = o.attentions[-1][0].numpy().mean(0)
    q = tokens.index("it")
    rows = [line.split() for line in texts[2].splitlines()]
    assert [r[0] for r in rows] == [tokens[j] for j in np.argsort(-last[q])[:5]]
    assert_close([float(r[1]) for r in rows], np.sort(last[q])[::-1][:5], atol=ATOL)
    hs = [h[0].numpy() for h in o.hidden_states]
    cos = [
        float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).mean())
        for a, b in zip(hs, hs[1:], strict=False)
    ]
    printed = [float(line.rsplit(" ", 1)[1]) for line in texts[3].splitlines()]
    assert_close(printed, cos, atol=ATOL)


CHECKS = {"inspect_pretrained.ipynb": check_inspect_pretrained}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_reproduces_its_stored_outputs(path, minilm_dir):
    stored = cell_texts(nbformat.read(path, as_version=4))
    assert all(stored), (
        f"{path.name} is committed without outputs: run python -m tests.test_notebooks"
    )
    fresh = cell_texts(execute(path))
    assert len(fresh) == len(stored)
    for i, (a, b) in enumerate(zip(fresh, stored, strict=True)):
        assert_same_text(a, b, f"{path.name} cell {i}")
    CHECKS[path.name](fresh, minilm_dir)


if __name__ == "__main__":
    for name in sys.argv[1:] or [str(p) for p in NOTEBOOKS]:
        nb = execute(Path(name))
        nbformat.write(nb, name)
        print(f"stored the outputs of {name}")
