"""What makes the engine fast, checked for what it must not change (no timings here).

- Passes run the bridge's joint q/k/v projection; heads whose q/k/v inputs a group assembles
  are recomputed by the kernels (fused heads included), and still agree with the reference.
- Passes are capped by an activation budget (``max_memory``) without changing results.
- HF's Python ``gelu_new`` is swapped for torch's tanh GELU, in evaluation mode.
- The weights' SHA-256 is the file's, remembered per file version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

import scrub
from scrub.engine import ActivationCache, FastEngine, evaluate_reference
from scrub.engine._kernels import kernels_for
from scrub.engine._plan import make_plan
from scrub.engine.cache import balanced, pass_rows
from tests.test_fast_engine import MULTI_LAYER, logprobs, sampled

FUSED = {  # a node of one layer's heads, fed through q and v: treeified in its reading group
    "out": {"components": ["logits"], "inputs": [{"node": "h", "channels": "in"}]},
    "h": {
        "components": ["a1.h0", "a1.h2"],
        "sampler": "uncond",
        "inputs": [{"node": "p", "channels": ["q", "v"]}],
    },
    "p": {"components": ["a0.h1", "m0"], "sampler": "uncond"},
}


def _split_modes(model, run) -> list[bool]:
    """``use_split_qkv_input`` of every forward pass ``run()`` makes."""
    modes: list[bool] = []
    hook = model.bridge.register_forward_pre_hook(
        lambda module, args, kwargs: modes.append(bool(model.bridge.cfg.use_split_qkv_input)),
        with_kwargs=True,
    )
    try:
        run()
    finally:
        hook.remove()
    return modes


def test_head_splices_run_joint_qkv_passes_and_match_the_reference(tiny_model):
    assert kernels_for(tiny_model) is not None  # its one-off check reads split inputs
    for nodes, role in ((MULTI_LAYER, "virtual"), (FUSED, "fused")):
        tree = sampled(tiny_model, nodes, n=9)
        plan = make_plan(tiny_model, tree, kernels=True)
        assert any(getattr(g, role) and g.node.name == "h" for g in plan.groups)
        FastEngine()(tiny_model, tree)  # the once-per-model checks (late start, last block,
        # suffix blocks) run their own passes on the bridge as loaded: not what is measured
        got: list[torch.Tensor] = []
        modes = _split_modes(
            tiny_model, lambda tree=tree, got=got: got.append(FastEngine()(tiny_model, tree))
        )
        assert modes and not any(modes)  # no pass needed the per-head split
        ref = evaluate_reference(tiny_model, tree)
        torch.testing.assert_close(logprobs(got[0]), logprobs(ref), atol=1e-4, rtol=0)
    assert tiny_model.bridge.cfg.use_split_qkv_input  # restored: the bridge as loaded


def test_memory_budget_caps_every_pass_and_leaves_results_unchanged(tiny_model):
    tree = sampled(tiny_model, MULTI_LAYER, n=13)
    seq = tree.dataset.seq_len
    per_row = (1 << 30) // pass_rows(tiny_model, seq, max_memory=1 << 30)
    budget = 6 * per_row
    assert pass_rows(tiny_model, seq, max_memory=budget) == 6
    sizes: list[int] = []
    hook = tiny_model.bridge.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(args[0].shape[0]), with_kwargs=True
    )
    try:
        capped = FastEngine(cache=ActivationCache(max_memory=budget), max_memory=budget)(
            tiny_model, tree
        )
    finally:
        hook.remove()
    assert sizes and max(sizes) <= 6
    whole = FastEngine()(tiny_model, tree)
    torch.testing.assert_close(capped, whole, atol=1e-5, rtol=0)


def test_a_node_of_one_layers_heads_stops_at_that_blocks_input(tiny_model):
    """Its heads come from the kernels on block 1's input, and nothing else of its group is
    read: block 1 runs for the root's rows only (not for the node's), same result."""
    tree = sampled(tiny_model, FUSED, n=9)
    plan = make_plan(tiny_model, tree, kernels=True)
    node = next(g for g in plan.groups if g.node.name == "h")
    assert node.fused and node.stop == 1 and plan.groups[plan.root].stop > 1
    FastEngine()(tiny_model, tree)  # the one-off checks of the kernels, late start, last block
    rows: list[int] = []

    def count(module, args, kwargs):
        rows.append((args[0] if args else kwargs["hidden_states"]).shape[0])

    # the attention's (the block itself is entered by a pass that stops at its input hook)
    hook = tiny_model.bridge.blocks[1].attn.register_forward_pre_hook(count, with_kwargs=True)
    try:
        got = FastEngine()(tiny_model, tree)
    finally:
        hook.remove()
    assert sum(rows) == 9  # the root's group alone (the node's group stopped before block 1)
    ref = evaluate_reference(tiny_model, tree)
    torch.testing.assert_close(logprobs(got), logprobs(ref), atol=1e-4, rtol=0)


def test_balanced_pieces_are_as_few_as_the_cap_allows_and_about_equal():
    for n in range(1, 60):
        for most in range(1, 25):
            step = balanced(n, most)
            sizes = [min(step, n - s) for s in range(0, n, step)]
            assert max(sizes) <= most and len(sizes) == -(-n // most)
            assert max(sizes) - min(sizes) <= len(sizes)  # no small last piece
    assert balanced(1000, 296) == 250


def test_gelu_new_is_torch_tanh_gelu_in_eval_mode(tiny_model):
    from transformers.activations import NewGELUActivation

    modules = list(tiny_model.bridge.original_model.modules())
    assert not any(isinstance(m, NewGELUActivation) for m in modules)
    gelus = [m for m in modules if isinstance(m, torch.nn.GELU)]
    assert gelus and all(m.approximate == "tanh" and not m.training for m in gelus)
    x = torch.linspace(-8, 8, 1001)
    assert (gelus[0](x) - NewGELUActivation()(x)).abs().max() <= 1e-6


def test_checkpoint_sha256_is_the_files_and_follows_its_changes(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    model = scrub.load_model(str(copy))
    weights = Path(copy) / "model.safetensors"
    assert model.checkpoint_sha256() == hashlib.sha256(weights.read_bytes()).hexdigest()
    weights.write_bytes(weights.read_bytes() + b"\0")  # a new file version (size changed)
    assert model.checkpoint_sha256() == hashlib.sha256(weights.read_bytes()).hexdigest()
