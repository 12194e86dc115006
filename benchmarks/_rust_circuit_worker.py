"""rust_circuit's side of ``bench_rust_circuit.py``: runs under the rust_circuit venv's python.

Not importable from scrub's venv (it imports ``rust_circuit``); ``make rust-circuit`` makes the
venv. The parent process (``bench_rust_circuit.py``) exports the model's weights and, per case
(hypothesis × n), the treeified sampled tree: every tree node's rows, and for every input
channel of every component of a node the all-paths patches and the direct-path splices that
reach it, with their positions resolved per row group by scrub. This worker builds the same
causal-scrubbing computation as one rust_circuit circuit per case and evaluates it.

The circuit is the treeified model of Chan et al. (2022), as rust_circuit's causal-scrubbing
experiments build it: every tree node gets its own copy of the model on its own rows (an
``Array`` of tokens), and a child's component output enters its parent's copy

- through a direct path: ``input_ch += Σ_d [out_d(child rows) − out_d(parent rows)]`` at the
  spliced positions (residual splice);
- through all paths: ``out_d`` replaced in the parent's copy at those positions (patch).

Positions are moved with 0/1 arrays (rust_circuit's advice over ``Scatter``). Identical
sub-circuits (the same pass on the same rows) are one node after hash-consing, so rust_circuit
computes them once, as scrub's engine does. The loss (cross-entropy of the next token, mean
over the metric positions) is part of the circuit.

Protocol: one JSON request per stdin line, one JSON reply per stdout line::

    {"case": "NAME", "what": "scrub" | "run", "losses": bool}
    → {"cpu": s, "wall": s, "losses": {...}}    # or {"error": "..."}

``scrub`` evaluates the scrubbed circuit; ``run`` the scrubbed, clean and baseline circuits (what
``scrub.run`` evaluates, without its bootstrap). Circuit construction is timed with evaluation.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import rust_circuit as rc
import torch

MASK = -1e9  # causal mask: exp underflows to exactly 0 in float32, as HF's finfo.min does


class GPT2:
    """A GPT-2 in rust_circuit ops, per-head weights (exported by the parent)."""

    def __init__(self, w: dict, cfg: dict) -> None:
        self.cfg = cfg
        self.n_layers, self.n_heads = cfg["n_layers"], cfg["n_heads"]
        self.d, self.dh, self.eps = cfg["d_model"], cfg["d_head"], cfg["eps"]
        self.a = {k: rc.Array(v, k) for k, v in w.items()}
        self.T = cfg["seq_len"]
        self.centre = rc.Array(torch.eye(self.d) - 1.0 / self.d, "centre")
        causal = torch.triu(torch.full((self.T, self.T), MASK), diagonal=1)
        self.causal = rc.Array(causal, "causal_mask")

    def W(self, name: str) -> rc.Circuit:
        return self.a[name]

    # -- pieces -------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> tuple[rc.Circuit, rc.Circuit]:
        B, T = tokens.shape
        tok = rc.Index(self.W("W_E"), [tokens.reshape(-1)])
        pos = rc.Index(self.W("W_pos"), [torch.arange(T).repeat(B)])
        return rc.Rearrange.reshape(tok, (B, T, self.d)), rc.Rearrange.reshape(pos, (B, T, self.d))

    def ln(self, x: rc.Circuit, prefix: str) -> rc.Circuit:
        xc = rc.Einsum.from_einsum_string("btd,de->bte", x, self.centre)
        var = rc.Einsum.scalar_mul(rc.Einsum.from_einsum_string("btd,btd->bt", xc, xc), 1 / self.d)
        inv = rc.rsqrt(rc.Add(var, rc.Scalar(self.eps)))
        scaled = rc.Einsum.from_einsum_string("btd,bt,d->btd", xc, inv, self.W(prefix + "_w"))
        return rc.Add(scaled, self.W(prefix + "_b"))

    def heads(self, layer: int, q_in, k_in, v_in, heads: list[int] | None = None) -> rc.Circuit:
        """Per-head residual contributions ``(batch, head, pos, d_model)`` (no ``b_O``)."""
        L = f"L{layer}_"

        def w(name: str) -> rc.Circuit:
            full = self.W(L + name)
            return full if heads is None else rc.Index(full, [torch.tensor(heads)])

        def proj(x, name):
            p = rc.Einsum.from_einsum_string("btd,hde->bhte", self.ln(x, L + "ln1"), w("W_" + name))
            return rc.Add(p, w("b_" + name))  # b: (head, 1, d_head)

        q, k, v = proj(q_in, "Q"), proj(k_in, "K"), proj(v_in, "V")
        scores = rc.Einsum.scalar_mul(
            rc.Einsum.from_einsum_string("bhqe,bhke->bhqk", q, k), 1 / math.sqrt(self.dh)
        )
        pattern = rc.softmax(rc.Add(scores, self.causal))
        z = rc.Einsum.from_einsum_string("bhqk,bhke->bhqe", pattern, v)
        return rc.Einsum.from_einsum_string("bhqe,hed->bhqd", z, w("W_O"))

    def head(self, layer: int, h: int, q_in, k_in, v_in) -> rc.Circuit:
        return rc.Index(self.heads(layer, q_in, k_in, v_in, [h]), [slice(None), 0])

    def mlp(self, layer: int, x: rc.Circuit) -> rc.Circuit:
        L = f"L{layer}_"
        pre = rc.Einsum.from_einsum_string("btd,dm->btm", self.ln(x, L + "ln2"), self.W(L + "W_in"))
        act = rc.gelu_new(rc.Add(pre, self.W(L + "b_in")))
        out = rc.Einsum.from_einsum_string("btm,md->btd", act, self.W(L + "W_out"))
        return rc.Add(out, self.W(L + "b_out"))

    def logits(self, resid: rc.Circuit) -> rc.Circuit:
        return rc.Einsum.from_einsum_string("btd,vd->btv", self.ln(resid, "lnf"), self.W("W_E"))


class Pass:
    """One copy of the model on one row group, with all-paths patches: its activations."""

    def __init__(self, model: GPT2, tokens: torch.Tensor, patches: dict) -> None:
        m = model
        self.out: dict[tuple, rc.Circuit] = {}
        self.inp: dict[tuple, rc.Circuit] = {}
        tok, pos = m.embed(tokens)
        self.out[("tok_embed",)] = tok = patched(patches, ("tok_embed",), tok)
        self.out[("pos_embed",)] = pos = patched(patches, ("pos_embed",), pos)
        resid = rc.Add(tok, pos)
        for layer in range(m.n_layers):
            self.inp[("resid_pre", layer)] = resid
            per_head = m.heads(layer, resid, resid, resid)
            parts = [rc.Einsum.from_einsum_string("bhtd->btd", per_head), m.W(f"L{layer}_b_O")]
            for h in range(m.n_heads):
                raw = rc.Index(per_head, [slice(None), h])
                new = patched(patches, ("head", layer, h), raw)
                self.out[("head", layer, h)] = new
                if new is not raw:
                    parts.append(rc.Add.minus(new, raw))
            resid = rc.Add(resid, *parts)
            self.inp[("resid_mid", layer)] = resid
            out = patched(patches, ("mlp", layer), m.mlp(layer, resid))
            self.out[("mlp", layer)] = out
            resid = rc.Add(resid, out)
        self.inp[("final",)] = resid

    def input(self, comp: tuple, channel: str) -> rc.Circuit:
        if comp[0] == "head":
            return self.inp[("resid_pre", comp[1])]
        if comp[0] == "mlp":
            return self.inp[("resid_mid", comp[1])]
        assert comp[0] == "logits", comp
        return self.inp[("final",)]


def patched(patches: dict, comp: tuple, value: rc.Circuit) -> rc.Circuit:
    if comp not in patches:
        return value
    for child_value, src, dst in patches[comp]:
        value = rc.Add(
            rc.Add.minus(value, masked(value, dst, assign=True)), moved(child_value, src, dst)
        )
    return value


def _uniform(pos: np.ndarray) -> bool:
    return bool((pos == pos[:1]).all())


def masked(x: rc.Circuit, dst: np.ndarray, assign: bool = False) -> rc.Circuit:
    """``x`` at ``dst`` (per row; counted with multiplicity unless ``assign``), 0 elsewhere."""
    B, T = x.shape[0], x.shape[1]
    if _uniform(dst):
        mask = torch.zeros(T)
        if assign:
            mask[dst[0]] = 1.0
        else:
            np.add.at(mask.numpy(), dst[0], 1.0)
        if bool((mask == 1).all()):
            return x
        return rc.Einsum.from_einsum_string("btd,t->btd", x, rc.Array(mask))
    m = np.zeros((B, T), dtype=np.float32)
    rows = np.repeat(np.arange(B), dst.shape[1])
    if assign:
        m[rows, dst.reshape(-1)] = 1.0
    else:
        np.add.at(m, (rows, dst.reshape(-1)), 1.0)
    return rc.Einsum.from_einsum_string("btd,bt->btd", x, rc.Array(torch.from_numpy(m)))


def moved(x: rc.Circuit, src: np.ndarray, dst: np.ndarray) -> rc.Circuit:
    """The value of ``x`` at ``src`` placed at ``dst``, per row; 0 elsewhere."""
    if np.array_equal(src, dst):
        return masked(x, dst)
    B, T = x.shape[0], x.shape[1]
    if _uniform(src) and _uniform(dst):
        s = np.zeros((T, T), dtype=np.float32)
        np.add.at(s, (dst[0], src[0]), 1.0)
        return rc.Einsum.from_einsum_string("ts,bsd->btd", rc.Array(torch.from_numpy(s)), x)
    s = np.zeros((B, T, T), dtype=np.float32)
    rows = np.repeat(np.arange(B), dst.shape[1])
    np.add.at(s, (rows, dst.reshape(-1), src.reshape(-1)), 1.0)
    return rc.Einsum.from_einsum_string("bts,bsd->btd", rc.Array(torch.from_numpy(s)), x)


def gathered(x: rc.Circuit, pos: np.ndarray) -> rc.Circuit:
    """``x[b, pos[b, k]]``: ``(batch, K, ...)``."""
    if _uniform(pos):
        return rc.Index(x, [slice(None), torch.from_numpy(pos[0])])
    B, T = x.shape[0], x.shape[1]
    g = np.zeros((B, pos.shape[1], T), dtype=np.float32)
    g[np.arange(B)[:, None], np.arange(pos.shape[1])[None], pos] = 1.0
    return rc.Einsum.from_einsum_string("bkt,btd->bkd", rc.Array(torch.from_numpy(g)), x)


def loss(model: GPT2, resid: rc.Circuit, pos: np.ndarray, labels: torch.Tensor) -> rc.Circuit:
    """Per-example cross-entropy of ``labels`` at ``pos``, mean over the positions."""
    logp = rc.log_softmax(model.logits(gathered(resid, pos)))
    onehot = torch.nn.functional.one_hot(labels, model.cfg["d_vocab"]).float()
    picked = rc.Einsum.from_einsum_string("bkv,bkv->b", logp, rc.Array(onehot, "labels"))
    return rc.Einsum.scalar_mul(picked, -1.0 / pos.shape[1])


def treeified_outputs(model: GPT2, case: dict, name: str) -> dict[tuple, rc.Circuit]:
    """Residual contributions of ``name``'s components, treeified (DESIGN.md's evaluation)."""
    node = case["nodes"][name]
    tokens = case["tokens"][torch.as_tensor(node["rows"])]
    comps = [tuple(c) for c in node["components"]]
    if node["leaf"]:
        plain = Pass(model, tokens, {})
        return {c: plain.out[c] for c in comps if c[0] != "logits"}
    child_outs = {child: treeified_outputs(model, case, child) for child in node["children"]}
    passes: dict[tuple, Pass] = {}
    outs: dict[tuple, rc.Circuit] = {}
    assembled: dict[tuple, rc.Circuit] = {}
    for t in node["targets"]:
        comp, ch = tuple(t["component"]), t["channel"]
        key = tuple((p["child"], tuple(p["component"])) for p in t["patches"])
        if key not in passes:
            patches: dict[tuple, list] = {}
            for p in t["patches"]:
                value = child_outs[p["child"]][tuple(p["component"])]
                patches.setdefault(tuple(p["component"]), []).append((value, p["src"], p["dst"]))
            passes[key] = Pass(model, tokens, patches)
        run = passes[key]
        resid = run.input(comp, ch)
        for s in t["direct"]:
            d = tuple(s["component"])
            new, old = (
                moved(child_outs[s["child"]][d], s["src"], s["dst"]),
                masked(run.out[d], s["dst"]),
            )
            resid = rc.Add(resid, rc.Add.minus(new, old))
        assembled[comp, ch] = resid
    final = passes.get(()) or Pass(model, tokens, {})
    for comp in comps:
        if comp[0] == "head":
            ins = [assembled[comp, ch] for ch in ("q", "k", "v")]
            outs[comp] = model.head(comp[1], comp[2], *ins)
        elif comp[0] == "mlp":
            outs[comp] = model.mlp(comp[1], assembled[comp, "in"])
        elif comp[0] == "logits":
            outs[comp] = assembled[comp, "in"]  # the final residual stream; unembedded by loss()
        else:
            outs[comp] = final.out[comp]
    return outs


def circuits(model: GPT2, case: dict, what: str) -> dict[str, rc.Circuit]:
    """Per-example loss circuits: the scrub, and for ``run`` also clean and baseline."""
    labels = case["labels"]
    root = treeified_outputs(model, case, case["root"])[("logits",)]
    out = {"scrubbed": loss(model, root, case["root_pos"], labels)}
    if what == "run":
        for kind in ("clean", "baseline"):
            plain = Pass(model, case["tokens"][case[kind + "_rows"]], {})
            out[kind] = loss(model, plain.inp[("final",)], case[kind + "_pos"], labels)
    return out


def evaluate(circ: rc.Circuit, mode: str) -> torch.Tensor:
    if mode == "optimize":  # what causal_scrubbing's ExperimentEvalSettings does by default
        return rc.optimize_and_evaluate(rc.cast_circuit(circ, DEVICE), rc.OptimizationSettings())
    return rc.cast_circuit(circ, DEVICE).evaluate()


DEVICE = rc.TorchDeviceDtypeOp(device="cpu")


def load_case(path: Path) -> dict:
    case = torch.load(path, weights_only=False)
    for node in case["nodes"].values():
        for t in node.get("targets", []):
            for item in (*t["patches"], *t["direct"]):
                item["src"], item["dst"] = np.asarray(item["src"]), np.asarray(item["dst"])
    for key in ("root_pos", "clean_pos", "baseline_pos"):
        case[key] = np.asarray(case[key])
    return case


def main() -> None:
    torch.set_num_threads(1)
    folder = Path(sys.argv[1])
    exported = torch.load(folder / "weights.pt", weights_only=False)
    model = GPT2(exported["weights"], exported["config"])
    cases: dict[str, dict] = {}
    print(json.dumps({"ready": rc.__name__, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            name = req["case"]
            if name not in cases:
                cases[name] = load_case(folder / f"{name}.pt")
            wall, cpu = time.perf_counter(), time.process_time()
            values = {k: evaluate(c, req.get("mode", "optimize")) for k, c in
                      circuits(model, cases[name], req["what"]).items()}  # fmt: skip
            reply: dict = {
                "cpu": time.process_time() - cpu,
                "wall": time.perf_counter() - wall,
            }
            if req.get("losses"):
                reply["losses"] = {k: v.double().tolist() for k, v in values.items()}
        except Exception:  # report, keep serving
            reply = {"error": traceback.format_exc()}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
